/// A route as the per-reply scan reads it: the prefix as masks over the 128-bit
/// address, and for a resolved gateway the Ethernet addresses ready to store.
@usableFromInline struct HotRoute {
    @usableFromInline var highMask: UInt64
    @usableFromInline var lowMask: UInt64
    @usableFromInline var high: UInt64
    @usableFromInline var low: UInt64
    @usableFromInline var interface: Int
    /// `onLink`, `resolved` (a gateway with a MAC) or `unresolved` (a gateway without).
    @usableFromInline var kind: UInt8
    @usableFromInline var isIPv4: Bool
    @usableFromInline var ethernet: EthernetAddresses

    @usableFromInline static let onLink: UInt8 = 0
    @usableFromInline static let resolved: UInt8 = 1
    @usableFromInline static let unresolved: UInt8 = 2
}

/// A route toward clients, as the kernel's FIB (or a `routes:` override) gives it.
public struct ClientRoute: Sendable, Equatable {
    public var prefix: IPAddress
    public var prefixLength: Int
    public var interface: Int
    /// A gateway's MAC; nil for an on-link route (the destination is its own next hop),
    /// or for a gateway not resolved yet (`gateway` is then set).
    public var gatewayMAC: MACAddress?
    public var gateway: IPAddress?
    /// A `routes:` override: looked at before every route of the kernel's.
    public var isOverride: Bool

    public init(prefix: IPAddress, prefixLength: Int, interface: Int, gateway: IPAddress? = nil,
                gatewayMAC: MACAddress? = nil, isOverride: Bool = false) {
        self.prefix = prefix
        self.prefixLength = prefixLength
        self.interface = interface
        self.gateway = gateway
        self.gatewayMAC = gatewayMAC
        self.isOverride = isOverride
    }

    @inlinable public var isOnLink: Bool { gateway == nil }

    /// Prefix length counted in the 128-bit (IPv4-mapped) space.
    @inlinable
    public var mappedLength: Int { prefix.isIPv4 ? prefixLength + 96 : prefixLength }
}

/// What a worker needs to send NAT replies the way the kernel would: the routes toward
/// clients on data-plane interfaces (longest prefix first) and the MACs of on-link
/// neighbours. Immutable; the control plane builds a new one when the kernel's routes or
/// neighbours change, and each worker swaps it in between batches. The per-reply lookup
/// (`Balancer.nextHop`) scans the (few) `hot` routes and probes a hash: no system call,
/// no lock. A route covers only addresses of its own family.
public final class RoutingTable: @unchecked Sendable {
    /// Overrides first, then the longest prefix; `hot` holds the same, as the scan reads it.
    public let routes: [ClientRoute]
    @usableFromInline let routeCount: Int
    @usableFromInline let neighbors: NeighborTable
    /// Bumped by the control plane with every new table.
    public let version: UInt64

    public static let empty = RoutingTable(routes: [], neighbors: [:], version: 0)

    @usableFromInline let hot: UnsafeMutablePointer<HotRoute>

    /// - Parameters:
    ///   - neighbors: (interface, address) → MAC, for on-link next hops.
    ///   - interfaceMACs: this LB's MAC per interface, the Ethernet source of replies
    ///     (prepared with each gateway's MAC once here, rather than per reply).
    public init(routes: [ClientRoute], neighbors: [NeighborKey: MACAddress], version: UInt64,
                interfaceMACs: [MACAddress] = []) {
        // Overrides first, then the longest prefix.
        let sorted = routes.sorted {
            $0.isOverride != $1.isOverride ? $0.isOverride : $0.mappedLength > $1.mappedLength
        }
        self.routes = sorted
        routeCount = sorted.count
        hot = .allocate(capacity: max(1, sorted.count))
        hot.initialize(from: sorted.map { r in
            let bits = r.mappedLength
            let highMask: UInt64 = bits <= 0 ? 0 : bits >= 64 ? ~0 : ~(~0 >> UInt64(bits))
            let lowBits = bits - 64
            let lowMask: UInt64 = lowBits <= 0 ? 0 : lowBits >= 64 ? ~0 : ~(~0 >> UInt64(lowBits))
            let source = r.interface < interfaceMACs.count ? interfaceMACs[r.interface] : .zero
            return HotRoute(highMask: highMask, lowMask: lowMask, high: r.prefix.high & highMask, low: r.prefix.low & lowMask,
                            interface: r.interface,
                            kind: r.gateway == nil ? HotRoute.onLink : r.gatewayMAC == nil ? HotRoute.unresolved : HotRoute.resolved,
                            isIPv4: r.prefix.isIPv4,
                            ethernet: EthernetAddresses(toward: r.gatewayMAC, from: source))
        }, count: sorted.count)
        self.neighbors = NeighborTable(neighbors)
        self.version = version
    }

    deinit { hot.deallocate() }

    @inlinable
    public func neighbor(_ address: IPAddress, interface: Int) -> MACAddress? {
        neighbors.lookup(NeighborKey(interface: interface, address: address))
    }
}

/// A neighbour on a data-plane interface.
public struct NeighborKey: Hashable, Sendable {
    public var interface: Int
    public var address: IPAddress

    @inlinable
    public init(interface: Int, address: IPAddress) {
        self.interface = interface
        self.address = address
    }

    @inlinable @inline(__always)
    var hash: UInt64 {
        let h = (address.low ^ address.high &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(interface)) &* 0xC2B2_AE3D_27D4_EB4F
        return h ^ (h >> 29)
    }
}

/// An immutable open-addressing map from a neighbour to its MAC.
@usableFromInline final class NeighborTable {
    @usableFromInline let keys: UnsafeMutablePointer<NeighborKey>
    @usableFromInline let macs: UnsafeMutablePointer<UInt64>  // MAC + 1 << 48 when used
    @usableFromInline let mask: Int

    init(_ entries: [NeighborKey: MACAddress]) {
        var size = 8
        while size < entries.count * 2 { size <<= 1 }
        mask = size - 1
        keys = .allocate(capacity: size)
        keys.initialize(repeating: NeighborKey(interface: -1, address: .zero), count: size)
        macs = .allocate(capacity: size)
        macs.initialize(repeating: 0, count: size)
        for (key, mac) in entries {
            var i = Int(truncatingIfNeeded: key.hash) & mask
            while macs[i] != 0 { i = (i + 1) & mask }
            keys[i] = key
            macs[i] = mac.value | 1 << 48
        }
    }

    deinit {
        keys.deallocate()
        macs.deallocate()
    }

    @inlinable
    func lookup(_ key: NeighborKey) -> MACAddress? {
        var i = Int(truncatingIfNeeded: key.hash) & mask
        while true {
            let v = macs[i]
            if v == 0 { return nil }
            if keys[i] == key { return MACAddress(value: v) }
            i = (i &+ 1) & mask
        }
    }
}

/// What a worker learnt itself, from ARP requests and neighbour solicitations for its
/// VIPs (as the kernel learns from requests for its own addresses): the clients on its
/// links, which the kernel never sees, since their frames go to the workers. So the first
/// reply to a new on-link client needs no resolution. Fixed size, written and read by
/// one worker; a newer entry replaces the one in its slot.
public final class LearnedNeighbors {
    @usableFromInline let keys: UnsafeMutablePointer<NeighborKey>
    @usableFromInline let macs: UnsafeMutablePointer<UInt64>
    @usableFromInline let mask: Int

    public init(capacity: Int = 4096) {
        var size = 8
        while size < capacity { size <<= 1 }
        mask = size - 1
        keys = .allocate(capacity: size)
        keys.initialize(repeating: NeighborKey(interface: -1, address: .zero), count: size)
        macs = .allocate(capacity: size)
        macs.initialize(repeating: 0, count: size)
    }

    deinit {
        keys.deallocate()
        macs.deallocate()
    }

    @inlinable
    public func learn(_ key: NeighborKey, _ mac: MACAddress) {
        let i = Int(truncatingIfNeeded: key.hash) & mask
        keys[i] = key
        macs[i] = mac.value | 1 << 48
    }

    @inlinable
    public func lookup(_ key: NeighborKey) -> MACAddress? {
        let i = Int(truncatingIfNeeded: key.hash) & mask
        guard macs[i] != 0, keys[i] == key else { return nil }
        return MACAddress(value: macs[i])
    }
}

/// A destination a NAT reply could not be sent to, and why: for the control plane to
/// resolve, and for status.
public struct UnroutedReply: Sendable, Equatable {
    public enum Reason: String, Sendable {
        /// No route covers the destination.
        case noRoute = "no route"
        /// The route's next hop (the destination itself, on-link, or a gateway) has no MAC yet.
        case unresolved = "next hop unresolved"
    }

    public var destination: IPAddress
    /// The next hop to resolve (the destination on-link, else the gateway).
    public var nextHop: IPAddress
    public var interface: Int
    public var reason: Reason

    public init(destination: IPAddress, nextHop: IPAddress, interface: Int, reason: Reason) {
        self.destination = destination
        self.nextHop = nextHop
        self.interface = interface
        self.reason = reason
    }
}
