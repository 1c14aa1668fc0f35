/// Where an old layout's node slot goes in a new one.
public struct SlotTarget: Sendable, Equatable {
    public var slot: UInt32
    public var group: UInt16
    public init(slot: UInt32, group: UInt16) {
        self.slot = slot
        self.group = group
    }
    public static let gone = SlotTarget(slot: .max, group: 0)
}

extension BalancerSpec {
    /// Where each node slot of this layout goes in `new`, by identity (group name,
    /// address, port; a sorry server as such), never by position: the flows of a node
    /// that stays keep it, whatever moved around it.
    public func slotRemap(to new: BalancerSpec) -> [SlotTarget] {
        struct Key: Hashable {
            var group: String
            var address: IPAddress
            var port: UInt16
            var sorry: Bool
        }
        var targets: [Key: SlotTarget] = [:]
        var slot: UInt32 = 0
        for (gi, g) in new.groups.enumerated() {
            for n in g.nodes {
                targets[Key(group: g.name, address: n.address, port: n.port, sorry: false)] = SlotTarget(slot: slot, group: UInt16(gi))
                slot += 1
            }
            if let sorry = g.sorry {
                targets[Key(group: g.name, address: sorry.address, port: sorry.port, sorry: true)] = SlotTarget(slot: slot, group: UInt16(gi))
            }
            slot += 1  // the sorry server's, or reserved
        }
        var out: [SlotTarget] = []
        out.reserveCapacity(nodeSlotCount)
        for g in groups {
            for n in g.nodes { out.append(targets[Key(group: g.name, address: n.address, port: n.port, sorry: false)] ?? .gone) }
            out.append(g.sorry.flatMap { targets[Key(group: g.name, address: $0.address, port: $0.port, sorry: true)] } ?? .gone)
        }
        return out
    }
}

extension Balancer {
    /// A reload, on the worker's thread: this balancer (built for the new layout over
    /// `old`'s flow table) takes over from `old`. The flows are renumbered to the new
    /// node slots (`remap`, by node identity; a flow whose node is gone leaves the table),
    /// the totals that outlive a layout are carried over, and offloaded flows keep
    /// forwarding in XDP where the new layout writes them the same (`adoptOffload`); the
    /// rest go back to the worker, which offers them again under the new layout.
    public func takeOver(from old: Balancer, remap: [SlotTarget]) {
        adoptOffload(from: old, remap: remap)  // the program's counts so far into the old counters first
        counters.carryOver(from: old.counters)
        old.flows.remap { oldSlot in
            let i = Int(oldSlot)
            guard i < remap.count, remap[i].slot != SlotTarget.gone.slot else { return nil }
            return (slot: remap[i].slot, group: remap[i].group)
        }
    }
}

/// What differs between two layouts when only nodes' weights and enabled switches do: a
/// change the workers take as commands, with no new layout (no flow-table walk).
public enum LayoutAdjustment: Sendable, Equatable {
    case weights(group: Int, [Int])
    case enabled(group: Int, node: Int, Bool)

    /// The adjustments from `old` to `new`; nil when the layout itself changes (groups,
    /// nodes, addresses, ports, schedulers, anything but weights and enabled switches).
    public static func between(_ old: [GroupSpec], to new: [GroupSpec]) -> [LayoutAdjustment]? {
        guard old.count == new.count else { return nil }
        func layout(_ g: GroupSpec) -> GroupSpec {
            var g = g
            for i in g.nodes.indices {
                g.nodes[i].weight = 0
                g.nodes[i].enabled = true
            }
            return g
        }
        var out: [LayoutAdjustment] = []
        for (gi, (a, b)) in zip(old, new).enumerated() {
            guard layout(a) == layout(b) else { return nil }
            if a.nodes.map(\.weight) != b.nodes.map(\.weight) { out.append(.weights(group: gi, b.nodes.map(\.weight))) }
            for (ni, (x, y)) in zip(a.nodes, b.nodes).enumerated() where x.enabled != y.enabled {
                out.append(.enabled(group: gi, node: ni, y.enabled))
            }
        }
        return out
    }
}
