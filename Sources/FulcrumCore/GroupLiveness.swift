/// Which nodes their health checks found down, and which groups that leaves with no live
/// node: the transitions an operator is told of. Keyed by identity, so it holds across
/// reloads that renumber nodes. Pure.
public struct GroupLiveness: Sendable, Equatable {
    /// Nodes found down (absent: up, or not checked).
    public private(set) var down: Set<NodeIdentity> = []
    /// Groups every node of which is down.
    public private(set) var dead: Set<String> = []

    public enum Transition: Sendable, Equatable {
        /// Every node of the group is down: new flows go to its sorry server, if any.
        case noLiveNode(group: String)
        /// A node of a group that had none is up again.
        case back(group: String)
    }

    public init() {}

    /// A node's new state. `members`: every node of its group, as configured now.
    public mutating func record(_ node: NodeIdentity, up: Bool, members: [NodeIdentity]) -> Transition? {
        if up { down.remove(node) } else { down.insert(node) }
        let allDown = !members.isEmpty && members.allSatisfy { down.contains($0) }
        if allDown && dead.insert(node.group).inserted { return .noLiveNode(group: node.group) }
        if !allDown && dead.remove(node.group) != nil { return .back(group: node.group) }
        return nil
    }
}
