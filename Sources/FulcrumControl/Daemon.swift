import FulcrumAPIModels
import FulcrumBPF
import FulcrumCore
import FulcrumDataplane
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the services of a running daemon share: the data plane, the controller (the one
/// owner of the configuration), the event log and the health checker. The API is built
/// on it (FulcrumAPI), so the daemon's executable adds it as one more service.
public final class Runtime: Sendable {
    public let local: FulcrumConfig
    public let dataplane: Dataplane
    public let controller: Controller
    public let events: EventLog
    public let checker: HealthChecker
    /// The node agents' listener, with an `agent:` section.
    public let agents: AgentService?
    public let started = Date()
    /// This daemon's claim on its state file, held for its life.
    let stateLock: FileLock
    /// The committed configuration as last applied, readable without awaiting the
    /// controller (status, metrics, the forwarding loop).
    public let committed: CommittedView

    init(local: FulcrumConfig, dataplane: Dataplane, controller: Controller, events: EventLog, checker: HealthChecker,
         agents: AgentService?, committed: CommittedView, stateLock: FileLock) {
        self.local = local
        self.stateLock = stateLock
        self.dataplane = dataplane
        self.controller = controller
        self.events = events
        self.checker = checker
        self.agents = agents
        self.committed = committed
    }
}

/// The committed configuration, as the controller last published it.
public final class CommittedView: Sendable {
    private let current: Mutex<Controller.Committed>
    init(_ c: Controller.Committed) { current = Mutex(c) }
    public var value: Controller.Committed { current.withLock { $0 } }
    func set(_ c: Controller.Committed) { current.withLock { $0 = c } }
}

/// `fulcrum run`: a swift-service-lifecycle `ServiceGroup` of the forwarding loop, the
/// SIGHUP reload, and what the caller adds (the API). SIGTERM and SIGINT shut it down
/// gracefully: the forwarding service goes first, detaching XDP.
public final class Daemon: Sendable {
    let configPath: String
    let statusFile: String?
    let bpfObject: String?
    let logger: Logger

    public init(configPath: String, statusFile: String?, bpfObject: String? = nil, logger: Logger) {
        self.configPath = configPath
        self.statusFile = statusFile
        self.bpfObject = bpfObject
        self.logger = logger
    }

    /// Starts the data plane (throws on a start-up failure, before anything is served),
    /// then runs until SIGTERM or SIGINT.
    public func run(services extra: (Runtime) throws -> [any Service] = { _ in [] }) async throws {
        // Block the signals before any thread exists, so every thread inherits the mask and
        // the service group's signal handling (a signalfd) alone receives them.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        var logger = self.logger
        ResourceLimits.raiseOpenFiles(logger: logger)
        let config = try HostCheck.load(path: configPath)
        logger[metadataKey: "host"] = "\(config.nodeName)"
        let events = try EventLog(file: config.events.file, capacity: config.events.memory,
                                  maxFileBytes: config.events.maxBytes, keep: config.events.keep)
        let stateLock = try StateFile.claim(config.stateFile)
        let (committed, note, fromStateFile) = try Controller.initialState(config)
        logger.info("\(note)")
        Controller.recordMissingApplied(committed, fromStateFile: fromStateFile, events: events, note: note)
        var starting = config
        starting.groups = committed.groups
        let dataplane = try Dataplane(options: config.dataplaneOptions(bpfObject: bpfObject), groups: starting.groupSpecs,
                                      routes: config.routeSpecs, logger: logger)
        try dataplane.start()
        try Controller.persist(committed, to: config.stateFile)
        // Standalone: this LB answers for its VIPs as soon as it forwards. (The pair's
        // cluster service will decide this instead.)
        try dataplane.setActive(true)
        let reactor = HealthReactor(dataplane: dataplane, events: events, logger: logger)
        reactor.groups.withLock { $0 = committed.groups }
        let checker = HealthChecker(groups: committed.groups, onChange: { reactor.changed($0) },
                                    onLocalFault: { reactor.localFault($0) })
        reactor.checker.withLock { $0 = checker }
        let view = CommittedView(committed)
        let agents: AgentService?
        // A discovered node becomes a change like any other; the controller is made below.
        let controllerBox = Mutex<Controller?>(nil)
        do {
            agents = try config.agent.map {
                try AgentService(config: $0, groups: committed.groups, dataplane: dataplane, events: events, logger: logger) { d in
                    guard let controller = controllerBox.withLock({ $0 }) else { return }
                    Task {
                        let mutation: Controller.Mutation
                        switch d {
                        case let .add(group, address, port):
                            mutation = .addNode(group: group, port == 0 ? #"{"address": "\#(address)"}"# : #"{"address": "\#(address)", "port": \#(port)}"#)
                        case let .remove(group, address, port):
                            mutation = .removeNode(group: group, node: port == 0 ? "\(address)" : (address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"))
                        case let .disable(group, address, port):
                            mutation = .patchNode(group: group, node: port == 0 ? "\(address)" : (address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"),
                                                  NodePatchModel(enabled: false))
                        }
                        _ = try? await controller.change(mutation, origin: "discovery")
                    }
                }
            }
        } catch {
            dataplane.stop()
            throw error
        }
        let controller = Controller(local: config, committed: committed, driver: DataplaneDriver(dataplane: dataplane, local: config),
                                    events: events, logger: logger) { c in
            view.set(c)
            reactor.groups.withLock { $0 = c.groups }
            checker.update(groups: c.groups)
            agents?.update(groups: c.groups)
        }
        controllerBox.withLock { $0 = controller }
        let runtime = Runtime(local: config, dataplane: dataplane, controller: controller, events: events, checker: checker,
                              agents: agents, committed: view, stateLock: stateLock)
        let forwarding = ForwardingService(runtime: runtime, statusFile: statusFile, logger: logger)
        let added: [any Service]
        do { added = try extra(runtime) } catch {
            dataplane.stop()
            throw error
        }
        checker.start()
        agents?.start()
        logger.info("fulcrum running", metadata: ["groups": "\(committed.groups.count)", "config": "\(configPath)",
                                                   "version": "\(committed.version)"])
        events.record(.notice, "daemon.started",
                      "fulcrum started on \(config.dataplane.interfaces.map(\.name).joined(separator: ", ")) with \(committed.groups.count) groups, \(note)",
                      ["config": configPath, "version": "\(committed.version)", "pid": "\(getpid())"])
        let reload = ReloadService(runtime: runtime, logger: logger)
        // Shut down in reverse: the forwarding service (last) detaches XDP first.
        let group = ServiceGroup(configuration: .init(
            services: (added + [reload, forwarding]).map {
                .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup)
            },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}

/// SIGHUP: the configuration file's groups become the configuration (through the
/// controller, like any change); a changed admission budget applies at once; other
/// node-local settings wait for a restart.
final class ReloadService: Service {
    let runtime: Runtime
    let logger: Logger

    init(runtime: Runtime, logger: Logger) {
        self.runtime = runtime
        self.logger = logger
    }

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            do {
                _ = try await runtime.controller.change(.reloadFile, origin: "SIGHUP")
            } catch {
                continue  // logged and recorded as an event by the controller
            }
            guard let next = try? ConfigLoader.load(path: runtime.local.file) else { continue }
            let running = runtime.local.dataplane
            if next.dataplane.admission != running.admission {
                let a = next.dataplane.admission
                do {
                    try runtime.dataplane.setAdmission(perSecond: UInt64(a.newConnectionsPerSecond), burst: UInt64(a.burst))
                } catch {
                    logger.error("cannot set the admission budget", metadata: ["error": "\(error)"])
                }
            }
            var restartOnly = next.dataplane
            restartOnly.admission = running.admission
            if restartOnly != running || next.api != runtime.local.api || next.events != runtime.local.events {
                logger.warning("node-local settings changed (dataplane, api or events); they take effect at the next restart")
            }
        }
    }
}

/// The forwarding loop's control side, on a thread of its own (its netlink I/O blocks):
/// follows the kernel's routes and neighbours, and writes the status file. On shutdown
/// it stops the health checks and detaches the data plane.
final class ForwardingService: Service, @unchecked Sendable {
    let runtime: Runtime
    let statusFile: String?
    let logger: Logger
    let stopping = Atomic<Bool>(false)
    /// Ends the loop's current pause.
    let wake = WakePipe()
    // Touched by the loop's thread only.
    var statusWrites = 0
    var lastMapEntries: [String: Int] = [:]

    init(runtime: Runtime, statusFile: String?, logger: Logger) {
        self.runtime = runtime
        self.statusFile = statusFile
        self.logger = logger
    }

    func run() async throws {
        await withTaskCancellationOrGracefulShutdownHandler {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let thread = Thread { [self] in
                    loop()
                    done.resume()
                }
                thread.name = "fulcrum-control"
                thread.start()
            }
        } onCancelOrGracefulShutdown: { [self] in
            stopping.store(true, ordering: .releasing)
            wake.wake()
        }
    }

    /// Sleeps up to `milliseconds`, or until shutdown.
    func pause(_ milliseconds: Int32) {
        var p = pollfd(fd: wake.readFD, events: Int16(POLLIN), revents: 0)
        _ = poll(&p, 1, milliseconds)
    }

    /// Node MACs learnt or lost, and destinations newly unroutable, as events.
    func record(_ refresh: Dataplane.RoutingRefresh) {
        let events = runtime.events
        for (group, address, mac) in refresh.nodeMACs {
            if let mac {
                events.record(.info, "node.mac.learned", "\(group): node \(address) is at \(mac)",
                              ["group": group, "node": "\(address)", "mac": "\(mac)"])
            } else {
                events.record(.warning, "node.mac.lost", "\(group): node \(address) has no MAC; it gets no new flows",
                              ["group": group, "node": "\(address)"])
            }
        }
        for u in refresh.newlyUnrouted {
            events.record(.warning, "reply.unroutable", "NAT replies to \(u.destination) cannot be sent: \(u.reason.rawValue)",
                          ["destination": "\(u.destination)", "reason": u.reason.rawValue])
        }
    }

    func loop() {
        let dataplane = runtime.dataplane
        let watch: RoutingWatch?
        do { watch = try RoutingWatch() } catch {
            logger.warning("no subscription to routing changes; they are read every second", metadata: ["error": "\(error)"])
            watch = nil
        }
        record(dataplane.refreshRouting())
        writeStatus()
        var lastNeighborRefresh = monotonicSeconds()
        var fastRefreshes = 10  // resolve quickly right after start and after a change
        var seenVersion = runtime.committed.value.version
        // A gateway newly without a MAC (a new route, a router that moved): wake every
        // 50 ms for a second, so the kernel's answer reaches the workers in one short
        // wait instead of two of the usual 200 ms. Only a new one: a gateway that stays
        // unresolved must not keep the loop dumping the tables 20 times a second.
        var unresolvedGateways = Set<IPAddress>()
        var quickTicks = 0
        while !stopping.load(ordering: .acquiring) {
            pause(quickTicks > 0 ? 50 : 200)
            if stopping.load(ordering: .acquiring) { break }
            let version = runtime.committed.value.version
            if version != seenVersion {
                seenVersion = version
                fastRefreshes = 10
                statusWrites = 0  // the next status shows the maps as the change left them
            }
            let now = monotonicSeconds()
            let changed = (watch?.drain() ?? false) || dataplane.hasUnrouted
            if changed || fastRefreshes > 0 || quickTicks > 0 || now - lastNeighborRefresh >= 1 {
                let refresh = dataplane.refreshRouting()
                record(refresh)
                if !refresh.unresolvedGateways.isSubset(of: unresolvedGateways) { quickTicks = 20 }
                unresolvedGateways = refresh.unresolvedGateways
                lastNeighborRefresh = now
                fastRefreshes = max(0, fastRefreshes - 1)
                quickTicks = max(0, quickTicks - 1)
            }
            writeStatus()
        }
        logger.info("stopping")
        runtime.events.record(.notice, "daemon.stopping", "fulcrum stopping")
        runtime.checker.stop()
        runtime.agents?.stop()
        dataplane.stop()
    }

    func writeStatus() {
        guard let statusFile else { return }
        do {
            // The map sizes cost a system call per entry: read them once a second.
            statusWrites &+= 1
            if statusWrites % 5 == 1 { lastMapEntries = runtime.dataplane.maps.entryCounts() }
            var report = runtime.statusReport()
            report.mapEntries = lastMapEntries
            try report.write(to: statusFile)
        } catch {
            logger.warning("cannot write status file", metadata: ["path": "\(statusFile)", "error": "\(error)"])
        }
    }
}

extension Runtime {
    /// What is wrong with this LB itself, in words, for status: empty when nothing is.
    public var alarms: [String] {
        var out: [String] = []
        if let f = checker.localFault {
            out.append("health checks cannot run on this LB: \(f.reason) (\(f.checks) check(s) skipped; node states kept)")
        }
        return out
    }

    /// The status file's document: counters, health, the latest alerts.
    public func statusReport() -> StatusReport {
        let c = committed.value
        var report = StatusReport(host: local.nodeName, generation: c.version, snapshot: dataplane.snapshot(),
                                  interfaces: dataplane.options.interfaces)
        // Status shows the alerts (notice and above); the file keeps everything.
        report.reloadsRejected = controller.rejected.load(ordering: .relaxed)
        report.events = Array(events.events().filter { $0.severity >= .notice }.suffix(10))
        report.alarms = alarms
        let states = checker.states
        for g in report.groups.indices {
            for k in report.groups[g].nodes.indices {
                let node = report.groups[g].nodes[k]
                guard let address = IPAddress(node.address),
                      let state = states[NodeIdentity(group: report.groups[g].name, address: address,
                                                      port: UInt16(node.port))] else { continue }
                report.groups[g].nodes[k].health = state.up ? "up" : "down: \(state.lastFailure ?? "failed")"
            }
        }
        return report
    }
}

/// What a change of a node's health does, on the health checker's thread: the data plane
/// learns it by identity (so it holds across reloads), and it is an event, as is a group
/// left with no live node and its return.
final class HealthReactor: Sendable {
    let dataplane: Dataplane
    let events: EventLog
    let logger: Logger
    /// The running groups (the daemon replaces them on reload).
    let groups = Mutex<[FulcrumConfig.Group]>([])
    let groupsDown = Mutex<Set<String>>([])
    let checker = Mutex<HealthChecker?>(nil)

    init(dataplane: Dataplane, events: EventLog, logger: Logger) {
        self.dataplane = dataplane
        self.events = events
        self.logger = logger
    }

    /// Health checks that cannot run on this LB (no file descriptor, buffer or port): an
    /// alarm about this LB, never a node's failure; and its end.
    func localFault(_ fault: HealthChecker.LocalFault?) {
        if let fault {
            logger.error("health checks cannot run on this LB; node states are kept", metadata: ["reason": "\(fault.reason)"])
            events.record(.error, "lb.local_fault",
                          "health checks cannot run on this LB (\(fault.reason)); every node keeps the state it had",
                          ["reason": fault.reason])
        } else {
            logger.notice("health checks run again")
            events.record(.notice, "lb.local_fault.cleared", "health checks run again on this LB")
        }
    }

    func changed(_ change: HealthChecker.Change) {
        let n = change.node
        dataplane.setHealth(n, up: change.up)
        let fields = ["group": n.group, "node": "\(n.address)", "port": "\(n.port)"]
        if change.up {
            logger.notice("node up", metadata: ["node": "\(n)"])
            events.record(.notice, "node.up", "\(n.group): node \(n.address) is up", fields)
        } else {
            let why = change.reason ?? "failed"
            logger.warning("node down", metadata: ["node": "\(n)", "reason": "\(why)"])
            events.record(.warning, "node.down", "\(n.group): node \(n.address) is down (\(why))",
                          fields.merging(["reason": why]) { a, _ in a })
        }
        // A group whose every node is down sends new flows to its sorry server, if it
        // has one that is up.
        guard let group = groups.withLock({ $0.first { $0.name == n.group } }),
              let states = checker.withLock({ $0?.states }) else { return }
        let allDown = !group.nodes.isEmpty && group.nodes.allSatisfy {
            states[NodeIdentity(group: group.name, address: $0.address, port: $0.port)]?.up == false
        }
        let was = groupsDown.withLock { down in allDown ? !down.insert(group.name).inserted : down.remove(group.name) != nil }
        if allDown && !was {
            events.record(.error, "group.no_live_node",
                          "\(group.name): no node is up; new flows go to "
                              + (group.sorry.map { "the sorry server \($0.address)" } ?? "nowhere (no sorry server)"),
                          ["group": group.name])
        } else if !allDown && was {
            events.record(.notice, "group.back", "\(group.name): a node is up again; new flows go to the nodes",
                          ["group": group.name])
        }
    }
}
