import CFulcrumBPF
import FulcrumBPF
import FulcrumCore
import Logging
import Synchronization

/// Start-time settings of the data plane (not changed by a reload).
public struct DataplaneOptions: Sendable {
    /// Data-plane interfaces; a group's `interface` and a route's index into this list.
    public var interfaces: [String]
    /// Queues per interface: one worker per queue index, owning that queue of every interface.
    public var queues: Int
    /// Cores to pin workers to, in queue order; nil = the process's allowed CPUs in turn.
    public var cores: [Int]?
    public var flowTableSize: Int
    public var maxNodeSlots: Int
    public var timeouts: FlowTimeouts
    public var framesPerSocket: Int
    public var ringSize: Int
    public var allowGenericXDP: Bool
    public var bpfObject: String?
    public var hugePages: Bool
    /// Benchmark reference only: workers swap MACs and send frames back, deciding nothing.
    public var reflectOnly = false
    /// New TCP connections admitted per second per CPU, and the burst; 0 = no limit.
    public var admission: (perSecond: UInt64, burst: UInt64)
    /// After its last frame, how long a worker looks for the next before it sleeps in
    /// poll (µs; 0: at once). See `Worker.run`.
    public var idleSpinMicroseconds: Int
    public static let defaultIdleSpinMicroseconds = 50
    /// Established flows forwarded by the XDP program (`FlowOffload`); off: every frame
    /// goes through a worker.
    public var offload: Bool
    /// Offload entries per queue (a power of two; a NAT flow takes two).
    public var offloadEntries: Int
    public static let defaultOffloadEntries = 1 << 16
    /// Interfaces offloaded flows may not leave by (`FulcrumConfig.Interface.offload`).
    public var noOffloadInterfaces: Set<String>

    public init(interfaces: [String], queues: Int = 1, cores: [Int]? = nil, flowTableSize: Int = 1 << 20,
                maxNodeSlots: Int = 4096, timeouts: FlowTimeouts = FlowTimeouts(), framesPerSocket: Int = 4096,
                ringSize: Int = 2048, allowGenericXDP: Bool = true, bpfObject: String? = nil, hugePages: Bool = true,
                idleSpinMicroseconds: Int = DataplaneOptions.defaultIdleSpinMicroseconds,
                admission: (perSecond: UInt64, burst: UInt64) = (0, 1),
                offload: Bool = true, offloadEntries: Int = DataplaneOptions.defaultOffloadEntries,
                noOffloadInterfaces: Set<String> = []) {
        self.admission = admission
        self.noOffloadInterfaces = noOffloadInterfaces
        self.offload = offload
        self.offloadEntries = offloadEntries
        self.idleSpinMicroseconds = idleSpinMicroseconds
        self.interfaces = interfaces
        self.queues = queues
        self.cores = cores
        self.flowTableSize = flowTableSize
        self.maxNodeSlots = maxNodeSlots
        self.timeouts = timeouts
        self.framesPerSocket = framesPerSocket
        self.ringSize = ringSize
        self.allowGenericXDP = allowGenericXDP
        self.bpfObject = bpfObject
        self.hugePages = hugePages
    }
}

/// Counters summed over workers, with names for display and metrics.
public struct DataplaneSnapshot: Sendable {
    public struct Node: Sendable {
        public var address: IPAddress
        public var port: UInt16
        public var weight: Int
        public var mac: MACAddress?
        public var activeFlows: Int
        public var packets: UInt64
        public var bytes: UInt64
        public var newFlows: UInt64

        public init(address: IPAddress, port: UInt16, weight: Int, mac: MACAddress?, activeFlows: Int = 0, packets: UInt64 = 0,
                    bytes: UInt64 = 0, newFlows: UInt64 = 0) {
            self.address = address
            self.port = port
            self.weight = weight
            self.mac = mac
            self.activeFlows = activeFlows
            self.packets = packets
            self.bytes = bytes
            self.newFlows = newFlows
        }
    }

    public struct Group: Sendable {
        public var name: String
        public var packets: UInt64
        public var bytes: UInt64
        public var newFlows: UInt64
        public var sorryFlows: UInt64
        public var nodes: [Node]

        public init(name: String, packets: UInt64 = 0, bytes: UInt64 = 0, newFlows: UInt64 = 0, sorryFlows: UInt64 = 0, nodes: [Node]) {
            self.name = name
            self.packets = packets
            self.bytes = bytes
            self.newFlows = newFlows
            self.sorryFlows = sorryFlows
            self.nodes = nodes
        }
    }

    public var groups: [Group]
    public var global: [GlobalCounter: UInt64]
    public var drops: [DropReason: UInt64]
    public var xdp: [XDPCounter: UInt64]
    /// The kernel's AF_XDP socket statistics, summed over sockets.
    public var sockets: [String: UInt64]
    public var flows: Int
    public var flowCapacity: Int
    /// Flows whose frames the XDP program forwards now (0 with offload off).
    public var offloadedFlows: Int = 0
    public var offload = false
    public var attachModes: [String: XDPMode]
    /// BPF map entries by map (services, replies, vips); the caller fills it (`FulcrumMaps.entryCounts`).
    public var mapEntries: [String: Int] = [:]
    /// The generation of the layout in force, and the one every worker has applied.
    public var generation: UInt64 = 0
    public var appliedGeneration: UInt64 = 0
    /// Destinations NAT replies could not be sent to, most recent first.
    public var unrouted: [UnroutedStatus] = []
    /// The routing table in force and the version every worker has applied.
    public var routingVersion: UInt64 = 0
    public var appliedRoutingVersion: UInt64 = 0
    public var routes: [ClientRoute] = []
}

extension DataplaneSnapshot {
    /// A snapshot with no traffic counted (a data plane stand-in's).
    public init(groups: [Group], flowCapacity: Int) {
        self.init(groups: groups, global: [:], drops: [:], xdp: [:], sockets: [:], flows: 0, flowCapacity: flowCapacity,
                  attachModes: [:])
    }
}

/// A destination NAT replies could not be sent to: why, on which interface, and how many
/// times a worker reported it.
public struct UnroutedStatus: Sendable, Equatable {
    public var destination: IPAddress
    public var reason: UnroutedReply.Reason
    public var interface: String?
    public var reports: Int
}

public enum DataplaneError: Error, CustomStringConvertible {
    case tooManyInterfaces(Int)
    case tooManyQueues(Int)
    case queuesMissing(interface: String, has: Int, wanted: Int)
    case badOffloadEntries(Int)
    case noCores
    case interfaceInUse(interface: String, by: String)

    public var description: String {
        switch self {
        case let .tooManyInterfaces(n): return "\(n) data-plane interfaces; at most \(FULCRUM_MAX_INTERFACES)"
        case let .tooManyQueues(n): return "\(n) queues; at most \(FULCRUM_MAX_QUEUES)"
        case let .badOffloadEntries(n):
            return "dataplane.offload_entries is \(n); it must be a power of two, at least 16"
        case let .queuesMissing(interface, has, wanted):
            return "\(interface) has \(has) receive queue(s) but \(wanted) are configured (dataplane.interfaces[].queues); use at most \(has)"
        case .noCores: return "no CPU to run workers on (dataplane.cores is empty)"
        case let .interfaceInUse(interface, by):
            return "\(interface) is already served by another fulcrum (\(by)); stop it first, or use another interface"
        }
    }
}

/// The running data plane: the XDP program on every data-plane interface, one worker per
/// queue, and the maps that steer traffic to them.
public final class Dataplane: @unchecked Sendable {
    public let options: DataplaneOptions
    let logger: Logger
    let object: BPFObject
    public let maps: FulcrumMaps
    let ifindexes: [Int32]
    let interfaceMACs: [MACAddress]
    let interfaceMTUs: [Int]
    private var links: [XDPLink] = []
    private var workers: [Worker] = []
    /// The offload table's memory, shared with the XDP program; nil with offload off.
    private var offloadMemory: SharedMapMemory?
    private let state: Mutex<State>
    /// One per data-plane interface, held while this process runs: a second `fulcrum`
    /// on the same interface is told so before it touches anything.
    private let locks: [FileLock]

    struct State {
        var groups: [GroupSpec]
        var routes: [RouteSpec]
        var spec: BalancerSpec
        var neighbors: [KernelNeighborKey: MACAddress]
        /// Bumped by every change of layout (groups, nodes).
        var generation: UInt64 = 1
        /// The kernel's routes, as last read.
        var kernelRoutes: [KernelRoute] = []
        /// What the workers' routing table was built from, and the table.
        var routingInput = RoutingInput()
        var routing = RoutingTable.empty
        /// Destinations NAT replies could not be sent to, most recent first.
        var unrouted: [UnroutedStatus] = []
        /// Nodes (and sorry servers) health checks found down, by identity: re-applied to
        /// every new layout, so a reload never brings a dead node back.
        var down: Set<NodeIdentity> = []
        /// Weights from the nodes' agents (dynamic weights), by identity: they replace the
        /// configured weight of those nodes in every layout until withdrawn.
        var weights: [NodeIdentity: Int] = [:]
    }

    /// The commands that tell workers of `spec`'s generation which nodes are down.
    static func healthCommands(_ down: Set<NodeIdentity>, in spec: BalancerSpec) -> [WorkerCommand] {
        var out: [WorkerCommand] = []
        for key in down {
            guard let g = spec.groups.firstIndex(where: { $0.name == key.group }) else { continue }
            let group = spec.groups[g]
            if let n = group.nodes.firstIndex(where: { $0.address == key.address && $0.port == key.port }) {
                out.append(.nodeUp(generation: spec.generation, group: g, node: n, up: false))
            } else if let sorry = group.sorry, sorry.address == key.address && sorry.port == key.port {
                out.append(.sorryUp(generation: spec.generation, group: g, up: false))
            }
        }
        return out
    }

    /// Health: a node (or sorry server), by identity, up or down in every worker. Down, it
    /// takes no new flows and its flows move on their next packet; it stays down across
    /// reloads until it is reported up.
    public func setHealth(_ key: NodeIdentity, up: Bool) {
        state.withLock { s in
            if up { s.down.remove(key) } else { s.down.insert(key) }
            guard let g = s.spec.groups.firstIndex(where: { $0.name == key.group }) else { return }
            let group = s.spec.groups[g]
            let command: WorkerCommand
            if let n = group.nodes.firstIndex(where: { $0.address == key.address && $0.port == key.port }) {
                command = .nodeUp(generation: s.spec.generation, group: g, node: n, up: up)
            } else if let sorry = group.sorry, sorry.address == key.address && sorry.port == key.port {
                command = .sorryUp(generation: s.spec.generation, group: g, up: up)
            } else {
                return
            }
            for w in workers { w.send(command) }
        }
    }

    public init(options: DataplaneOptions, groups: [GroupSpec], routes: [RouteSpec], logger: Logger) throws {
        guard options.interfaces.count <= Int(FULCRUM_MAX_INTERFACES) else {
            throw DataplaneError.tooManyInterfaces(options.interfaces.count)
        }
        guard options.queues >= 1 && options.queues <= Int(FULCRUM_MAX_QUEUES) else {
            throw DataplaneError.tooManyQueues(options.queues)
        }
        if let cores = options.cores, cores.isEmpty { throw DataplaneError.noCores }
        self.options = options
        self.logger = logger
        ifindexes = try options.interfaces.map { try InterfaceInfo.index(of: $0) }
        for name in options.interfaces {
            let has = InterfaceFacts.rxQueues(of: name)
            if options.queues > has { throw DataplaneError.queuesMissing(interface: name, has: has, wanted: options.queues) }
        }
        interfaceMACs = try options.interfaces.map { try InterfaceFacts.mac(of: $0) }
        interfaceMTUs = options.interfaces.map { InterfaceFacts.mtu(of: $0) ?? 1500 }
        var initial = State(groups: groups, routes: routes,
                            spec: BalancerSpec(groups: [], interfaceMACs: interfaceMACs), neighbors: [:])
        initial.neighbors = (try? Neighbors.dump()).map(Self.table) ?? [:]
        initial.spec = Self.makeSpec(options: options, macs: interfaceMACs, mtus: interfaceMTUs, ifindexes: ifindexes, state: initial)
        try DataplaneLimits.check(initial.spec)  // validate before touching anything
        try Self.trial(initial.spec)
        state = Mutex(initial)
        locks = try options.interfaces.map { try InterfaceLock.claim($0) }

        let path = try options.bpfObject ?? BPFObject.locate()
        guard options.offloadEntries >= 16 && options.offloadEntries & (options.offloadEntries - 1) == 0 else {
            throw DataplaneError.badOffloadEntries(options.offloadEntries)
        }
        object = try BPFObject(path: path, mapEntries: [
            FULCRUM_MAP_OFFLOAD: options.offload ? UInt32(options.queues * options.offloadEntries) : 1,
            FULCRUM_MAP_OFFLOAD_INDEX: options.offload ? UInt32(options.queues * FlowOffload.indexWords(options.offloadEntries)) : 1,
        ])
        maps = try FulcrumMaps(object)
        logger.info("loaded BPF object", metadata: ["path": "\(path)"])
    }

    /// The balancer spec of `state` (`BalancerSpec.resolved`, in FulcrumCore). Static:
    /// `init` builds the first one before `self` is whole.
    static func makeSpec(options: DataplaneOptions, macs: [MACAddress], mtus: [Int], ifindexes: [Int32], state: State) -> BalancerSpec {
        BalancerSpec.resolved(groups: state.groups, agentWeights: state.weights, neighbors: state.neighbors,
                              generation: state.generation,
                              interfaces: DataplaneInterfaces(ifindexes: ifindexes, macs: macs, mtus: mtus),
                              flowTableCapacity: options.flowTableSize, timeouts: options.timeouts, maxNodeSlots: options.maxNodeSlots)
    }

    static func table(_ entries: [Neighbors.Entry]) -> [KernelNeighborKey: MACAddress] {
        var out: [KernelNeighborKey: MACAddress] = [:]
        for e in entries { out[KernelNeighborKey(ifindex: e.ifindex, address: e.address)] = e.mac }
        return out
    }

    /// Programs the maps, opens the sockets, starts the workers, then attaches XDP.
    public func start() throws {
        let kernelRoutes = (try? Routes.dump()) ?? []
        let (spec, routing) = state.withLock { s -> (BalancerSpec, RoutingTable) in
            s.kernelRoutes = kernelRoutes
            s.routingInput = routingInput(s)
            s.routing = RoutingTable(routes: s.routingInput.routes, neighbors: s.routingInput.neighbors, version: 1,
                                     interfaceMACs: interfaceMACs)
            return (s.spec, s.routing)
        }
        for (slot, ifindex) in ifindexes.enumerated() {
            try maps.setInterface(ifindex: ifindex, slot: slot, mac: interfaceMACs[slot])
        }
        try programMaps(spec)
        try maps.synchronizeLocal(LocalAddresses.all())
        // Passive until told: a standby that boots must not answer for the VIPs.
        try maps.setActive(false)
        try setAdmission(perSecond: options.admission.perSecond, burst: options.admission.burst)
        let cpus = options.cores ?? CPUAffinity.allowedCPUs()
        let memory = options.hugePages ? HugePageMemory.table : TableMemory.heap
        let offloadRegion = options.offload && !options.reflectOnly ? try SharedMapMemory(maps.offload) : nil
        let offloadIndex = offloadRegion != nil ? try SharedMapMemory(maps.offloadIndex) : nil
        offloadMemory = offloadRegion
        for queue in 0..<options.queues {
            let sockets = try options.interfaces.map {
                try XDPSocket(interface: $0, queue: queue, frameCount: options.framesPerSocket, ringSize: options.ringSize)
            }
            for (slot, socket) in sockets.enumerated() {
                try maps.setSocket(slot: slot, queue: queue, fd: socket.fd)
            }
            let flows = FlowTable(capacity: spec.flowTableCapacity, nodeSlots: spec.maxNodeSlots,
                                  timeouts: spec.timeouts, memory: memory)
            let offload = offloadRegion.map {
                FlowOffload(region: $0.base + queue * options.offloadEntries * FlowOffload.Layout.size,
                            capacity: options.offloadEntries,
                            ifindexes: ifindexes, egress: options.interfaces.map { !options.noOffloadInterfaces.contains($0) },
                            owner: $0,
                            index: offloadIndex.map { $0.base + queue * FlowOffload.indexWords(options.offloadEntries) * 8 },
                            indexOwner: offloadIndex)
            }
            let worker = try Worker(queue: queue, cpu: cpus[queue % cpus.count], sockets: sockets,
                                    balancer: try Balancer(spec, flows: flows, routing: routing),
                                    reflectOnly: options.reflectOnly,
                                    idleSpin: UInt64(options.idleSpinMicroseconds) * 1000, offload: offload)
            try worker.start()
            workers.append(worker)
            logger.info("worker started", metadata: ["queue": "\(queue)", "cpu": "\(worker.cpu)",
                                                     "flow_table_bytes": "\(flows.memoryBytes)"])
        }
        let program = try object.programFD(FULCRUM_PROG_MAIN)
        for name in options.interfaces {
            let link = try XDPLink(programFD: program, interface: name, allowGenericFallback: options.allowGenericXDP)
            if link.mode == .generic {
                logger.warning("XDP attached in generic (skb) mode: the driver refused native mode", metadata: ["interface": "\(name)"])
            } else {
                logger.info("XDP attached", metadata: ["interface": "\(name)", "mode": "\(link.mode.rawValue)"])
            }
            links.append(link)
        }
        // Once the modes are known: how the program counts into an entry depends on them.
        // Until now the program offloaded nothing (and the LB starts passive).
        try maps.setOffload(entriesPerQueue: offloadRegion != nil ? options.offloadEntries : 0,
                            sharedWriters: links.contains { $0.mode == .generic })
    }

    /// Active: answer ARP/NS for the VIPs and steer their traffic. The data plane starts
    /// passive; a standalone LB (or the cluster service, on becoming active) turns it on.
    public func setActive(_ active: Bool) throws {
        let was = maps.isActive
        try maps.setActive(active)
        // Offloaded flows go back to the workers at every change of role (a standby's table
        // of record may change, by the flow sync, while its program forwards nothing), and
        // only an active LB's workers offer flows: none is written while standby.
        if offloadMemory != nil && was != active { for w in workers { w.send(.offloadOffering(active)) } }
        logger.info(active ? "active: answering for the VIPs" : "passive: VIP traffic goes to the kernel")
    }

    public var isActive: Bool { maps.isActive }

    /// The dead-man switch: the XDP program stops answering for the VIPs at `nanoseconds`
    /// (CLOCK_MONOTONIC) unless moved on again. Called by the pair's cluster thread.
    public func keepAlive(until nanoseconds: UInt64) { try? maps.setAliveUntil(nanoseconds) }

    /// Each worker's loop count (`Worker.progress`), in queue order.
    public func workerProgress() -> [UInt64] { workers.map { $0.progress.load(ordering: .relaxed) } }

    /// Each worker's end of the flow sync, with what ends its idle wait.
    public var workerSyncs: [(sync: WorkerSync, wake: @Sendable () -> Void)] { workers.map { w in (w.sync, { w.wake() }) } }

    /// The admission budget for new TCP connections (per CPU); 0 = no limit. Takes effect
    /// at once, on a reload too.
    public func setAdmission(perSecond: UInt64, burst: UInt64) throws {
        try maps.setAdmission(perSecond: perSecond, burst: burst)
    }

    private func programMaps(_ spec: BalancerSpec) throws {
        let endpoints = try DataplaneLimits.check(spec)
        var services: [ServiceKey: (group: Int, nat: Bool)] = [:]
        for s in endpoints.services { services[s.key] = (s.group, s.nat) }
        var replies: [ServiceKey: Int] = [:]
        for r in endpoints.replies { replies[r.key] = r.group }
        for node in endpoints.replyNodes { replies[node] = 0 }  // any port: for reply fragments
        try maps.synchronize(services: services, replies: replies, vips: Set(spec.groups.map(\.vip)))
    }

    /// Applies a new configuration without dropping flows. Everything is checked before
    /// anything is touched (the data plane's limits, the groups' conflicts, a trial
    /// `Balancer`); if writing the maps then fails, they are put back as they were. On
    /// any error the running tables, maps and status stay exactly as they were.
    /// - Returns: the generation of the new layout.
    @discardableResult
    public func configure(groups: [GroupSpec], routes: [RouteSpec]) throws -> UInt64 {
        for r in routes where r.interface < 0 || r.interface >= ifindexes.count {
            throw BalancerSpecError.badInterface(group: "route \(r.prefix)/\(r.prefixLength)", interface: r.interface)
        }
        return try state.withLock { s -> UInt64 in
            var next = s
            next.groups = groups
            next.routes = routes
            // Only weights or enabled switches changed: the layout stays, and the workers
            // are told the new values (one scheduler rebuild per changed group) instead
            // of building new tables.
            if routes == s.routes, LayoutAdjustment.between( s.groups, to: groups) != nil {
                var spec = Self.makeSpec(options: options, macs: interfaceMACs, mtus: interfaceMTUs, ifindexes: ifindexes, state: next)
                spec.generation = s.generation
                // The weights in force (the agents' where they report) decide the commands.
                if let adjustments = LayoutAdjustment.between( s.spec.groups, to: spec.groups) {
                    next.spec = spec
                    s = next
                    for w in workers {
                        for c in Self.commands(adjustments, groups: spec.groups, generation: s.generation) { w.send(c) }
                    }
                    return s.generation
                }
            }
            next.generation = s.generation &+ 1
            let spec = Self.makeSpec(options: options, macs: interfaceMACs, mtus: interfaceMTUs, ifindexes: ifindexes, state: next)
            try DataplaneLimits.check(spec)
            // Each worker's new tables, built here rather than on its packet thread (a
            // Maglev table is 1–2 ms); building them is also the last check.
            let remap = s.spec.slotRemap(to: spec)
            var handoffs: [LayoutHandoff] = []
            for w in workers {
                let flows = w.current.flows
                let balancer = try Balancer(spec, flows: flows,
                                            counters: WorkerCounters(groups: spec.groups.count, nodeSlots: spec.maxNodeSlots),
                                            routing: s.routing)
                handoffs.append(LayoutHandoff(balancer: balancer, remap: remap))
            }
            if workers.isEmpty { try Self.trial(spec) }
            do {
                try programMaps(spec)
            } catch {
                do { try programMaps(s.spec) } catch {
                    logger.critical("could not restore the BPF maps after a failed change", metadata: ["error": "\(error)"])
                }
                throw error
            }
            next.spec = spec
            s = next
            let health = Self.healthCommands(s.down, in: spec)
            for (w, handoff) in zip(workers, handoffs) {
                w.send(.install(handoff))
                for c in health { w.send(c) }
            }
            return spec.generation
        }
    }

    /// Checks a configuration as `configure` would, and changes nothing (a dry run).
    public func validate(groups: [GroupSpec], routes: [RouteSpec]) throws {
        for r in routes where r.interface < 0 || r.interface >= ifindexes.count {
            throw BalancerSpecError.badInterface(group: "route \(r.prefix)/\(r.prefixLength)", interface: r.interface)
        }
        var next = state.withLock { $0 }
        // Weights and enabled switches only: the layout, already built, stays.
        if routes == next.routes, LayoutAdjustment.between( next.groups, to: groups) != nil { return }
        next.groups = groups
        next.routes = routes
        let spec = Self.makeSpec(options: options, macs: interfaceMACs, mtus: interfaceMTUs, ifindexes: ifindexes, state: next)
        try DataplaneLimits.check(spec)
        try Self.trial(spec)
    }

    /// Builds a spec's tables once to see that they can be built, with a small flow
    /// table (the real one is the workers').
    static func trial(_ spec: BalancerSpec) throws {
        _ = try Balancer(spec, flows: FlowTable(capacity: 64, nodeSlots: max(1, spec.maxNodeSlots), timeouts: spec.timeouts))
    }

    /// Weights from the nodes' agents, by identity, replacing the whole overlay: each
    /// worker gets the changed groups' weights (with their Maglev tables, built here). A
    /// node not in `weights` has its configured weight. A drained node (weight 0) stays 0.
    public func setAgentWeights(_ weights: [NodeIdentity: Int]) {
        state.withLock { s in
            guard s.weights != weights else { return }
            var next = s
            next.weights = weights
            var spec = Self.makeSpec(options: options, macs: interfaceMACs, mtus: interfaceMTUs, ifindexes: ifindexes, state: next)
            spec.generation = s.generation
            guard let adjustments = LayoutAdjustment.between( s.spec.groups, to: spec.groups) else { return }
            next.spec = spec
            s = next
            for w in workers {
                for c in Self.commands(adjustments, groups: spec.groups, generation: s.generation) { w.send(c) }
            }
        }
    }

    /// The weight each node has in the layout in force (the agents' where they report).
    public var weightsInForce: [NodeIdentity: Int] {
        state.withLock { s in
            var out: [NodeIdentity: Int] = [:]
            for g in s.spec.groups {
                for n in g.nodes { out[NodeIdentity(group: g.name, address: n.address, port: n.port)] = n.weight }
            }
            return out
        }
    }

    /// One worker's commands for `adjustments`: new weights come with their Maglev table,
    /// built here, off the worker's thread.
    static func commands(_ adjustments: [LayoutAdjustment], groups: [GroupSpec], generation: UInt64) -> [WorkerCommand] {
        adjustments.map {
            switch $0 {
            case let .weights(g, w):
                let table = MaglevTable(keys: Balancer.nodeKeys(groups[g]), weights: w)
                return .weights(generation: generation, group: g, w, MaglevHandoff(table))
            case let .enabled(g, n, on):
                return .nodeEnabled(generation: generation, group: g, node: n, enabled: on)
            }
        }
    }

    /// The generation every worker has applied (the lowest of them).
    public var appliedGeneration: UInt64 { workers.map(\.appliedGeneration).min() ?? 0 }

    /// Per worker: commands sent to it and applied by it since start (a change has reached
    /// every worker when each has applied what had been sent when the change returned).
    public var commandCounts: [(sent: Int, applied: Int)] { workers.map(\.commandCounts) }

    /// What the workers' routing table is built from (`RoutingInput`, in FulcrumCore).
    func routingInput(_ s: State) -> RoutingInput {
        RoutingInput(overrides: s.routes, kernelRoutes: s.kernelRoutes, neighbors: s.neighbors, ifindexes: ifindexes)
    }

    /// Re-reads the kernel's neighbour and routing tables; asks the kernel to resolve what
    /// is missing (nodes, gateways, and the destinations workers could not reply to);
    /// pushes changed node MACs and a new routing table to the workers. The daemon calls
    /// it every second and whenever the kernel announces a change (`RoutingWatch`).
    /// What a refresh found that an operator would want in the event log.
    public struct RoutingRefresh: Sendable {
        /// Node MACs learnt (or lost: nil), by group name and address.
        public var nodeMACs: [(group: String, address: IPAddress, mac: MACAddress?)] = []
        /// Destinations NAT replies could not be sent to, first seen in this refresh.
        public var newlyUnrouted: [UnroutedStatus] = []
        /// Route gateways without a MAC, which the kernel was asked to resolve.
        public var unresolvedGateways: Set<IPAddress> = []

        public init() {}
    }

    @discardableResult
    public func refreshRouting() -> RoutingRefresh {
        // A failed or timed-out dump says nothing about the tables: keep the last known
        // ones rather than take it as empty.
        let table: [KernelNeighborKey: MACAddress]
        do {
            table = Self.table(try Neighbors.dump())
        } catch {
            logger.warning("neighbour table unreadable; keeping the last known MACs", metadata: ["error": "\(error)"])
            return RoutingRefresh()
        }
        var refresh = RoutingRefresh()
        let kernelRoutes: [KernelRoute]?
        do { kernelRoutes = try Routes.dump() } catch {
            logger.warning("routing table unreadable; keeping the last known routes", metadata: ["error": "\(error)"])
            kernelRoutes = nil
        }
        var unrouted: [UnroutedReply] = []
        for w in workers { unrouted += w.takeUnrouted() }
        do { try maps.synchronizeLocal(LocalAddresses.all()) } catch {
            logger.warning("cannot update the local addresses map", metadata: ["error": "\(error)"])
        }
        var missing: [(IPAddress, Int32)] = []
        var nodeChanges: [WorkerCommand] = []
        var learnt: [(group: String, address: IPAddress, mac: MACAddress?)] = []
        state.withLock { s in
            s.neighbors = table
            if let kernelRoutes { s.kernelRoutes = kernelRoutes }
            let next = Self.makeSpec(options: options, macs: interfaceMACs, mtus: interfaceMTUs, ifindexes: ifindexes, state: s)
            let generation = s.spec.generation
            missing += next.unresolvedNeighbors.map { ($0.address, ifindexes[$0.interface]) }
            for change in next.neighborChanges(from: s.spec) {
                switch change {
                case let .node(g, n, mac):
                    nodeChanges.append(.nodeMAC(generation: generation, group: g, node: n, mac: mac))
                    learnt.append((next.groups[g].name, next.groups[g].nodes[n].address, mac))
                case let .sorry(g, mac):
                    nodeChanges.append(.sorryMAC(generation: generation, group: g, mac: mac))
                }
            }
            s.spec = next
            for w in workers { for c in nodeChanges { w.send(c) } }

            let input = routingInput(s)
            for gateway in input.unresolvedGateways {
                missing.append((gateway.address, ifindexes[gateway.interface]))
                refresh.unresolvedGateways.insert(gateway.address)
            }
            if input != s.routingInput {
                s.routingInput = input
                s.routing = RoutingTable(routes: input.routes, neighbors: input.neighbors, version: s.routing.version &+ 1,
                                         interfaceMACs: interfaceMACs)
                for w in workers { w.send(.routing(s.routing)) }
            }
            for u in unrouted {
                if u.reason == .unresolved, u.interface >= 0 { missing.append((u.nextHop, ifindexes[u.interface])) }
                if let i = s.unrouted.firstIndex(where: { $0.destination == u.destination }) {
                    s.unrouted[i].reports += 1
                    s.unrouted[i].reason = u.reason
                    s.unrouted.insert(s.unrouted.remove(at: i), at: 0)
                } else {
                    let status = UnroutedStatus(destination: u.destination, reason: u.reason,
                                                interface: u.interface >= 0 ? options.interfaces[u.interface] : nil, reports: 1)
                    s.unrouted.insert(status, at: 0)
                    refresh.newlyUnrouted.append(status)
                    if s.unrouted.count > 32 { s.unrouted.removeLast() }
                }
            }
        }
        for (address, ifindex) in missing {
            do { try Neighbors.resolve(address, ifindex: ifindex) } catch {
                logger.debug("neighbour resolution request failed", metadata: ["address": "\(address)", "error": "\(error)"])
            }
        }
        for u in unrouted {
            logger.notice("a NAT reply could not be sent", metadata: ["destination": "\(u.destination)", "reason": "\(u.reason.rawValue)"])
        }
        for (group, address, mac) in learnt {
            logger.info("node MAC \(mac.map { "\($0)" } ?? "lost")", metadata: ["group": "\(group)", "node": "\(address)"])
        }
        refresh.nodeMACs = learnt
        return refresh
    }

    /// Whether a worker could not send a reply somewhere since the last refresh: the
    /// daemon refreshes at once, to resolve it.
    public var hasUnrouted: Bool { workers.contains { $0.hasUnrouted } }

    /// The version of the routing table every worker has applied (the lowest).
    public var appliedRoutingVersion: UInt64 { workers.map(\.routingVersion).min() ?? 0 }

    /// Detaches XDP first (traffic goes back to the kernel), then stops the workers.
    public func stop() {
        guard !links.isEmpty || !workers.isEmpty else { return }
        for link in links { link.detach() }
        links.removeAll()
        for w in workers { w.stop() }
        for (queue, _) in workers.enumerated() {
            for slot in 0..<options.interfaces.count { try? maps.removeSocket(slot: slot, queue: queue) }
        }
        workers.removeAll()
        logger.info("data plane stopped")
    }

    deinit { stop() }

    public func snapshot() -> DataplaneSnapshot {
        let views = workers.map(\.current)
        let spec = state.withLock { $0.spec }
        var global: [GlobalCounter: UInt64] = [:]
        for c in GlobalCounter.allCases { global[c] = views.reduce(0) { $0 &+ $1.counters[c] } }
        var drops: [DropReason: UInt64] = [:]
        for r in DropReason.allCases { drops[r] = views.reduce(0) { $0 &+ $1.counters[r] } }
        var groups: [DataplaneSnapshot.Group] = []
        var slot = 0
        for (g, group) in spec.groups.enumerated() {
            let sameLayout = views.allSatisfy { $0.spec.groups.count == spec.groups.count }
            var nodes: [DataplaneSnapshot.Node] = []
            for node in group.nodes {
                let s = slot
                nodes.append(DataplaneSnapshot.Node(
                    address: node.address, port: node.port, weight: node.weight, mac: node.mac,
                    activeFlows: views.reduce(0) { $0 + Int($1.flows.activeFlows(slot: s)) },
                    packets: sameLayout ? views.reduce(0) { $0 &+ $1.counters.node(s, .packets) } : 0,
                    bytes: sameLayout ? views.reduce(0) { $0 &+ $1.counters.node(s, .bytes) } : 0,
                    newFlows: sameLayout ? views.reduce(0) { $0 &+ $1.counters.node(s, .newFlows) } : 0))
                slot += 1
            }
            slot += 1  // sorry slot
            groups.append(DataplaneSnapshot.Group(
                name: group.name,
                packets: sameLayout ? views.reduce(0) { $0 &+ $1.counters.group(g, .packets) } : 0,
                bytes: sameLayout ? views.reduce(0) { $0 &+ $1.counters.group(g, .bytes) } : 0,
                newFlows: sameLayout ? views.reduce(0) { $0 &+ $1.counters.group(g, .newFlows) } : 0,
                sorryFlows: sameLayout ? views.reduce(0) { $0 &+ $1.counters.group(g, .sorryFlows) } : 0,
                nodes: nodes))
        }
        var sockets: [String: UInt64] = [:]
        for w in workers { sockets.merge(w.socketStatistics(), uniquingKeysWith: +) }
        var out = DataplaneSnapshot(groups: groups, global: global, drops: drops, xdp: maps.allCounters(), sockets: sockets,
                                    flows: views.reduce(0) { $0 + $1.flows.count },
                                    flowCapacity: views.reduce(0) { $0 + $1.flows.capacity },
                                    attachModes: Dictionary(uniqueKeysWithValues: links.map { ($0.interface, $0.mode) }))
        out.offload = offloadMemory != nil
        out.offloadedFlows = workers.reduce(0) { $0 + $1.offloadedFlows }
        out.generation = spec.generation
        out.appliedGeneration = appliedGeneration
        state.withLock { s in
            out.unrouted = s.unrouted
            out.routingVersion = s.routing.version
            out.routes = s.routing.routes
        }
        out.appliedRoutingVersion = appliedRoutingVersion
        return out
    }
}
