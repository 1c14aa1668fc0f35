import AsyncHTTPClient
import FulcrumBPF
import FulcrumConfiguration
import FulcrumCore
import Foundation
import NIOCore
import NIOSSL
import Synchronization
import FulcrumSystem

/// Runs every group's health checks on one thread, with non-blocking sockets and poll:
/// TCP connect, HTTP GET (expected status), UDP request and any answer. Each node has a
/// `HealthTracker` (rise/fall); a change of state is handed to `onChange`. The thread
/// never touches the data plane itself.
public final class HealthChecker: @unchecked Sendable {
    public struct Change: Sendable {
        public var node: NodeIdentity
        public var up: Bool
        public var reason: String?

        public init(node: NodeIdentity, up: Bool, reason: String?) {
            self.node = node
            self.up = up
            self.reason = reason
        }
    }

    /// What status shows for a checked node.
    public struct State: Sendable, Equatable {
        public var up: Bool
        public var lastFailure: String?
        /// Times the node went down or up since it was first checked.
        public var transitions: UInt64 = 0
    }

    struct Target {
        var id: NodeIdentity
        var address: IPAddress
        var port: UInt16
        var check: FulcrumConfig.HealthCheck
        var tracker: HealthTracker
        var nextDue: Double
        var probe: Probe?
        var transitions: UInt64 = 0
    }

    struct Probe {
        var fd: Int32
        var deadline: Double
        var phase: Phase
        var received: [UInt8] = []
        /// ICMP: the echo's identifier and sequence.
        var echo: (id: UInt16, sequence: UInt16) = (0, 0)
        enum Phase { case connecting, awaitingReply }
    }

    private let onChange: @Sendable (Change) -> Void
    /// A check that could not run for a reason on this LB (`LocalFault`), and its end (nil).
    private let onLocalFault: @Sendable (LocalFault?) -> Void
    private let fault = Mutex<LocalFault?>(nil)

    /// Checks that cannot run for a reason on this LB, not the node's: no file descriptor,
    /// no buffer, no memory, no local port. They say nothing of the node, so its state is
    /// kept as it was; the fault is this LB's, and is raised as its alarm.
    public struct LocalFault: Sendable, Equatable {
        public var reason: String
        /// Checks that could not run since the fault began.
        public var checks: Int

        public init(reason: String, checks: Int) {
            self.reason = reason
            self.checks = checks
        }
    }

    /// The fault in force, if checks cannot run now.
    public var localFault: LocalFault? { fault.withLock { $0 } }

    static func isLocalFault(_ code: Int32) -> Bool {
        [EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL, EAGAIN].contains(code)
    }
    private let pending = Mutex<[FulcrumConfig.Group]?>(nil)
    private let published = Mutex<[NodeIdentity: State]>([:])
    private let running = Atomic<Bool>(true)
    private var thread: Thread?
    /// HTTPS checks run on AsyncHTTPClient's event loop; their results come back here,
    /// with the rebuild they were started in, and a byte on `wake` ends the loop's poll.
    private struct Outcome { var id: NodeIdentity; var epoch: Int; var success: Bool; var reason: String?; var local = false }
    private let outcomes = Mutex<[Outcome]>([])
    private let wake: WakePipe
    /// The time checks are scheduled by.
    let clock: any MonotonicClock
    private var epoch = 0
    /// Made at the first HTTPS check (on the checker thread), shut down when it stops.
    private var httpsClient: HTTPClient?
    private var https: HTTPClient {
        if let httpsClient { return httpsClient }
        // A check asks whether the node answers, not who it is: certificates are not
        // verified (self-signed ones are common on real servers' health ports).
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.redirectConfiguration = .disallow
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        httpsClient = client
        return client
    }
    /// Owned by the checker thread.
    private var targets: [Target] = []

    public init(groups: [FulcrumConfig.Group], clock: any MonotonicClock = SystemClock(),
                onChange: @escaping @Sendable (Change) -> Void,
                onLocalFault: @escaping @Sendable (LocalFault?) -> Void = { _ in }) throws {
        wake = try WakePipe()
        self.clock = clock
        self.onChange = onChange
        self.onLocalFault = onLocalFault
        pending.withLock { $0 = groups }
    }

    /// The checks on a thread of their own, until `stop` (the daemon runs `run` as a service).
    public func start() {
        let t = Thread { [self] in run() }
        t.name = "fulcrum-health"
        thread = t
        t.start()
    }

    public func stop() {
        running.store(false, ordering: .releasing)
        wake.wake()
    }

    /// A new configuration: targets are rebuilt, and a node keeps its state when its
    /// identity and check stay the same.
    public func update(groups: [FulcrumConfig.Group]) { pending.withLock { $0 = groups } }

    /// Every checked node's state.
    public var states: [NodeIdentity: State] { published.withLock { $0 } }



    /// The port a node is checked on: the check's, the node's (NAT), or the service's.
    static func checkPort(_ g: FulcrumConfig.Group, _ node: FulcrumConfig.Node, _ check: FulcrumConfig.HealthCheck) -> UInt16 {
        check.port ?? (node.port != 0 ? node.port : g.ports.first ?? 0)
    }

    func rebuild(_ groups: [FulcrumConfig.Group]) {
        epoch += 1  // an HTTPS check of the old targets finishing now is ignored
        var old: [NodeIdentity: Target] = [:]
        for t in targets {
            if let p = t.probe, p.fd >= 0 { Socket.close(p.fd) }
            old[t.id] = t
        }
        targets = []
        let now = clock.seconds()
        for g in groups {
            let members = g.nodes + (g.sorry.map { [$0] } ?? [])
            for (i, node) in members.enumerated() {
                // A node's own check, else its group's (the sorry server: the group's).
                guard let check = i < g.nodes.count ? g.check(for: node) : g.healthCheck else { continue }
                let id = NodeIdentity(group: g.name, address: node.address, port: node.port)
                var target = Target(id: id, address: node.address, port: Self.checkPort(g, node, check), check: check,
                                    tracker: HealthTracker(rise: check.rise, fall: check.fall),
                                    nextDue: now + check.interval * Double(i) / Double(max(1, members.count)), probe: nil)
                if let previous = old.removeValue(forKey: id), previous.check == check {
                    target.tracker = previous.tracker
                    target.transitions = previous.transitions
                }
                targets.append(target)
            }
        }
        // Nodes that left a checked group, or whose group stopped checking, are up again
        // as far as health goes (the data plane starts a node up).
        for (id, t) in old where !t.tracker.isUp { onChange(Change(node: id, up: true, reason: "no longer checked")) }
        publish()
    }

    func publish() {
        let snapshot = Dictionary(targets.map { ($0.id, State(up: $0.tracker.isUp, lastFailure: $0.tracker.lastFailure,
                                                              transitions: $0.transitions)) },
                                  uniquingKeysWith: { a, _ in a })
        published.withLock { $0 = snapshot }
    }

    /// Checks until `stop`, on the caller's thread.
    public func run() {
        while running.load(ordering: .acquiring) {
            if let groups = pending.withLock({ p -> [FulcrumConfig.Group]? in defer { p = nil }; return p }) {
                rebuild(groups)
            }
            let now = clock.seconds()
            for i in targets.indices where targets[i].probe == nil && targets[i].nextDue <= now {
                targets[i].nextDue = now + targets[i].check.interval
                startProbe(i, now: now)
            }
            var fds: [pollfd] = [pollfd(fd: wake.readFD, events: Int16(POLLIN), revents: 0)]
            var owners: [Int] = [-1]
            var wait = 0.1
            for (i, t) in targets.enumerated() {
                if let p = t.probe {
                    if p.fd >= 0 {
                        fds.append(pollfd(fd: p.fd, events: Int16(p.phase == .connecting ? POLLOUT : POLLIN), revents: 0))
                        owners.append(i)
                    }
                    wait = min(wait, p.deadline - now)
                } else {
                    wait = min(wait, t.nextDue - now)
                }
            }
            _ = poll(&fds, nfds_t(fds.count), Int32(max(0, wait) * 1000) + 1)
            let after = clock.seconds()
            if fds[0].revents != 0 { wake.drain() }
            for o in takeOutcomes() {
                guard let i = targets.firstIndex(where: { $0.id == o.id }), targets[i].probe?.fd == -1 else { continue }
                if o.local { localFault(i, o.reason ?? "local fault") } else { finish(i, o.success, o.reason) }
            }
            for (k, pfd) in fds.enumerated() where k > 0 {
                let i = owners[k]
                if pfd.revents != 0 { advance(i) } else if let p = targets[i].probe, after >= p.deadline { finish(i, false, "timeout") }
            }
            // HTTPS checks whose answer is overdue (the client's own deadline came first).
            for i in targets.indices {
                if let p = targets[i].probe, p.fd == -1, after >= p.deadline + 1 { finish(i, false, "timeout") }
            }
        }
        for t in targets { if let p = t.probe, p.fd >= 0 { Socket.close(p.fd) } }
        try? httpsClient?.syncShutdown()
    }

    private func takeOutcomes() -> [Outcome] {
        let current = epoch
        return outcomes.withLock { o in
            defer { o.removeAll() }
            return o.filter { $0.epoch == current }
        }
    }

    /// An HTTPS GET on AsyncHTTPClient's event loop; the verdict comes back through
    /// `outcomes`.
    private func startHTTPS(_ i: Int, now: Double) {
        let t = targets[i]
        targets[i].probe = Probe(fd: -1, deadline: now + t.check.timeout, phase: .awaitingReply)
        let host = t.address.isIPv4 ? "\(t.address)" : "[\(t.address)]"
        var request = HTTPClientRequest(url: "https://\(host):\(t.port)\(t.check.path)")
        request.headers.add(name: "Host", value: t.check.host ?? host)
        request.headers.add(name: "User-Agent", value: "fulcrum-health-check")
        let id = t.id, started = epoch, check = t.check, client = https
        Task { [self] in
            var success = false
            var reason: String?
            do {
                let response = try await client.execute(request, timeout: .milliseconds(Int64(check.timeout * 1000)))
                let code = Int(response.status.code)
                if !check.expect.contains(code) {
                    reason = "status \(code)"
                } else if let text = check.expectText {
                    let body = try await response.body.collect(upTo: 65536)
                    success = String(buffer: body).contains(text)
                    if !success { reason = "body lacks \"\(text.prefix(40))\"" }
                } else {
                    success = true
                }
            } catch let error as HTTPClientError where error == .deadlineExceeded || error == .connectTimeout {
                reason = "timeout"
            } catch let error as IOError where Self.isLocalFault(error.errnoCode) {
                outcomes.withLock { $0.append(Outcome(id: id, epoch: started, success: false, reason: "\(error)", local: true)) }
                wake.wake()
                return
            } catch {
                reason = "\(error)".contains("refused") ? "refused" : "TLS or HTTP error: \("\(error)".prefix(80))"
            }
            outcomes.withLock { $0.append(Outcome(id: id, epoch: started, success: success, reason: reason)) }
            wake.wake()
        }
    }

    private func startProbe(_ i: Int, now: Double) {
        let t = targets[i]
        if t.check.kind == .https { return startHTTPS(i, now: now) }
        let family = t.address.isIPv4 ? AF_INET : AF_INET6
        let type: Int32
        var proto: Int32 = 0
        switch t.check.kind {
        case .udp: type = Int32(SOCK_DGRAM.rawValue)
        case .tcp, .http, .https: type = Int32(SOCK_STREAM.rawValue)
        case .icmp:
            // A raw socket (CAP_NET_RAW): ping sockets are off for root by default.
            type = Int32(SOCK_RAW.rawValue)
            proto = t.address.isIPv4 ? Int32(IPPROTO_ICMP) : Int32(IPPROTO_ICMPV6)
        }
        let fd: Int32
        do { fd = try Socket.open(family: family, type: type, protocol: proto, nonBlocking: true) } catch let error as SystemError
            where Self.isLocalFault(error.errno) {
            // Out of descriptors or memory: this LB's fault; the node was not even asked.
            return localFault(i, "\(error)")
        } catch {
            // Not allowed (no CAP_NET_RAW) or not supported: the check cannot work; the node is not known up.
            return record(i, false, "\(error)")
        }
        targets[i].probe = Probe(fd: fd, deadline: now + t.check.timeout, phase: .connecting)
        // (A connected raw socket receives only what comes from the node.)
        do {
            _ = try Socket.connect(fd, to: SocketAddress(t.address, port: t.check.kind == .icmp ? 0 : t.port))
            // A UDP or raw "connect" completes at once; TCP's when poll says so.
            if t.check.kind == .udp || t.check.kind == .icmp { sendRequest(i) }
        } catch let error as SystemError {
            if Self.isLocalFault(error.errno) { return localFault(i, "\(error)") }
            finish(i, false, Self.reason(error.errno))
        } catch {
            finish(i, false, "\(error)")
        }
    }

    /// Progress on a probe's socket.
    private func advance(_ i: Int) {
        guard let p = targets[i].probe else { return }
        let kind = targets[i].check.kind
        if p.phase == .connecting {
            let error = Socket.pendingError(p.fd)
            if error != 0 { return finish(i, false, Self.reason(error)) }
            if kind == .tcp { return finish(i, true, nil) }
            return sendRequest(i)
        }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let n: Int
        do {
            guard let got = try buffer.withUnsafeMutableBytes({ try Socket.receive(p.fd, into: $0) }) else { return }
            n = got
        } catch let error as SystemError {
            return finish(i, false, Self.reason(error.errno))
        } catch {
            return finish(i, false, "\(error)")
        }
        let answer = Array(buffer.prefix(n))
        let verdict: HealthReply.Verdict
        switch kind {
        case .icmp:
            // Someone else's echo is no answer: keep waiting until the timeout.
            guard HealthReply.isEchoReply(answer, ipv4: targets[i].address.isIPv4, id: p.echo.id, sequence: p.echo.sequence)
            else { return }
            verdict = .up
        case .udp:
            verdict = HealthReply.udp(answer, text: targets[i].check.expectText)
        case .tcp, .http, .https:
            targets[i].probe!.received += answer
            verdict = HealthReply.http(targets[i].probe!.received, ended: n == 0, expect: targets[i].check.expect,
                                       text: targets[i].check.expectText)
        }
        switch verdict {
        case .pending: return
        case .up: finish(i, true, nil)
        case let .down(why): finish(i, false, why)
        }
    }

    private func sendRequest(_ i: Int) {
        let t = targets[i]
        let request: [UInt8]
        if t.check.kind == .icmp {
            let id = UInt16.random(in: 1...UInt16.max)
            let sequence = UInt16.random(in: 0...UInt16.max)
            targets[i].probe!.echo = (id, sequence)
            request = HealthReply.echoRequest(ipv4: t.address.isIPv4, id: id, sequence: sequence, body: Array("fulcrum health".utf8))
        } else if t.check.kind == .http {
            let host = t.check.host ?? (t.address.isIPv4 ? "\(t.address)" : "[\(t.address)]")
            request = Array("GET \(t.check.path) HTTP/1.0\r\nHost: \(host)\r\nUser-Agent: fulcrum-health-check\r\nConnection: close\r\n\r\n".utf8)
        } else {
            request = Array(t.check.send.utf8)
        }
        do {
            let sent = try request.withUnsafeBytes { try Socket.send(t.probe!.fd, $0) }
            guard let sent else { return localFault(i, "send: the socket's buffer is full") }
            guard sent == request.count else { return finish(i, false, "short send") }
        } catch let error as SystemError {
            if Self.isLocalFault(error.errno) { return localFault(i, "\(error)") }
            return finish(i, false, Self.reason(error.errno))
        } catch {
            return finish(i, false, "\(error)")
        }
        targets[i].probe!.phase = .awaitingReply
    }

    private func finish(_ i: Int, _ success: Bool, _ reason: String?) {
        if let p = targets[i].probe, p.fd >= 0 { Socket.close(p.fd) }
        targets[i].probe = nil
        record(i, success, reason)
    }

    /// A check that could not run here: the node keeps its state, the LB raises its alarm
    /// (once, when the fault begins), and the check runs again at its next interval.
    private func localFault(_ i: Int, _ reason: String) {
        if let p = targets[i].probe, p.fd >= 0 { Socket.close(p.fd) }
        targets[i].probe = nil
        lastLocalFault = clock.seconds()
        let began = fault.withLock { f -> Bool in
            if f == nil {
                f = LocalFault(reason: reason, checks: 1)
                return true
            }
            f!.checks += 1
            f!.reason = reason
            return false
        }
        if began { onLocalFault(LocalFault(reason: reason, checks: 1)) }
    }

    /// When a check last could not run here (the checker thread's).
    private var lastLocalFault = 0.0
    /// Checks must run to a verdict this long after the last local fault before the alarm
    /// is cleared, so a fault that comes and goes is one alarm, not one per check.
    static let localFaultClearance = 5.0

    private func record(_ i: Int, _ success: Bool, _ reason: String?) {
        // Checks run to a verdict again: whatever kept them from running is over.
        if clock.seconds() - lastLocalFault >= Self.localFaultClearance,
           fault.withLock({ f -> Bool in defer { f = nil }; return f != nil }) {
            onLocalFault(nil)
        }
        let failureBefore = targets[i].tracker.lastFailure
        let change = targets[i].tracker.record(success: success, reason: reason)
        if change != nil { targets[i].transitions += 1 }
        // The published states change only with a node's state (or its reason): a check
        // that changes nothing costs no copy of every node's state.
        if change != nil || targets[i].tracker.lastFailure != failureBefore { publish() }  // before onChange, which may read `states`
        switch change {
        case .wentUp: onChange(Change(node: targets[i].id, up: true, reason: nil))
        case let .wentDown(why): onChange(Change(node: targets[i].id, up: false, reason: why))
        case nil: break
        }
    }

    static func reason(_ code: Int32) -> String {
        switch code {
        case ECONNREFUSED: return "refused"
        case ETIMEDOUT: return "timeout"
        case EHOSTUNREACH, ENETUNREACH: return "unreachable"
        case ECONNRESET: return "reset"
        default: return String(cString: strerror(code))
        }
    }
}
