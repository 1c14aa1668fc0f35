import FulcrumCore
import FulcrumTestSupport
import Testing

/// A new layout keeps each node's flows by the node's identity (group, address, port; a
/// sorry server as such), never by its position: `BalancerSpec.slotRemap`; and a change of
/// weights or enabled switches alone is an adjustment, anything else a new layout.
@Suite struct SlotRemapTests {
    static let a = Fixtures.node4a, b = Fixtures.node4b, c = Fixtures.node4c
    static let sorry = IPAddress("198.18.2.99")!

    static func group(_ name: String, _ nodes: [IPAddress], port: UInt16 = 0, sorry: Bool = false) -> GroupSpec {
        GroupSpec(name: name, vip: Fixtures.vip4, proto: IPProtocol.tcp, ports: [name == "web" ? 80 : 8080], method: .mat,
                  scheduler: .rr, nodes: nodes.map { NodeSpec(address: $0, port: port, mac: Fixtures.nodeMACa) },
                  sorry: sorry ? NodeSpec(address: Self.sorry, mac: Fixtures.nodeMACa) : nil)
    }

    static func spec(_ groups: [GroupSpec]) -> BalancerSpec { BalancerSpec(groups: groups, interfaceMACs: [PacketBuilder.lbMAC]) }

    /// (group, node index or "sorry") of each old slot, in the new layout, or "gone".
    func remap(_ old: [GroupSpec], _ new: [GroupSpec]) -> [String] {
        var names: [UInt32: String] = [:]
        var slot: UInt32 = 0
        for g in new {
            for n in g.nodes {
                names[slot] = "\(g.name)/\(n.address)"
                slot += 1
            }
            names[slot] = "\(g.name)/sorry"
            slot += 1
        }
        return Self.spec(old).slotRemap(to: Self.spec(new)).map { $0.slot == SlotTarget.gone.slot ? "gone" : names[$0.slot] ?? "?" }
    }

    @Test func aNodeThatStaysKeepsItsFlowsWhereverItMoves() {
        let old = [Self.group("web", [Self.a, Self.b, Self.c])]
        // b removed, a and c swapped, a group added in front.
        let new = [Self.group("api", [Self.b]), Self.group("web", [Self.c, Self.a])]
        #expect(remap(old, new) == ["web/\(Self.a)", "gone", "web/\(Self.c)", "gone"])
    }

    @Test func theSameAddressInAnotherGroupIsAnotherNode() {
        let old = [Self.group("web", [Self.a]), Self.group("api", [Self.b])]
        let new = [Self.group("web", [Self.b]), Self.group("api", [Self.a])]
        #expect(remap(old, new) == ["gone", "gone", "gone", "gone"])
    }

    @Test func aPortIsPartOfTheIdentity() {
        let old = [Self.group("web", [Self.a], port: 8080)]
        #expect(remap(old, [Self.group("web", [Self.a], port: 8081)]) == ["gone", "gone"])
        #expect(remap(old, [Self.group("web", [Self.a], port: 8080)]) == ["web/\(Self.a)", "gone"])
    }

    @Test func aSorryServerKeepsItsFlowsAsTheSorryServer() {
        let old = [Self.group("web", [Self.a], sorry: true)]
        #expect(remap(old, [Self.group("web", [Self.b, Self.a], sorry: true)]) == ["web/\(Self.a)", "web/sorry"])
        // The sorry server's address as a plain node is not the sorry server.
        #expect(remap(old, [Self.group("web", [Self.a, Self.sorry])]) == ["web/\(Self.a)", "gone"])
    }

    /// (what the new layout changes, the adjustments expected; nil: a new layout)
    static let adjustmentCases: [(String, @Sendable ([GroupSpec]) -> [GroupSpec], [LayoutAdjustment]?)] = [
        ("nothing", { $0 }, []),
        ("a weight", { g in var g = g; g[0].nodes[1].weight = 5; return g }, [.weights(group: 0, [1, 5, 1])]),
        ("a node disabled", { g in var g = g; g[1].nodes[0].enabled = false; return g }, [.enabled(group: 1, node: 0, false)]),
        ("both", { g in var g = g; g[0].nodes[0].weight = 0; g[0].nodes[2].enabled = false; return g },
         [.weights(group: 0, [0, 1, 1]), .enabled(group: 0, node: 2, false)]),
        ("a node added", { g in var g = g; g[0].nodes.append(NodeSpec(address: IPAddress("198.18.0.99")!, mac: Fixtures.nodeMACa)); return g }, nil),
        ("a node's port", { g in var g = g; g[0].nodes[0].port = 81; return g }, nil),
        ("the scheduler", { g in var g = g; g[1].scheduler = .maglev; return g }, nil),
        ("a group removed", { g in Array(g.prefix(1)) }, nil),
        ("the groups' order", { g in g.reversed() }, nil),
    ]

    @Test(arguments: adjustmentCases.indices)
    func onlyWeightsAndEnabledSwitchesAreAdjustments(index: Int) {
        let (what, change, expected) = Self.adjustmentCases[index]
        let old = [Self.group("web", [Self.a, Self.b, Self.c]), Self.group("api", [Self.a])]
        #expect(LayoutAdjustment.between(old, to: change(old)) == expected, "\(what)")
    }
}
