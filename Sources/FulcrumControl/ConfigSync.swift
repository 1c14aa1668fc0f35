import Crypto
import FulcrumAPIModels
import FulcrumConfiguration
import FulcrumCore
import Foundation
import Logging
import Synchronization
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// The pair's configuration sync, on a thread of its own (its TCP exchanges must never
/// delay a heartbeat). The active pushes the load-balancing configuration (the groups: what
/// the API changes) to the standby on every committed change, when the heartbeats show the
/// two apart, and on `fulcrumctl sync`; the standby takes a push whole through its
/// controller, with the active's version, or not at all. Node-local settings never travel.
///
/// A push is one TCP connection to the peer's interconnect address on `cluster.port`:
/// ```
///  0  "FLCS"       magic
///  4  1            version, then 3 bytes of zero
///  8  epoch        u64, the sender's start (Unix ms)
/// 16  sequence     u64, from 1 within an epoch
/// 24  config       u64, the version pushed
/// 32  length       u32, the document's bytes
/// 36  document     the groups as the API's JSON (`{"groups": [...]}`)
///  …  HMAC-SHA256  32 bytes over everything before, with the pair's key
/// ```
/// The answer is one line: `OK <version> <hash>` or `REFUSED <why>`. The standby refuses a
/// push that is cut short, badly signed, replayed or older than one it took (epoch and
/// sequence), from another address than the interconnect's peer, or sent to an active LB.
public final class ConfigSync: @unchecked Sendable {
    static let magic: [UInt8] = Array("FLCS".utf8)
    static let headerSize = 36
    static let limit = 64 << 20

    let config: FulcrumConfig.Cluster
    let key: SymmetricKey
    let controller: Controller
    let committed: CommittedView
    let events: EventLog
    let logger: Logger
    let roleCell: RoleCell
    func role() -> PairElection.Role { roleCell.role }
    let listeners: [Int32]
    let wake: WakePipe
    let stopping = Atomic<Bool>(false)
    /// The pair's epoch (the cluster service's: it survives a clock set back).
    let epoch: UInt64
    var sequence: UInt64 = 0
    var guardian = ReplayGuard<UInt8>()

    /// Pushes asked for (a commit, a difference seen, an operator), with who waits for the answer.
    let wanted = Mutex<(push: Bool, answers: [@Sendable (Result<String, ClusterService.CommandRefusal>) -> Void])>((false, []))
    /// The last push's outcome, for status and events.
    public let lastPush = Mutex<String?>(nil)
    var lastDifferencePush: UInt64 = 0

    public init(config: FulcrumConfig.Cluster, key: SymmetricKey, controller: Controller, committed: CommittedView, events: EventLog,
                logger: Logger, role: RoleCell, epoch: UInt64) throws {
        self.epoch = epoch
        self.config = config
        self.key = key
        self.controller = controller
        self.committed = committed
        self.events = events
        self.logger = logger
        self.roleCell = role
        var fds: [Int32] = []
        for (i, link) in config.interconnects.enumerated() {
            do {
                let fd = try Socket.open(family: link.local.isIPv4 ? AF_INET : AF_INET6, type: Int32(SOCK_STREAM.rawValue),
                                         nonBlocking: true, "config sync socket")
                try Socket.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
                try Socket.bindTo(fd, SocketAddress(link.local, port: config.port))
                try SystemCall.run("listen") { listen(fd, 4) }
                fds.append(fd)
            } catch {
                for fd in fds { Socket.close(fd) }
                throw ClusterService.Failure(description: "cluster.interconnects[\(i)].local: cannot listen on TCP \(NodeLabel(address: link.local, port: config.port)) for config sync: \(error)")
            }
        }
        listeners = fds
        do { wake = try WakePipe() } catch { throw ClusterService.Failure(description: "config sync: \(error)") }
    }

    deinit { for fd in listeners { Socket.close(fd) } }

    public func stop() {
        stopping.store(true, ordering: .releasing)
        wake.wake()
    }

    /// A committed change, or an operator's `sync`: push when this LB is active.
    public func requestPush(at now: UInt64? = nil, answer: (@Sendable (Result<String, ClusterService.CommandRefusal>) -> Void)? = nil) {
        if let now { lastDifferencePush = now }  // (the cluster thread's own field) a push is under way
        wanted.withLock { w in
            w.push = true
            if let answer { w.answers.append(answer) }
        }
        wake.wake()
    }

    /// The heartbeats show the peer's configuration apart from ours: push, at most every 2 s.
    func peerDiffers(now: UInt64) {
        guard now &- lastDifferencePush >= 2_000_000_000 else { return }
        lastDifferencePush = now
        requestPush()
    }

    public func loop() {
        while !stopping.load(ordering: .acquiring) {
            var fds = listeners.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            fds.append(pollfd(fd: wake.readFD, events: Int16(POLLIN), revents: 0))
            _ = poll(&fds, nfds_t(fds.count), 1000)
            if fds[listeners.count].revents & Int16(POLLIN) != 0 { wake.drain() }
            for (i, fd) in listeners.enumerated() where fds[i].revents & Int16(POLLIN) != 0 { accept(on: fd, interconnect: i) }
            let (push, answers) = wanted.withLock { w in
                defer { w = (false, []) }
                return (w.push, w.answers)
            }
            guard push else { continue }
            let result = pushNow()
            for a in answers { a(result) }
        }
    }

    // MARK: The active's side

    func pushNow() -> Result<String, ClusterService.CommandRefusal> {
        guard role() == .active else {
            return .failure(.init(description: "this LB is \(role()), not active: only the active pushes its configuration"))
        }
        let c = committed.value
        guard let document = try? JSONEncoder().encode(BalancingConfig.model(c.groups)) else {
            return .failure(.init(description: "cannot encode the configuration"))
        }
        sequence += 1
        var message = Self.magic + [1, 0, 0, 0]
        BigEndian.append(epoch, bytes: 8, to: &message)
        BigEndian.append(sequence, bytes: 8, to: &message)
        BigEndian.append(UInt64(c.version), bytes: 8, to: &message)
        BigEndian.append(UInt64(document.count), bytes: 4, to: &message)
        message += Array(document)
        message += Array(HMAC<SHA256>.authenticationCode(for: message, using: key))
        var failures: [String] = []
        for link in config.interconnects {
            switch exchange(message, with: SocketAddress(link.peer, port: config.port), from: link.local) {
            case let .success(reply) where reply.hasPrefix("OK "):
                let text = "configuration \(c.version) pushed to \(config.peer) over \(link.peer): it holds \(reply.dropFirst(3))"
                events.record(.notice, "config.sync.pushed", text, ["version": "\(c.version)", "peer": config.peer])
                lastPush.withLock { $0 = text }
                return .success(text)
            case let .success(reply):
                failures.append("\(link.peer): \(reply)")
                break
            case let .failure(why):
                failures.append("\(link.peer): \(why)")
            }
            if failures.last?.contains("REFUSED") == true { break }  // refused on one link: the others would refuse too
        }
        let text = "the push of configuration \(c.version) to \(config.peer) failed: \(failures.joined(separator: "; "))"
        events.record(.warning, "config.sync.failed", text, ["version": "\(c.version)", "peer": config.peer])
        logger.warning("\(text)")
        lastPush.withLock { $0 = text }
        return .failure(.init(description: text))
    }

    /// Connects (1 s), sends, reads the one-line answer (2 s).
    func exchange(_ message: [UInt8], with peer: SocketAddress, from local: IPAddress) -> Result<String, PushFailure> {
        guard let fd = try? Socket.open(family: peer.family, type: Int32(SOCK_STREAM.rawValue), nonBlocking: true) else {
            return .failure(.init("no socket"))
        }
        defer { Socket.close(fd) }
        _ = try? Socket.bindTo(fd, SocketAddress(local, port: 0))
        do {
            if try !Socket.connect(fd, to: peer) {
                var p = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)]
                guard poll(&p, 1, 1000) == 1, Socket.pendingError(fd) == 0 else { return .failure(.init("cannot connect in 1 s")) }
            }
        } catch {
            return .failure(.init("\(error)"))
        }
        let deadline = monotonicNanoseconds() + 2_000_000_000
        var sent = 0
        while sent < message.count {
            guard wait(fd, POLLOUT, until: deadline) else { return .failure(.init("timed out sending")) }
            do {
                sent += try message.withUnsafeBytes { try Socket.send(fd, UnsafeRawBufferPointer(rebasing: $0[sent...])) } ?? 0
            } catch {
                return .failure(.init("the connection broke: \(error)"))
            }
        }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 512)
        while !reply.contains(10) {
            guard wait(fd, POLLIN, until: deadline) else { return .failure(.init("no answer in 2 s")) }
            let got: Int?
            do { got = try buffer.withUnsafeMutableBytes { try Socket.receive(fd, into: $0) } } catch {
                return .failure(.init("the connection broke: \(error)"))
            }
            guard let n = got else { continue }
            if n == 0 { break }
            reply += buffer.prefix(n)
            if reply.count > 4096 { break }
        }
        let line = String(decoding: reply.prefix { $0 != 10 }, as: UTF8.self)
        return line.isEmpty ? .failure(.init("the peer closed without an answer")) : .success(line)
    }

    struct PushFailure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    func wait(_ fd: Int32, _ event: Int32, until deadline: UInt64) -> Bool {
        let now = monotonicNanoseconds()
        guard now < deadline else { return false }
        var p = [pollfd(fd: fd, events: Int16(event), revents: 0)]
        return poll(&p, 1, Int32((deadline - now) / 1_000_000) + 1) == 1
    }

    // MARK: The standby's side

    func accept(on listener: Int32, interconnect i: Int) {
        guard let (fd, from) = (try? Socket.accept(listener)) ?? nil else { return }
        defer { Socket.close(fd) }
        let answer = receive(fd, from: from?.address, interconnect: i)
        let line = Array((answer + "\n").utf8)
        _ = line.withUnsafeBytes { try? Socket.send(fd, $0) }
    }

    /// Reads one push (blocking, 2 s at most) and takes it or says why not.
    func receive(_ fd: Int32, from source: IPAddress?, interconnect i: Int) -> String {
        Socket.setTimeouts(fd, seconds: 2)
        func refuse(_ why: String) -> String {
            events.record(.warning, "config.sync.refused", "a configuration push from \(source.map { "\($0)" } ?? "?") was refused: \(why)",
                          ["interconnect": "\(i)", "reason": why])
            return "REFUSED \(why)"
        }
        guard source == config.interconnects[i].peer else { return refuse("source_mismatch") }
        guard let header = Socket.receiveExactly(fd, Self.headerSize) else { return refuse("truncated") }
        guard Array(header[0..<4]) == Self.magic, header[4] == 1 else { return refuse("garbage") }
        let length = Int(BigEndian.read(header, 32, 4))
        guard length <= Self.limit else { return refuse("oversize") }
        guard let rest = Socket.receiveExactly(fd, length + 32) else { return refuse("truncated") }
        let signed = header + rest.prefix(length)
        guard HMAC<SHA256>.isValidAuthenticationCode(Array(rest.suffix(32)), authenticating: signed, using: key) else {
            return refuse("bad_mac")
        }
        let pushEpoch = BigEndian.read(header, 8, 8), pushSequence = BigEndian.read(header, 16, 8)
        if let stale = guardian.admit(0, epoch: pushEpoch, sequence: pushSequence, now: SystemClock.unixMilliseconds()) {
            return refuse(MessageRejection(stale).rawValue)
        }
        guard role() != .active else { return refuse("this LB is active") }
        let version = Int(BigEndian.read(header, 24, 8))
        let document = String(decoding: rest.prefix(length), as: UTF8.self)
        let controller = self.controller
        let origin = "peer \(config.peer)"
        let outcome = Mutex<Result<ChangeResultModel, ChangeError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do throws(ChangeError) {
                let r = try await controller.change(.adopt(version: version, document), origin: origin)
                outcome.withLock { $0 = .success(r) }
            } catch {
                outcome.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        switch outcome.withLock({ $0 }) {
        case let .success(r)?: return "OK \(r.version) \(r.hash)"
        case let .failure(e)?: return "REFUSED \(e.message)".replacingOccurrences(of: "\n", with: " ")
        case nil: return "REFUSED no answer"
        }
    }
}

/// This LB's role in the pair, written by the cluster thread, read by the sync thread,
/// the API and status.
public final class RoleCell: Sendable {
    let value = Atomic<UInt8>(PairElection.Role.initial.rawValue)
    public var role: PairElection.Role { PairElection.Role(rawValue: value.load(ordering: .acquiring)) ?? .initial }
    /// The cluster thread's, when the election moves; tests and the benchmark play it.
    public func set(_ r: PairElection.Role) { value.store(r.rawValue, ordering: .releasing) }
    public init() {}
}
