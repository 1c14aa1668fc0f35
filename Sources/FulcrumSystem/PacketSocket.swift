#if canImport(Glibc)
import Glibc
#endif

/// An AF_PACKET socket that sends whole Ethernet frames out of a named interface: the
/// pair's gratuitous ARP and unsolicited neighbour advertisements (CAP_NET_RAW). It
/// receives nothing (protocol 0).
public final class PacketSocket: @unchecked Sendable {
    public let fd: Int32

    public init() throws {
        fd = try Socket.open(family: AF_PACKET, type: Int32(SOCK_RAW.rawValue), protocol: 0, nonBlocking: true, "packet socket")
    }

    deinit { Socket.close(fd) }

    /// Sends `frame` (from its Ethernet header) on interface `ifindex`; false when the
    /// socket's buffer is full.
    public func send(_ frame: UnsafeRawBufferPointer, ifindex: Int32) throws -> Bool {
        // struct sockaddr_ll (linux/if_packet.h, not in Glibc's module): family u16,
        // protocol be16, ifindex i32, hatype u16, pkttype u8, halen u8, addr[8].
        var address = [UInt8](repeating: 0, count: 20)
        address.withUnsafeMutableBytes { a in
            a.storeBytes(of: UInt16(AF_PACKET), toByteOffset: 0, as: UInt16.self)
            a.storeBytes(of: ifindex, toByteOffset: 4, as: Int32.self)
            a[11] = 6
            for i in 0..<6 { a[12 + i] = frame[i] }
        }
        let sent = try address.withUnsafeBytes { a in
            try SystemCall.runNonBlocking("send a frame on interface \(ifindex)") {
                sendto(fd, frame.baseAddress, frame.count, Int32(MSG_DONTWAIT), a.baseAddress!.assumingMemoryBound(to: sockaddr.self),
                       socklen_t(a.count))
            }
        }
        return sent != nil
    }
}

/// The calling thread's scheduling.
public enum ThreadPriority {
    /// SCHED_FIFO at `priority` (1–99) for the calling thread; the error says why not
    /// (EPERM: no CAP_SYS_NICE, or RestrictRealtime under systemd).
    public static func makeRealtime(priority: Int32) throws {
        var parameters = sched_param()
        parameters.sched_priority = priority
        let r = pthread_setschedparam(pthread_self(), SCHED_FIFO, &parameters)
        if r != 0 { throw SystemError("SCHED_FIFO \(priority)", errno: r) }
    }
}
