/// A node (or a sorry server) by what it is, not where it sits in a layout: its group's
/// name, its address and its port. Runtime state kept by identity (health, and later
/// admin state and agent weights) survives a reload that renumbers the groups.
public struct NodeIdentity: Hashable, Sendable, CustomStringConvertible {
    public var group: String
    public var address: IPAddress
    public var port: UInt16

    public init(group: String, address: IPAddress, port: UInt16) {
        self.group = group
        self.address = address
        self.port = port
    }

    public var description: String { port == 0 ? "\(group)/\(address)" : "\(group)/\(address):\(port)" }
}
