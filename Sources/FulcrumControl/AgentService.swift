import Crypto
import FulcrumConfiguration
import FulcrumCore
import FulcrumDataplane
import Foundation
import Logging
import Synchronization
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// The LB's end of the node agents (`fulcrum-agent`): a UDP socket (`agent.port`) on a
/// thread of its own. Each datagram is checked (size, layout, HMAC-SHA256 with the shared
/// key, the sender is the node it names, the node is in a group with `dynamic_weights:
/// cpu`, newer than anything seen from it) and counted by what became of it; memory is
/// one entry per configured node whatever arrives. Accepted loads go into each group's
/// `DynamicWeights`; every 200 ms the weights in force go to the data plane, and a node
/// whose agent falls silent returns to its static weight, with an event. Nodes that
/// announce themselves (`accept_discovered_nodes`) are `DiscoveryTracker`'s to admit, add
/// and expire; this service feeds it reports and the time and passes its decisions on.
public final class AgentService: @unchecked Sendable {
    let config: FulcrumConfig.Agent
    let key: SymmetricKey
    /// The weights in force, for the controller to apply.
    let onWeights: @Sendable ([NodeIdentity: Int]) -> Void
    let events: EventLog
    let logger: Logger
    let socket: UDPSocket
    var fd: Int32 { socket.fd }
    let wake: WakePipe
    /// The time silences and expiries are measured by.
    let clock: any MonotonicClock
    let stopping = Atomic<Bool>(false)

    /// Reports by outcome: `accepted` and each `AgentReport.Rejection`.
    public let counts = Mutex<[String: UInt64]>([:])
    /// The groups with dynamic weights, as last configured (the thread picks them up).
    let pending = Mutex<[FulcrumConfig.Group]?>(nil)
    /// Per node identity: the smoothed load, for status.
    public let loads = Mutex<[NodeIdentity: Double]>([:])

    /// Nodes found by their agents' announcements, for groups with
    /// `accept_discovered_nodes`: into the controller, as changes like any other.
    let onDiscovery: @Sendable (DiscoveryDecision) -> Void
    /// The discovery policy (candidates, discovered nodes, their expiry); this service
    /// only feeds it reports and the time, and passes its decisions on.
    var discovery: DiscoveryTracker

    // The thread's own state.
    var groups: [FulcrumConfig.Group] = []
    var weights: [String: DynamicWeights] = [:]
    var guardian = ReplayGuard<IPAddress>()
    var reporting = Set<IPAddress>()

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(config: FulcrumConfig.Agent, groups: [FulcrumConfig.Group], events: EventLog, logger: Logger,
                clock: any MonotonicClock = SystemClock(),
                onWeights: @escaping @Sendable ([NodeIdentity: Int]) -> Void,
                onDiscovery: @escaping @Sendable (DiscoveryDecision) -> Void = { _ in }) throws {
        self.onDiscovery = onDiscovery
        discovery = DiscoveryTracker(timeout: UInt64(config.discoveredTimeout * 1e9), expiry: config.discoveredExpiry)
        self.onWeights = onWeights
        self.clock = clock
        guard let data = FileManager.default.contents(atPath: config.keyFile) else {
            throw Failure(description: "agent.key_file: cannot read \(config.keyFile): \(String(cString: strerror(errno)))")
        }
        let keyBytes = SharedKey.bytes(fromFile: Array(data))
        if let problem = SharedKey.problem(keyBytes, file: config.keyFile) { throw Failure(description: "agent.key_file: \(problem)") }
        self.config = config
        key = SymmetricKey(data: keyBytes)
        self.events = events
        self.logger = logger
        // One dual-stack socket: IPv4 agents arrive as IPv4-mapped addresses.
        do {
            socket = try UDPSocket(family: AF_INET6, dualStack: true)
            wake = try WakePipe()
        } catch {
            throw Failure(description: "agent: \(error)")
        }
        // Room for a burst (a flood is read and counted, not left to the kernel to drop);
        // what the kernel drops anyway is counted too (`queue_full`, from SO_MEMINFO).
        socket.setReceiveBuffer(8 << 20)
        do { try socket.bindTo(SocketAddress(IPAddress(high: 0, low: 0), port: config.port)) } catch {
            throw Failure(description: "agent.port: cannot listen on UDP \(config.port): \(error)")
        }
        update(groups: groups)
    }


    /// The configuration changed: the groups with dynamic weights are taken up.
    public func update(groups: [FulcrumConfig.Group]) {
        pending.withLock { $0 = groups.filter { $0.dynamicWeights || $0.acceptDiscoveredNodes } }
    }

    public func stop() {
        stopping.store(true, ordering: .releasing)
        wake.wake()
    }

    /// Datagrams the kernel dropped because the socket's queue was full.
    public var queueDrops: UInt64 {
        var info = [UInt32](repeating: 0, count: 9)  // SK_MEMINFO_VARS
        var length = socklen_t(36)
        guard getsockopt(fd, SOL_SOCKET, 55 /* SO_MEMINFO */, &info, &length) == 0 else { return 0 }
        return UInt64(info[8])  // SK_MEMINFO_DROPS
    }

    func count(_ outcome: String) {
        counts.withLock { $0[outcome, default: 0] += 1 }
    }

    func now() -> UInt64 { clock.nanoseconds() }
    /// The wall clock, against which an agent's epoch (its start, in Unix ms) is judged.
    static func unixMilliseconds() -> UInt64 { SystemClock.unixMilliseconds() }

    /// Takes up new groups, keeping what is known of nodes that stay.
    func adopt(_ next: [FulcrumConfig.Group]) {
        var rebuilt: [String: DynamicWeights] = [:]
        let parameters = DynamicWeights.Parameters(alpha: config.smoothing, floor: config.floor, hysteresis: config.hysteresis,
                                                   silence: config.silence)
        for g in next where g.dynamicWeights {
            var w = DynamicWeights(staticWeights: g.nodes.map(\.weight), parameters: parameters)
            if let old = weights[g.name], let previous = groups.first(where: { $0.name == g.name }) {
                for (i, n) in g.nodes.enumerated() {
                    guard let j = previous.nodes.firstIndex(where: { $0.address == n.address && $0.port == n.port }),
                          let load = old.nodes[j].load else { continue }
                    w.report(i, load: load, interval: old.nodes[j].interval, now: old.nodes[j].lastReport)
                }
            }
            rebuilt[g.name] = w
        }
        groups = next
        weights = rebuilt
        discovery.groups = next.map {
            DiscoveryTracker.Group(name: $0.name, acceptsDiscoveredNodes: $0.acceptDiscoveredNodes, isIPv4: $0.vip.isIPv4,
                                   nodes: $0.nodes.map(\.address), port: $0.nodes.first?.port ?? 0)
        }
        guardian.keep(Set(next.flatMap { $0.nodes.map(\.address) }).union(discovery.tracked))
        publish()
    }

    func loop() {
        var buffer = [UInt8](repeating: 0, count: 2048)
        var lastTick = now()
        while !stopping.load(ordering: .acquiring) {
            if let next = pending.withLock({ p -> [FulcrumConfig.Group]? in defer { p = nil }; return p }) { adopt(next) }
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.readFD, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 2, 200)
            if fds[0].revents & Int16(POLLIN) != 0 {
                // Drain what is queued, a bounded batch at a time.
                for _ in 0..<256 {
                    guard let got = buffer.withUnsafeMutableBytes({ try? socket.receive(into: $0) }) ?? nil else { break }
                    buffer.withUnsafeBytes { b in
                        handle(UnsafeRawBufferPointer(rebasing: b[0..<min(got.size, b.count)]), size: got.size, from: got.from?.address)
                    }
                }
            }
            let t = now()
            if t &- lastTick >= 200_000_000 {
                lastTick = t
                tick(t)
            }
        }
    }

    /// One datagram: counted as accepted or by why it was not.
    func handle(_ bytes: UnsafeRawBufferPointer, size: Int, from source: IPAddress?) {
        if size > AgentReport.size {
            count(AgentReport.Rejection.oversize.rawValue)
            return
        }
        let report: AgentReport
        switch AgentReport.decode(bytes) {
        case let .failure(why):
            count(why.rawValue)
            return
        case let .success(r):
            report = r
        }
        let signed = UnsafeRawBufferPointer(rebasing: bytes[0..<AgentReport.signedBytes])
        let mac = UnsafeRawBufferPointer(rebasing: bytes[AgentReport.signedBytes..<AgentReport.size])
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: signed, using: key) else {
            count(AgentReport.Rejection.badMAC.rawValue)
            return
        }
        guard let source, source == report.address else {
            count(AgentReport.Rejection.sourceMismatch.rawValue)
            return
        }
        let members = groups.filter(\.dynamicWeights).compactMap { g -> (String, Int)? in
            g.nodes.firstIndex { $0.address == report.address }.map { (g.name, $0) }
        }
        guard discovery.admits(report.address, isMember: !members.isEmpty) else {
            count(AgentReport.Rejection.unknownNode.rawValue)
            return
        }
        if let why = guardian.admit(report, now: Self.unixMilliseconds()) {
            count(why.rawValue)
            return
        }
        count("accepted")
        let t = now()
        let added = discovery.report(from: report.address, now: t)
        if !added.isEmpty {
            added.forEach(onDiscovery)
            let names = added.map(\.group).sorted()
            events.record(.notice, "node.discovered", "node \(report.address) announced itself; added to \(names.joined(separator: ", "))",
                          ["node": "\(report.address)", "groups": names.joined(separator: ",")])
        }
        let interval = UInt64(max(50, report.intervalMilliseconds)) * 1_000_000
        for (group, i) in members {
            weights[group]?.report(i, load: Double(report.load) / 1000, interval: interval, now: t)
        }
        if reporting.insert(report.address).inserted {
            events.record(.notice, "node.agent.reporting", "node \(report.address): its agent reports (load \(Double(report.load) / 10)%); its weight follows its load",
                          ["node": "\(report.address)"])
        }
    }

    /// Every 200 ms: discovered nodes gone silent, agents gone silent, and the weights and
    /// loads in force published.
    func tick(_ t: UInt64) {
        // Decisions come address by address: each address's, then its one event.
        let gone = discovery.expire(now: t)
        for (i, decision) in gone.enumerated() {
            onDiscovery(decision)
            guard i == gone.count - 1 || gone[i + 1].address != decision.address else { continue }
            events.record(.warning, "node.discovered.gone",
                          "node \(decision.address): its agent has been silent \(Int(config.discoveredTimeout)) s; "
                              + (discovery.expiry == .remove ? "removed" : "disabled"),
                          ["node": "\(decision.address)"])
        }
        for g in groups {
            guard var w = weights[g.name] else { continue }
            let silenced = w.tick(now: t).silenced
            weights[g.name] = w
            for i in silenced where reporting.remove(g.nodes[i].address) != nil {
                let address = g.nodes[i].address
                logger.warning("node agent silent", metadata: ["node": "\(address)"])
                events.record(.warning, "node.agent.silent",
                              "node \(address): no report for \(config.silence) intervals; its static weight applies again",
                              ["node": "\(address)"])
            }
        }
        // (The data plane ignores an overlay that did not change.)
        publish()
    }

    /// The weights in force to the data plane, and the loads for status.
    func publish() {
        var overlay: [NodeIdentity: Int] = [:]
        var loads: [NodeIdentity: Double] = [:]
        for g in groups {
            guard let w = weights[g.name] else { continue }
            for (i, n) in g.nodes.enumerated() {
                let id = NodeIdentity(group: g.name, address: n.address, port: n.port)
                overlay[id] = w.nodes[i].weight
                if let load = w.nodes[i].load { loads[id] = load }
            }
        }
        onWeights(overlay)
        self.loads.withLock { $0 = loads }
    }
}
