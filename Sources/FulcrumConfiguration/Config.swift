import FulcrumCore
import FulcrumDataplane

/// Fulcrum's configuration file, as read and validated. Docs/CONFIG.md describes every
/// field; this is the one place that knows their names.
public struct FulcrumConfig: Sendable, Equatable {
    public struct Interface: Sendable, Equatable {
        public var name: String
        public var queues: Int
        /// Whether offloaded flows may leave by this interface. A frame the XDP program
        /// sends (XDP_TX, redirect) is lost on a veth whose peer runs no XDP program and
        /// has GRO off; a physical NIC needs nothing. Off: flows leaving here stay with the
        /// worker, which sends through its AF_XDP socket.
        public var offload = true

        public init(name: String, queues: Int, offload: Bool = true) {
            self.name = name
            self.queues = queues
            self.offload = offload
        }
    }

    public enum XDPAttachMode: String, Sendable, Equatable, CaseIterable {
        /// Native only: fail if the driver refuses.
        case native
        /// Native, falling back to generic (logged).
        case auto
    }

    /// Which flows the XDP program forwards itself once a worker decided them.
    public enum OffloadMode: String, Sendable, Equatable, CaseIterable {
        /// TCP after its handshake, UDP from its second datagram.
        case established
        /// None: every frame goes through a worker.
        case off
    }

    /// The admission budget for new TCP connections (fulcrum_state in the ABI header).
    public struct Admission: Sendable, Equatable {
        /// Per CPU that runs the XDP program (about one per receive queue); 0 = no limit.
        /// Set it below what one worker can take (`fulcrum-bench`), with room for the
        /// known flows' packets.
        public var newConnectionsPerSecond: Int = 100_000
        /// Openings admitted at once after a quiet spell: at most the RX ring's size, or a
        /// burst could fill the ring and cost known flows their packets.
        public var burst: Int = 1_000
    }

    public struct Dataplane: Sendable, Equatable {
        public var interfaces: [Interface]
        public var admission = Admission()
        public var cores: [Int]?
        public var flowTableSize = 1 << 20
        public var maxNodeSlots = 4096
        public var hugePages = true
        public var xdpMode = XDPAttachMode.auto
        public var timeouts = FlowTimeouts()
        public var framesPerSocket = 4096
        /// After its last frame, how long a worker keeps looking for the next before it
        /// sleeps (microseconds; 0: it sleeps at once). ACK-clocked traffic arrives a few
        /// frames at a time: a wake-up per burst costs more than the burst. An idle LB
        /// spins no longer than this after the last frame.
        public var idleSpinMicroseconds = DataplaneOptions.defaultIdleSpinMicroseconds
        public var ringSize = 2048
        /// Established flows forwarded by the XDP program (Docs/ARCHITECTURE.md, "Offload").
        public var offload = OffloadMode.established
        /// Offload entries per queue: a power of two; a MAT flow takes one, a NAT flow two.
        public var offloadEntries = DataplaneOptions.defaultOffloadEntries
    }

    /// A `routes:` override. Without it, NAT replies follow the kernel's routing table.
    public struct Route: Sendable, Equatable {
        public var prefix: IPAddress
        public var prefixLength: Int
        public var interface: String
        /// nil: the clients of the prefix are on the link.
        public var via: IPAddress?
    }

    /// A node (or sorry server) of a group: exactly what the data plane takes.
    public typealias Node = NodeSpec

    /// A group's health check (Docs/CONFIG.md).
    public struct HealthCheck: Sendable, Equatable {
        public enum Kind: String, Sendable, Equatable, CaseIterable {
            case tcp, http, https, udp, icmp
        }
        public var kind: Kind
        /// Seconds between checks of a node, and how long one may take.
        public var interval: Double = 1
        public var timeout: Double = 0.5
        public var rise = 2
        public var fall = 2
        /// The port checked; nil: the node's port (NAT), else the group's first port.
        public var port: UInt16?
        /// HTTP: the path, the Host header (default: the node's address), the status
        /// codes that count as up.
        public var path = "/"
        public var host: String?
        public var expect: [Int] = [200]
        /// HTTP(S): text the answer's body must contain; UDP: text the answer must contain.
        public var expectText: String?
        /// UDP: what to send; any answer counts as up.
        public var send = "fulcrum health check\n"
    }

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
        public var healthCheck: HealthCheck?
        /// Weights from the nodes' agents' load reports (`dynamic_weights: cpu`).
        public var dynamicWeights = false
        /// Nodes whose agents announce themselves on the group's segment are added.
        public var acceptDiscoveredNodes = false
        /// Nodes with a check of their own, in place of `healthCheck` (by address and port).
        public var nodeHealthChecks: [NodeCheckKey: HealthCheck] = [:]

        /// The check a node gets: its own, else the group's.
        public func check(for node: Node) -> HealthCheck? {
            nodeHealthChecks[NodeCheckKey(address: node.address, port: node.port)] ?? healthCheck
        }
        /// Where the group starts in the file, for errors found later.
        public var line: Int?
    }

    public struct NodeCheckKey: Hashable, Sendable {
        public var address: IPAddress
        public var port: UInt16
        public init(address: IPAddress, port: UInt16) {
            self.address = address
            self.port = port
        }
    }

    /// The event log (Docs/OPERATIONS.md).
    public struct Events: Sendable, Equatable {
        /// The JSON-lines file; nil keeps events in memory only.
        public var file: String?
        public var maxBytes = 10 << 20
        public var keep = 3
        public var memory = 1000
    }

    /// The control API (Docs/OPERATIONS.md). No `api:` section: no API.
    public struct API: Sendable, Equatable {
        /// host:port pairs; IPv6 as [addr]:port.
        public var listen: [String] = ["127.0.0.1:9180"]
        public var unixSocket: String?
        /// The full-access bearer token is the file's content (trimmed); never in the YAML.
        public var tokenFile: String
        /// Optional: a token for GET only.
        public var readonlyTokenFile: String?
        /// Optional TLS: PEM certificate chain and private key.
        public var tlsCertificate: String?
        public var tlsKey: String?
        /// Largest request body accepted.
        public var maxBodyBytes = 1 << 20
        /// Connections open at once; past it the oldest idle one is closed (`ConnectionGovernor`).
        public var maxConnections = 256
        /// Seconds a new connection has for its first request's headers, and a request for its body.
        public var requestTimeout = 10.0
        /// Seconds a kept-alive connection may wait for its next request.
        public var idleTimeout = 60.0
    }

    public var file: String
    public var nodeName: String
    public var events = Events()
    public var api: API?
    /// The node agents' listener (Docs/OPERATIONS.md). No `agent:` section: none.
    public var agent: Agent?

    public struct Agent: Sendable, Equatable {
        public var port: UInt16 = 65002
        /// The shared HMAC key is this file's content (at least 16 bytes).
        public var keyFile: String
        /// Reporting intervals without a report after which a node's static weight applies.
        public var silence = 3
        /// Each report's share in the smoothed load; the least share of its weight a loaded
        /// node keeps; the least change applied (as a share of the static weight).
        public var smoothing = 0.3
        public var floor = 0.1
        public var hysteresis = 0.1
        /// A discovered node whose agent is silent this long (seconds) is removed, or
        /// disabled (`discoveredExpiry`).
        public var discoveredTimeout = 10.0
        public var discoveredExpiry = DiscoveredExpiry.remove

        /// The discovery policy's own type (FulcrumCore), so the setting needs no translation.
        public typealias DiscoveredExpiry = DiscoveryExpiry
    }
    /// The active/standby pair (Docs/OPERATIONS.md). No `cluster:` section: standalone and
    /// active, as a single LB. Node-local: never synced to the peer.
    public var cluster: Cluster?

    public struct Cluster: Sendable, Equatable {
        public enum Role: String, Sendable, Equatable, CaseIterable { case master, slave }
        public enum Failback: String, Sendable, Equatable, CaseIterable { case manual, auto }
        public enum DualActive: String, Sendable, Equatable, CaseIterable {
            case masterStays = "master_stays", bothStandDown = "both_stand_down"
        }
        /// Addresses that move with the active LB (NAT nodes' gateways): added to the
        /// interface (rtnetlink) and announced when this LB becomes active, removed before
        /// its peer hears it has left.
        public var floatingAddresses: [FloatingAddress] = []
        public struct FloatingAddress: Sendable, Equatable {
            public var address: IPAddress
            public var prefixLength: Int
            public var interface: String
        }

        public struct Interconnect: Sendable, Equatable {
            public var local: IPAddress
            public var peer: IPAddress
            public init(local: IPAddress, peer: IPAddress) {
                self.local = local
                self.peer = peer
            }
        }
        public var role: Role
        /// The peer's node name (its `node.name`), for status and events.
        public var peer: String
        /// Heartbeats, hand-overs and config pushes (UDP, on every interconnect).
        public var port: UInt16 = 65010
        /// The flow sync (`flow_sync.enabled`): the active streams its flows to the standby,
        /// so a failover keeps established connections under every scheduler.
        public var flowSync = true
        /// Its UDP port on the interconnects (`flow_sync.port`; by default `port` + 1).
        public var flowSyncPort: UInt16 = 65011
        public var interconnects: [Interconnect]
        /// Seconds between heartbeats, and of silence on every interconnect before the
        /// peer counts as lost.
        public var interval = 0.05
        public var timeout = 0.15
        /// The pair's shared HMAC key is this file's bytes (at least 16).
        public var keyFile: String
        /// Addresses an LB that has lost its peer must reach (ICMP echo) to be active.
        public var npTargets: [IPAddress] = []
        public var failback = Failback.manual
        public var dualActive = DualActive.masterStays
        /// What makes this LB unhealthy (it leaves active, the peer takes over at once).
        /// Every data-plane interface's link is watched without being listed.
        public var monitors: [Monitor] = []

        public init(role: Role, peer: String, interconnects: [Interconnect], keyFile: String) {
            self.role = role
            self.peer = peer
            self.interconnects = interconnects
            self.keyFile = keyFile
        }

        public struct Monitor: Sendable, Equatable {
            public enum Kind: Sendable, Equatable {
                /// The interface's link: down (no carrier, or set down) is a failure, seen
                /// from the kernel's rtnetlink message.
                case link(String)
                /// ICMP echo to the address every `interval`; `retry + 1` echoes in a row
                /// unanswered within `timeout` is a failure; one answer is a recovery.
                case ip(IPAddress)
                /// Every data-plane worker's loop count, read every `interval`: one that
                /// has not moved for `timeout` is a stuck worker, a failure. Always on (with
                /// the defaults) unless listed.
                case dataplane
            }
            public enum Action: String, Sendable, Equatable {
                /// A failure makes this LB unhealthy: it leaves active (the default).
                case failover
                /// A failure is an event and an alarm only.
                case alarm
            }
            public var kind: Kind
            public var action = Action.failover
            public var interval = 1.0
            public var timeout = 1.0
            public var retry = 2
            public init(kind: Kind, action: Action = .failover, interval: Double = 1, timeout: Double = 1, retry: Int = 2) {
                self.kind = kind
                self.action = action
                self.interval = interval
                self.timeout = timeout
                self.retry = retry
            }
            /// A dataplane monitor's, and the one every pair runs when none is listed: read
            /// every 0.1 s, stuck after 1 s (a worker's loop turns every 10 ms even idle).
            public static let dataplaneDefaults = (interval: 0.1, timeout: 1.0)
        }
    }

    /// Where changes made through the API are kept (Docs/OPERATIONS.md: which wins at start).
    public var stateFile = "/var/lib/fulcrum/state.json"
    public var dataplane: Dataplane
    public var routes: [Route]
    public var groups: [Group]
    /// The line of some fields (interfaces, cores), for errors that checks against the
    /// host or the running data plane find after parsing.
    public var lines: [String: Int] = [:]

    /// The groups as the data plane takes them, with interfaces numbered as in this file.
    public var groupSpecs: [GroupSpec] {
        get throws { try groupSpecs(on: dataplane.interfaces.map(\.name)) }
    }

    public var routeSpecs: [RouteSpec] {
        get throws { try routeSpecs(on: dataplane.interfaces.map(\.name)) }
    }

    /// The groups with interfaces numbered as in `interfaces` — the running data plane's
    /// list, on a reload, whose order and members are fixed until a restart. A group on
    /// an interface the data plane does not run on is an error that names it.
    public func groupSpecs(on interfaces: [String]) throws -> [GroupSpec] {
        var errors: [ConfigError] = []
        let specs = groups.enumerated().map { i, g in
            let index = interfaces.firstIndex(of: g.interface)
            if index == nil { errors.append(notRunning(g.interface, field: "groups[\(i)].interface", line: g.line, interfaces)) }
            return GroupSpec(name: g.name, vip: g.vip, proto: g.proto, ports: g.ports, method: g.method,
                             scheduler: g.scheduler, nodes: g.nodes, sorry: g.sorry, interface: index ?? 0)
        }
        if !errors.isEmpty { throw ConfigErrors(errors: errors) }
        return specs
    }

    public func routeSpecs(on interfaces: [String]) throws -> [RouteSpec] {
        var errors: [ConfigError] = []
        let specs = routes.enumerated().map { i, r in
            let index = interfaces.firstIndex(of: r.interface)
            if index == nil { errors.append(notRunning(r.interface, field: "routes[\(i)].interface", line: nil, interfaces)) }
            return RouteSpec(prefix: r.prefix, prefixLength: r.prefixLength, interface: index ?? 0, via: r.via)
        }
        if !errors.isEmpty { throw ConfigErrors(errors: errors) }
        return specs
    }

    func notRunning(_ name: String, field: String, line: Int?, _ interfaces: [String]) -> ConfigError {
        ConfigError(file: file, line: line, field: field, value: name,
                    message: "is not an interface of the running data plane (\(interfaces.joined(separator: ", "))); interfaces are fixed while fulcrum runs: restart it to add one")
    }

    public func dataplaneOptions(bpfObject: String? = nil) -> DataplaneOptions {
        DataplaneOptions(interfaces: dataplane.interfaces.map(\.name), queues: dataplane.interfaces.first?.queues ?? 1,
                         cores: dataplane.cores, flowTableSize: dataplane.flowTableSize,
                         maxNodeSlots: dataplane.maxNodeSlots, timeouts: dataplane.timeouts,
                         framesPerSocket: dataplane.framesPerSocket, ringSize: dataplane.ringSize,
                         allowGenericXDP: dataplane.xdpMode == .auto, bpfObject: bpfObject, hugePages: dataplane.hugePages,
                         idleSpinMicroseconds: dataplane.idleSpinMicroseconds,
                         admission: (UInt64(dataplane.admission.newConnectionsPerSecond), UInt64(dataplane.admission.burst)),
                         offload: dataplane.offload == .established, offloadEntries: dataplane.offloadEntries,
                         noOffloadInterfaces: Set(dataplane.interfaces.filter { !$0.offload }.map(\.name)))
    }
}
