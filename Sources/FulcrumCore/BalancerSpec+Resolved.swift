/// The data-plane interfaces as the kernel has them, in configuration order (a group's
/// `interface` and a route's index into it). Fixed at start.
public struct DataplaneInterfaces: Sendable, Equatable {
    public var ifindexes: [Int32]
    /// This LB's MAC on each: the Ethernet source of what it sends.
    public var macs: [MACAddress]
    /// Each one's MTU (the largest IP packet it sends).
    public var mtus: [Int]

    public init(ifindexes: [Int32], macs: [MACAddress], mtus: [Int]) {
        self.ifindexes = ifindexes
        self.macs = macs
        self.mtus = mtus
    }
}

/// A node's (or sorry server's) MAC changed in the neighbour table: the workers are told
/// it alone, with no new layout.
public enum NeighborChange: Sendable, Equatable {
    case node(group: Int, node: Int, mac: MACAddress?)
    case sorry(group: Int, mac: MACAddress?)
}

extension BalancerSpec {
    /// The spec the workers run: `groups` as configured, with the agents' weights in place
    /// of the configured ones (a drained node, weight 0, stays 0) and every node's and
    /// sorry server's MAC from the neighbour table on its group's interface where the
    /// configuration gave none. Return routes are the workers' `RoutingTable`
    /// (`RoutingInput`), not the spec's.
    public static func resolved(groups: [GroupSpec], agentWeights: [NodeIdentity: Int],
                                neighbors: [KernelNeighborKey: MACAddress], generation: UInt64,
                                interfaces: DataplaneInterfaces, flowTableCapacity: Int, timeouts: FlowTimeouts,
                                maxNodeSlots: Int) -> BalancerSpec {
        var groups = groups
        for g in groups.indices {
            if !agentWeights.isEmpty {
                for n in groups[g].nodes.indices {
                    let node = groups[g].nodes[n]
                    if let w = agentWeights[NodeIdentity(group: groups[g].name, address: node.address, port: node.port)],
                       node.weight > 0 {
                        groups[g].nodes[n].weight = w
                    }
                }
            }
            let ifindex = interfaces.ifindexes[groups[g].interface]
            for n in groups[g].nodes.indices where groups[g].nodes[n].mac == nil {
                groups[g].nodes[n].mac = neighbors[KernelNeighborKey(ifindex: ifindex, address: groups[g].nodes[n].address)]
            }
            if var sorry = groups[g].sorry, sorry.mac == nil {
                sorry.mac = neighbors[KernelNeighborKey(ifindex: ifindex, address: sorry.address)]
                groups[g].sorry = sorry
            }
        }
        var spec = BalancerSpec(groups: groups, interfaceMACs: interfaces.macs, returnRoutes: [],
                                flowTableCapacity: flowTableCapacity, timeouts: timeouts, maxNodeSlots: maxNodeSlots)
        spec.generation = generation
        spec.interfaceMTUs = interfaces.mtus
        return spec
    }

    /// The MACs that differ from `old`, a spec of the same layout (only the neighbour
    /// table moved): node by node, each group's sorry server after its nodes.
    public func neighborChanges(from old: BalancerSpec) -> [NeighborChange] {
        var out: [NeighborChange] = []
        for (g, group) in groups.enumerated() {
            for (n, node) in group.nodes.enumerated() where node.mac != old.groups[g].nodes[n].mac {
                out.append(.node(group: g, node: n, mac: node.mac))
            }
            if let sorry = group.sorry, sorry.mac != old.groups[g].sorry?.mac {
                out.append(.sorry(group: g, mac: sorry.mac))
            }
        }
        return out
    }

    /// Nodes and sorry servers with no MAC, each with its group's interface number: the
    /// kernel is asked to resolve them (a node with no MAC takes no flows).
    public var unresolvedNeighbors: [(address: IPAddress, interface: Int)] {
        var out: [(address: IPAddress, interface: Int)] = []
        for group in groups {
            for node in group.nodes where node.mac == nil { out.append((node.address, group.interface)) }
            if let sorry = group.sorry, sorry.mac == nil { out.append((sorry.address, group.interface)) }
        }
        return out
    }
}
