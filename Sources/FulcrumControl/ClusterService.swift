import Crypto
import FulcrumAPIModels
import FulcrumBPF
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

/// This LB's side of the active/standby pair (`cluster:`), on a thread of its own at
/// real-time priority: it sends the signed heartbeats on every interconnect, admits the
/// peer's (size, layout, HMAC-SHA256, the interconnect's peer address, epoch and
/// sequence), feeds `PairElection` with them, with the partition probes of the
/// `np_targets` and with the operator's commands, and carries out what it decides: the
/// active flag (an input to the controller, which alone writes the data plane), then the
/// announcements of every VIP (gratuitous ARP, unsolicited NA), and the events.
///
/// Stopping (SIGTERM) is a seen fault: an active LB tells its peer at once, with
/// heartbeats in the fault role on every interconnect, so the peer takes over without
/// waiting for the timeout.
public final class ClusterService: @unchecked Sendable {
    let config: FulcrumConfig.Cluster
    let nodeName: String
    let key: SymmetricKey
    let sockets: [UDPSocket]
    let wake: WakePipe
    let clock: any MonotonicClock
    let events: EventLog
    let logger: Logger
    let committed: CommittedView
    let announcer: Announcer?
    /// The controller's input: the active flag on or off; `then` runs once it is set.
    let onActivation: @Sendable (_ active: Bool, _ reason: String, _ then: @escaping @Sendable () -> Void) -> Void
    let stopping = Atomic<Bool>(false)
    /// The XDP program's dead-man switch, moved on every turn of the loop.
    let keepAlive: @Sendable (UInt64) -> Void

    /// The operator's commands, taken by the thread; each answer is a sentence (or why not).
    public enum Command: Sendable {
        /// A planned hand-over; `force` goes ahead while the standby's flow sync is not ready.
        case failover(force: Bool)
        case resume
    }
    let commands = Mutex<[(Command, @Sendable (Result<String, CommandRefusal>) -> Void)]>([])
    public struct CommandRefusal: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// What status shows, published by the thread after every turn.
    public let status: Mutex<ClusterStatusModel>

    // The thread's own state.
    var election: PairElection
    var guardian = ReplayGuard<UInt8>()
    let epoch: UInt64
    /// Each interconnect's own sequence (the peer's guard counts them apart).
    var sequence: [UInt64]
    var sent: [UInt64]
    var received: [UInt64]
    var rejected: [[String: UInt64]]
    var lastHeard: [UInt64?]
    var peerConfigVersion: Int?
    var lastTransition: ClusterStatusModel.TransitionModel?
    var transitions = 0
    var realtime = false
    var probe: PartitionProbe?
    var npReached: Bool?
    /// When each announcement falls due (monotonic ns), once the active flag is on.
    var announcements: [UInt64] = []
    /// The controller has set the active flag for the `activations`-th activation (0: none
    /// waiting): announcements start then, and only for the latest activation.
    let flagOn = Atomic<Int>(0)
    var activations = 0
    /// The controller has cleared the active flag after this LB left active: only then do
    /// the heartbeats say so, so the peer never announces while this LB still answers.
    let flagOff = Atomic<Bool>(false)
    /// Active with the flag on and the announcements begun (the heartbeats' "answering").
    var answering = false
    /// A role changed: heartbeats go now, not an interval later.
    var sendNow = false
    /// When the loop last turned: a gap longer than the timeout is a pause (SIGSTOP, a
    /// starved box) in which the peer may have taken over.
    var lastTurn: UInt64 = 0
    /// Rejected datagrams are logged at most once a second.
    var lastRejectionLog: UInt64 = 0

    /// The announcement schedule after a takeover (seconds): several, spaced, the last
    /// past the Linux neighbour `locktime` (1 s) and a second for hosts that missed them.
    public static let announceOffsets = [0, 0.01, 0.05, 1.1, 5]

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(config: FulcrumConfig.Cluster, nodeName: String, interfaces: [String], controller: Controller,
                committed: CommittedView, events: EventLog, logger: Logger,
                announcer: Announcer?, epochFile: String? = nil, clock: any MonotonicClock = SystemClock(),
                flowSyncChannels: [WorkerSyncChannel] = [],
                workerProgress: @escaping @Sendable () -> [UInt64] = { [] },
                keepAlive: @escaping @Sendable (UInt64) -> Void = { _ in },
                onActivation: @escaping @Sendable (Bool, String, @escaping @Sendable () -> Void) -> Void) throws {
        guard let data = FileManager.default.contents(atPath: config.keyFile) else {
            throw Failure(description: "cluster.heartbeat.key_file: cannot read \(config.keyFile): \(String(cString: strerror(errno)))")
        }
        let keyBytes = SharedKey.bytes(fromFile: Array(data))
        if let problem = SharedKey.problem(keyBytes, file: config.keyFile) {
            throw Failure(description: "cluster.heartbeat.key_file: \(problem)")
        }
        key = SymmetricKey(data: keyBytes)
        self.config = config
        self.nodeName = nodeName
        self.committed = committed
        self.events = events
        self.logger = logger
        self.announcer = announcer
        self.clock = clock
        self.onActivation = onActivation
        self.keepAlive = keepAlive
        var sockets: [UDPSocket] = []
        for (i, link) in config.interconnects.enumerated() {
            do {
                let s = try UDPSocket(family: link.local.isIPv4 ? AF_INET : AF_INET6)
                try s.bindTo(SocketAddress(link.local, port: config.port))
                sockets.append(s)
            } catch {
                throw Failure(description: "cluster.interconnects[\(i)].local: cannot listen on \(NodeLabel(address: link.local, port: config.port)): \(error)")
            }
        }
        self.sockets = sockets
        do { wake = try WakePipe() } catch { throw Failure(description: "cluster: \(error)") }
        // Subscribed before the links are read, so no change falls between the two.
        do { linkWatch = try LinkWatch() } catch { throw Failure(description: "cluster: the link monitors: \(error)") }
        // Every data-plane link, the workers, and the listed monitors.
        var links: [(String, FulcrumConfig.Cluster.Monitor.Action)] = interfaces.map { ($0, .failover) }
        for m in config.monitors {
            guard case let .link(name) = m.kind else { continue }
            if let i = links.firstIndex(where: { $0.0 == name }) { links[i].1 = m.action } else { links.append((name, m.action)) }
        }
        var monitors: [Monitor] = []
        for (name, action) in links {
            guard let index = try? InterfaceInfo.index(of: name) else {
                throw Failure(description: "cluster.monitors: there is no interface \(name)")
            }
            monitors.append(.link(name: name, ifindex: index, up: LinkWatch.isRunning(name), action: action))
        }
        for m in config.monitors {
            if case let .ip(address) = m.kind { monitors.append(.ip(IPMonitor(address: address, settings: m))) }
        }
        let dataplaneSettings = config.monitors.first { $0.kind == .dataplane }
            ?? .init(kind: .dataplane, interval: FulcrumConfig.Cluster.Monitor.dataplaneDefaults.interval,
                     timeout: FulcrumConfig.Cluster.Monitor.dataplaneDefaults.timeout)
        monitors.append(.dataplane(DataplaneMonitor(settings: dataplaneSettings, progress: workerProgress)))
        self.monitors = monitors
        var floating: [(FulcrumConfig.Cluster.FloatingAddress, Int32)] = []
        for (i, f) in config.floatingAddresses.enumerated() {
            guard let index = try? InterfaceInfo.index(of: f.interface) else {
                throw Failure(description: "cluster.floating_addresses[\(i)].interface: there is no interface \(f.interface)")
            }
            floating.append((f, index))
        }
        self.floating = floating
        epoch = epochFile.map { Self.nextEpoch(file: $0, logger: logger) } ?? SystemClock.unixMilliseconds()
        sync = try ConfigSync(config: config, key: key, controller: controller, committed: committed, events: events, logger: logger,
                              role: roleCell, epoch: epoch)
        flowSync = config.flowSync
            ? try FlowSyncService(cluster: config, key: key, channels: flowSyncChannels, role: roleCell,
                                  configVersion: { committed.value.version }, epoch: epoch, events: events, logger: logger, clock: clock)
            : nil
        let n = config.interconnects.count
        sequence = Array(repeating: 0, count: n)
        sent = Array(repeating: 0, count: n)
        received = Array(repeating: 0, count: n)
        rejected = Array(repeating: [:], count: n)
        lastHeard = Array(repeating: nil, count: n)
        election = PairElection(settings: .init(isMaster: config.role == .master, interconnects: n, deadInterval: config.timeout,
                                                autoFailback: config.failback == .auto,
                                                dualActive: config.dualActive == .masterStays ? .masterStays : .bothStandDown,
                                                winsTie: nodeName < config.peer),
                                now: Double(clock.nanoseconds()) / 1e9)
        status = Mutex(ClusterStatusModel(
            role: "initial", configuredRole: config.role.rawValue, peer: .init(name: config.peer, role: nil, healthy: nil),
            interconnects: config.interconnects.map {
                .init(local: "\($0.local)", peer: "\($0.peer)", up: false, lastHeardSecondsAgo: nil, sent: 0, received: 0, rejected: [:])
            },
            configVersion: committed.value.version, peerConfigVersion: nil, lastTransition: nil, transitions: 0, held: false,
            npReached: nil, realtime: false))
    }

    /// What makes this LB unhealthy.
    enum Monitor {
        case link(name: String, ifindex: Int32, up: Bool, action: FulcrumConfig.Cluster.Monitor.Action)
        case ip(IPMonitor)
        case dataplane(DataplaneMonitor)
        var up: Bool {
            switch self {
            case let .link(_, _, up, _): up
            case let .ip(m): m.up
            case let .dataplane(m): m.up
            }
        }
        var what: String {
            switch self {
            case let .link(name, _, _, _): "the link of \(name)"
            case let .ip(m): "IP monitor \(m.address)"
            case .dataplane: "the data plane's workers"
            }
        }
        /// What is wrong, for the events and the election's reason.
        var failure: String {
            if case let .dataplane(m) = self, !m.stuck.isEmpty {
                return "the data plane's worker\(m.stuck.count > 1 ? "s" : "") for queue \(m.stuck.map(String.init).joined(separator: ", ")) stuck"
            }
            return what + " down"
        }
        var action: FulcrumConfig.Cluster.Monitor.Action {
            switch self {
            case let .link(_, _, _, action): action
            case let .ip(m): m.settings.action
            case let .dataplane(m): m.settings.action
            }
        }
        var wakeAt: UInt64 {
            switch self {
            case .link: .max
            case let .ip(m): m.wakeAt
            case let .dataplane(m): m.nextSample
            }
        }
    }
    var monitors: [Monitor]
    let linkWatch: LinkWatch
    /// The floating addresses and their interfaces' indexes.
    let floating: [(FulcrumConfig.Cluster.FloatingAddress, Int32)]

    public var role: PairElection.Role { roleCell.role }
    let roleCell = RoleCell()
    /// The configuration sync (its own thread): pushes while this LB is active.
    public let sync: ConfigSync
    /// The flow sync (its own thread), with `cluster.flow_sync` on.
    public let flowSync: FlowSyncService?
    var pushedVersion: Int?
    var peerConfigHash: [UInt8]?

    public func stop() {
        stopping.store(true, ordering: .releasing)
        wake.wake()
    }

    /// An operator's command; `answer` is called from the cluster thread.
    public func perform(_ command: Command, answer: @escaping @Sendable (Result<String, CommandRefusal>) -> Void) {
        commands.withLock { $0.append((command, answer)) }
        wake.wake()
    }

    func seconds(_ ns: UInt64) -> Double { Double(ns) / 1e9 }

    // MARK: The thread

    public func loop() {
        do {
            try ThreadPriority.makeRealtime(priority: 50)
            realtime = true
        } catch {
            logger.warning("the heartbeat thread runs at normal priority: \(error); grant CAP_SYS_NICE (and no RestrictRealtime) for SCHED_FIFO")
            events.record(.warning, "cluster.priority", "heartbeats run at normal priority: \(error)", [:])
        }
        var buffer = [UInt8](repeating: 0, count: 2048)
        var nextSend: UInt64 = 0
        // At start, only what is down is news.
        checkMonitors(changed: monitors.indices.filter { !monitors[$0].up }, now: clock.nanoseconds())
        // Not active yet: a floating address left here by a daemon that died is not ours.
        setFloating(false)
        let interval = UInt64(config.interval * 1e9)
        let timeoutNs = UInt64(config.timeout * 1e9)
        while !stopping.load(ordering: .acquiring) {
            let now = clock.nanoseconds()
            if checkPause(now: now) { drainHeartbeats(&buffer) }
            lastTurn = now
            // Stopped, starved or hung for longer than the timeout, this LB's XDP program
            // stops answering for the VIPs by itself, as the peer takes over.
            keepAlive(now + timeoutNs)
            for (command, answer) in commands.withLock({ c in defer { c = [] }; return c }) { run(command, answer, now: now) }
            handle(election.tick(at: seconds(now)), now: now)
            if now >= nextSend || sendNow {
                sendNow = false
                sendHeartbeats()
                nextSend = now + interval
            }
            if role == .active {
                let c = committed.value
                // Just active with no peer heard (it died): nothing to push to until it is back,
                // when the heartbeats show what it holds.
                if pushedVersion == nil && !election.peerAlive(at: seconds(now)) { pushedVersion = c.version }
                if pushedVersion != c.version {
                    // A change committed here (or this LB just became active): the standby gets it.
                    pushedVersion = c.version
                    sync.requestPush(at: now)
                } else if let peerVersion = peerConfigVersion, let peerHash = peerConfigHash,
                          peerVersion != c.version || peerHash != Self.hashBytes(c.hash) {
                    sync.peerDiffers(now: now)
                }
            } else {
                pushedVersion = nil
            }
            // Off before on: a flag turned off and on again (in that order at the controller)
            // ends with the addresses up.
            if flagOff.exchange(false, ordering: .acquiringAndReleasing) {
                if role != .active { setFloating(false) }
                sendNow = true
            }
            if flagOn.exchange(0, ordering: .acquiringAndReleasing) == activations, role == .active {
                setFloating(true)
                announcements = Self.announceOffsets.map { now + UInt64($0 * 1e9) }
                answering = true
                sendNow = true  // after this turn's first announcement (below)
            }
            while let due = announcements.first, due <= now {
                announcements.removeFirst()
                if role == .active { announcer?.announce(committed.value.groups, floating.map { ($0.0.address, $0.0.interface) }) }
            }
            stepPolledMonitors(now: now, answers: false)
            if let p = probe, let reached = p.result(now: now) {
                probe = nil
                let changed = npReached != reached
                npReached = reached
                if changed { record(reached ? .notice : .warning, "cluster.np_probe",
                       reached ? "partition probe: \(p.answered.map(String.init(describing:)).joined(separator: ", ")) answers"
                               : "partition probe: no np_target answers (\(config.npTargets.map(String.init(describing:)).joined(separator: ", ")))",
                       ["reached": "\(reached)"]) }
                handle(election.partitionProbe(reached: reached, at: seconds(now)), now: now)
            }
            publish(now)
            // Wait for a datagram, a command, or the next thing due.
            var wakeAt = sendNow ? 0 : nextSend
            if let due = announcements.first { wakeAt = min(wakeAt, due) }
            if let p = probe { wakeAt = min(wakeAt, p.deadline) }
            for m in monitors { wakeAt = min(wakeAt, m.wakeAt) }
            let after = clock.nanoseconds()
            let timeout = Int32(clamping: wakeAt > after ? (wakeAt - after + 999_999) / 1_000_000 : 0)
            var fds = sockets.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            fds.append(pollfd(fd: wake.readFD, events: Int16(POLLIN), revents: 0))
            fds.append(pollfd(fd: linkWatch.fd, events: Int16(POLLIN), revents: 0))
            for case let .ip(m) in monitors where m.fd >= 0 { fds.append(pollfd(fd: m.fd, events: Int16(POLLIN), revents: 0)) }
            if let p = probe { fds += p.sockets.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) } }
            _ = poll(&fds, nfds_t(fds.count), min(timeout, 1000))
            if checkPause(now: clock.nanoseconds()) {
                drainHeartbeats(&buffer)
                continue
            }
            for (i, s) in sockets.enumerated() where fds[i].revents & Int16(POLLIN) != 0 {
                for _ in 0..<64 {
                    guard let got = buffer.withUnsafeMutableBytes({ try? s.receive(into: $0) }) ?? nil else { break }
                    buffer.withUnsafeBytes { b in
                        admit(UnsafeRawBufferPointer(rebasing: b[0..<min(got.size, b.count)]), size: got.size,
                              from: got.from?.address, on: i)
                    }
                }
            }
            if fds[sockets.count].revents & Int16(POLLIN) != 0 { wake.drain() }
            if fds[sockets.count + 1].revents & Int16(POLLIN) != 0 { linkChanges() }
            stepPolledMonitors(now: clock.nanoseconds(), answers: true)
            probe?.receive(now: clock.nanoseconds())
        }
        for (_, answer) in commands.withLock({ c in defer { c = [] }; return c }) {
            answer(.failure(CommandRefusal(description: "the daemon is stopping")))
        }
        // Stopping is a fault this LB sees: the peer hears it at once, on every interconnect.
        let now = clock.nanoseconds()
        let wasActive = role == .active
        handle(election.setHealthy(false, reason: "stopping", at: seconds(now)), now: now)
        if wasActive {
            // The flag off first (the controller still runs: it stops last), for at most 50 ms.
            let deadline = now + 50_000_000
            while !flagOff.load(ordering: .acquiring), clock.nanoseconds() < deadline { usleep(1000) }
            setFloating(false)
        }
        for _ in 0..<3 { sendHeartbeats() }
        if wasActive { logger.info("stopped: the peer was told on every interconnect") }
        publish(now)
        Self.writer.sync {}  // every event written before the daemon goes on stopping
    }

    /// A gap since the loop last turned longer than the timeout is a pause (SIGSTOP, a
    /// starved box) in which the peer has taken over, or will: an active LB stops answering
    /// and rejoins as standby, and the peer's next heartbeats decide (`PairElection.paused`).
    /// True when it was one.
    @discardableResult
    func checkPause(now: UInt64) -> Bool {
        guard lastTurn != 0, now &- lastTurn > UInt64(config.timeout * 1e9) else { return false }
        let gap = seconds(now &- lastTurn)
        lastTurn = now
        if role != .active { logger.warning("the cluster thread was paused for \(String(format: "%.2f", gap)) s") }
        handle(election.paused(for: gap, at: seconds(now)), now: now)
        return true
    }

    /// The floating addresses up (this LB is active, its flag on) or down (before the peer
    /// hears that this LB left). A failure is an event; the rest go on.
    func setFloating(_ up: Bool) {
        for (f, ifindex) in floating {
            do {
                if up {
                    try InterfaceAddresses.add(f.address, prefix: f.prefixLength, ifindex: ifindex)
                } else if try !InterfaceAddresses.remove(f.address, prefix: f.prefixLength, ifindex: ifindex) {
                    continue  // it was not there
                }
                logger.info("floating address \(f.address)/\(f.prefixLength) \(up ? "added to" : "removed from") \(f.interface)")
            } catch {
                record(.error, "cluster.floating_failed",
                       "cannot \(up ? "add" : "remove") the floating address \(f.address)/\(f.prefixLength) on \(f.interface): \(error)",
                       ["address": "\(f.address)", "interface": f.interface])
            }
        }
    }

    /// What queued during a pause is old news, dropped: the peer's next heartbeats say what
    /// it is now (one from before its takeover must not make this LB take the service back).
    func drainHeartbeats(_ buffer: inout [UInt8]) {
        for s in sockets {
            while (buffer.withUnsafeMutableBytes({ try? s.receive(into: $0) }) ?? nil) != nil {}
        }
    }

    /// The pair's epoch: this start's Unix milliseconds, or one past the last start's if the
    /// clock went back (a peer would refuse an older epoch as a replay), kept in `file`.
    static func nextEpoch(file: String, logger: Logger) -> UInt64 {
        let last = (try? String(contentsOfFile: file, encoding: .utf8)).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        let epoch = max(SystemClock.unixMilliseconds(), (last ?? 0) &+ 1)
        do {
            try "\(epoch)\n".write(toFile: file, atomically: true, encoding: .utf8)
        } catch {
            logger.warning("cannot keep the pair's epoch in \(file): \(error); a clock set back before a restart would make the peer refuse this LB's heartbeats")
        }
        return epoch
    }

    /// One step of every IP monitor (a send or timeout, or the answers waiting) and of the
    /// data-plane monitor (`answers`: false, its sample); the ones that changed are checked.
    func stepPolledMonitors(now: UInt64, answers: Bool) {
        var changed: [Int] = []
        for i in monitors.indices {
            let before = monitors[i].up
            switch monitors[i] {
            case let .ip(m): if answers { m.receive(now: now) } else { m.tick(now: now) }
            case let .dataplane(m): if !answers { m.tick(now: now) }
            case .link: continue
            }
            if monitors[i].up != before { changed.append(i) }
        }
        if !changed.isEmpty { checkMonitors(changed: changed, now: now) }
    }

    /// The kernel said links changed: the link monitors follow, at once.
    func linkChanges() {
        let (changes, lost) = linkWatch.drain()
        var changed: [Int] = []
        for i in monitors.indices {
            guard case let .link(name, ifindex, up, action) = monitors[i] else { continue }
            var now = up
            if lost { now = LinkWatch.isRunning(name) }
            if let last = changes.last(where: { $0.ifindex == ifindex }) { now = last.running }
            if now != up {
                monitors[i] = .link(name: name, ifindex: ifindex, up: now, action: action)
                changed.append(i)
            }
        }
        if !changed.isEmpty { checkMonitors(changed: changed, now: clock.nanoseconds()) }
    }

    /// Events for the monitors that changed; the election learns this LB's health.
    func checkMonitors(changed: [Int], now: UInt64) {
        for i in changed {
            let m = monitors[i]
            record(m.up ? .notice : .warning, m.up ? "cluster.monitor.recovered" : "cluster.monitor.failed",
                   m.up ? "\(m.what) is up again" : m.failure + (m.action == .alarm ? " (action alarm: no failover)" : ""),
                   ["monitor": m.what, "action": m.action.rawValue])
        }
        let failing = monitors.filter { !$0.up && $0.action == .failover }.map(\.failure)
        let healthy = failing.isEmpty
        guard healthy != election.healthy else { return }
        handle(election.setHealthy(healthy, reason: healthy ? "" : failing.joined(separator: ", "), at: seconds(now)), now: now)
    }

    func run(_ command: Command, _ answer: @Sendable (Result<String, CommandRefusal>) -> Void, now: UInt64) {
        switch command {
        case let .failover(force):
            let c = committed.value
            if election.role == .active, let flowSync, !force, !flowSync.peerReady {
                return answer(.failure(CommandRefusal(description:
                    "failover refused: \(config.peer) does not yet hold this LB's flows (its flow sync is not ready: bulk transfer under way, or not heard); established connections would break. Wait, or add --force")))
            }
            if election.role == .active, let theirs = peerConfigVersion,
               theirs != c.version || peerConfigHash != Self.hashBytes(c.hash) {
                return answer(.failure(CommandRefusal(description:
                    "failover refused: \(config.peer) holds configuration \(theirs), this LB \(c.version): `fulcrumctl sync` first")))
            }
            switch election.handOver(at: seconds(now)) {
            case let .failure(why):
                answer(.failure(CommandRefusal(description: "failover refused: \(why.rawValue)")))
            case let .success(happened):
                handle(happened, now: now)
                sendHeartbeats()  // the peer hears "handing over" now, not an interval later
                answer(.success("handing the service over to \(config.peer): it takes the VIPs, then this LB stops answering"))
            }
        case .resume:
            guard election.held else {
                return answer(.failure(CommandRefusal(description: "resume refused: this LB is not standing down after a dual active (it is \(election.role))")))
            }
            let before = election.role
            handle(election.resume(at: seconds(now)), now: now)
            answer(.success(election.role == .active && before != .active ? "resumed: this LB is active"
                                                                          : "resumed: this LB is \(election.role)"))
        }
    }

    // MARK: Heartbeats

    func sendHeartbeats() {
        let c = committed.value
        let hash = Self.hashBytes(c.hash)
        for (i, s) in sockets.enumerated() {
            sequence[i] += 1
            let h = Heartbeat(role: election.role, isMaster: config.role == .master, handingOver: election.handingOver,
                              healthy: election.healthy, yielded: election.yielded, held: election.held,
                              answering: answering && election.role == .active, interconnect: UInt8(i), epoch: epoch,
                              sequence: sequence[i], configVersion: UInt64(c.version), configHash: hash)
            var bytes = h.encodeSigned()
            bytes.append(contentsOf: HMAC<SHA256>.authenticationCode(for: bytes, using: key))
            if (try? s.send(bytes, to: SocketAddress(config.interconnects[i].peer, port: config.port))) == true { sent[i] += 1 }
        }
    }

    /// The configuration hash's first 16 bytes ("sha256:<hex>").
    static func hashBytes(_ text: String) -> [UInt8] {
        let hex = Array(text.split(separator: ":").last ?? "")
        var out: [UInt8] = []
        var i = 0
        while i + 1 < hex.count, out.count < 16 {
            guard let b = UInt8(String(hex[i...i + 1]), radix: 16) else { break }
            out.append(b)
            i += 2
        }
        return out
    }

    func admit(_ bytes: UnsafeRawBufferPointer, size: Int, from source: IPAddress?, on i: Int) {
        func refuse(_ why: MessageRejection) {
            rejected[i][why.rawValue, default: 0] += 1
            let now = clock.nanoseconds()
            if now &- lastRejectionLog >= 1_000_000_000 {
                lastRejectionLog = now
                record(.warning, "cluster.heartbeat_rejected",
                       "a heartbeat on interconnect \(i) from \(source.map(String.init(describing:)) ?? "?") was refused: \(why.rawValue)",
                       ["interconnect": "\(i)", "reason": why.rawValue])
            }
        }
        guard size <= Heartbeat.size else { return refuse(.oversize) }
        let h: Heartbeat
        switch Heartbeat.decode(bytes) {
        case let .failure(why): return refuse(why)
        case let .success(decoded): h = decoded
        }
        let signed = UnsafeRawBufferPointer(rebasing: bytes[0..<Heartbeat.signedBytes])
        let mac = UnsafeRawBufferPointer(rebasing: bytes[Heartbeat.signedBytes..<Heartbeat.size])
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: signed, using: key) else { return refuse(.badMAC) }
        guard source == config.interconnects[i].peer else { return refuse(.sourceMismatch) }
        if let stale = guardian.admit(h, arrivedOn: i, now: SystemClock.unixMilliseconds()) { return refuse(stale) }
        let now = clock.nanoseconds()
        received[i] += 1
        lastHeard[i] = now
        peerConfigVersion = Int(h.configVersion)
        peerConfigHash = h.configHash
        let c = committed.value
        election.peerConfigInSync = Int(h.configVersion) == c.version && h.configHash == Self.hashBytes(c.hash)
        election.peerFlowsReady = flowSync?.peerReady ?? true
        handle(election.heartbeat(h.peer, on: i, at: seconds(now)), now: now)
    }

    // MARK: Decisions carried out

    func handle(_ happened: [PairElection.Event], now: UInt64) {
        for e in happened {
            switch e {
            case let .role(from, to, reason):
                transitions += 1
                // Leaving active, the heartbeats wait for the flag to be off (`flagOff`);
                // a hand-over says so at once (the peer may answer beside this LB).
                if from != .active || election.handingOver { sendNow = true }
                roleCell.set(to)
                lastTransition = .init(time: EventModels.time.format(Date()), from: "\(from)", to: "\(to)", reason: reason)
                let fields = ["from": "\(from)", "to": "\(to)", "reason": reason, "peer": config.peer]
                if to == .active {
                    record(.warning, "cluster.active", from == .initial ? "\(nodeName) is active: \(reason)"
                           : "failover executed (\(config.peer) → \(nodeName)): \(reason)", fields)
                    activations += 1
                    let activation = activations
                    // Every flow the old active sent is in the workers' tables before this
                    // LB answers for the VIPs: the first packet after the takeover finds it.
                    flowSync?.settle()
                    onActivation(true, reason) { [self] in
                        flagOn.store(activation, ordering: .releasing)
                        wake.wake()
                    }
                } else {
                    record(from == .active ? .warning : .notice, "cluster.\(to)", "\(nodeName) is \(to): \(reason)", fields)
                    announcements = []
                    answering = false
                    if from == .active || from == .initial {
                        onActivation(false, reason) { [self] in
                            flagOff.store(true, ordering: .releasing)
                            wake.wake()
                        }
                    }
                }
            case let .interconnect(i, up):
                let link = config.interconnects[i]
                record(up ? .notice : .warning, up ? "cluster.interconnect.up" : "cluster.interconnect.down",
                       "interconnect \(i) (\(link.local) ↔ \(link.peer)) is \(up ? "up" : "down: no heartbeat for \(config.timeout) s")",
                       ["interconnect": "\(i)", "local": "\(link.local)", "peer": "\(link.peer)"])
            case .peerLost:
                record(.warning, "cluster.peer_lost", "\(config.peer) is silent on every interconnect for \(config.timeout) s",
                       ["peer": config.peer])
            case .peerFound:
                npReached = nil
                record(.notice, "cluster.peer_found", "\(config.peer) is heard again", ["peer": config.peer])
                // After a partition, the active refreshes its neighbours' caches.
                if role == .active { announcements = ([now, now + 1_100_000_000] + announcements).sorted() }
            case .probeNeeded:
                if config.npTargets.isEmpty {
                    // Nothing to ask: a silent peer is taken to be dead (say so in the docs).
                    handle(election.partitionProbe(reached: true, at: seconds(now)), now: now)
                } else if probe == nil {
                    probe = PartitionProbe(targets: config.npTargets, now: now, timeout: max(0.2, min(1, config.timeout * 4)))
                }
            case .dualActive:
                record(.error, "cluster.dual_active", "both LBs were active; rule \(config.dualActive.rawValue)",
                       ["rule": config.dualActive.rawValue])
            case let .sameRole(actsAsMaster):
                record(.error, "cluster.same_role",
                       "\(nodeName) and \(config.peer) are both configured as \(config.role.rawValue); \(actsAsMaster ? nodeName : config.peer) acts as master (its name sorts first): fix cluster.role on one of them",
                       ["role": config.role.rawValue])
            case .handOverAbandoned:
                record(.warning, "cluster.handover_abandoned", "\(config.peer) did not take the service within \(config.timeout) s",
                       ["peer": config.peer])
            }
        }
    }

    /// Events and log lines are written off the real-time thread (a file write or a full
    /// pipe must not delay a heartbeat), in order, by one serial queue.
    static let writer = DispatchQueue(label: "fulcrum-cluster-events")

    func record(_ severity: Event.Severity, _ kind: String, _ message: String, _ fields: [String: String]) {
        let events = events, logger = logger
        Self.writer.async {
            events.record(severity, kind, message, fields)
            logger.log(level: severity >= .warning ? .warning : .info, "\(message)")
        }
    }

    func publish(_ now: UInt64) {
        let model = ClusterStatusModel(
            role: "\(election.role)", configuredRole: config.role.rawValue,
            peer: .init(name: config.peer, role: election.peerAlive(at: seconds(now)) ? election.peer.map { "\($0.role)" } : nil,
                        healthy: election.peerAlive(at: seconds(now)) ? election.peer?.healthy : nil,
                        configuredRole: election.peer.map { $0.isMaster ? "master" : "slave" }),
            interconnects: config.interconnects.indices.map { i in
                .init(local: "\(config.interconnects[i].local)", peer: "\(config.interconnects[i].peer)",
                      up: election.isUp(interconnect: i, at: seconds(now)),
                      lastHeardSecondsAgo: lastHeard[i].map { seconds(now &- $0) }, sent: sent[i], received: received[i],
                      rejected: rejected[i])
            },
            configVersion: committed.value.version, peerConfigVersion: peerConfigVersion, lastTransition: lastTransition,
            transitions: transitions, held: election.held, npReached: npReached, realtime: realtime)
        var withMonitors = model
        withMonitors.monitors = monitors.map { m in
            var model: ClusterStatusModel.MonitorModel = switch m {
            case let .link(name, _, up, _): .init(type: "link", target: name, up: up)
            case let .ip(ip): .init(type: "ip", target: "\(ip.address)", up: ip.up)
            case let .dataplane(d): .init(type: "dataplane", target: "\(d.workers) worker\(d.workers == 1 ? "" : "s")", up: d.up)
            }
            model.action = m.action.rawValue
            return model
        }
        withMonitors.flowSync = flowSync?.status.withLock { $0 }
        if let flowSync {
            var up: UInt64 = 0
            for (i, link) in model.interconnects.enumerated() where link.up { up |= 1 << UInt64(i) }
            flowSync.linksUp.store(up, ordering: .relaxed)
        }
        status.withLock { $0 = withMonitors }
    }
}

/// The data plane's liveness: every worker's loop count (`Worker.progress`), read every
/// `interval`; a worker whose count has not moved for `timeout` is stuck (its loop turns at
/// least every 10 ms, idle or not), and the monitor fails until every worker moves again.
/// A daemon stopped as a whole is the peer's to see (its heartbeat timeout).
final class DataplaneMonitor {
    let settings: FulcrumConfig.Cluster.Monitor
    let progress: @Sendable () -> [UInt64]
    private var last: [UInt64] = []
    private var movedAt: [UInt64] = []
    private(set) var nextSample: UInt64 = 0
    private(set) var stuck: [Int] = []
    var up: Bool { stuck.isEmpty }
    var workers: Int { last.count }

    init(settings: FulcrumConfig.Cluster.Monitor, progress: @escaping @Sendable () -> [UInt64]) {
        self.settings = settings
        self.progress = progress
        last = progress()
    }

    func tick(now: UInt64) {
        guard now >= nextSample else { return }
        nextSample = now + UInt64(settings.interval * 1e9)
        let counts = progress()
        if counts.count != last.count {
            last = counts
            movedAt = Array(repeating: now, count: counts.count)
            return
        }
        if movedAt.count != counts.count { movedAt = Array(repeating: now, count: counts.count) }
        let limit = UInt64(settings.timeout * 1e9)
        var stuckNow: [Int] = []
        for i in counts.indices {
            if counts[i] != last[i] { movedAt[i] = now } else if now &- movedAt[i] >= limit { stuckNow.append(i) }
        }
        last = counts
        stuck = stuckNow
    }
}

/// An ICMP or ICMPv6 echo socket to one address (raw, CAP_NET_RAW, non-blocking, polled by
/// the cluster thread): sends an echo with a fresh id and sequence, and tells whether the
/// datagrams waiting hold its answer. The partition probe and the IP monitors use it.
final class EchoSocket {
    let address: IPAddress
    let fd: Int32
    private var pending: (id: UInt16, sequence: UInt16)?
    private var buffer = [UInt8](repeating: 0, count: 1500)

    init(_ address: IPAddress) {
        self.address = address
        fd = (try? Socket.open(family: address.isIPv4 ? AF_INET : AF_INET6, type: Int32(SOCK_RAW.rawValue),
                               protocol: address.isIPv4 ? Int32(IPPROTO_ICMP) : Int32(IPPROTO_ICMPV6), nonBlocking: true)) ?? -1
        if fd >= 0 { _ = try? Socket.connect(fd, to: SocketAddress(address, port: 0)) }
    }

    deinit { if fd >= 0 { Socket.close(fd) } }

    var isOpen: Bool { fd >= 0 }

    func send(body: String) {
        guard fd >= 0 else { return }
        let id = UInt16.random(in: 1...UInt16.max), sequence = UInt16.random(in: 0...UInt16.max)
        pending = (id, sequence)
        let echo = HealthReply.echoRequest(ipv4: address.isIPv4, id: id, sequence: sequence, body: Array(body.utf8))
        _ = try? echo.withUnsafeBytes { try Socket.send(fd, $0) }
    }

    /// Reads what waits; true when the last echo sent was answered (once).
    func answered() -> Bool {
        guard fd >= 0 else { return false }
        var got = false
        while let n = (try? buffer.withUnsafeMutableBytes({ try Socket.receive(fd, into: $0) })) ?? nil {
            if let p = pending, HealthReply.isEchoReply(Array(buffer.prefix(n)), ipv4: address.isIPv4, id: p.id, sequence: p.sequence) {
                pending = nil
                got = true
            }
        }
        return got
    }

    func forget() { pending = nil }
}

/// One round of ICMP echo to the `np_targets`: reached as soon as one answers, not
/// reached when none has by the deadline.
final class PartitionProbe {
    let echoes: [EchoSocket]
    let deadline: UInt64
    var answered: [IPAddress] = []
    var sockets: [Int32] { echoes.filter(\.isOpen).map(\.fd) }

    init(targets: [IPAddress], now: UInt64, timeout: Double) {
        deadline = now + UInt64(timeout * 1e9)
        echoes = targets.map(EchoSocket.init)
        for e in echoes { e.send(body: "fulcrum np probe") }
    }

    func receive(now: UInt64) {
        for e in echoes where !answered.contains(e.address) && e.answered() { answered.append(e.address) }
    }

    /// nil while undecided.
    func result(now: UInt64) -> Bool? {
        if !answered.isEmpty { return true }
        return now >= deadline ? false : nil
    }
}

/// An IP monitor: an ICMP echo every `interval`; `retry + 1` echoes in a row unanswered
/// within `timeout` make it fail, one answer makes it recover.
final class IPMonitor {
    let address: IPAddress
    let settings: FulcrumConfig.Cluster.Monitor
    let echo: EchoSocket
    var fd: Int32 { echo.fd }
    private(set) var up = true
    private var misses = 0
    private var nextSend: UInt64 = 0
    private var deadline: UInt64?

    init(address: IPAddress, settings: FulcrumConfig.Cluster.Monitor) {
        self.address = address
        self.settings = settings
        echo = EchoSocket(address)
        if !echo.isOpen { up = false }
    }

    /// When it needs the thread next: its pending echo's deadline, else its next send
    /// (never, with no socket).
    var wakeAt: UInt64 { echo.isOpen ? deadline ?? nextSend : .max }

    func tick(now: UInt64) {
        if let d = deadline, now >= d {
            deadline = nil
            echo.forget()
            misses += 1
            if misses > settings.retry { up = false }
        }
        guard echo.isOpen, deadline == nil, now >= nextSend else { return }
        nextSend = now + UInt64(settings.interval * 1e9)
        echo.send(body: "fulcrum monitor")
        deadline = now + UInt64(settings.timeout * 1e9)
    }

    func receive(now: UInt64) {
        // Reads all that waits; an answer to an echo already given up on does not count.
        guard echo.answered(), deadline != nil else { return }
        deadline = nil
        misses = 0
        up = true
    }
}
