import FulcrumBPF
import FulcrumCore
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's neighbour (ARP/NDP) table over rtnetlink: read it, and ask the kernel to
/// resolve an address (RTM_NEWNEIGH with NTF_USE, as `ip neigh` would), so node and
/// next-hop MACs come from the same place the host's own traffic uses.
public enum Neighbors {
    public struct Entry: Hashable, Sendable {
        public var ifindex: Int32
        public var address: IPAddress
        public var mac: MACAddress
    }

    static let RTM_NEWNEIGH: UInt16 = 28
    static let RTM_GETNEIGH: UInt16 = 30
    static let NLMSG_ERROR: UInt16 = 2
    static let NLMSG_DONE: UInt16 = 3
    static let NDA_DST: UInt16 = 1
    static let NDA_LLADDR: UInt16 = 2
    static let NTF_USE: UInt8 = 0x01
    static let validStates: UInt16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  // REACHABLE…PERMANENT

    static func openSocket() throws -> Int32 {
        let fd = try Socket.open(family: AF_NETLINK, type: Int32(SOCK_RAW.rawValue), protocol: 0 /* NETLINK_ROUTE */, "open rtnetlink socket")
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func append16(_ out: inout [UInt8], _ v: UInt16) { withUnsafeBytes(of: v) { out += $0 } }
    static func append32(_ out: inout [UInt8], _ v: UInt32) { withUnsafeBytes(of: v) { out += $0 } }

    /// nlmsghdr + ndmsg (+ NDA_DST).
    static func message(type: UInt16, flags: UInt16, family: UInt8, ifindex: Int32, ndmFlags: UInt8,
                        state: UInt16, destination: IPAddress?) -> [UInt8] {
        var body: [UInt8] = [family, 0, 0, 0]
        append32(&body, UInt32(bitPattern: ifindex))
        append16(&body, state)
        body += [ndmFlags, 0]
        if let destination {
            let bytes = destination.isIPv4 ? Array(destination.bytes[12...]) : destination.bytes
            append16(&body, UInt16(4 + bytes.count))
            append16(&body, NDA_DST)
            body += bytes
        }
        var out: [UInt8] = []
        append32(&out, UInt32(16 + body.count))
        append16(&out, type)
        append16(&out, flags)
        append32(&out, 1)  // sequence
        append32(&out, 0)
        return out + body
    }

    /// Every resolved entry (REACHABLE, STALE, DELAY, PROBE, NOARP, PERMANENT).
    public static func dump() throws -> [Entry] {
        let request = message(type: RTM_GETNEIGH, flags: 0x01 | 0x300 /* REQUEST|DUMP */, family: UInt8(AF_UNSPEC),
                              ifindex: 0, ndmFlags: 0, state: 0, destination: nil)
        return try dump(request, operation: "RTM_GETNEIGH", type: RTM_NEWNEIGH, minimum: 28) { b, start, end in
            parseNeighbor(b, start, end: end)
        }
    }

    /// Sends an rtnetlink dump request and parses every message of `type` in the answer
    /// (`parse` gets the buffer and where the message's body starts and ends).
    static func dump<T>(_ request: [UInt8], operation: String, type wanted: UInt16, minimum: Int,
                        parse: ([UInt8], Int, Int) -> T?) throws -> [T] {
        let fd = try openSocket()
        defer { close(fd) }
        _ = try request.withUnsafeBytes { raw in
            try SystemCall.run("send \(operation)") { Int32(send(fd, raw.baseAddress, raw.count, 0)) }
        }
        var out: [T] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { throw SystemError("receive \(operation) dump", errno: errno) }
            var offset = 0
            while offset + 16 <= n {
                let length = Int(load32(buffer, offset))
                let type = load16(buffer, offset + 4)
                guard length >= 16, offset + length <= n else { break }
                if type == NLMSG_DONE { return out }
                if type == NLMSG_ERROR { throw SystemError(operation, errno: -Int32(bitPattern: load32(buffer, offset + 16))) }
                if type == wanted, length >= minimum, let e = parse(buffer, offset + 16, offset + length) { out.append(e) }
                offset += (length + 3) & ~3
            }
        }
    }

    static func load16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
    static func load32(_ b: [UInt8], _ o: Int) -> UInt32 { UInt32(load16(b, o)) | UInt32(load16(b, o + 2)) << 16 }

    static func parseNeighbor(_ b: [UInt8], _ o: Int, end: Int) -> Entry? {
        let family = Int32(b[o])
        let ifindex = Int32(bitPattern: load32(b, o + 4))
        let state = load16(b, o + 8)
        guard state & validStates != 0 else { return nil }
        var address: IPAddress?
        var mac: MACAddress?
        var a = o + 12
        while a + 4 <= end {
            let length = Int(load16(b, a))
            let type = load16(b, a + 2)
            guard length >= 4, a + length <= end else { break }
            let payload = Array(b[(a + 4)..<(a + length)])
            if type == NDA_DST {
                address = Routes.address(payload[...], family: UInt8(family))
            } else if type == NDA_LLADDR && payload.count == 6 {
                mac = MACAddress(value: payload.reduce(0) { $0 << 8 | UInt64($1) })
            }
            a += (length + 3) & ~3
        }
        guard let address, let mac else { return nil }
        return Entry(ifindex: ifindex, address: address, mac: mac)
    }

    /// Asks the kernel to resolve `address` on an interface (it sends ARP or NS).
    public static func resolve(_ address: IPAddress, ifindex: Int32) throws {
        let fd = try openSocket()
        defer { close(fd) }
        let request = message(type: RTM_NEWNEIGH, flags: 0x01 | 0x04 | 0x400 | 0x100 /* REQUEST|ACK|CREATE|REPLACE */,
                              family: UInt8(address.isIPv4 ? AF_INET : AF_INET6), ifindex: ifindex,
                              ndmFlags: NTF_USE, state: 0x01 /* NUD_INCOMPLETE */, destination: address)
        _ = try request.withUnsafeBytes { raw in
            try SystemCall.run("send RTM_NEWNEIGH") { Int32(send(fd, raw.baseAddress, raw.count, 0)) }
        }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n >= 20 && load16(buffer, 4) == NLMSG_ERROR {
            let code = Int32(bitPattern: load32(buffer, 16))
            if code != 0 { throw SystemError("resolve \(address) (RTM_NEWNEIGH NTF_USE)", errno: -code) }
        }
    }
}

/// Facts about a network interface, asked of the kernel in the calling thread's network
/// namespace (ioctl on a socket made there). Not sysfs: a thread that entered another
/// namespace with setns still sees the sysfs of the namespace the process mounted, and
/// would read another interface of the same name.
public enum InterfaceFacts {
    static let SIOCGIFMTU: UInt = 0x8921
    static let SIOCGIFHWADDR: UInt = 0x8927
    static let SIOCETHTOOL: UInt = 0x8946
    static let ETHTOOL_GCHANNELS: UInt32 = 0x3C

    /// An ioctl on a `struct ifreq` naming `name`; `fill` and `read` see its 24 bytes of union.
    static func interfaceRequest(_ name: String, _ request: UInt, _ operation: String,
                                 fill: (UnsafeMutableRawBufferPointer) -> Void = { _ in }) throws -> [UInt8] {
        let fd = try Socket.open(family: AF_INET, type: Int32(SOCK_DGRAM.rawValue), "open a socket for \(operation)")
        defer { close(fd) }
        // struct ifreq: char ifr_name[16]; then a 24-byte union.
        var req = [UInt8](repeating: 0, count: 40)
        let bytes = Array(name.utf8)
        guard bytes.count < 16 else { throw SystemError("\(operation) of \(name)", errno: ENAMETOOLONG) }
        req.replaceSubrange(0..<bytes.count, with: bytes)
        req.withUnsafeMutableBytes { fill(UnsafeMutableRawBufferPointer(rebasing: $0[16...])) }
        _ = try req.withUnsafeMutableBytes { raw in
            try SystemCall.run("\(operation) of \(name)") { ioctl(fd, request, raw.baseAddress!) }
        }
        return Array(req[16...])
    }

    public static func mac(of name: String) throws -> MACAddress {
        // struct sockaddr: sa_family, then the address bytes.
        let union = try interfaceRequest(name, SIOCGIFHWADDR, "read the MAC address")
        return MACAddress(value: union[2..<8].reduce(0) { $0 << 8 | UInt64($1) })
    }

    /// The interface's MTU; nil when it cannot be read.
    public static func mtu(of name: String) -> Int? {
        guard let union = try? interfaceRequest(name, SIOCGIFMTU, "read the MTU") else { return nil }
        return Int(union.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) })
    }

    /// How many receive queues the interface has: its RX plus combined channels
    /// (ETHTOOL_GCHANNELS), or, for a driver without channels, what sysfs lists.
    public static func rxQueues(of name: String) -> Int {
        // struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined,
        // rx_count, tx_count, other_count, combined_count (nine __u32).
        var channels = [UInt32](repeating: 0, count: 9)
        channels[0] = ETHTOOL_GCHANNELS
        let ok: Bool = channels.withUnsafeMutableBytes { raw in
            (try? interfaceRequest(name, SIOCETHTOOL, "read the channels") { union in
                union.storeBytes(of: UInt(bitPattern: raw.baseAddress!), as: UInt.self)
            }) != nil
        }
        if ok, channels[5] + channels[8] > 0 { return Int(channels[5] + channels[8]) }
        guard let dir = opendir("/sys/class/net/\(name)/queues") else { return 1 }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let entryName = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if entryName.hasPrefix("rx-") { count += 1 }
        }
        return max(count, 1)
    }
}

/// The addresses this host holds, on every interface of the namespace (getifaddrs).
public enum LocalAddresses {
    public static func all() -> Set<IPAddress> {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(first) }
        var out = Set<IPAddress>()
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            if let sa = entry.pointee.ifa_addr {
                if Int32(sa.pointee.sa_family) == AF_INET {
                    _ = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                        out.insert(IPAddress(ipv4: UInt32(bigEndian: $0.pointee.sin_addr.s_addr)))
                    }
                } else if Int32(sa.pointee.sa_family) == AF_INET6 {
                    sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                        if let a = withUnsafeBytes(of: sin6.pointee.sin6_addr, { IPAddress(networkBytes: $0) }) {
                            out.insert(a)
                        }
                    }
                }
            }
            cursor = entry.pointee.ifa_next
        }
        return out
    }
}
