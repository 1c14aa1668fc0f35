/// A `routes:` override: NAT replies to a client prefix go out of `interface`, to `via`
/// (a router), or, without `via`, to the client itself on the link. Without overrides,
/// replies follow the kernel's routing table.
public struct RouteSpec: Sendable, Equatable {
    public var prefix: IPAddress
    public var prefixLength: Int
    /// An index into the data-plane interfaces.
    public var interface: Int
    public var via: IPAddress?

    public init(prefix: IPAddress, prefixLength: Int, interface: Int, via: IPAddress?) {
        self.prefix = prefix
        self.prefixLength = prefixLength
        self.interface = interface
        self.via = via
    }
}

/// A route of the kernel's main table, as rtnetlink gives it: by interface index
/// (ifindex), which the data plane maps to its own interface numbers.
public struct KernelRoute: Hashable, Sendable {
    public var prefix: IPAddress
    public var prefixLength: Int
    public var ifindex: Int32
    /// nil: on-link (the destination is its own next hop).
    public var gateway: IPAddress?
    public var metric: UInt32

    public init(prefix: IPAddress, prefixLength: Int, ifindex: Int32, gateway: IPAddress?, metric: UInt32) {
        self.prefix = prefix
        self.prefixLength = prefixLength
        self.ifindex = ifindex
        self.gateway = gateway
        self.metric = metric
    }
}

/// A neighbour as the kernel's table names it: by interface index, not by data-plane
/// interface number, so that the one table serves nodes, gateways and on-link clients.
public struct KernelNeighborKey: Hashable, Sendable {
    public var ifindex: Int32
    public var address: IPAddress

    public init(ifindex: Int32, address: IPAddress) {
        self.ifindex = ifindex
        self.address = address
    }
}

/// What the workers' `RoutingTable` is built from: the `routes:` overrides, then every
/// kernel route out of a data-plane interface (the lowest metric per prefix), with the
/// MACs of their gateways; and every neighbour on a data-plane interface, for on-link
/// next hops. A value, so that the control plane builds a new table (and bumps its
/// version) only when this changes, not on every refresh.
public struct RoutingInput: Sendable, Equatable {
    public var routes: [ClientRoute] = []
    public var neighbors: [NeighborKey: MACAddress] = [:]

    public init() {}

    /// - Parameters:
    ///   - overrides: the `routes:` overrides, their interfaces already checked.
    ///   - kernelRoutes: the kernel's routes; those out of other interfaces are left out.
    ///   - neighbors: the kernel's neighbour table; entries on other interfaces are left out.
    public init(overrides: [RouteSpec], kernelRoutes: [KernelRoute], neighbors: [KernelNeighborKey: MACAddress],
                ifindexes: [Int32]) {
        for (key, mac) in neighbors {
            if let i = ifindexes.firstIndex(of: key.ifindex) { self.neighbors[NeighborKey(interface: i, address: key.address)] = mac }
        }
        for r in overrides {
            routes.append(ClientRoute(prefix: r.prefix, prefixLength: r.prefixLength, interface: r.interface,
                                      gateway: r.via,
                                      gatewayMAC: r.via.flatMap { neighbors[KernelNeighborKey(ifindex: ifindexes[r.interface], address: $0)] },
                                      isOverride: true))
        }
        var seen = Set<String>()
        for e in kernelRoutes.sorted(by: { $0.metric < $1.metric }) {
            guard let i = ifindexes.firstIndex(of: e.ifindex), seen.insert("\(e.prefix)/\(e.prefixLength)").inserted else { continue }
            routes.append(ClientRoute(prefix: e.prefix, prefixLength: e.prefixLength, interface: i, gateway: e.gateway,
                                      gatewayMAC: e.gateway.flatMap { neighbors[KernelNeighborKey(ifindex: e.ifindex, address: $0)] }))
        }
    }

    /// Route gateways with no MAC yet, each with its interface number: the kernel is asked
    /// to resolve them, or replies through them stay unsent. (The unspecified address is
    /// no gateway to resolve.)
    public var unresolvedGateways: [(address: IPAddress, interface: Int)] {
        routes.compactMap { r in
            guard let gateway = r.gateway, r.gatewayMAC == nil, gateway != .zero else { return nil }
            return (gateway, r.interface)
        }
    }
}
