import FulcrumBPF
import FulcrumCore
import FulcrumDataplane
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The forwarding service: loads the configuration, runs the data plane, reloads on
/// SIGHUP, stops cleanly on SIGTERM/SIGINT.
public final class Daemon {
    let configPath: String
    let statusFile: String?
    let bpfObject: String?
    var logger: Logger
    var generation = 1
    var statusWrites = 0
    var reloadsRejected = 0
    var events: EventLog?
    var checker: HealthChecker?

    /// Node MACs learnt or lost, and destinations newly unroutable, as events.
    func record(_ refresh: Dataplane.RoutingRefresh) {
        guard let events else { return }
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
    var lastMapEntries: [String: Int] = [:]

    public init(configPath: String, statusFile: String?, bpfObject: String? = nil, logger: Logger) {
        self.configPath = configPath
        self.statusFile = statusFile
        self.bpfObject = bpfObject
        self.logger = logger
    }

    /// Runs until SIGTERM or SIGINT. Throws only on start-up failure.
    public func run() throws {
        // Block the signals in this thread before any worker exists, so every thread
        // inherits the mask and only sigtimedwait below sees them.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        var config = try HostCheck.load(path: configPath)
        logger[metadataKey: "host"] = "\(config.nodeName)"
        let events = try EventLog(file: config.events.file, capacity: config.events.memory,
                                  maxFileBytes: config.events.maxBytes, keep: config.events.keep)
        self.events = events
        let dataplane = try Dataplane(options: config.dataplaneOptions(bpfObject: bpfObject), groups: config.groupSpecs,
                                      routes: config.routeSpecs, logger: logger)
        try dataplane.start()
        // Standalone: this LB answers for its VIPs as soon as it forwards. (The pair's
        // cluster service will decide this instead.)
        try dataplane.setActive(true)
        let watch: RoutingWatch?
        do { watch = try RoutingWatch() } catch {
            logger.warning("no subscription to routing changes; they are read every second", metadata: ["error": "\(error)"])
            watch = nil
        }
        record(dataplane.refreshRouting())
        let reactor = HealthReactor(dataplane: dataplane, events: events, logger: logger)
        reactor.groups.withLock { $0 = config.groups }
        let checker = HealthChecker(groups: config.groups) { reactor.changed($0) }
        reactor.checker.withLock { $0 = checker }
        checker.start()
        self.checker = checker
        logger.info("fulcrum running", metadata: ["groups": "\(config.groups.count)", "config": "\(configPath)"])
        events.record(.notice, "daemon.started",
                      "fulcrum started on \(config.dataplane.interfaces.map(\.name).joined(separator: ", ")) with \(config.groups.count) groups",
                      ["config": configPath, "generation": "\(generation)", "pid": "\(getpid())"])
        writeStatus(dataplane, host: config.nodeName)

        var lastNeighborRefresh = monotonicSeconds()
        var fastRefreshes = 10  // resolve quickly right after start and reload
        // A gateway newly without a MAC (a new route, a router that moved): wake every
        // 50 ms for a second, so the kernel's answer reaches the workers in one short
        // wait instead of two of the usual 200 ms. Only a new one: a gateway that stays
        // unresolved must not keep the loop dumping the tables 20 times a second.
        var unresolvedGateways = Set<IPAddress>()
        var quickTicks = 0
        while true {
            var info = siginfo_t()
            var timeout = timespec(tv_sec: 0, tv_nsec: quickTicks > 0 ? 50_000_000 : 200_000_000)
            let signal = sigtimedwait(&signals, &info, &timeout)
            if signal == SIGTERM || signal == SIGINT {
                logger.info("stopping", metadata: ["signal": "\(signal == SIGTERM ? "SIGTERM" : "SIGINT")"])
                events.record(.notice, "daemon.stopping", "fulcrum stopping on \(signal == SIGTERM ? "SIGTERM" : "SIGINT")")
                break
            }
            if signal == SIGHUP {
                statusWrites = 0  // the next status shows the maps as the reload left them
                do {
                    let next = try ConfigLoader.load(path: configPath)
                    // Interfaces by name, as the running data plane numbers them.
                    let running = dataplane.options.interfaces
                    try dataplane.configure(groups: next.groupSpecs(on: running), routes: next.routeSpecs(on: running))
                    if next.dataplane.admission != config.dataplane.admission {
                        let a = next.dataplane.admission
                        try dataplane.setAdmission(perSecond: UInt64(a.newConnectionsPerSecond), burst: UInt64(a.burst))
                    }
                    var restartOnly = next.dataplane
                    restartOnly.admission = config.dataplane.admission
                    if restartOnly != config.dataplane {
                        logger.warning("dataplane settings changed; they take effect at the next restart")
                    }
                    config = next
                    generation += 1
                    fastRefreshes = 10
                    logger.info("configuration reloaded", metadata: ["generation": "\(generation)"])
                    reactor.groups.withLock { $0 = next.groups }
                    checker.update(groups: next.groups)
                    events.record(.notice, "config.applied", "configuration \(generation) applied (\(next.groups.count) groups)",
                                  ["generation": "\(generation)", "file": configPath])
                } catch {
                    reloadsRejected += 1
                    logger.error("reload rejected; the running configuration is unchanged\n\(error)")
                    let lines = "\(error)".split(separator: "\n")
                    events.record(.warning, "config.rejected",
                                  "reload rejected, configuration \(generation) kept: \(lines.first ?? "")"
                                      + (lines.count > 1 ? " (and \(lines.count - 1) more)" : ""),
                                  ["generation": "\(generation)", "file": configPath, "errors": "\(lines.count)"])
                }
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
            writeStatus(dataplane, host: config.nodeName)
        }
        checker.stop()
        dataplane.stop()
    }

    func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    func writeStatus(_ dataplane: Dataplane, host: String) {
        guard let statusFile else { return }
        do {
            // The map sizes cost a system call per entry: read them once a second.
            statusWrites &+= 1
            if statusWrites % 5 == 1 { lastMapEntries = dataplane.maps.entryCounts() }
            var snapshot = dataplane.snapshot()
            snapshot.mapEntries = lastMapEntries
            var report = StatusReport(host: host, generation: generation, snapshot: snapshot,
                                      interfaces: dataplane.options.interfaces)
            // Status shows the alerts (notice and above); the file keeps everything.
            report.events = Array((events?.events() ?? []).filter { $0.severity >= .notice }.suffix(10))
            if let states = checker?.states {
                for g in report.groups.indices {
                    for k in report.groups[g].nodes.indices {
                        let node = report.groups[g].nodes[k]
                        guard let address = IPAddress(node.address),
                              let state = states[NodeIdentity(group: report.groups[g].name, address: address,
                                                              port: UInt16(node.port))] else { continue }
                        report.groups[g].nodes[k].health = state.up ? "up" : "down: \(state.lastFailure ?? "failed")"
                    }
                }
            }
            report.reloadsRejected = reloadsRejected
            try report.write(to: statusFile)
        } catch {
            logger.warning("cannot write status file", metadata: ["path": "\(statusFile)", "error": "\(error)"])
        }
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
