import FulcrumCore
import FulcrumDataplane

/// Fulcrum's configuration file, as read and validated. Docs/CONFIG.md describes every
/// field; this is the one place that knows their names.
public struct FulcrumConfig: Sendable, Equatable {
    public struct Interface: Sendable, Equatable {
        public var name: String
        public var queues: Int
    }

    public enum XDPAttachMode: String, Sendable, Equatable, CaseIterable {
        /// Native only: fail if the driver refuses.
        case native
        /// Native, falling back to generic (logged).
        case auto
    }

    public struct Dataplane: Sendable, Equatable {
        public var interfaces: [Interface]
        public var cores: [Int]?
        public var flowTableSize = 1 << 20
        public var maxNodeSlots = 4096
        public var hugePages = true
        public var xdpMode = XDPAttachMode.auto
        public var timeouts = FlowTimeouts()
        public var framesPerSocket = 4096
        public var ringSize = 2048
    }

    public struct Route: Sendable, Equatable {
        public var prefix: IPAddress
        public var prefixLength: Int
        public var interface: String
        public var via: IPAddress
    }

    /// A node (or sorry server) of a group: exactly what the data plane takes.
    public typealias Node = NodeSpec

    public struct Group: Sendable, Equatable {
        public var name: String
        public var vip: IPAddress
        public var proto: UInt8
        public var ports: [UInt16]
        public var method: ForwardingMethod
        public var scheduler: SchedulerKind
        public var interface: String
        public var nodes: [Node]
        public var sorry: Node?
        /// Where the group starts in the file, for errors found later.
        public var line: Int?
    }

    public var file: String
    public var nodeName: String
    public var dataplane: Dataplane
    public var routes: [Route]
    public var groups: [Group]

    func interfaceIndex(_ name: String) -> Int {
        dataplane.interfaces.firstIndex { $0.name == name } ?? 0
    }

    /// The groups as the data plane takes them.
    public var groupSpecs: [GroupSpec] {
        groups.map { g in
            GroupSpec(name: g.name, vip: g.vip, proto: g.proto, ports: g.ports, method: g.method, scheduler: g.scheduler,
                      nodes: g.nodes, sorry: g.sorry,
                      interface: interfaceIndex(g.interface))
        }
    }

    public var routeSpecs: [RouteSpec] {
        routes.map { RouteSpec(prefix: $0.prefix, prefixLength: $0.prefixLength, interface: interfaceIndex($0.interface), via: $0.via) }
    }

    public func dataplaneOptions(bpfObject: String? = nil) -> DataplaneOptions {
        DataplaneOptions(interfaces: dataplane.interfaces.map(\.name), queues: dataplane.interfaces.first?.queues ?? 1,
                         cores: dataplane.cores, flowTableSize: dataplane.flowTableSize,
                         maxNodeSlots: dataplane.maxNodeSlots, timeouts: dataplane.timeouts,
                         framesPerSocket: dataplane.framesPerSocket, ringSize: dataplane.ringSize,
                         allowGenericXDP: dataplane.xdpMode == .auto, bpfObject: bpfObject, hugePages: dataplane.hugePages)
    }
}
