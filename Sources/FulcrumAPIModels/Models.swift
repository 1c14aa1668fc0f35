// The bodies of the control API (/v1/…), shared by the server and `fulcrumctl`.
// Docs/openapi.yaml is the contract; `OpenAPIContractTests` holds these types and the
// handlers to it. Field names are the configuration file's (snake_case), so a group
// read from the API can be pasted into the file and back.

/// A node or sorry server, as configured.
public struct NodeModel: Codable, Sendable, Equatable {
    public var address: String
    /// NAT: the node's port; nil keeps the client's destination port.
    public var port: Int?
    public var weight: Int?
    public var mac: String?
    /// false: the node takes no new flows and its flows move (an operator's choice, kept
    /// in the configuration; health is separate).
    public var enabled: Bool?
    /// This node's own check, in place of its group's.
    public var healthCheck: HealthCheckModel?

    enum CodingKeys: String, CodingKey {
        case address, port, weight, mac, enabled
        case healthCheck = "health_check"
    }

    public init(address: String, port: Int? = nil, weight: Int? = nil, mac: String? = nil, enabled: Bool? = nil,
                healthCheck: HealthCheckModel? = nil) {
        self.address = address
        self.port = port
        self.weight = weight
        self.mac = mac
        self.enabled = enabled
        self.healthCheck = healthCheck
    }
}

public struct HealthCheckModel: Codable, Sendable, Equatable {
    public var type: String
    public var interval: Double?
    public var timeout: Double?
    public var rise: Int?
    public var fall: Int?
    public var port: Int?
    public var path: String?
    public var host: String?
    public var expect: [Int]?
    public var send: String?
    /// http/https: text the body must contain.
    public var expectBody: String?
    /// udp: text the answer must contain (the file's `expect` for type udp).
    public var expectText: String?

    enum CodingKeys: String, CodingKey {
        case type, interval, timeout, rise, fall, port, path, host, expect, send
        case expectBody = "expect_body"
        case expectText = "expect_text"
    }

    public init(type: String) { self.type = type }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(String.self, forKey: .type)
        interval = try c.decodeIfPresent(Double.self, forKey: .interval)
        timeout = try c.decodeIfPresent(Double.self, forKey: .timeout)
        rise = try c.decodeIfPresent(Int.self, forKey: .rise)
        fall = try c.decodeIfPresent(Int.self, forKey: .fall)
        port = try c.decodeIfPresent(Int.self, forKey: .port)
        path = try c.decodeIfPresent(String.self, forKey: .path)
        host = try c.decodeIfPresent(String.self, forKey: .host)
        send = try c.decodeIfPresent(String.self, forKey: .send)
        expectBody = try c.decodeIfPresent(String.self, forKey: .expectBody)
        // `expect`: status codes (http, https) or the answer's text (udp).
        if let codes = try? c.decodeIfPresent([Int].self, forKey: .expect) {
            expect = codes
        } else if let text = try? c.decodeIfPresent(String.self, forKey: .expect) {
            expectText = text
        } else if c.contains(.expect) {
            throw DecodingError.typeMismatch([Int].self, .init(codingPath: c.codingPath + [CodingKeys.expect],
                                                              debugDescription: "expect: status codes, or (udp) text"))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .type)
        try c.encodeIfPresent(interval, forKey: .interval)
        try c.encodeIfPresent(timeout, forKey: .timeout)
        try c.encodeIfPresent(rise, forKey: .rise)
        try c.encodeIfPresent(fall, forKey: .fall)
        try c.encodeIfPresent(port, forKey: .port)
        try c.encodeIfPresent(path, forKey: .path)
        try c.encodeIfPresent(host, forKey: .host)
        try c.encodeIfPresent(send, forKey: .send)
        try c.encodeIfPresent(expectBody, forKey: .expectBody)
        if let expectText { try c.encode(expectText, forKey: .expect) } else { try c.encodeIfPresent(expect, forKey: .expect) }
    }
}

/// A group (virtual service): a VIP, a protocol, ports, a method and its nodes.
public struct GroupModel: Codable, Sendable, Equatable {
    public var name: String
    public var vip: String
    public var `protocol`: String
    public var ports: [Int]
    public var method: String
    public var scheduler: String?
    public var interface: String?
    public var nodes: [NodeModel]
    public var sorry: NodeModel?
    public var healthCheck: HealthCheckModel?
    /// "cpu": weights follow the nodes' agents' load reports.
    public var dynamicWeights: String?
    /// Nodes whose agents announce themselves on the group's segment are added.
    public var acceptDiscoveredNodes: Bool?

    enum CodingKeys: String, CodingKey {
        case name, vip, `protocol`, ports, method, scheduler, interface, nodes, sorry
        case healthCheck = "health_check"
        case dynamicWeights = "dynamic_weights"
        case acceptDiscoveredNodes = "accept_discovered_nodes"
    }

    public init(name: String, vip: String, protocol: String, ports: [Int], method: String, scheduler: String? = nil,
                interface: String? = nil, nodes: [NodeModel], sorry: NodeModel? = nil, healthCheck: HealthCheckModel? = nil) {
        self.name = name
        self.vip = vip
        self.protocol = `protocol`
        self.ports = ports
        self.method = method
        self.scheduler = scheduler
        self.interface = interface
        self.nodes = nodes
        self.sorry = sorry
        self.healthCheck = healthCheck
    }
}

/// The load-balancing configuration: what the API changes, what the state file keeps,
/// and (later) what the pair syncs. Node-local settings (interfaces, API, keys) are not in it.
public struct BalancingConfigModel: Codable, Sendable, Equatable {
    public var groups: [GroupModel]
    public init(groups: [GroupModel]) { self.groups = groups }
}

/// The committed configuration: its version and content hash, and the groups.
public struct ConfigDocument: Codable, Sendable, Equatable {
    public var version: Int
    public var hash: String
    public var groups: [GroupModel]
    public init(version: Int, hash: String, groups: [GroupModel]) {
        self.version = version
        self.hash = hash
        self.groups = groups
    }
}

/// One difference between two configurations.
public struct ChangeModel: Codable, Sendable, Equatable {
    /// add, remove or change.
    public var op: String
    /// What changed: `groups/web`, `groups/web/nodes/198.18.0.11:0`, `…/weight`.
    public var path: String
    public var from: String?
    public var to: String?
    public init(op: String, path: String, from: String? = nil, to: String? = nil) {
        self.op = op
        self.path = path
        self.from = from
        self.to = to
    }
}

/// What a change did (or, with dry_run, would do).
public struct ChangeResultModel: Codable, Sendable, Equatable {
    public var dryRun: Bool
    /// The version now in force (dry run: the version it would become).
    public var version: Int
    public var hash: String
    public var changes: [ChangeModel]

    enum CodingKeys: String, CodingKey {
        case dryRun = "dry_run"
        case version, hash, changes
    }

    public init(dryRun: Bool, version: Int, hash: String, changes: [ChangeModel]) {
        self.dryRun = dryRun
        self.version = version
        self.hash = hash
        self.changes = changes
    }
}

/// `PATCH /v1/groups/{group}/nodes/{node}`: what to change; absent fields stay.
public struct NodePatchModel: Codable, Sendable, Equatable {
    public var weight: Int?
    public var enabled: Bool?
    public init(weight: Int? = nil, enabled: Bool? = nil) {
        self.weight = weight
        self.enabled = enabled
    }
}

/// Every 4xx and 5xx body.
public struct ErrorModel: Codable, Sendable, Equatable, Error {
    public struct FieldError: Codable, Sendable, Equatable {
        public var field: String
        public var value: String?
        public var message: String
        public var line: Int?
        public init(field: String, value: String?, message: String, line: Int? = nil) {
            self.field = field
            self.value = value
            self.message = message
            self.line = line
        }
    }

    /// A sentence: what is wrong and what to do.
    public var error: String
    public var errors: [FieldError]?
    /// The version still in force.
    public var version: Int?

    public init(error: String, errors: [FieldError]? = nil, version: Int? = nil) {
        self.error = error
        self.errors = errors
        self.version = version
    }
}

// MARK: - Status

public struct NodeStatusModel: Codable, Sendable, Equatable {
    public var address: String
    public var port: Int
    public var weight: Int
    public var enabled: Bool
    /// A `State`'s raw value: up, down (`health_detail` says why), disabled, no_mac, pending.
    public var state: String
    public var healthDetail: String?
    public var mac: String?
    public var activeFlows: Int
    public var newFlows: UInt64
    public var packets: UInt64
    public var bytes: UInt64
    /// With dynamic weights: the weight in force (static × 100 scaled by load) and the
    /// smoothed load the node's agent reports (0–1; absent while it is silent).
    public var effectiveWeight: Int?
    public var load: Double?

    enum CodingKeys: String, CodingKey {
        case address, port, weight, enabled, state, mac, packets, bytes, load
        case effectiveWeight = "effective_weight"
        case healthDetail = "health_detail"
        case activeFlows = "active_flows"
        case newFlows = "new_flows"
    }

    public init(address: String, port: Int, weight: Int, enabled: Bool, state: String, healthDetail: String?, mac: String?,
                activeFlows: Int, newFlows: UInt64, packets: UInt64, bytes: UInt64) {
        self.address = address
        self.port = port
        self.weight = weight
        self.enabled = enabled
        self.state = state
        self.healthDetail = healthDetail
        self.mac = mac
        self.activeFlows = activeFlows
        self.newFlows = newFlows
        self.packets = packets
        self.bytes = bytes
    }
}

public struct GroupStatusModel: Codable, Sendable, Equatable {
    public var name: String
    public var vip: String
    public var `protocol`: String
    public var ports: [Int]
    public var method: String
    public var scheduler: String
    public var packets: UInt64
    public var bytes: UInt64
    public var newFlows: UInt64
    public var sorryFlows: UInt64
    public var nodes: [NodeStatusModel]
    public var sorry: NodeStatusModel?

    enum CodingKeys: String, CodingKey {
        case name, vip, `protocol`, ports, method, scheduler, packets, bytes, nodes, sorry
        case newFlows = "new_flows"
        case sorryFlows = "sorry_flows"
    }

    public init(name: String, vip: String, protocol: String, ports: [Int], method: String, scheduler: String,
                packets: UInt64, bytes: UInt64, newFlows: UInt64, sorryFlows: UInt64, nodes: [NodeStatusModel],
                sorry: NodeStatusModel?) {
        self.name = name
        self.vip = vip
        self.protocol = `protocol`
        self.ports = ports
        self.method = method
        self.scheduler = scheduler
        self.packets = packets
        self.bytes = bytes
        self.newFlows = newFlows
        self.sorryFlows = sorryFlows
        self.nodes = nodes
        self.sorry = sorry
    }
}

public struct EventModel: Codable, Sendable, Equatable {
    /// RFC 3339, UTC, with milliseconds.
    public var time: String
    /// Monotonic across restarts.
    public var sequence: Int
    public var severity: String
    public var kind: String
    public var message: String
    public var fields: [String: String]

    public init(time: String, sequence: Int, severity: String, kind: String, message: String, fields: [String: String]) {
        self.time = time
        self.sequence = sequence
        self.severity = severity
        self.kind = kind
        self.message = message
        self.fields = fields
    }
}

public struct StatusModel: Codable, Sendable, Equatable {
    public var host: String
    /// standalone (no `cluster:` section), or the pair role: active, standby, fault, initial.
    public var role: String
    public var version: Int
    public var hash: String
    public var uptimeSeconds: Double
    public var flows: Int
    public var flowCapacity: Int
    public var groups: [GroupStatusModel]
    public var drops: [String: UInt64]
    public var events: [EventModel]
    /// What is wrong with this LB itself (health checks that cannot run here, …), in words;
    /// absent when nothing is.
    public var alarms: [String]?
    /// Reloads refused since start (the running configuration stayed as it was).
    public var reloadsRejected: Int?
    /// The data plane's own counters and tables, for the status file and `fulcrum status`.
    public var dataplane: DataplaneStatusModel?
    /// The active/standby pair, with a `cluster:` section.
    public var cluster: ClusterStatusModel?

    enum CodingKeys: String, CodingKey {
        case host, role, version, hash, flows, groups, drops, events, alarms, dataplane, cluster
        case uptimeSeconds = "uptime_seconds"
        case flowCapacity = "flow_capacity"
        case reloadsRejected = "reloads_rejected"
    }

    public init(host: String, role: String, version: Int, hash: String, uptimeSeconds: Double, flows: Int,
                flowCapacity: Int, groups: [GroupStatusModel], drops: [String: UInt64], events: [EventModel]) {
        self.host = host
        self.role = role
        self.version = version
        self.hash = hash
        self.uptimeSeconds = uptimeSeconds
        self.flows = flows
        self.flowCapacity = flowCapacity
        self.groups = groups
        self.drops = drops
        self.events = events
    }
}

/// The answer to `POST /v1/cluster/failover|failback|resume`.
public struct ClusterCommandModel: Codable, Sendable, Equatable {
    public var result: String
    /// This LB's role once the command was taken.
    public var role: String
    public init(result: String, role: String) {
        self.result = result
        self.role = role
    }
}

/// This LB's side of the active/standby pair.
public struct ClusterStatusModel: Codable, Sendable, Equatable {
    /// active, standby, fault or initial.
    public var role: String
    /// master or slave, as configured.
    public var configuredRole: String
    public var peer: PeerModel
    public var interconnects: [InterconnectModel]
    public var configVersion: Int
    public var peerConfigVersion: Int?
    public var lastTransition: TransitionModel?
    public var transitions: Int
    /// Standing down after a dual active under both_stand_down, until `resume`.
    public var held: Bool
    /// The last partition probe of the np_targets, while the peer is lost: true, false or absent.
    public var npReached: Bool?
    /// Whether the heartbeat thread runs at real-time priority (SCHED_FIFO).
    public var realtime: Bool
    /// What makes this LB unhealthy: every data-plane link, and the configured monitors.
    public var monitors: [MonitorModel] = []
    /// The flow sync, with `cluster.flow_sync` on.
    public var flowSync: FlowSyncStatusModel?

    public struct MonitorModel: Codable, Sendable, Equatable {
        /// link, ip or dataplane.
        public var type: String
        /// The interface or the address.
        public var target: String
        public var up: Bool
        /// failover (a failure moves the service) or alarm (an event and an alarm only).
        public var action: String?
        public init(type: String, target: String, up: Bool, action: String? = nil) {
            self.type = type
            self.target = target
            self.up = up
            self.action = action
        }
    }

    public struct PeerModel: Codable, Sendable, Equatable {
        public var name: String
        /// The role its last heartbeat gave; absent when it is not heard.
        public var role: String?
        public var healthy: Bool?
        /// master or slave, as its heartbeats say it is configured (once heard).
        public var configuredRole: String?
        enum CodingKeys: String, CodingKey {
            case name, role, healthy
            case configuredRole = "configured_role"
        }
        public init(name: String, role: String?, healthy: Bool?, configuredRole: String? = nil) {
            self.name = name
            self.role = role
            self.healthy = healthy
            self.configuredRole = configuredRole
        }
    }

    public struct InterconnectModel: Codable, Sendable, Equatable {
        public var local: String
        public var peer: String
        public var up: Bool
        /// Seconds since the peer's last admitted heartbeat on it.
        public var lastHeardSecondsAgo: Double?
        public var sent: UInt64
        public var received: UInt64
        /// Datagrams refused, by reason (bad_mac, replayed, old_epoch, source_mismatch, …).
        public var rejected: [String: UInt64]
        enum CodingKeys: String, CodingKey {
            case local, peer, up, sent, received, rejected
            case lastHeardSecondsAgo = "last_heard_seconds_ago"
        }
        public init(local: String, peer: String, up: Bool, lastHeardSecondsAgo: Double?, sent: UInt64, received: UInt64,
                    rejected: [String: UInt64]) {
            self.local = local
            self.peer = peer
            self.up = up
            self.lastHeardSecondsAgo = lastHeardSecondsAgo
            self.sent = sent
            self.received = received
            self.rejected = rejected
        }
    }

    public struct TransitionModel: Codable, Sendable, Equatable {
        /// RFC 3339, UTC.
        public var time: String
        public var from: String
        public var to: String
        public var reason: String
        public init(time: String, from: String, to: String, reason: String) {
            self.time = time
            self.from = from
            self.to = to
            self.reason = reason
        }
    }

    enum CodingKeys: String, CodingKey {
        case role, peer, interconnects, transitions, held, realtime, monitors
        case configuredRole = "configured_role"
        case configVersion = "config_version"
        case peerConfigVersion = "peer_config_version"
        case lastTransition = "last_transition"
        case npReached = "np_reached"
        case flowSync = "flow_sync"
    }

    public init(role: String, configuredRole: String, peer: PeerModel, interconnects: [InterconnectModel], configVersion: Int,
                peerConfigVersion: Int?, lastTransition: TransitionModel?, transitions: Int, held: Bool, npReached: Bool?,
                realtime: Bool) {
        self.role = role
        self.configuredRole = configuredRole
        self.peer = peer
        self.interconnects = interconnects
        self.configVersion = configVersion
        self.peerConfigVersion = peerConfigVersion
        self.lastTransition = lastTransition
        self.transitions = transitions
        self.held = held
        self.npReached = npReached
        self.realtime = realtime
    }
}

/// The data plane beneath the groups: the workers' and the XDP program's counters, the
/// AF_XDP sockets', the attach modes, the BPF maps' sizes, the layout and routing versions
/// (desired and applied by every worker), the NAT replies' routes and the replies not sent.
public struct DataplaneStatusModel: Codable, Sendable, Equatable {
    public var counters: [String: UInt64]
    public var xdp: [String: UInt64]
    public var sockets: [String: UInt64]
    public var attachModes: [String: String]
    public var mapEntries: [String: Int]
    public var layoutGeneration: UInt64
    public var appliedLayoutGeneration: UInt64
    public var routingVersion: UInt64
    public var appliedRoutingVersion: UInt64
    public var routes: [Route]
    public var unroutedReplies: [Unrouted]
    /// Established flows the XDP program forwards itself; nil with offload off.
    public var offload: Offload?

    /// The XDP offload of established flows (Docs/ARCHITECTURE.md, "Offload").
    public struct Offload: Codable, Sendable, Equatable {
        /// Flows whose frames the XDP program forwards now.
        public var flows: Int
        /// Frames of offloaded flows the XDP program forwarded (as the workers last folded them).
        public var frames: UInt64
        /// The share of forwarded frames that the XDP program forwarded: frames / (frames +
        /// the workers' transmitted frames).
        public var share: Double
        public init(flows: Int, frames: UInt64, share: Double) {
            self.flows = flows
            self.frames = frames
            self.share = share
        }
    }

    /// A route NAT replies follow (an override from `routes:`, or the kernel's).
    public struct Route: Codable, Sendable, Equatable {
        public var prefix: String
        public var interface: String
        public var via: String?
        public var mac: String?
        public var override: Bool
        public init(prefix: String, interface: String, via: String?, mac: String?, override: Bool) {
            self.prefix = prefix
            self.interface = interface
            self.via = via
            self.mac = mac
            self.override = override
        }
    }

    /// A destination NAT replies could not be sent to.
    public struct Unrouted: Codable, Sendable, Equatable {
        public var destination: String
        public var reason: String
        public var interface: String?
        public var reports: Int
        public init(destination: String, reason: String, interface: String?, reports: Int) {
            self.destination = destination
            self.reason = reason
            self.interface = interface
            self.reports = reports
        }
    }

    enum CodingKeys: String, CodingKey {
        case counters, xdp, sockets, routes
        case attachModes = "attach_modes"
        case mapEntries = "map_entries"
        case layoutGeneration = "layout_generation"
        case appliedLayoutGeneration = "applied_layout_generation"
        case routingVersion = "routing_version"
        case appliedRoutingVersion = "applied_routing_version"
        case unroutedReplies = "unrouted_replies"
        case offload
    }

    public init(counters: [String: UInt64], xdp: [String: UInt64], sockets: [String: UInt64], attachModes: [String: String],
                mapEntries: [String: Int], layoutGeneration: UInt64, appliedLayoutGeneration: UInt64, routingVersion: UInt64,
                appliedRoutingVersion: UInt64, routes: [Route], unroutedReplies: [Unrouted]) {
        self.counters = counters
        self.xdp = xdp
        self.sockets = sockets
        self.attachModes = attachModes
        self.mapEntries = mapEntries
        self.layoutGeneration = layoutGeneration
        self.appliedLayoutGeneration = appliedLayoutGeneration
        self.routingVersion = routingVersion
        self.appliedRoutingVersion = appliedRoutingVersion
        self.routes = routes
        self.unroutedReplies = unroutedReplies
    }
}

public struct EventsModel: Codable, Sendable, Equatable {
    public var events: [EventModel]
    /// Pass as `since` to get only what follows.
    public var next: Int
    public init(events: [EventModel], next: Int) {
        self.events = events
        self.next = next
    }
}

/// The pair's flow sync as status shows it: what travels, what is refused, how far behind.
public struct FlowSyncStatusModel: Codable, Sendable, Equatable {
    public var enabled = false
    /// This LB sends (it is active); otherwise it receives.
    public var sending = false
    /// Active: the standby holds every flow (its bulk transfer acknowledged): a failover
    /// keeps established connections.
    public var peerReady = false
    /// Standby: this LB holds the active's flows (`sync_ready`).
    public var ready = false
    /// The stream's epoch (0: none).
    public var stream: UInt64 = 0
    public var recordsSent: UInt64 = 0
    public var datagramsSent: UInt64 = 0
    public var datagramsResent: UInt64 = 0
    public var recordsReceived: UInt64 = 0
    public var datagramsReceived: UInt64 = 0
    /// Datagrams received twice (a resend whose first copy had arrived): not applied again.
    public var duplicates: UInt64 = 0
    /// Datagrams refused, by reason (bad_mac, replayed, old_epoch, source_mismatch, …).
    public var rejected: [String: UInt64] = [:]
    /// Records the standby could not hold, by reason (unknown_service, unknown_node, table_full).
    public var notHeld: [String: UInt64] = [:]
    /// Datagrams the standby left unacknowledged, to come again, by reason: `import_busy`
    /// (a worker's ring had no room), `config_behind` (records of a configuration not yet
    /// pushed here).
    public var deferred: [String: UInt64] = [:]
    /// Records the workers exported, and flows that needed none (the standby's stateless
    /// answer is their node: the saving of sending only the exceptions).
    public var recordsExported: UInt64 = 0
    public var recordsSaved: UInt64 = 0
    /// Records the standby's workers hold (applied upserts).
    public var recordsHeld: UInt64 = 0
    /// Records and datagrams waiting (in the workers' rings, or sent and not acknowledged).
    public var pending = 0
    public var inFlight = 0
    public var bulkTransfers: UInt64 = 0
    public var lastBulkSeconds: Double?
    /// From a record's export to the standby's acknowledgement, over the last 4096 datagrams.
    public var lagP50Milliseconds: Double?
    public var lagP99Milliseconds: Double?
    /// The standby is not keeping up: records wait in the workers' tables.
    public var lagging = false
    /// Records dropped while no standby followed (its bulk transfer carries the flows).
    public var discarded: UInt64 = 0

    enum CodingKeys: String, CodingKey {
        case enabled, sending, ready, stream, duplicates, rejected, pending, lagging, discarded
        case peerReady = "peer_ready", recordsSent = "records_sent", datagramsSent = "datagrams_sent"
        case datagramsResent = "datagrams_resent", recordsReceived = "records_received"
        case deferred
        case datagramsReceived = "datagrams_received", notHeld = "not_held", recordsExported = "records_exported"
        case recordsSaved = "records_saved", recordsHeld = "records_held", inFlight = "in_flight"
        case bulkTransfers = "bulk_transfers", lastBulkSeconds = "last_bulk_seconds"
        case lagP50Milliseconds = "lag_p50_ms", lagP99Milliseconds = "lag_p99_ms"
    }

    public init() {}

    public init(enabled: Bool, sending: Bool, peerReady: Bool, ready: Bool, stream: UInt64, recordsSent: UInt64,
                datagramsSent: UInt64, datagramsResent: UInt64, recordsReceived: UInt64, datagramsReceived: UInt64,
                duplicates: UInt64, rejected: [String: UInt64], notHeld: [String: UInt64], recordsExported: UInt64,
                recordsSaved: UInt64, recordsHeld: UInt64, pending: Int, inFlight: Int, bulkTransfers: UInt64,
                lastBulkSeconds: Double?, lagP50Milliseconds: Double?, lagP99Milliseconds: Double?, lagging: Bool,
                discarded: UInt64) {
        self.enabled = enabled
        self.sending = sending
        self.peerReady = peerReady
        self.ready = ready
        self.stream = stream
        self.recordsSent = recordsSent
        self.datagramsSent = datagramsSent
        self.datagramsResent = datagramsResent
        self.recordsReceived = recordsReceived
        self.datagramsReceived = datagramsReceived
        self.duplicates = duplicates
        self.rejected = rejected
        self.notHeld = notHeld
        self.recordsExported = recordsExported
        self.recordsSaved = recordsSaved
        self.recordsHeld = recordsHeld
        self.pending = pending
        self.inFlight = inFlight
        self.bulkTransfers = bulkTransfers
        self.lastBulkSeconds = lastBulkSeconds
        self.lagP50Milliseconds = lagP50Milliseconds
        self.lagP99Milliseconds = lagP99Milliseconds
        self.lagging = lagging
        self.discarded = discarded
    }
}
