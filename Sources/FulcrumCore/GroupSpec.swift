/// How a group's frames reach its nodes.
public enum ForwardingMethod: String, CaseIterable, Sendable {
    /// MAC address translation: L2 direct server return.
    case mat
    /// Destination address/port translation, replies back through the LB.
    case nat
}

/// A distribution node as the data plane needs it.
public struct NodeSpec: Sendable, Equatable {
    public var address: IPAddress
    /// NAT: the node's port; 0 means "the port the client used".
    public var port: UInt16
    public var weight: Int
    /// MAT: the node's MAC; NAT: the next hop's MAC toward the node. nil until resolved.
    public var mac: MACAddress?
    /// An operator's switch: a disabled node takes no new flows and its flows move, as
    /// if it were down, whatever its health says.
    public var enabled: Bool

    public init(address: IPAddress, port: UInt16 = 0, weight: Int = 1, mac: MACAddress? = nil, enabled: Bool = true) {
        self.address = address
        self.port = port
        self.weight = weight
        self.mac = mac
        self.enabled = enabled
    }
}

/// A distribution group as the data plane needs it.
public struct GroupSpec: Sendable, Equatable {
    public var name: String
    public var vip: IPAddress
    public var proto: UInt8
    public var ports: [UInt16]
    public var method: ForwardingMethod
    public var scheduler: SchedulerKind
    public var nodes: [NodeSpec]
    public var sorry: NodeSpec?
    /// Data-plane interface (index in `BalancerSpec.interfaces`) toward the nodes.
    public var interface: Int

    public init(name: String, vip: IPAddress, proto: UInt8, ports: [UInt16], method: ForwardingMethod,
                scheduler: SchedulerKind, nodes: [NodeSpec], sorry: NodeSpec? = nil, interface: Int = 0) {
        self.name = name
        self.vip = vip
        self.proto = proto
        self.ports = ports
        self.method = method
        self.scheduler = scheduler
        self.nodes = nodes
        self.sorry = sorry
        self.interface = interface
    }
}

/// Where NAT replies go: the longest matching prefix names the interface and the next
/// hop's MAC (a router's, or the client's own when it is on the link).
public struct ReturnRoute: Sendable, Equatable {
    public var prefix: IPAddress
    public var prefixLength: Int
    public var interface: Int
    public var nextHopMAC: MACAddress

    public init(prefix: IPAddress, prefixLength: Int, interface: Int, nextHopMAC: MACAddress) {
        self.prefix = prefix
        self.prefixLength = prefixLength
        self.interface = interface
        self.nextHopMAC = nextHopMAC
    }

    /// Prefix length counted in the 128-bit (IPv4-mapped) space.
    @inlinable
    public var mappedLength: Int { prefix.isIPv4 ? prefixLength + 96 : prefixLength }

    @inlinable
    public func contains(_ a: IPAddress) -> Bool {
        let bits = mappedLength
        if bits <= 0 { return true }
        if bits <= 64 {
            let mask: UInt64 = bits == 64 ? ~0 : ~(~0 >> UInt64(bits))
            return a.high & mask == prefix.high & mask
        }
        let lowBits = bits - 64
        let mask: UInt64 = lowBits >= 64 ? ~0 : ~(~0 >> UInt64(lowBits))
        return a.high == prefix.high && a.low & mask == prefix.low & mask
    }
}

/// Everything one worker needs to forward: groups, this LB's MACs, return routes.
public struct BalancerSpec: Sendable, Equatable {
    public var groups: [GroupSpec]
    /// This LB's MAC on each data-plane interface.
    public var interfaceMACs: [MACAddress]
    /// Each data-plane interface's MTU (the largest IP packet it sends); a missing entry
    /// means no limit. A frame that would not fit is dropped and counted, not lost
    /// silently by the driver.
    public var interfaceMTUs: [Int] = []
    public var returnRoutes: [ReturnRoute]
    public var flowTableCapacity: Int
    public var timeouts: FlowTimeouts
    /// Upper bound on node slots (nodes + sorry servers over all groups), fixed at start
    /// so that a reload never reallocates the flow table.
    public var maxNodeSlots: Int
    /// Which layout of groups and nodes this is: a worker command built for one
    /// generation is ignored by a worker holding another, so an index never lands in a
    /// layout it was not computed for.
    public var generation: UInt64 = 0

    public init(groups: [GroupSpec], interfaceMACs: [MACAddress], returnRoutes: [ReturnRoute] = [],
                flowTableCapacity: Int = 1 << 20, timeouts: FlowTimeouts = FlowTimeouts(),
                maxNodeSlots: Int = 4096) {
        self.groups = groups
        self.interfaceMACs = interfaceMACs
        self.returnRoutes = returnRoutes
        self.flowTableCapacity = flowTableCapacity
        self.timeouts = timeouts
        self.maxNodeSlots = maxNodeSlots
    }

    /// Node slots this spec uses: one per node per group, plus one per sorry server.
    public var nodeSlotCount: Int {
        groups.reduce(0) { $0 + $1.nodes.count + 1 }
    }
}

/// What a configuration listens for: each VIP:port's group, and each NAT node:port's
/// way back to VIP:port. The one derivation of both, used by the worker's tables, the
/// BPF maps and configuration checks alike.
public struct Endpoints: Sendable {
    public struct Service: Sendable {
        public var key: ServiceKey
        public var group: Int
        public var nat: Bool
    }

    public struct NATReply: Sendable {
        /// The node's address, protocol and port: the source of its replies.
        public var key: ServiceKey
        public var group: Int
        public var vip: IPAddress
        public var vipPort: UInt16
    }

    public var services: [Service] = []
    public var replies: [NATReply] = []
    /// Each NAT node's address and protocol (port 0): the source of its replies'
    /// later fragments, which carry no port.
    public var replyNodes: [ServiceKey] = []
}

extension BalancerSpec {
    /// The endpoints, or the first conflict between groups.
    public func endpoints() throws -> Endpoints {
        var out = Endpoints()
        var serviceOwner: [ServiceKey: Int] = [:]
        var replyIndex: [ServiceKey: Int] = [:]
        for (g, group) in groups.enumerated() {
            for port in group.ports {
                let key = ServiceKey(address: group.vip, proto: group.proto, port: port)
                if let other = serviceOwner[key] {
                    throw BalancerSpecError.duplicateService(group: group.name, service: key, otherGroup: groups[other].name)
                }
                serviceOwner[key] = g
                out.services.append(.init(key: key, group: g, nat: group.method == .nat))
                guard group.method == .nat else { continue }
                for node in group.nodes + (group.sorry.map { [$0] } ?? []) {
                    let key = ServiceKey(address: node.address, proto: group.proto, port: node.port == 0 ? port : node.port)
                    if let existing = replyIndex[key] {
                        // The same node:port twice in one group (a sorry server that is
                        // also a node) maps back to the same VIP:port; anything else is
                        // ambiguous.
                        let r = out.replies[existing]
                        if r.group == g && r.vipPort == port { continue }
                        throw BalancerSpecError.ambiguousNATReply(group: group.name, node: key,
                                                                  otherGroup: groups[r.group].name)
                    }
                    replyIndex[key] = out.replies.count
                    out.replies.append(.init(key: key, group: g, vip: group.vip, vipPort: port))
                }
            }
        }
        var nodes = Set<ServiceKey>()
        for r in out.replies where nodes.insert(ServiceKey(address: r.key.address, proto: r.key.proto, port: 0)).inserted {
            out.replyNodes.append(ServiceKey(address: r.key.address, proto: r.key.proto, port: 0))
        }
        return out
    }
}

public enum NodeLimits {
    /// The largest weight a node may have (0 drains it).
    public static let maxWeight = 1_000_000
}
