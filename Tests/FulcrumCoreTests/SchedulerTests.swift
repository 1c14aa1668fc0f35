import FulcrumCore
import FulcrumTestSupport
import Synchronization
import Testing

@Suite struct SchedulerTests {
    static func keys(_ n: Int) -> [UInt64] {
        (0..<n).map { StableHash.hash(IPAddress(ipv4: 0xC612_0200 + UInt32($0)), seed: 0) }
    }

    func flowHash(_ i: Int) -> UInt64 {
        FlowKey(source: IPAddress(ipv4: 0xC612_0000 | UInt32(i & 0xFFFF)), destination: Fixtures.vip4,
                sourcePort: UInt16(truncatingIfNeeded: i >> 16 &+ 1024), destinationPort: 80, proto: 6).stableHash()
    }

    func pickCounts(_ s: Scheduler, picks: Int, active: [Int32]? = nil) -> [Int] {
        var counts = Array(repeating: 0, count: s.nodeCount)
        let a = ActiveCounts(active ?? Array(repeating: 0, count: s.nodeCount))
        for i in 0..<picks {
            let h = flowHash(i)
            let n = s.pick(flowHash: h, sourceHash: h, activeFlows: a.pointer)
            if n >= 0 { counts[n] += 1 }
        }
        return counts
    }

    @Test(arguments: [SchedulerKind.wrr, .maglev, .sh])
    func weightedProportionsWithinOnePercent(kind: SchedulerKind) {
        let weights = [100, 50, 30, 20]
        let s = Scheduler(kind: kind, nodeKeys: Self.keys(4), weights: weights)
        let picks = 100_000
        let counts = pickCounts(s, picks: picks)
        let total = weights.reduce(0, +)
        for i in 0..<4 {
            let want = Double(weights[i]) / Double(total)
            let got = Double(counts[i]) / Double(picks)
            #expect(abs(got - want) <= 0.01, "\(kind) node \(i): \(got) vs \(want)")
        }
    }

    @Test func smoothWRRInterleaves() {
        let s = Scheduler(kind: .wrr, nodeKeys: Self.keys(3), weights: [5, 1, 1])
        var seq: [Int] = []
        let a = ActiveCounts([0, 0, 0])
        for _ in 0..<7 { seq.append(s.pick(flowHash: 0, sourceHash: 0, activeFlows: a.pointer)) }
        // nginx's documented sequence for weights 5,1,1.
        #expect(seq == [0, 0, 1, 0, 2, 0, 0])
    }

    @Test func roundRobinIgnoresWeightsButHonoursDrain() {
        let s = Scheduler(kind: .rr, nodeKeys: Self.keys(3), weights: [10, 1, 0])
        let counts = pickCounts(s, picks: 3000)
        #expect(counts == [1500, 1500, 0])
    }

    @Test(arguments: SchedulerKind.allCases)
    func drainedNodeGetsNoNewFlows(kind: SchedulerKind) {
        let s = Scheduler(kind: kind, nodeKeys: Self.keys(3), weights: [1, 1, 1])
        s.setWeights([1, 0, 1])
        let counts = pickCounts(s, picks: 10_000)
        #expect(counts[1] == 0, "\(kind): \(counts)")
        #expect(counts[0] > 0 && counts[2] > 0)
    }

    @Test(arguments: SchedulerKind.allCases)
    func noEligibleNodeMeansNoPick(kind: SchedulerKind) {
        let s = Scheduler(kind: kind, nodeKeys: Self.keys(2), weights: [1, 1])
        s.setEligible(0, false)
        s.setEligible(1, false)
        #expect(pickCounts(s, picks: 100) == [0, 0])
    }

    @Test func leastConnectionsPicksTheEmptiest() {
        let s = Scheduler(kind: .lc, nodeKeys: Self.keys(3), weights: [1, 1, 1])
        let counts = pickCounts(s, picks: 100, active: [10, 3, 7])
        #expect(counts == [0, 100, 0])
    }

    @Test func weightedLeastConnectionsUsesRatio() {
        // 10/5 = 2 per weight unit, 3/1 = 3, 7/2 = 3.5: node 0 is least loaded.
        let s = Scheduler(kind: .wlc, nodeKeys: Self.keys(3), weights: [5, 1, 2])
        #expect(pickCounts(s, picks: 50, active: [10, 3, 7]) == [50, 0, 0])
    }

    @Test func leastConnectionsTiesSpread() {
        let s = Scheduler(kind: .lc, nodeKeys: Self.keys(4), weights: [1, 1, 1, 1])
        #expect(pickCounts(s, picks: 400) == [100, 100, 100, 100])
    }

    @Test func sourceHashKeepsAClientOnOneNode() {
        let s = Scheduler(kind: .sh, nodeKeys: Self.keys(5), weights: [1, 1, 1, 1, 1])
        let client = StableHash.hash(Fixtures.client4)
        let a = ActiveCounts([0, 0, 0, 0, 0])
        let first = s.pick(flowHash: 1, sourceHash: client, activeFlows: a.pointer)
        for i in 0..<100 {
            #expect(s.pick(flowHash: UInt64(i), sourceHash: client, activeFlows: a.pointer) == first)
        }
    }

    /// Taking one of N nodes out moves only the flows that were on it.
    @Test(arguments: [10, 100, 1000])
    func maglevRemovalMovesOnlyTheRemovedNodesFlows(n: Int) {
        let s = Scheduler(kind: .maglev, nodeKeys: Self.keys(n), weights: Array(repeating: 1, count: n))
        let flows = 100_000
        let before = (0..<flows).map { s.maglev.lookup(flowHash($0)) }
        let removed = n / 3
        s.setEligible(removed, false)
        var moved = 0
        for i in 0..<flows {
            let after = s.maglev.lookup(flowHash(i))
            #expect(after != removed)
            if before[i] != removed {
                if after != before[i] { moved += 1 }
            }
        }
        #expect(moved == 0)
        // And putting it back restores the original table exactly.
        s.setEligible(removed, true)
        #expect((0..<flows).allSatisfy { s.maglev.lookup(flowHash($0)) == before[$0] })
    }

    @Test func maglevIsTheSameOnEveryLB() {
        let a = MaglevTable(keys: Self.keys(50), weights: Array(repeating: 3, count: 50))
        let b = MaglevTable(keys: Self.keys(50), weights: Array(repeating: 3, count: 50))
        #expect((0..<10_000).allSatisfy { a.lookup(flowHash($0)) == b.lookup(flowHash($0)) })
    }

    @Test func maglevSlotsSpreadEvenly() {
        let t = MaglevTable(keys: Self.keys(100), weights: Array(repeating: 1, count: 100))
        let counts = t.slotCounts()
        #expect(counts.reduce(0, +) == MaglevTable.defaultSize)
        #expect(counts.min()! >= 640 && counts.max()! <= 672, "\(counts.min()!)…\(counts.max()!)")
    }
}

@Suite struct HealthTrackerTests {
    /// (results in order, the transitions expected after each)
    @Test func riseAndFallCountResultsInARow() {
        var t = HealthTracker(rise: 2, fall: 3)
        let script: [(Bool, HealthTracker.Transition?)] = [
            (false, nil), (false, nil), (true, nil),            // a success resets the failures
            (false, nil), (false, nil), (false, .wentDown(reason: "timeout")),
            (false, nil),                                       // already down
            (true, nil), (false, nil), (true, nil), (true, .wentUp),
            (true, nil),
        ]
        for (i, (success, expected)) in script.enumerated() {
            #expect(t.record(success: success, reason: success ? nil : "timeout") == expected, "step \(i)")
        }
        #expect(t.isUp && t.lastFailure == nil)
    }
}

/// Per-node flow counts as the flow table keeps them (relaxed atomics).
final class ActiveCounts {
    let pointer: UnsafeMutablePointer<Atomic<Int32>>
    let count: Int

    init(_ values: [Int32]) {
        count = values.count
        pointer = .allocate(capacity: max(1, values.count))
        for (i, v) in values.enumerated() { (pointer + i).initialize(to: Atomic(v)) }
    }

    deinit { pointer.deinitialize(count: count).deallocate() }
}
