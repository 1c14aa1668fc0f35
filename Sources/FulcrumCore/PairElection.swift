/// A heartbeat between the two LBs of an active/standby pair, sent on
/// every interconnect. 80 bytes, fixed:
///
/// ```
///  0  "FLHB"          magic
///  4  1               version
///  5  role            0 initial, 1 standby, 2 active, 3 fault
///  6  flags           bit 0 master (normally active), bit 1 handing over, bit 2 healthy,
///                     bit 3 yielded (an operator moved the service away from this LB),
///                     bit 4 held (stood down after a dual active, until resumed),
///                     bit 5 answering (active with its XDP flag on and its announcements
///                     begun: a hand-over's old active steps down only after this)
///  7  interconnect    u8, the sender's index of the link it was sent on
///  8  epoch           u64, the sender's start (Unix ms): grows across restarts
/// 16  sequence        u64, from 1 within an epoch
/// 24  config version  u64, the sender's committed configuration
/// 32  config hash     16 bytes, the first half of its SHA-256
/// 48  HMAC-SHA256     32 bytes over bytes 0..<48, keyed by the pair's shared key
/// ```
/// All integers big-endian. As with `AgentReport`, the HMAC is the caller's (swift-crypto);
/// this is the layout and the checks that need no key.
public struct Heartbeat: SignedMessage, Equatable {
    public static let size = 80
    public static let magic: [UInt8] = Array("FLHB".utf8)
    public static let version: UInt8 = 1

    public var role: PairElection.Role
    public var isMaster: Bool
    public var handingOver: Bool
    public var healthy: Bool
    public var yielded: Bool
    public var held: Bool
    public var answering: Bool
    public var interconnect: UInt8
    public var epoch: UInt64
    public var sequence: UInt64
    public var configVersion: UInt64
    public var configHash: [UInt8]

    public init(role: PairElection.Role, isMaster: Bool, handingOver: Bool, healthy: Bool, yielded: Bool = false,
                held: Bool = false, answering: Bool = false, interconnect: UInt8, epoch: UInt64, sequence: UInt64,
                configVersion: UInt64, configHash: [UInt8]) {
        self.role = role
        self.answering = answering
        self.yielded = yielded
        self.held = held
        self.isMaster = isMaster
        self.handingOver = handingOver
        self.healthy = healthy
        self.interconnect = interconnect
        self.epoch = epoch
        self.sequence = sequence
        self.configVersion = configVersion
        self.configHash = Array(configHash.prefix(16)) + [UInt8](repeating: 0, count: max(0, 16 - configHash.count))
    }

    public typealias Rejection = MessageRejection

    /// The 48 signed bytes (the caller appends the HMAC).
    public func encodeSigned() -> [UInt8] {
        var out = Heartbeat.magic
        out.append(Heartbeat.version)
        out.append(role.rawValue)
        out.append((isMaster ? 1 : 0) | (handingOver ? 2 : 0) | (healthy ? 4 : 0) | (yielded ? 8 : 0) | (held ? 16 : 0)
                   | (answering ? 32 : 0))
        out.append(interconnect)
        BigEndian.append(epoch, bytes: 8, to: &out)
        BigEndian.append(sequence, bytes: 8, to: &out)
        BigEndian.append(configVersion, bytes: 8, to: &out)
        out.append(contentsOf: configHash)
        return out
    }

    /// Checks size and layout (not the HMAC).
    public static func decode(_ datagram: UnsafeRawBufferPointer) -> Result<Heartbeat, Rejection> {
        if let problem = frameProblem(datagram) { return .failure(problem) }
        guard let role = PairElection.Role(rawValue: datagram[5]), datagram[6] & ~63 == 0 else { return .failure(.garbage) }
        let flags = datagram[6]
        return .success(Heartbeat(role: role, isMaster: flags & 1 != 0, handingOver: flags & 2 != 0, healthy: flags & 4 != 0,
                                  yielded: flags & 8 != 0, held: flags & 16 != 0, answering: flags & 32 != 0,
                                  interconnect: datagram[7], epoch: BigEndian.read(datagram, 8, 8),
                                  sequence: BigEndian.read(datagram, 16, 8),
                                  configVersion: BigEndian.read(datagram, 24, 8), configHash: Array(datagram[32..<48])))
    }

    /// What the election needs of it.
    public var peer: PairElection.Peer {
        PairElection.Peer(role: role, isMaster: isMaster, handingOver: handingOver, healthy: healthy, yielded: yielded, held: held,
                          answering: answering)
    }
}

extension ReplayGuard where Sender == UInt8 {
    /// A heartbeat: each interconnect is a sender with a sequence of its own, so a link
    /// slower than the others is never taken for a replay; a heartbeat must name (signed)
    /// the link it `arrivedOn`, so a copy moved to another link is refused too.
    public mutating func admit(_ h: Heartbeat, arrivedOn link: Int, now: UInt64) -> Heartbeat.Rejection? {
        guard Int(h.interconnect) == link else { return .wrongInterconnect }
        return admit(h.interconnect, epoch: h.epoch, sequence: h.sequence, now: now).map(MessageRejection.init)
    }
}

/// One LB's side of the active/standby pair: which role to take, from the
/// peer's heartbeats on each interconnect, this LB's own health (monitors and the data
/// plane), partition-resolution probes and operator hand-overs. Pure: the clock is a
/// parameter of every input, and every input returns what happened, for the event log.
///
/// The rules:
/// - **Start.** Hearing a peer that is active, take standby. Hearing a peer that is not,
///   the master takes active and the slave standby. Hearing nothing for `deadInterval`,
///   resolve a partition (below).
/// - **Peer lost** (every interconnect silent for `deadInterval`). Ask for a probe of the
///   NP-resolution targets: an LB that reaches one may be or become active; one that
///   reaches none must not be active. The probe is asked for again every `deadInterval`
///   while the peer stays lost.
/// - **Standby takes over** when the peer is in fault, unhealthy, or handing over, or when
///   both are standby and this is the master.
/// - **Dual active** (both active once heartbeats return): with `.masterStays` the slave
///   steps down; with `.bothStandDown` (the appliance's default) both step down and stay
///   standby until an operator `resume`s one. The first to see it stands down with "held" in
///   its heartbeats, so the other stands down too even if it never saw both active; a held
///   LB that still hears its peer active and not held a `deadInterval` later (the peer was
///   resumed) is a plain standby again.
/// - **Fault.** An unhealthy LB leaves active at once. Healthy again, it joins as
///   standby: no automatic failback unless `autoFailback`, where an active slave hands
///   over to a healthy standby master (not to one an operator moved the service from).
/// - **Hand-over** (operator failover or failback, automatic failback): make before
///   break. The active marks its heartbeats "handing over" and keeps answering; the standby
///   takes the service when it hears that (and announces); the old active steps down
///   `handOverOverlap` after it hears the peer active. In between both answer, on purpose:
///   both make the same choice for a frame, so none is lost while the neighbours' caches
///   move. This is the one time two LBs are active; it is not a dual active. If the peer
///   has not taken over within `deadInterval`, the hand-over is abandoned (this LB never
///   stopped answering).
public struct PairElection: Sendable {
    public enum Role: UInt8, Sendable, CustomStringConvertible {
        case initial = 0, standby = 1, active = 2, fault = 3
        public var description: String { ["initial", "standby", "active", "fault"][Int(rawValue)] }
    }

    public enum DualActiveRule: String, Sendable {
        case masterStays = "master_stays"
        case bothStandDown = "both_stand_down"
    }

    public struct Settings: Sendable {
        public var isMaster: Bool
        public var interconnects: Int
        /// Seconds of silence on every interconnect before the peer counts as lost.
        public var deadInterval: Double
        public var autoFailback: Bool
        public var dualActive: DualActiveRule
        /// Both LBs configured with the same role (a mistake, but the pair must still elect
        /// one): this LB acts as the master when this is true (its name sorts first).
        public var winsTie: Bool
        /// A hand-over makes before it breaks: the LB handing over keeps answering this long
        /// after it hears the peer answering, so a frame sent to it is still forwarded (both
        /// make the same choice). 1.2 s: past the announcement at 1.1 s, for a host whose
        /// neighbour entry was confirmed less than its `locktime` (1 s) before the first
        /// announcements and so ignored them (seen: a 1 s outage in one switchover of ten).
        public var handOverOverlap: Double

        public init(isMaster: Bool, interconnects: Int, deadInterval: Double = 3, autoFailback: Bool = false,
                    dualActive: DualActiveRule = .masterStays, winsTie: Bool = false, handOverOverlap: Double = 1.2) {
            self.isMaster = isMaster
            self.handOverOverlap = handOverOverlap
            self.winsTie = winsTie
            self.interconnects = max(1, interconnects)
            self.deadInterval = deadInterval
            self.autoFailback = autoFailback
            self.dualActive = dualActive
        }
    }

    /// What a heartbeat says of the peer.
    public struct Peer: Sendable, Equatable {
        public var role: Role
        public var isMaster: Bool
        public var handingOver: Bool
        public var healthy: Bool
        /// An operator moved the service away from the peer: no automatic failback to it.
        public var yielded: Bool
        /// The peer stood down after a dual active (`.bothStandDown`) and waits for `resume`.
        public var held: Bool
        /// Active with its data plane answering (flag on, announcements begun).
        public var answering: Bool

        public init(role: Role, isMaster: Bool, handingOver: Bool = false, healthy: Bool = true, yielded: Bool = false,
                    held: Bool = false, answering: Bool? = nil) {
            self.answering = answering ?? (role == .active)
            self.role = role
            self.isMaster = isMaster
            self.handingOver = handingOver
            self.healthy = healthy
            self.yielded = yielded
            self.held = held
        }
    }

    public enum Event: Sendable, Equatable {
        case role(from: Role, to: Role, reason: String)
        case interconnect(Int, up: Bool)
        case peerLost
        case peerFound
        /// Probe the NP-resolution targets and call `partitionProbe(reached:at:)`.
        case probeNeeded
        case dualActive
        case handOverAbandoned
        /// The peer is configured with this LB's role; `actsAsMaster` says who wins.
        case sameRole(actsAsMaster: Bool)
    }

    public enum Refusal: String, Sendable, Error {
        case notActive = "this LB is not active"
        case noPeer = "the peer is not heard on any interconnect"
        case peerNotReady = "the peer is not a healthy standby"
    }

    public let settings: Settings
    public private(set) var role: Role = .initial
    public private(set) var peer: Peer?
    public private(set) var healthy = true
    private var healthReason = ""
    /// Handing the service to the peer (the flag this LB's heartbeats carry).
    public private(set) var handingOver = false
    /// An operator handed the service away from this LB; cleared when it is active again.
    /// An active slave does not fail back automatically to a master that yielded.
    public private(set) var yielded = false
    /// Standing down after a dual active under `.bothStandDown`, until `resume`.
    public private(set) var held = false
    /// The peer holds this LB's configuration (version and hash, from its heartbeats): an
    /// automatic failback waits for it. The caller sets it before each heartbeat.
    public var peerConfigInSync = true
    /// The peer holds this LB's flows (the flow sync's bulk transfer acknowledged, or no
    /// flow sync): an automatic failback waits for it too. The caller sets it likewise.
    public var peerFlowsReady = true
    /// Resumed by the operator since the peer was last lost: a held peer is not a dual active.
    private var resumed = false
    private var lastHeard: [Double?]
    private var interconnectUp: [Bool]
    private var peerWasAlive = false
    private let started: Double
    private var handOverSince = 0.0
    /// Handing over: when the peer was first heard active.
    private var peerTookOverAt: Double?
    /// When the peer was last heard, and when this LB last changed role: a heartbeat from
    /// no later than the change may not yet show the peer's answer to it.
    private var peerHeardAt = -Double.infinity
    private var roleChangedAt = -Double.infinity
    private var nextProbe: Double?
    /// The last probe's answer while the peer is lost: reached a target or not.
    private var probeReached: Bool?
    private var sameRoleSeen = false

    public init(settings: Settings, now: Double) {
        self.settings = settings
        started = now
        lastHeard = Array(repeating: nil, count: settings.interconnects)
        interconnectUp = Array(repeating: false, count: settings.interconnects)
    }

    public func peerAlive(at now: Double) -> Bool {
        lastHeard.contains { $0.map { now - $0 < settings.deadInterval } ?? false }
    }

    public func isUp(interconnect i: Int, at now: Double) -> Bool {
        lastHeard.indices.contains(i) && (lastHeard[i].map { now - $0 < settings.deadInterval } ?? false)
    }

    // MARK: Inputs

    /// A heartbeat admitted (HMAC and replay checked) on interconnect `i`.
    public mutating func heartbeat(_ p: Peer, on i: Int, at now: Double) -> [Event] {
        guard lastHeard.indices.contains(i) else { return [] }
        lastHeard[i] = now
        peer = p
        peerHeardAt = now
        if p.isMaster == settings.isMaster && !sameRoleSeen {
            sameRoleSeen = true
            return [.sameRole(actsAsMaster: settings.winsTie)] + decide(at: now)
        }
        return decide(at: now)
    }

    /// Time passing: interconnects and the peer time out, probes fall due.
    public mutating func tick(at now: Double) -> [Event] { decide(at: now) }

    /// The NP-resolution targets' answer to `.probeNeeded`.
    public mutating func partitionProbe(reached: Bool, at now: Double) -> [Event] {
        guard !peerAlive(at: now) else { return decide(at: now) }
        probeReached = reached
        return decide(at: now)
    }

    /// Monitors and the data plane: any failure makes this LB unhealthy.
    public mutating func setHealthy(_ h: Bool, reason: String, at now: Double) -> [Event] {
        healthy = h
        healthReason = reason
        return decide(at: now)
    }

    /// This LB's own process was stopped or starved for `gap` seconds (SIGSTOP, a box
    /// out of CPU), longer than the dead interval: the peer has taken over, or will. An
    /// active LB stands down at once; what it knew of the peer is old news, and the pause
    /// is not the peer's silence (its heartbeats queued or were lost meanwhile): the peer
    /// gets a whole dead interval from now to be heard before it counts as lost.
    public mutating func paused(for gap: Double, at now: Double) -> [Event] {
        var events: [Event] = []
        for i in lastHeard.indices { lastHeard[i] = lastHeard[i].map { $0 + gap } }
        peer = nil
        probeReached = nil
        if role == .active {
            become(.standby, "this LB was paused for \(Int(gap * 1000)) ms (stopped or starved): rejoins as standby", at: now,
                   &events)
        }
        return events + decide(at: now)
    }

    /// The operator's failover (or failback): the active hands the service to its peer.
    public mutating func handOver(at now: Double) -> Result<[Event], Refusal> {
        guard role == .active else { return .failure(.notActive) }
        guard peerAlive(at: now), let peer else { return .failure(.noPeer) }
        guard peer.healthy, peer.role == .standby, !handingOver else { return .failure(.peerNotReady) }
        yielded = true
        yield(at: now)
        return .success(decide(at: now))
    }

    /// Make before break: this LB stays active with "handing over" in its heartbeats; the
    /// peer takes the service when it hears that, and this LB steps down
    /// `handOverOverlap` after it hears the peer active (or takes it back, abandoned,
    /// after `deadInterval`).
    private mutating func yield(at now: Double) {
        handingOver = true
        handOverSince = now
        peerTookOverAt = nil
    }

    /// The operator's word after a dual active under `.bothStandDown`: this LB takes the
    /// service (unless it is unhealthy or the peer is active by then).
    public mutating func resume(at now: Double) -> [Event] {
        held = false
        resumed = true
        var events = decide(at: now)
        let peerActive = peerAlive(at: now) && peer?.role == .active
        if role == .standby && healthy && !peerActive { become(.active, "resumed by the operator", at: now, &events) }
        return events
    }

    // MARK: The decision

    private mutating func become(_ next: Role, _ reason: String, at now: Double, _ events: inout [Event]) {
        guard next != role else { return }
        events.append(.role(from: role, to: next, reason: reason))
        role = next
        roleChangedAt = now
        if next != .standby { handingOver = false }
        if next == .active { yielded = false }
    }

    /// The master of the pair: as configured, or the tie's winner when both say the same.
    private var isMaster: Bool {
        if let peer, peer.isMaster == settings.isMaster { return settings.winsTie }
        return settings.isMaster
    }

    private mutating func decide(at now: Double) -> [Event] {
        var events: [Event] = []
        for i in interconnectUp.indices {
            let up = isUp(interconnect: i, at: now)
            if up != interconnectUp[i] {
                interconnectUp[i] = up
                events.append(.interconnect(i, up: up))
            }
        }
        let alive = peerAlive(at: now)
        if alive != peerWasAlive {
            peerWasAlive = alive
            events.append(alive ? .peerFound : .peerLost)
            if !alive { resumed = false }
            probeReached = nil
            nextProbe = alive ? nil : now
        }
        if !alive, role != .initial || now - started >= settings.deadInterval, let due = nextProbe, now >= due {
            events.append(.probeNeeded)
            nextProbe = now + settings.deadInterval
        }
        if role == .initial && !alive && nextProbe == nil && now - started >= settings.deadInterval {
            // Nothing heard since start: resolve as for a lost peer.
            nextProbe = now + settings.deadInterval
            events.append(.probeNeeded)
        }

        if !healthy {
            become(.fault, "unhealthy: \(healthReason)", at: now, &events)
            return events
        }
        if role == .fault { become(.standby, "healthy again: joins as standby", at: now, &events) }

        let peer = alive ? self.peer : nil
        switch role {
        case .initial:
            if let peer {
                if peer.role == .active { become(.standby, "the peer is active", at: now, &events) }
                else if isMaster { become(.active, "both starting: the master takes the service", at: now, &events) }
                else { become(.standby, "both starting: the slave waits as standby", at: now, &events) }
            } else if now - started >= settings.deadInterval, let reached = probeReached {
                become(reached ? .active : .standby,
                       reached ? "no peer heard since start; an NP-resolution target answers"
                               : "no peer heard since start and no NP-resolution target answers: must not be active", at: now,
                       &events)
            }
        case .standby:
            if held {
                // The peer still active and not held a whole `deadInterval` after this LB
                // stood down (it has heard "held" by then) was resumed: this LB is a
                // standby like any other. (Sooner, an active heartbeat is one sent before
                // the peer heard of the dual active.)
                if let peer, peer.role == .active, !peer.held, now - roleChangedAt > settings.deadInterval { held = false }
                break
            }
            if let peer {
                if peer.role == .fault || !peer.healthy {
                    become(.active, "the peer is in fault", at: now, &events)
                } else if peer.handingOver && peer.role == .active {
                    become(.active, "the peer hands the service over", at: now, &events)
                } else if peer.role != .active && isMaster && peerHeardAt > roleChangedAt {
                    // Only on news of the peer from after this LB's own last change: a
                    // master just back from fault must first hear whether the slave took over.
                    become(.active, "no LB is active: the master takes the service", at: now, &events)
                }
            } else if probeReached == true {
                become(.active, "the peer is lost on every interconnect; an NP-resolution target answers", at: now, &events)
            }
        case .active:
            if handingOver {
                if let peer, peer.role == .active, peer.answering {
                    let since = peerTookOverAt ?? now
                    peerTookOverAt = since
                    if now - since >= settings.handOverOverlap {
                        become(.standby, yielded ? "handed the service over to the peer (operator)" : "handed the service back to the master",
                               at: now, &events)
                        handingOver = false
                    }
                } else if now - handOverSince >= settings.deadInterval {
                    handingOver = false
                    events.append(.handOverAbandoned)
                }
                break
            }
            if let peer {
                if peer.role == .active && peer.handingOver {
                    // The peer hands the service to this LB and still answers for a moment.
                } else if peer.role == .active {
                    events.append(.dualActive)
                    switch settings.dualActive {
                    case .masterStays:
                        if !isMaster { become(.standby, "dual active: the master keeps the service", at: now, &events) }
                    case .bothStandDown:
                        held = true
                        become(.standby, "dual active: both stand down until an operator resumes one", at: now, &events)
                    }
                } else if peer.held && settings.dualActive == .bothStandDown && !resumed {
                    // The peer saw the dual active first and stood down: so does this LB.
                    events.append(.dualActive)
                    held = true
                    become(.standby, "dual active: the peer stood down; both stand down until an operator resumes one", at: now,
                           &events)
                } else if settings.autoFailback && !isMaster && peer.isMaster && peer.role == .standby
                            && peer.healthy && !peer.handingOver && !peer.yielded && peerConfigInSync && peerFlowsReady {
                    yield(at: now)
                }
            } else if probeReached == false {
                become(.standby, "the peer is lost and no NP-resolution target answers: this LB may be the one cut off", at: now,
                       &events)
            }
        case .fault:
            break
        }
        return events
    }
}
