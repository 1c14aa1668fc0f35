import FulcrumCore
#if canImport(Glibc)
import Glibc
#endif

/// An IP address and port as the kernel takes them (`sockaddr_in` / `sockaddr_in6`),
/// built in one place from an `IPAddress`.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    /// IPv6: the interface a link-local or multicast address is on (0: none).
    public var scope: UInt32

    public init(_ address: IPAddress, port: UInt16, scope: UInt32 = 0) {
        self.address = address
        self.port = port
        self.scope = scope
    }

    /// From what the kernel filled in (`recvfrom`, `getsockname`); an IPv4-mapped IPv6
    /// address comes back as the IPv4 address.
    public init?(_ storage: sockaddr_storage) {
        var s = storage
        switch Int32(s.ss_family) {
        case AF_INET:
            let sin = withUnsafeBytes(of: &s) { $0.load(as: sockaddr_in.self) }
            address = IPAddress(ipv4: UInt32(bigEndian: sin.sin_addr.s_addr))
            port = UInt16(bigEndian: sin.sin_port)
            scope = 0
        case AF_INET6:
            let sin6 = withUnsafeBytes(of: &s) { $0.load(as: sockaddr_in6.self) }
            guard let a = withUnsafeBytes(of: sin6.sin6_addr, { IPAddress(networkBytes: $0) }) else { return nil }
            address = a
            port = UInt16(bigEndian: sin6.sin6_port)
            scope = sin6.sin6_scope_id
        default:
            return nil
        }
    }

    public var family: Int32 { address.isIPv4 ? AF_INET : AF_INET6 }

    public var description: String { NodeLabel(address: address, port: port).description }

    /// Calls `body` with the address as a `sockaddr` and its length.
    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        if address.isIPv4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr = in_addr(s_addr: address.ipv4.bigEndian)
            return try withUnsafePointer(to: &sin) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        sin6.sin6_scope_id = scope
        let bytes = address.bytes
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: bytes) }
        return try withUnsafePointer(to: &sin6) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
    }
}
