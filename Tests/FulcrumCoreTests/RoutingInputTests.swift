import FulcrumCore
import FulcrumTestSupport
import Testing

/// What the data plane computes from the kernel's routes and neighbours before it touches
/// a worker: the routing input (and so whether a new routing table is due), the spec with
/// MACs and agents' weights in place, and what changed between two refreshes. Tables of
/// kernel state in, values out: no netlink, no root.
@Suite struct RoutingInputTests {
    static func a(_ text: String) -> IPAddress { IPAddress(text)! }
    static func mac(_ text: String) -> MACAddress { MACAddress(text)! }

    /// Two data-plane interfaces: kernel indexes 7 (client side) and 9 (node side).
    /// Index 3 is an interface the data plane does not own (the management one).
    static let interfaces = DataplaneInterfaces(ifindexes: [7, 9], macs: [mac("02:00:00:00:00:07"), mac("02:00:00:00:00:09")],
                                                mtus: [1500, 9000])
    static let router = a("198.18.0.1"), routerMAC = mac("02:00:00:00:00:01")
    static let router6 = a("2001:2::1"), router6MAC = mac("02:00:00:00:00:61")
    static let overrideRouter = a("198.18.0.254"), overrideRouterMAC = mac("02:00:00:00:00:fe")

    static func route(_ prefix: String, _ length: Int, ifindex: Int32, via gateway: IPAddress? = nil, metric: UInt32 = 0) -> KernelRoute {
        KernelRoute(prefix: a(prefix), prefixLength: length, ifindex: ifindex, gateway: gateway, metric: metric)
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var overrides: [RouteSpec] = []
        var kernel: [KernelRoute]
        var neighbors: [KernelNeighborKey: MACAddress]
        /// The routes in the input, in order.
        var routes: [ClientRoute]
        var onLinkNeighbors: [NeighborKey: MACAddress]
        var unresolved: [String]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "a default route out of a data-plane interface, its gateway resolved",
             kernel: [route("0.0.0.0", 0, ifindex: 7, via: router)],
             neighbors: [KernelNeighborKey(ifindex: 7, address: router): routerMAC],
             routes: [ClientRoute(prefix: a("0.0.0.0"), prefixLength: 0, interface: 0, gateway: router, gatewayMAC: routerMAC)],
             onLinkNeighbors: [NeighborKey(interface: 0, address: router): routerMAC],
             unresolved: []),
        Case(name: "routes and neighbours of an interface the data plane does not own are left out",
             kernel: [route("0.0.0.0", 0, ifindex: 3, via: router), route("198.18.2.0", 24, ifindex: 9)],
             neighbors: [KernelNeighborKey(ifindex: 3, address: router): routerMAC,
                         KernelNeighborKey(ifindex: 9, address: a("198.18.2.11")): mac("02:00:00:00:02:11")],
             routes: [ClientRoute(prefix: a("198.18.2.0"), prefixLength: 24, interface: 1)],
             onLinkNeighbors: [NeighborKey(interface: 1, address: a("198.18.2.11")): mac("02:00:00:00:02:11")],
             unresolved: []),
        Case(name: "one route per prefix: the lowest metric's, whatever the kernel's order",
             kernel: [route("0.0.0.0", 0, ifindex: 9, via: a("198.18.2.1"), metric: 200), route("0.0.0.0", 0, ifindex: 7, via: router, metric: 100)],
             neighbors: [:],
             routes: [ClientRoute(prefix: a("0.0.0.0"), prefixLength: 0, interface: 0, gateway: router)],
             onLinkNeighbors: [:],
             unresolved: ["198.18.0.1"]),
        Case(name: "a gateway's MAC is looked up on the route's own interface only",
             kernel: [route("0.0.0.0", 0, ifindex: 7, via: router)],
             neighbors: [KernelNeighborKey(ifindex: 9, address: router): routerMAC],
             routes: [ClientRoute(prefix: a("0.0.0.0"), prefixLength: 0, interface: 0, gateway: router)],
             onLinkNeighbors: [NeighborKey(interface: 1, address: router): routerMAC],
             unresolved: ["198.18.0.1"]),
        Case(name: "overrides come first, their via resolved on their interface; an unspecified gateway is not resolved",
             overrides: [RouteSpec(prefix: a("198.18.100.0"), prefixLength: 24, interface: 1, via: overrideRouter),
                         RouteSpec(prefix: a("198.18.101.0"), prefixLength: 24, interface: 0, via: nil)],
             kernel: [route("::", 0, ifindex: 7, via: router6, metric: 10), route("2001:db8::", 32, ifindex: 7, via: .zero, metric: 20)],
             neighbors: [KernelNeighborKey(ifindex: 9, address: overrideRouter): overrideRouterMAC],
             routes: [ClientRoute(prefix: a("198.18.100.0"), prefixLength: 24, interface: 1, gateway: overrideRouter,
                                  gatewayMAC: overrideRouterMAC, isOverride: true),
                      ClientRoute(prefix: a("198.18.101.0"), prefixLength: 24, interface: 0, isOverride: true),
                      ClientRoute(prefix: a("::"), prefixLength: 0, interface: 0, gateway: router6),
                      ClientRoute(prefix: a("2001:db8::"), prefixLength: 32, interface: 0, gateway: .zero)],
             onLinkNeighbors: [NeighborKey(interface: 1, address: overrideRouter): overrideRouterMAC],
             unresolved: ["2001:2::1"]),
        Case(name: "nothing known: an empty input",
             kernel: [], neighbors: [:], routes: [], onLinkNeighbors: [:], unresolved: []),
    ]

    @Test(arguments: cases)
    func theRoutingInput(_ c: Case) {
        let input = RoutingInput(overrides: c.overrides, kernelRoutes: c.kernel, neighbors: c.neighbors, ifindexes: Self.interfaces.ifindexes)
        #expect(input.routes == c.routes)
        #expect(input.neighbors == c.onLinkNeighbors)
        #expect(input.unresolvedGateways.map { "\($0.address)" } == c.unresolved)
    }

    @Test func aNewNeighbourIsANewInput() {
        let kernel = [Self.route("0.0.0.0", 0, ifindex: 7, via: Self.router)]
        let before = RoutingInput(overrides: [], kernelRoutes: kernel, neighbors: [:], ifindexes: Self.interfaces.ifindexes)
        let after = RoutingInput(overrides: [], kernelRoutes: kernel,
                                 neighbors: [KernelNeighborKey(ifindex: 7, address: Self.router): Self.routerMAC],
                                 ifindexes: Self.interfaces.ifindexes)
        #expect(before != after)
        #expect(before.unresolvedGateways.map(\.interface) == [0] && after.unresolvedGateways.isEmpty)
    }

    // MARK: the spec

    static let node1 = a("198.18.2.11"), node2 = a("198.18.2.12"), node3 = a("198.18.2.13"), sorry = a("198.18.2.99")
    static let mac1 = mac("02:00:00:00:02:11"), mac2 = mac("02:00:00:00:02:12"), configured = mac("02:00:00:00:02:ff")
    static let sorryMAC = mac("02:00:00:00:02:99")

    static var groups: [GroupSpec] {
        [GroupSpec(name: "web", vip: Fixtures.vip4, proto: IPProtocol.tcp, ports: [80], method: .nat, scheduler: .maglev,
                   nodes: [NodeSpec(address: node1, port: 8080, weight: 2),
                           NodeSpec(address: node2, port: 8080, weight: 0),           // drained
                           NodeSpec(address: node3, port: 8080, weight: 1, mac: configured)],
                   sorry: NodeSpec(address: sorry, port: 8080), interface: 1)]
    }

    static func spec(neighbors: [KernelNeighborKey: MACAddress], weights: [NodeIdentity: Int] = [:], generation: UInt64 = 5) -> BalancerSpec {
        .resolved(groups: groups, agentWeights: weights, neighbors: neighbors, generation: generation, interfaces: interfaces,
                  flowTableCapacity: 4096, timeouts: FlowTimeouts(), maxNodeSlots: 64)
    }

    static func id(_ address: IPAddress) -> NodeIdentity { NodeIdentity(group: "web", address: address, port: 8080) }

    @Test func theSpecTakesMACsFromTheNeighbourTableOnTheGroupsInterface() {
        let spec = Self.spec(neighbors: [
            KernelNeighborKey(ifindex: 9, address: Self.node1): Self.mac1,
            KernelNeighborKey(ifindex: 7, address: Self.node2): Self.mac2,             // the other interface: not this node's
            KernelNeighborKey(ifindex: 9, address: Self.node3): Self.mac2,             // configured MAC wins
            KernelNeighborKey(ifindex: 9, address: Self.sorry): Self.sorryMAC,
        ])
        let web = spec.groups[0]
        #expect(web.nodes.map(\.mac) == [Self.mac1, nil, Self.configured])
        #expect(web.sorry?.mac == Self.sorryMAC)
        #expect(spec.generation == 5 && spec.interfaceMACs == Self.interfaces.macs && spec.interfaceMTUs == [1500, 9000])
        #expect(spec.flowTableCapacity == 4096 && spec.maxNodeSlots == 64 && spec.returnRoutes.isEmpty)
        #expect(spec.unresolvedNeighbors.map { "\($0.address)" } == ["198.18.2.12"])
        #expect(spec.unresolvedNeighbors.map(\.interface) == [1])
    }

    /// (agents' weights, the weights in the spec): a drained node stays drained.
    static let weightCases: [([NodeIdentity: Int], [Int])] = [
        ([:], [2, 0, 1]),
        ([id(node1): 150], [150, 0, 1]),
        ([id(node1): 150, id(node2): 90, id(node3): 40], [150, 0, 40]),
        ([NodeIdentity(group: "other", address: node1, port: 8080): 7, NodeIdentity(group: "web", address: node1, port: 80): 7], [2, 0, 1]),
    ]

    @Test(arguments: weightCases)
    func theAgentsWeightsReplaceTheConfiguredOnes(_ weights: [NodeIdentity: Int], _ expected: [Int]) {
        #expect(Self.spec(neighbors: [:], weights: weights).groups[0].nodes.map(\.weight) == expected)
    }

    @Test func aRefreshTellsTheWorkersOnlyTheMACsThatMoved() {
        let before = Self.spec(neighbors: [KernelNeighborKey(ifindex: 9, address: Self.node1): Self.mac1])
        #expect(before.neighborChanges(from: before).isEmpty)
        let after = Self.spec(neighbors: [
            KernelNeighborKey(ifindex: 9, address: Self.node2): Self.mac2,   // learnt
            KernelNeighborKey(ifindex: 9, address: Self.sorry): Self.sorryMAC,
        ])                                                                    // node1's lost
        #expect(after.neighborChanges(from: before) == [
            .node(group: 0, node: 0, mac: nil),
            .node(group: 0, node: 1, mac: Self.mac2),
            .sorry(group: 0, mac: Self.sorryMAC),
        ])
        #expect(after.unresolvedNeighbors.map { "\($0.address)" } == ["198.18.2.11"])
    }
}
