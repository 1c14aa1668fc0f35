import FulcrumCore
import FulcrumTestSupport
import Testing

/// Two `PairElection`s joined by simulated interconnects, a clock that steps one heartbeat
/// interval at a time, and NP-resolution probes answered at once. Every step checks the
/// product's promise: at most one LB active, except while every interconnect is cut.
struct SimulatedPair {
    var a: PairElection
    var b: PairElection?
    var now = 0.0
    let interval = 0.5
    var links: [Bool]
    /// Whether each LB's process runs: sends, hears and keeps time.
    var aRuns = true
    var bRuns = true
    var aReaches = true
    var bReaches = true
    var events: [(time: Double, lb: String, event: PairElection.Event)] = []
    /// The longest time both were active outside a hand-over (never, outside a partition),
    /// and within one (make before break: bounded).
    var worstOverlap = 0.0
    var worstPlannedOverlap = 0.0
    private var overlapSince: Double?
    private var plannedSince: Double?

    init(_ sa: PairElection.Settings, _ sb: PairElection.Settings, bStarts: Bool = true) {
        a = PairElection(settings: sa, now: 0)
        b = bStarts ? PairElection(settings: sb, now: 0) : nil
        links = Array(repeating: true, count: sa.interconnects)
    }

    static func view(_ e: PairElection) -> PairElection.Peer {
        PairElection.Peer(role: e.role, isMaster: e.settings.isMaster, handingOver: e.handingOver, healthy: e.healthy,
                          yielded: e.yielded, held: e.held)
    }

    mutating func record(_ lb: String, _ new: [PairElection.Event]) {
        for e in new { events.append((now, lb, e)) }
    }

    /// One heartbeat interval: each side sends on every link that is up, then time passes
    /// and due probes are answered.
    /// Both heartbeats of an interval are in flight together: each says what its sender
    /// was before it heard the other's.
    mutating func step() {
        now += interval
        let fromA = Self.view(a)
        let fromB = b.map(Self.view)
        if aRuns && bRuns, var peer = b {
            for (i, up) in links.enumerated() where up { record("b", peer.heartbeat(fromA, on: i, at: now)) }
            b = peer
        }
        if aRuns && bRuns, let fromB {
            for (i, up) in links.enumerated() where up { record("a", a.heartbeat(fromB, on: i, at: now)) }
        }
        settle()
        let bothActive = aRuns && bRuns && a.role == .active && b?.role == .active && links.contains(true)
        let planned = a.handingOver || b?.handingOver == true
        if bothActive && !planned {
            overlapSince = overlapSince ?? now
            worstOverlap = max(worstOverlap, now - overlapSince! + interval)
        } else {
            overlapSince = nil
        }
        if bothActive && planned {
            plannedSince = plannedSince ?? now
            worstPlannedOverlap = max(worstPlannedOverlap, now - plannedSince! + interval)
        } else {
            plannedSince = nil
        }
    }

    mutating func settle() {
        if aRuns {
            let new = a.tick(at: now)
            record("a", new)
            if new.contains(.probeNeeded) { record("a", a.partitionProbe(reached: aReaches, at: now)) }
        }
        if bRuns, var peer = b {
            var new: [PairElection.Event]
            new = peer.tick(at: now)
            record("b", new)
            if new.contains(.probeNeeded) { record("b", peer.partitionProbe(reached: bReaches, at: now)) }
            b = peer
        }
    }

    mutating func run(seconds: Double) {
        let end = now + seconds
        while now < end - 1e-9 { step() }
    }

    /// Steps until `condition`; returns the time it took, or nil after `limit` seconds.
    mutating func time(limit: Double = 30, until condition: (SimulatedPair) -> Bool) -> Double? {
        let start = now
        while now - start < limit {
            step()
            if condition(self) { return now - start }
        }
        return nil
    }

    var actives: Int { (aRuns && a.role == .active ? 1 : 0) + (bRuns && b?.role == .active ? 1 : 0) }
}

@Suite struct PairElectionTests {
    static func settings(master: Bool, links: Int = 2, rule: PairElection.DualActiveRule = .masterStays,
                         autoFailback: Bool = false) -> PairElection.Settings {
        PairElection.Settings(isMaster: master, interconnects: links, deadInterval: 3, autoFailback: autoFailback,
                              dualActive: rule)
    }

    static func pair(rule: PairElection.DualActiveRule = .masterStays, autoFailback: Bool = false,
                     bStarts: Bool = true) -> SimulatedPair {
        SimulatedPair(settings(master: true, rule: rule, autoFailback: autoFailback),
                      settings(master: false, rule: rule, autoFailback: autoFailback), bStarts: bStarts)
    }

    @Test func startingTogetherTheMasterTakesTheServiceAtOnce() {
        var p = Self.pair()
        p.step()
        #expect(p.a.role == .active)
        #expect(p.b?.role == .standby)
        p.run(seconds: 30)
        #expect(p.a.role == .active && p.b?.role == .standby)
        #expect(p.worstOverlap == 0)
    }

    @Test func aPausedActiveRejoinsAsStandbyAndWaitsToHearThePeer() {
        var p = Self.pair()
        p.run(seconds: 5)
        #expect(p.a.role == .active)
        p.aRuns = false  // SIGSTOP: a neither hears nor keeps time
        #expect(p.time { $0.b?.role == .active } != nil)
        p.run(seconds: 2)
        p.aRuns = true
        // Its loop turns again: first it notices the gap, before any heartbeat or tick.
        let back = p.a.paused(for: 5, at: p.now)
        #expect(back.contains { if case let .role(.active, .standby, reason) = $0 { reason.contains("paused") } else { false } })
        #expect(!back.contains(.peerLost) && !back.contains(.probeNeeded), "the pause is not the peer's silence")
        p.run(seconds: 30)
        #expect(p.a.role == .standby && p.b?.role == .active, "no failback, no dual active")
        #expect(!p.events.contains { $0.event == .dualActive })
        // Paused while the peer died: it is lost a dead interval after the pause, and probed.
        p.bRuns = false
        p.aRuns = false
        p.run(seconds: 1)
        p.aRuns = true
        _ = p.a.paused(for: 1, at: p.now)
        #expect(p.time { $0.a.role == .active } != nil)
    }

    @Test(arguments: [true, false])
    func bothConfiguredAlikeStillElectOneAndSayWhy(master: Bool) {
        // Both configured master (or both slave), b's name sorts first: b acts as master.
        var sa = Self.settings(master: master), sb = Self.settings(master: master)
        sb.winsTie = true
        var p = SimulatedPair(sa, sb)
        p.run(seconds: 10)
        #expect(p.b?.role == .active && p.a.role == .standby)
        #expect(p.events.contains { $0.lb == "a" && $0.event == .sameRole(actsAsMaster: false) })
        #expect(p.events.contains { $0.lb == "b" && $0.event == .sameRole(actsAsMaster: true) })
        #expect(p.events.filter { if case .sameRole = $0.event { true } else { false } }.count == 2, "said once each")
        // A dual active after a partition heals under master_stays: the tie's loser steps down.
        p.links = [false, false]
        p.run(seconds: 10)
        #expect(p.actives == 2)
        p.links = [true, true]
        p.run(seconds: 5)
        #expect(p.b?.role == .active && p.a.role == .standby)
    }

    @Test func aSlaveAloneTakesTheServiceAndTheMasterJoinsAsStandby() {
        var p = Self.pair()
        p.aRuns = false  // the master is not running: its election starts later
        let took = p.time { $0.b?.role == .active }
        #expect(took != nil && took! >= 3 && took! <= 3.5, "the slave waits out the dead interval, then probes: \(took ?? -1)")
        p.a = PairElection(settings: Self.settings(master: true), now: p.now)
        p.aRuns = true
        p.step()
        #expect(p.a.role == .standby, "the peer is active: no automatic failback")
        p.run(seconds: 30)
        #expect(p.a.role == .standby && p.b?.role == .active)
        #expect(p.worstOverlap == 0)
    }

    @Test func alonePastTheDeadIntervalAnLBThatReachesNoTargetStaysStandby() {
        var p = Self.pair(bStarts: false)
        p.aReaches = false
        p.run(seconds: 10)
        #expect(p.a.role == .standby)
        #expect(p.events.contains { $0.event == .probeNeeded })
        p.aReaches = true
        // It probes again every dead interval, and takes the service once a target answers.
        let took = p.time { $0.a.role == .active }
        #expect(took != nil && took! <= 3.5)
    }

    @Test func anUnhealthyActiveFailsOverWithinOneHeartbeat() {
        var p = Self.pair()
        p.run(seconds: 5)
        p.record("a", p.a.setHealthy(false, reason: "link down on eth-c", at: p.now))
        #expect(p.a.role == .fault)
        let took = p.time { $0.b?.role == .active }
        #expect(took == p.interval, "the standby learns of the fault from the next heartbeat")
        #expect(p.events.contains { $0.lb == "a" && $0.event == .role(from: .active, to: .fault, reason: "unhealthy: link down on eth-c") })
        p.record("a", p.a.setHealthy(true, reason: "", at: p.now))
        p.run(seconds: 30)
        #expect(p.a.role == .standby && p.b?.role == .active, "healthy again, the master waits as standby: \(p.events.suffix(6))")
        #expect(p.worstOverlap == 0)
    }

    @Test func aDeadActiveIsReplacedAfterTheDeadInterval() {
        var p = Self.pair()
        p.run(seconds: 5)
        p.aRuns = false  // the active's process is gone: no heartbeat on any link
        let took = p.time { $0.b?.role == .active }
        #expect(took != nil && took! >= 3 && took! <= 3.5, "dead interval 3 s, heartbeats every 0.5 s: \(took ?? -1)")
        #expect(p.events.contains { $0.lb == "b" && $0.event == .peerLost })
    }

    @Test func oneInterconnectCutOfTwoChangesNoRole() {
        var p = Self.pair()
        p.run(seconds: 5)
        p.links[0] = false
        p.run(seconds: 10)
        #expect(p.a.role == .active && p.b?.role == .standby)
        #expect(p.events.contains { $0.lb == "a" && $0.event == .interconnect(0, up: false) })
        #expect(p.events.contains { $0.lb == "b" && $0.event == .interconnect(0, up: false) })
        #expect(!p.events.contains { $0.event == .peerLost })
        #expect(p.a.isUp(interconnect: 1, at: p.now) && !p.a.isUp(interconnect: 0, at: p.now))
        p.links[0] = true
        p.step()
        #expect(p.events.contains { $0.lb == "a" && $0.event == .interconnect(0, up: true) })
    }

    @Test func inAPartitionOnlyTheLBThatReachesATargetIsActive() {
        var p = Self.pair()
        p.run(seconds: 5)
        p.links = [false, false]
        p.aReaches = false  // the master is the one cut off from the network
        p.run(seconds: 10)
        #expect(p.a.role == .standby, "reaching no target, the old active must not stay active")
        #expect(p.b?.role == .active)
    }

    @Test func dualActiveAfterAPartitionHealsTheSlaveStepsDown() {
        var p = Self.pair()
        p.run(seconds: 5)
        p.links = [false, false]
        p.run(seconds: 10)
        #expect(p.actives == 2, "a true partition: both reach a target")
        p.links = [true, true]
        p.step()
        #expect(p.a.role == .active && p.b?.role == .standby)
        #expect(p.events.contains { $0.lb == "b" && $0.event == .dualActive })
    }

    @Test func dualActiveWithBothStandDownWaitsForTheOperator() {
        var p = Self.pair(rule: .bothStandDown)
        p.run(seconds: 5)
        p.links = [false, false]
        p.run(seconds: 10)
        p.links = [true, true]
        p.run(seconds: 20)
        #expect(p.actives == 0 && p.a.held && p.b?.held == true, "\(p.events.suffix(12).map { "\($0.lb) \($0.event)" })")
        var b = p.b!
        p.record("b", b.resume(at: p.now))
        p.b = b
        #expect(p.b?.role == .active)
        p.run(seconds: 10)
        #expect(p.a.role == .standby && p.b?.role == .active, "the master stays held: only the one resumed serves")
        #expect(p.worstOverlap == 0)
    }

    /// On the testbed one LB sees the dual active first and stands down before the other
    /// hears it active: its "held" flag must take the other down too.
    @Test func bothStandDownWhenOnlyOneSawTheDualActive() {
        var a = PairElection(settings: .init(isMaster: true, interconnects: 1, deadInterval: 1, dualActive: .bothStandDown), now: 0)
        _ = a.tick(at: 1.5)
        _ = a.partitionProbe(reached: true, at: 1.5)
        #expect(a.role == .active)
        let held = PairElection.Peer(role: .standby, isMaster: false, held: true)
        let happened = a.heartbeat(held, on: 0, at: 2)
        #expect(a.role == .standby && a.held, "\(happened)")
        #expect(happened.contains(.dualActive))
        // Resumed, it serves; the held peer's heartbeats do not take it down again.
        _ = a.resume(at: 2.1)
        #expect(a.role == .active)
        _ = a.heartbeat(held, on: 0, at: 2.2)
        #expect(a.role == .active)
        // And the peer, hearing it active and not held, is a plain standby again.
        var b = PairElection(settings: .init(isMaster: false, interconnects: 1, deadInterval: 1, dualActive: .bothStandDown), now: 0)
        _ = b.tick(at: 1.5)
        _ = b.partitionProbe(reached: true, at: 1.5)
        _ = b.heartbeat(.init(role: .active, isMaster: true), on: 0, at: 2)
        #expect(b.role == .standby && b.held)
        _ = b.heartbeat(.init(role: .active, isMaster: true), on: 0, at: 2.1)
        #expect(b.held, "a heartbeat sent before the peer heard of the dual active clears nothing")
        _ = b.heartbeat(.init(role: .active, isMaster: true), on: 0, at: 3.5)
        #expect(!b.held, "the held flag clears once the peer is still active and not held a dead interval later")
        #expect(b.role == .standby)
    }

    @Test func anOperatorHandOverMakesBeforeItBreaks() throws {
        var p = Self.pair()
        p.run(seconds: 5)
        var b = p.b!
        #expect(b.handOver(at: p.now) == .failure(.notActive))
        let events = try p.a.handOver(at: p.now).get()
        p.record("a", events)
        #expect(p.a.role == .active && p.a.handingOver, "it still answers")
        #expect(p.a.handOver(at: p.now) == .failure(.peerNotReady), "one hand-over at a time")
        var noneActive = false
        let took = p.time { $0.b?.role == .active }
        #expect(took == p.interval)
        let gone = p.time {
            if $0.actives == 0 { noneActive = true }
            return $0.a.role == .standby
        }
        #expect(gone != nil && gone! <= p.a.settings.handOverOverlap + 2 * p.interval, "a steps down once it hears b active, after the overlap")
        #expect(!noneActive, "never none active")
        p.run(seconds: 10)
        #expect(p.a.role == .standby && !p.a.handingOver && p.b?.role == .active)
        #expect(p.worstOverlap == 0, "no dual active")
        #expect(p.worstPlannedOverlap > 0 && p.worstPlannedOverlap <= p.a.settings.handOverOverlap + 3 * p.interval)
        #expect(!p.events.contains { $0.event == .dualActive })
        #expect(p.events.contains { $0.lb == "a" && $0.event == .role(from: .active, to: .standby, reason: "handed the service over to the peer (operator)") })
        // And back (a failback is a hand-over from the slave).
        b = p.b!
        p.record("b", try b.handOver(at: p.now).get())
        p.b = b
        let back = p.time { $0.a.role == .active }
        #expect(back == p.interval)
        p.run(seconds: 5)
        #expect(p.b?.role == .standby && p.worstOverlap == 0)
    }

    @Test func aHandOverIsRefusedWithoutAHealthyStandbyAndAbandonedWhenNotTaken() throws {
        var p = Self.pair()
        p.run(seconds: 5)
        var b = p.b!
        p.record("b", b.setHealthy(false, reason: "IP monitor 198.18.0.254", at: p.now))
        p.b = b
        p.step()
        #expect(p.a.handOver(at: p.now) == .failure(.peerNotReady))
        b = p.b!
        p.record("b", b.setHealthy(true, reason: "", at: p.now))
        p.b = b
        p.step()
        p.record("a", try p.a.handOver(at: p.now).get())
        // The peer never hears of it: every link is cut at that moment, and it reaches no target.
        p.links = [false, false]
        p.bReaches = false
        let back = p.time { !$0.a.handingOver }
        #expect(back != nil && back! <= 3.5)
        #expect(p.a.role == .active, "it never stopped answering")
        #expect(p.events.contains { $0.lb == "a" && $0.event == .handOverAbandoned })
        p.bRuns = false
        p.run(seconds: 4)
        #expect(p.a.handOver(at: p.now) == .failure(.noPeer))
    }

    @Test func automaticFailbackReturnsTheServiceToAHealthyMaster() {
        var p = Self.pair(autoFailback: true)
        p.run(seconds: 5)
        p.record("a", p.a.setHealthy(false, reason: "data plane exited", at: p.now))
        _ = p.time { $0.b?.role == .active }
        p.record("a", p.a.setHealthy(true, reason: "", at: p.now))
        // Not while the master's configuration is behind (the push has not landed yet).
        var b = p.b!
        b.peerConfigInSync = false
        p.b = b
        p.run(seconds: 5)
        #expect(p.a.role == .standby && p.b?.role == .active, "no failback to a master out of sync")
        // Nor while it does not hold the slave's flows (its flow sync's bulk transfer).
        b = p.b!
        b.peerConfigInSync = true
        b.peerFlowsReady = false
        p.b = b
        p.run(seconds: 5)
        #expect(p.a.role == .standby && p.b?.role == .active, "no failback to a master without the flows")
        b = p.b!
        b.peerFlowsReady = true
        p.b = b
        let back = p.time { $0.a.role == .active }
        #expect(back != nil && back! <= 1.5)
        p.run(seconds: p.b!.settings.handOverOverlap + 1)
        #expect(p.b?.role == .standby, "the slave let go after the overlap")
        #expect(p.worstOverlap == 0)
    }

    @Test func anOperatorsFailoverIsNotUndoneByAutomaticFailback() throws {
        var p = Self.pair(autoFailback: true)
        p.run(seconds: 5)
        p.record("a", try p.a.handOver(at: p.now).get())
        p.run(seconds: 30)
        #expect(p.a.role == .standby && p.b?.role == .active, "the service stays where the operator put it")
        var b = p.b!
        p.record("b", try b.handOver(at: p.now).get())
        p.b = b
        p.run(seconds: 2)
        #expect(p.a.role == .active && !p.a.yielded, "the operator's failback")
    }

    /// 200 random histories of 2 minutes each: links cut and healed, LBs unhealthy and
    /// healthy, processes stopped and started, operator hand-overs. Whenever the two hear
    /// each other, never two active; and once both are up, healthy and joined for twice the
    /// dead interval, none active for at most one heartbeat interval (a hand-over steps
    /// down before the peer steps up).
    @Test(arguments: 0..<200) func randomHistoriesKeepOneActive(seed: Int) throws {
        var rng = SplitMix(seed: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        var p = Self.pair(autoFailback: seed % 3 == 0)
        var quietSince = 0.0
        var noneActive = 0
        for _ in 0..<240 {
            switch Int.random(in: 0..<40, using: &rng) {
            case 0: p.links[Int.random(in: 0..<2, using: &rng)].toggle()
            case 1: p.record("a", p.a.setHealthy(!p.a.healthy, reason: "flap", at: p.now))
            case 2:
                var b = p.b!
                p.record("b", b.setHealthy(!b.healthy, reason: "flap", at: p.now))
                p.b = b
            case 3:
                p.aRuns.toggle()
                if p.aRuns { p.a = PairElection(settings: p.a.settings, now: p.now) }
            case 4:
                p.bRuns.toggle()
                if p.bRuns { p.b = PairElection(settings: p.b!.settings, now: p.now) }
            case 5:
                if case .success(let e) = p.a.handOver(at: p.now) { p.record("a", e) }
            case 6: p.aReaches.toggle()
            case 7: p.bReaches.toggle()
            case 8, 9: p.links = p.links.contains(true) ? [false, false] : [true, true]  // a partition, or its end
            default: break
            }
            let joined = p.aRuns && p.bRuns && p.a.healthy && p.b!.healthy && p.links.contains(true)
            if !joined { quietSince = p.now }
            p.step()
            #expect(p.worstOverlap == 0, "seed \(seed): two active at \(p.now): \(p.events.suffix(8))")
            #expect(p.worstPlannedOverlap <= p.a.settings.handOverOverlap + 3 * p.interval, "seed \(seed): a hand-over's overlap at \(p.now)")
            noneActive = p.actives == 0 ? noneActive + 1 : 0
            if joined && p.now - quietSince >= 6 {
                #expect(noneActive <= 1, "seed \(seed): none active at \(p.now) (a \(p.a.role), b \(p.b!.role)): \(p.events.suffix(8))")
            }
            if p.worstOverlap != 0 { return }
        }
    }

    // MARK: The heartbeat's wire format

    @Test func heartbeatsRoundTripAndBadOnesAreNamed() {
        let h = Heartbeat(role: .active, isMaster: true, handingOver: false, healthy: true, answering: true, interconnect: 1,
                          epoch: 1_764_000_000_000,
                          sequence: 42, configVersion: 17, configHash: Array(0..<32))
        let signed = h.encodeSigned()
        #expect(signed.count == Heartbeat.signedBytes)
        let datagram = signed + [UInt8](repeating: 0xAA, count: 32)
        #expect(datagram.withUnsafeBytes { Heartbeat.decode($0) } == .success(h))
        #expect(h.peer == PairElection.Peer(role: .active, isMaster: true, handingOver: false, healthy: true, yielded: false))
        var early = h
        early.answering = false  // active, its flag not yet on
        #expect(early.encodeSigned()[6] == 0x05 && early.peer.answering == false)
        #expect(Array(datagram.prefix(79)).withUnsafeBytes { Heartbeat.decode($0) } == .failure(.truncated))
        #expect((datagram + [0]).withUnsafeBytes { Heartbeat.decode($0) } == .failure(.oversize))
        var bad = datagram
        bad[5] = 9  // no such role
        #expect(bad.withUnsafeBytes { Heartbeat.decode($0) } == .failure(.garbage))
        bad = datagram
        bad[6] = 64  // an unknown flag
        #expect(bad.withUnsafeBytes { Heartbeat.decode($0) } == .failure(.garbage))
        bad = datagram
        bad[0] = UInt8(ascii: "X")
        #expect(bad.withUnsafeBytes { Heartbeat.decode($0) } == .failure(.garbage))
    }

    @Test func aReplayedHeartbeatIsRefusedOnEveryInterconnect() {
        var guardian = ReplayGuard<UInt8>()
        let now: UInt64 = 100
        func beat(_ epoch: UInt64, _ sequence: UInt64, on link: UInt8 = 0) -> Heartbeat {
            Heartbeat(role: .standby, isMaster: false, handingOver: false, healthy: true, interconnect: link, epoch: epoch,
                      sequence: sequence, configVersion: 1, configHash: [])
        }
        #expect(guardian.admit(beat(10, 5), arrivedOn: 0, now: now) == nil)
        #expect(guardian.admit(beat(10, 5), arrivedOn: 0, now: now) == .replayed)
        #expect(guardian.admit(beat(10, 4), arrivedOn: 0, now: now) == .replayed)
        // Each link counts on its own: a slow link's heartbeat is not a replay of a fast one's.
        #expect(guardian.admit(beat(10, 2, on: 1), arrivedOn: 1, now: now) == nil)
        #expect(guardian.admit(beat(10, 6), arrivedOn: 1, now: now) == .wrongInterconnect,
                "link 0's heartbeat copied onto link 1")
        #expect(guardian.admit(beat(10, 2, on: 1), arrivedOn: 1, now: now) == .replayed)
        #expect(guardian.admit(beat(9, 50), arrivedOn: 0, now: now) == .oldEpoch)
        #expect(guardian.admit(beat(11, 1), arrivedOn: 0, now: now) == nil, "the peer restarted")
    }
}
