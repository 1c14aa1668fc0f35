/// How a node is named in paths, metrics and messages: its address, or address:port
/// (`[v6]:port`) where the port matters (NAT, or one address with several ports). One
/// formatter and one parser, so what one place writes another can read.
public struct NodeLabel: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    public var address: IPAddress
    /// nil or 0: the address alone.
    public var port: UInt16?

    public init(address: IPAddress, port: UInt16?) {
        self.address = address
        self.port = port == 0 ? nil : port
    }

    /// "198.18.0.11", "198.18.2.11:8080", "2001:2::11", "[2001:2::11]:8080".
    public init?(_ text: String) {
        if let a = IPAddress(text) {
            self.init(address: a, port: nil)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        var host = text[..<colon]
        let bracketed = host.hasPrefix("[") && host.hasSuffix("]")
        if bracketed { host = host.dropFirst().dropLast() }
        guard let a = IPAddress(String(host)), a.isIPv4 != bracketed, port != 0 else { return nil }
        self.init(address: a, port: port)
    }

    public var description: String {
        guard let port else { return "\(address)" }
        return address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }

    /// Whether a node at address:port answers to this label (the address alone names every port).
    public func names(address: IPAddress, port: UInt16) -> Bool {
        self.address == address && (self.port == nil || self.port == port)
    }
}
