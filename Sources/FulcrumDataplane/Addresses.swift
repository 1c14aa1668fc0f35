import FulcrumCore
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// An interface's addresses, added and removed through rtnetlink (`ip addr add|del`): the
/// pair's floating addresses (NAT gateways), which only the active LB holds.
public enum InterfaceAddresses {
    static let RTM_NEWADDR: UInt16 = 20
    static let RTM_DELADDR: UInt16 = 21
    static let IFA_ADDRESS: UInt16 = 1
    static let IFA_LOCAL: UInt16 = 2
    /// ifa_flags: no duplicate address detection (an IPv6 address usable at once, not
    /// "tentative" for a second: it is moving between two hosts on purpose).
    static let IFA_F_NODAD: UInt8 = 0x02

    /// Adds `address`/`prefix` to the interface; one already there is kept as it is.
    public static func add(_ address: IPAddress, prefix: Int, ifindex: Int32) throws {
        // REQUEST | ACK | REPLACE | CREATE
        try transact(message(type: RTM_NEWADDR, flags: 0x01 | 0x04 | 0x100 | 0x400, address, prefix: prefix, ifindex: ifindex),
                     "add \(address)/\(prefix)", tolerated: [])
    }

    /// Removes `address`/`prefix` from the interface; one not there is not an error.
    /// Returns whether it was there.
    @discardableResult
    public static func remove(_ address: IPAddress, prefix: Int, ifindex: Int32) throws -> Bool {
        try transact(message(type: RTM_DELADDR, flags: 0x01 | 0x04, address, prefix: prefix, ifindex: ifindex),
                     "remove \(address)/\(prefix)", tolerated: [EADDRNOTAVAIL, ENOENT, ENODEV]) == 0
    }

    /// nlmsghdr + ifaddrmsg (family, prefix length, flags, scope, index) + IFA_LOCAL and
    /// IFA_ADDRESS (IPv4) or IFA_ADDRESS (IPv6).
    static func message(type: UInt16, flags: UInt16, _ address: IPAddress, prefix: Int, ifindex: Int32) -> [UInt8] {
        let bytes = address.isIPv4 ? Array(address.bytes[12...]) : address.bytes
        var body: [UInt8] = [UInt8(address.isIPv4 ? AF_INET : AF_INET6), UInt8(prefix), address.isIPv4 ? 0 : IFA_F_NODAD,
                             0 /* RT_SCOPE_UNIVERSE */]
        Neighbors.append32(&body, UInt32(bitPattern: ifindex))
        for attribute in address.isIPv4 ? [IFA_LOCAL, IFA_ADDRESS] : [IFA_ADDRESS] {
            Neighbors.append16(&body, UInt16(4 + bytes.count))
            Neighbors.append16(&body, attribute)
            body += bytes
        }
        var out: [UInt8] = []
        Neighbors.append32(&out, UInt32(16 + body.count))
        Neighbors.append16(&out, type)
        Neighbors.append16(&out, flags)
        Neighbors.append32(&out, 1)
        Neighbors.append32(&out, 0)
        return out + body
    }

    /// Sends one request and reads the kernel's acknowledgement (an NLMSG_ERROR, 0 for
    /// success); the errors in `tolerated` count as success. Returns the kernel's code.
    @discardableResult
    static func transact(_ request: [UInt8], _ operation: String, tolerated: [Int32]) throws -> Int32 {
        let fd = try Neighbors.openSocket()
        defer { close(fd) }
        _ = try request.withUnsafeBytes { raw in
            try SystemCall.run(operation) { Int32(send(fd, raw.baseAddress, raw.count, 0)) }
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 20 { throw SystemError(operation + ": no answer from the kernel", errno: n < 0 ? errno : EIO) }
        guard Neighbors.load16(buffer, 4) == 2 /* NLMSG_ERROR */ else { return 0 }
        let code = -Int32(bitPattern: Neighbors.load32(buffer, 16))
        if code != 0 && !tolerated.contains(code) { throw SystemError(operation, errno: code) }
        return code
    }
}
