import FulcrumBPF
import FulcrumCore
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's routing table over rtnetlink: the unicast routes of the main table,
/// which is where NAT replies are sent from (as the kernel would send them).
public enum Routes {
    static let RTM_NEWROUTE: UInt16 = 24
    static let RTM_GETROUTE: UInt16 = 26
    static let RTA_DST: UInt16 = 1
    static let RTA_OIF: UInt16 = 4
    static let RTA_GATEWAY: UInt16 = 5
    static let RTA_PRIORITY: UInt16 = 6
    static let RTA_TABLE: UInt16 = 15
    static let RTN_UNICAST: UInt8 = 1
    static let RT_TABLE_MAIN: UInt32 = 254

    /// Every unicast route of the main table that names an output interface.
    public static func dump() throws -> [KernelRoute] {
        // nlmsghdr + struct rtmsg (family, dst_len, src_len, tos, table, protocol, scope,
        // type, flags): all zero asks for every family.
        var request: [UInt8] = []
        Neighbors.append32(&request, 16 + 12)
        Neighbors.append16(&request, RTM_GETROUTE)
        Neighbors.append16(&request, 0x01 | 0x300)  // REQUEST | DUMP
        Neighbors.append32(&request, 1)
        Neighbors.append32(&request, 0)
        request += [UInt8](repeating: 0, count: 12)
        return try Neighbors.dump(request, operation: "RTM_GETROUTE", type: RTM_NEWROUTE, minimum: 28) { b, start, end in
            parse(b, start, end: end)
        }
    }

    static func address(_ payload: ArraySlice<UInt8>, family: UInt8) -> IPAddress? {
        guard payload.count == (family == UInt8(AF_INET) ? 4 : 16) else { return nil }
        return IPAddress(networkBytes: payload)
    }

    static func parse(_ b: [UInt8], _ o: Int, end: Int) -> KernelRoute? {
        let family = b[o]
        let length = Int(b[o + 1])
        var table = UInt32(b[o + 4])
        guard b[o + 7] == RTN_UNICAST, family == UInt8(AF_INET) || family == UInt8(AF_INET6) else { return nil }
        var destination: IPAddress?
        var gateway: IPAddress?
        var ifindex: Int32?
        var metric: UInt32 = 0
        var a = o + 12
        while a + 4 <= end {
            let attributeLength = Int(Neighbors.load16(b, a))
            let type = Neighbors.load16(b, a + 2)
            guard attributeLength >= 4, a + attributeLength <= end else { break }
            let payload = b[(a + 4)..<(a + attributeLength)]
            switch type {
            case RTA_DST: destination = address(payload, family: family)
            case RTA_GATEWAY: gateway = address(payload, family: family)
            case RTA_OIF where payload.count == 4: ifindex = Int32(bitPattern: Neighbors.load32(b, a + 4))
            case RTA_PRIORITY where payload.count == 4: metric = Neighbors.load32(b, a + 4)
            case RTA_TABLE where payload.count == 4: table = Neighbors.load32(b, a + 4)
            default: break
            }
            a += (attributeLength + 3) & ~3
        }
        guard table == RT_TABLE_MAIN, let ifindex else { return nil }
        let zero = family == UInt8(AF_INET) ? IPAddress(ipv4: 0) : IPAddress.zero
        return KernelRoute(prefix: destination ?? zero, prefixLength: length, ifindex: ifindex, gateway: gateway, metric: metric)
    }
}

/// A subscription to the kernel's route and neighbour changes (rtnetlink multicast
/// groups): the control plane drains it every tick and rebuilds the workers' routing at
/// once when anything changed, instead of waiting for its periodic refresh.
public final class RoutingWatch: @unchecked Sendable {
    private let fd: Int32
    static let RTMGRP_NEIGH: UInt32 = 0x4
    static let RTMGRP_IPV4_ROUTE: UInt32 = 0x40
    static let RTMGRP_IPV6_ROUTE: UInt32 = 0x400

    public init() throws {
        let fd = try Socket.open(family: AF_NETLINK, type: Int32(SOCK_RAW.rawValue), nonBlocking: true, "open rtnetlink watch")
        // struct sockaddr_nl: family, pad, pid (0: the kernel picks), groups.
        var address = [UInt8](repeating: 0, count: 12)
        withUnsafeBytes(of: UInt16(AF_NETLINK)) { address.replaceSubrange(0..<2, with: $0) }
        withUnsafeBytes(of: Self.RTMGRP_NEIGH | Self.RTMGRP_IPV4_ROUTE | Self.RTMGRP_IPV6_ROUTE) {
            address.replaceSubrange(8..<12, with: $0)
        }
        do {
            try address.withUnsafeBytes { try Socket.bindTo(fd, raw: $0, "bind rtnetlink watch") }
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
    }

    /// Reads everything waiting; true if the kernel said anything (a change, or that
    /// messages were lost, which also calls for a fresh dump).
    public func drain() -> Bool {
        var changed = false
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 { changed = true; continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == ENOBUFS { changed = true; continue }
            return changed
        }
    }

    deinit { close(fd) }
}

/// A subscription to the kernel's link changes (RTMGRP_LINK): the pair's link monitors
/// learn that a data-plane interface lost its carrier from the kernel's own message, in
/// the same millisecond, instead of by polling.
public final class LinkWatch: @unchecked Sendable {
    public let fd: Int32
    static let RTMGRP_LINK: UInt32 = 0x1
    static let RTM_NEWLINK: UInt16 = 16
    static let RTM_DELLINK: UInt16 = 17

    public init() throws {
        let fd = try Socket.open(family: AF_NETLINK, type: Int32(SOCK_RAW.rawValue), nonBlocking: true, "open rtnetlink link watch")
        var address = [UInt8](repeating: 0, count: 12)  // struct sockaddr_nl
        withUnsafeBytes(of: UInt16(AF_NETLINK)) { address.replaceSubrange(0..<2, with: $0) }
        withUnsafeBytes(of: Self.RTMGRP_LINK) { address.replaceSubrange(8..<12, with: $0) }
        do {
            try address.withUnsafeBytes { try Socket.bindTo(fd, raw: $0, "bind rtnetlink link watch") }
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
    }

    /// Whether the interface is up and has its carrier (IFF_UP and IFF_RUNNING), from
    /// sysfs: its operational state is "up" (or "unknown", for a device that reports none).
    public static func isRunning(_ name: String) -> Bool {
        let fd = open("/sys/class/net/\(name)/operstate", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 32)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return false }
        let state = String(decoding: bytes[0..<n], as: UTF8.self).filter { !$0.isWhitespace }
        return state == "up" || state == "unknown"
    }

    /// The links the kernel reported since the last call: (ifindex, up and running).
    /// `lost` is true when the kernel dropped messages (read every link's state again).
    public func drain() -> (changes: [(ifindex: Int32, running: Bool)], lost: Bool) {
        var out: [(Int32, Bool)] = []
        var lost = false
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == ENOBUFS { lost = true; continue }
            guard n > 0 else { return (out, lost) }
            buffer.withUnsafeBytes { b in
                var offset = 0
                // struct nlmsghdr (16 bytes), then struct ifinfomsg (16): family, pad, type, index, flags, change.
                while offset + 32 <= n {
                    let length = Int(b.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                    let type = b.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self)
                    guard length >= 16, offset + length <= n else { break }
                    if type == Self.RTM_NEWLINK || type == Self.RTM_DELLINK {
                        let index = b.loadUnaligned(fromByteOffset: offset + 20, as: Int32.self)
                        let flags = b.loadUnaligned(fromByteOffset: offset + 24, as: UInt32.self)
                        out.append((index, type == Self.RTM_NEWLINK && flags & 0x1 != 0 && flags & 0x40 != 0))
                    }
                    offset += (length + 3) & ~3
                }
            }
        }
    }

    deinit { close(fd) }
}
