/// What discovery decided about a node whose agent announced itself
/// (`accept_discovered_nodes`): the controller turns each into a configuration change
/// like any other, so a discovered node is validated, versioned and logged.
public enum DiscoveryDecision: Sendable, Equatable {
    case add(group: String, address: IPAddress, port: UInt16)
    case remove(group: String, address: IPAddress, port: UInt16)
    case disable(group: String, address: IPAddress, port: UInt16)

    public var address: IPAddress {
        switch self {
        case let .add(_, address, _), let .remove(_, address, _), let .disable(_, address, _): return address
        }
    }

    public var group: String {
        switch self {
        case let .add(group, _, _), let .remove(group, _, _), let .disable(group, _, _): return group
        }
    }
}

/// What becomes of a discovered node whose agent has gone silent (`agent.discovered_expiry`).
public enum DiscoveryExpiry: String, Sendable, Equatable, CaseIterable {
    /// Out of its groups.
    case remove
    /// Still listed, taking no new flows: an operator sees it and decides.
    case disable
}

/// The discovery policy of the agents' listener, without its socket: which addresses it
/// listens to beyond the configured nodes, when an address becomes a node (two good
/// reports in a row: one could be a stray or a replayed datagram, two are an agent that is
/// alive), and when a discovered node goes (silent for `timeout`). Pure, time a parameter,
/// so the policy is tested by advancing a number rather than by waiting on a socket.
///
/// Memory is bounded whatever arrives: at most `candidateLimit` addresses that are no
/// node yet are remembered; a report from any other new address is refused, as from an
/// unknown node, until candidates expire.
public struct DiscoveryTracker: Sendable {
    /// A group as discovery sees it.
    public struct Group: Sendable, Equatable {
        public var name: String
        /// `accept_discovered_nodes`.
        public var acceptsDiscoveredNodes: Bool
        /// The VIP's family: a node of the other family could not be reached by NAT from it.
        public var isIPv4: Bool
        /// The configured nodes' addresses: a configured node is never discovered again.
        public var nodes: [IPAddress]
        /// A discovered node's port: the group's first node's (announcements carry none).
        public var port: UInt16

        public init(name: String, acceptsDiscoveredNodes: Bool, isIPv4: Bool, nodes: [IPAddress], port: UInt16) {
            self.name = name
            self.acceptsDiscoveredNodes = acceptsDiscoveredNodes
            self.isIPv4 = isIPv4
            self.nodes = nodes
            self.port = port
        }
    }

    /// An address heard from that is no node yet.
    struct Candidate: Sendable {
        var reports: Int
        var lastSeen: UInt64
    }

    /// A node discovery added: the groups it went into (with its port there), in the
    /// order they were added, and when its agent was last heard.
    struct Discovered: Sendable {
        var groups: [(name: String, port: UInt16)]
        var lastSeen: UInt64
    }

    /// The groups as last configured.
    public var groups: [Group]
    /// Silence (nanoseconds, the caller's clock) after which a discovered node expires
    /// and a candidate is forgotten.
    public let timeout: UInt64
    public let expiry: DiscoveryExpiry
    public let candidateLimit: Int
    var candidates: [IPAddress: Candidate] = [:]
    var discovered: [IPAddress: Discovered] = [:]

    public init(groups: [Group] = [], timeout: UInt64, expiry: DiscoveryExpiry, candidateLimit: Int = 1024) {
        self.groups = groups
        self.timeout = timeout
        self.expiry = expiry
        self.candidateLimit = candidateLimit
    }

    /// Every address discovery remembers (candidates and discovered nodes): the replay
    /// guard must keep its entries for them, as for configured nodes.
    public var tracked: Set<IPAddress> { Set(candidates.keys).union(discovered.keys) }

    /// Whether `address` is a node discovery added (and has not expired).
    public func isDiscovered(_ address: IPAddress) -> Bool { discovered[address] != nil }

    /// The groups that would take `address` as a new node.
    func accepting(_ address: IPAddress) -> [Group] {
        groups.filter { $0.acceptsDiscoveredNodes && $0.isIPv4 == address.isIPv4 && !$0.nodes.contains(address) }
    }

    /// Whether a report from `address` (signed with the shared key) is worth going on with,
    /// before the replay guard takes note of it. `isMember`: the address is a node of a
    /// group with dynamic weights, wanted whatever discovery thinks. Otherwise only an
    /// address discovery added, or one a group would accept while there is room to
    /// remember it.
    public func admits(_ address: IPAddress, isMember: Bool) -> Bool {
        if isMember || discovered[address] != nil { return true }
        if accepting(address).isEmpty { return false }
        return candidates[address] != nil || candidates.count < candidateLimit
    }

    /// A report from `address` that was admitted and passed the replay guard, at `now`.
    /// - Returns: the nodes to add, when this report makes the address an agent (its
    ///   second in a row): one per accepting group, in the groups' order.
    public mutating func report(from address: IPAddress, now: UInt64) -> [DiscoveryDecision] {
        if discovered[address] != nil {
            discovered[address]?.lastSeen = now
            return []
        }
        let accepting = accepting(address)
        guard !accepting.isEmpty else { return [] }
        var candidate = candidates[address] ?? Candidate(reports: 0, lastSeen: now)
        candidate.reports += 1
        candidate.lastSeen = now
        guard candidate.reports >= 2 else {
            candidates[address] = candidate
            return []
        }
        candidates[address] = nil
        discovered[address] = Discovered(groups: accepting.map { ($0.name, $0.port) }, lastSeen: now)
        return accepting.map { .add(group: $0.name, address: address, port: $0.port) }
    }

    /// At `now`: discovered nodes silent longer than `timeout` go (removed or disabled in
    /// every group they were added to), and candidates as silent are forgotten.
    /// - Returns: the decisions, address by address (ascending), each address's groups in
    ///   the order it was added to them.
    public mutating func expire(now: UInt64) -> [DiscoveryDecision] {
        var out: [DiscoveryDecision] = []
        let silent = discovered.filter { now &- $0.value.lastSeen > timeout }.sorted { $0.key < $1.key }
        for (address, node) in silent {
            discovered[address] = nil
            for (group, port) in node.groups {
                out.append(expiry == .remove ? .remove(group: group, address: address, port: port)
                                             : .disable(group: group, address: address, port: port))
            }
        }
        candidates = candidates.filter { now &- $0.value.lastSeen <= timeout }
        return out
    }
}
