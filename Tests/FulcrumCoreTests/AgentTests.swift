import FulcrumCore
import Testing

@Suite struct AgentReportTests {
    static let node = IPAddress("198.18.2.11")!

    func datagram(_ r: AgentReport, mac: [UInt8] = [UInt8](repeating: 0xAB, count: 32)) -> [UInt8] {
        r.encodeSigned() + mac
    }

    @Test func aReportReadsBackAsItWasWritten() throws {
        for address in [Self.node, IPAddress("2001:2:2::11")!] {
            let r = AgentReport(intervalMilliseconds: 500, epoch: 1_764_000_000_123, sequence: 42, load: 731, address: address)
            let bytes = datagram(r)
            #expect(bytes.count == AgentReport.size && r.encodeSigned().count == AgentReport.signedBytes)
            let back = bytes.withUnsafeBytes { AgentReport.decode($0) }
            #expect(back == .success(r))
        }
    }

    @Test(arguments: [
        ("truncated", 79, AgentReport.Rejection.truncated),
        ("empty", 0, .truncated),
        ("oversize", 81, .oversize),
    ] as [(String, Int, AgentReport.Rejection)])
    func sizesAreChecked(_ what: String, size: Int, expected: AgentReport.Rejection) {
        var bytes = datagram(AgentReport(intervalMilliseconds: 1000, epoch: 1, sequence: 1, load: 0, address: Self.node))
        bytes = size <= bytes.count ? Array(bytes.prefix(size)) : bytes + [0]
        #expect(bytes.withUnsafeBytes { AgentReport.decode($0) } == .failure(expected), "\(what)")
    }

    @Test func garbageIsGarbage() {
        let good = datagram(AgentReport(intervalMilliseconds: 1000, epoch: 1, sequence: 1, load: 10, address: Self.node))
        var cases: [[UInt8]] = []
        var b = good; b[0] = 0x58; cases.append(b)              // magic
        b = good; b[4] = 2; cases.append(b)                     // version
        b = good; b[5] = 9; cases.append(b)                     // kind
        b = good; b[26] = 5; cases.append(b)                    // family
        b = good; b[28] = 1; cases.append(b)                    // reserved
        b = good; b[24] = 0x03; b[25] = 0xE9; cases.append(b)   // load 1001
        b = good; b[40] = 1; cases.append(b)                    // IPv4 with bytes past its 4
        for c in cases { #expect(c.withUnsafeBytes { AgentReport.decode($0) } == .failure(.garbage)) }
    }

    @Test func onlyNewerReportsPass() {
        var g = ReplayGuard<IPAddress>()
        let now: UInt64 = 1_800_000_000_000
        func r(_ epoch: UInt64, _ seq: UInt64) -> AgentReport {
            AgentReport(intervalMilliseconds: 1000, epoch: now - 60_000 + epoch, sequence: seq, load: 0, address: Self.node)
        }
        #expect(g.admit(r(10, 1), now: now) == nil)
        #expect(g.admit(r(10, 2), now: now) == nil)
        #expect(g.admit(r(10, 2), now: now) == .replayed)
        #expect(g.admit(r(10, 1), now: now) == .replayed)
        #expect(g.admit(r(9, 100), now: now) == .oldEpoch)
        #expect(g.admit(r(11, 1), now: now) == nil, "a restarted agent: a later epoch, its sequence from 1")
        #expect(g.admit(r(10, 3), now: now) == .oldEpoch)
    }

    /// One report from a clock far ahead must not lock the agent out: it is refused, and
    /// the real reports after it still pass.
    @Test func aFarFutureEpochIsRefusedAndLocksNobodyOut() {
        var g = ReplayGuard<IPAddress>()
        let now: UInt64 = 1_800_000_000_000
        func r(_ epoch: UInt64, _ seq: UInt64) -> AgentReport {
            AgentReport(intervalMilliseconds: 1000, epoch: epoch, sequence: seq, load: 0, address: Self.node)
        }
        #expect(g.admit(r(now - 5_000, 1), now: now) == nil)
        #expect(g.admit(r(now + 86_400_000, 1), now: now) == .futureEpoch, "a day ahead")
        #expect(g.admit(r(now + ReplayGuard<IPAddress>.futureTolerance + 1, 1), now: now) == .futureEpoch)
        #expect(g.admit(r(now - 5_000, 2), now: now) == nil, "the agent's next real report still passes")
        #expect(g.admit(r(now + 60_000, 1), now: now) == nil, "a minute ahead is within the tolerance")
        g.keep([])
        #expect(g.count == 0)
    }
}

@Suite struct DynamicWeightsTests {
    static let second: UInt64 = 1_000_000_000

    @Test func loadLowersAWeightSmoothlyToItsFloor() {
        var w = DynamicWeights(staticWeights: [3, 2, 1])
        #expect(w.weights == [300, 200, 100], "no report yet: static × 100")
        var now: UInt64 = 0
        for _ in 0..<30 {
            now += Self.second
            w.report(0, load: 1, interval: Self.second, now: now)
            w.report(1, load: 0, interval: Self.second, now: now)
            _ = w.tick(now: now)
        }
        #expect(w.weights == [30, 200, 100], "fully loaded: the floor, 10% of 300; idle: full weight")
        // Half load, smoothed: the weight moves toward 150 over a few reports.
        var seen: [Int] = []
        for _ in 0..<12 {
            now += Self.second
            w.report(0, load: 0.5, interval: Self.second, now: now)
            w.report(1, load: 0, interval: Self.second, now: now)
            _ = w.tick(now: now)
            seen.append(w.weights[0])
        }
        #expect(seen.contains { $0 > 30 && $0 < 130 }, "it passes through the values between (alpha 0.3): \(seen)")
        #expect(seen.first == 30, "the first report's 15 is under the hysteresis step of 30: \(seen)")
        #expect(abs(seen.last! - 150) <= 30, "it settles near 150: \(seen)")
        #expect(seen == seen.sorted(), "monotonic on the way: \(seen)")
    }

    @Test func smallWobblesDoNotMoveTheWeight() {
        var w = DynamicWeights(staticWeights: [1])
        var now: UInt64 = 0
        w.report(0, load: 0.5, interval: Self.second, now: now)
        _ = w.tick(now: now)
        #expect(w.weights == [50])
        var moves = 0
        for i in 0..<50 {
            now += Self.second
            w.report(0, load: i % 2 == 0 ? 0.45 : 0.55, interval: Self.second, now: now)
            if w.tick(now: now).changed { moves += 1 }
        }
        #expect(moves == 0, "±5% of load stays within the 10% hysteresis")
    }

    @Test func aSilentAgentsNodeGetsItsStaticWeightBack() {
        var w = DynamicWeights(staticWeights: [2, 2], parameters: .init(silence: 3))
        w.report(0, load: 0.9, interval: Self.second, now: 0)
        _ = w.tick(now: 0)
        #expect(w.weights[0] == 20)
        #expect(w.tick(now: 3 * Self.second).silenced.isEmpty, "three intervals: not yet")
        let later = w.tick(now: 3 * Self.second + 1)
        #expect(later.silenced == [0] && later.changed)
        #expect(w.weights == [200, 200])
    }

    @Test func aDrainedNodeStaysDrained() {
        var w = DynamicWeights(staticWeights: [0, 1])
        w.report(0, load: 0, interval: Self.second, now: 0)
        _ = w.tick(now: 0)
        #expect(w.weights == [0, 100])
    }
}
