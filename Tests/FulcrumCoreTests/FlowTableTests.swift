import FulcrumCore
import FulcrumTestSupport
import Testing

@Suite struct FlowTableTests {
    static let timeouts = FlowTimeouts(synSent: 5 * FlowTimeouts.seconds, established: 100 * FlowTimeouts.seconds,
                                       closing: 2 * FlowTimeouts.seconds, udp: 30 * FlowTimeouts.seconds,
                                       datagram: 10 * FlowTimeouts.seconds)

    func key(_ i: Int, proto: UInt8 = IPProtocol.tcp) -> FlowKey {
        FlowKey(source: IPAddress(ipv4: 0xC612_0000 | UInt32(i & 0xFFFF)), destination: Fixtures.vip4,
                sourcePort: UInt16(truncatingIfNeeded: 1024 + i / 0x10000), destinationPort: 80, proto: proto)
    }

    /// The flow hash picks flow-table buckets (bits 20 and up) and Maglev entries (modulo
    /// a prime), so every part of it must spread the regular keys real traffic has:
    /// consecutive clients, consecutive ports, IPv6 addresses differing in a few bits.
    /// Chi-square over 8192 cells stays near its degrees of freedom (a sound hash gives
    /// 1 ± 0.05 here; a structural flaw gives several times that).
    @Test func flowHashSpreadsRegularKeysEvenly() {
        let n = 1 << 16
        let patterns: [(String, (Int) -> FlowKey)] = [
            ("consecutive IPv4 clients", { i in
                FlowKey(source: IPAddress(ipv4: 0xC612_0000 | UInt32(i)), destination: Fixtures.vip4,
                        sourcePort: 40000, destinationPort: 80, proto: IPProtocol.tcp) }),
            ("consecutive source ports", { i in
                FlowKey(source: Fixtures.client4, destination: Fixtures.vip4,
                        sourcePort: UInt16(truncatingIfNeeded: i), destinationPort: 53, proto: IPProtocol.udp) }),
            ("256 clients x 256 ports", { i in
                FlowKey(source: IPAddress(ipv4: 0xC612_0100 | UInt32(i & 0xFF)), destination: Fixtures.vip4,
                        sourcePort: UInt16(1024 + i >> 8), destinationPort: 443, proto: IPProtocol.tcp) }),
            ("consecutive IPv6 clients", { i in
                FlowKey(source: IPAddress(high: 0x2001_0002_0000_0000, low: UInt64(i)), destination: Fixtures.vip6,
                        sourcePort: 40000, destinationPort: 80, proto: IPProtocol.tcp) }),
            ("IPv6 clients in consecutive /64s", { i in
                FlowKey(source: IPAddress(high: 0x2001_0002_0000_0000 | UInt64(i), low: 1), destination: Fixtures.vip6,
                        sourcePort: 40000, destinationPort: 80, proto: IPProtocol.tcp) }),
        ]
        let cells = 8192
        let views: [(String, (UInt64) -> Int)] = [
            ("bucket bits", { Int(truncatingIfNeeded: $0 >> 20) & (cells - 1) }),
            ("low bits", { Int(truncatingIfNeeded: $0) & (cells - 1) }),
            ("high bits", { Int(truncatingIfNeeded: $0 >> 51) }),
            ("modulo a prime", { Int($0 % 8191) }),
        ]
        for (name, key) in patterns {
            let hashes = (0..<n).map { key($0).stableHash() }
            for (view, cell) in views {
                var counts = [Int](repeating: 0, count: cells)
                for h in hashes { counts[cell(h)] += 1 }
                let used = view == "modulo a prime" ? 8191 : cells
                let expected = Double(n) / Double(used)
                let chi = counts.prefix(used).reduce(0.0) { $0 + (Double($1) - expected) * (Double($1) - expected) / expected }
                let ratio = chi / Double(used - 1)
                #expect(ratio > 0.85 && ratio < 1.15, "\(name), \(view): chi-square / dof = \(ratio)")
            }
        }
    }

    @Test(arguments: [
        (FlowState.synSent, 5.0), (.established, 100.0), (.closing, 2.0), (.udp, 30.0), (.datagram, 10.0),
    ])
    func expiryPerState(state: FlowState, seconds: Double) {
        let table = FlowTable(capacity: 64, nodeSlots: 4, timeouts: Self.timeouts)
        let clock = ManualClock()
        let k = key(1)
        let h = k.stableHash()
        #expect(table.insert(k, hash: h, now: clock.now, nodeSlot: 2, group: 0, state: state) >= 0)
        #expect(table.activeFlows(slot: 2) == 1)
        clock.advance(seconds: seconds - 0.001)
        #expect(table.find(k, hash: h, now: clock.now) >= 0, "alive just before \(seconds)s")
        clock.advance(seconds: 0.002)
        #expect(table.find(k, hash: h, now: clock.now) == -1, "dead just after \(seconds)s")
        #expect(table.activeFlows(slot: 2) == 0)
        #expect(table.count == 0)
    }

    @Test func touchingExtendsAndChangesState() {
        let table = FlowTable(capacity: 64, nodeSlots: 1, timeouts: Self.timeouts)
        let clock = ManualClock()
        let k = key(1)
        let h = k.stableHash()
        let slot = table.insert(k, hash: h, now: clock.now, nodeSlot: 0, group: 0, state: .synSent)
        clock.advance(seconds: 4)
        table.touch(slot, state: FlowState.next(from: .synSent, proto: IPProtocol.tcp, tcpFlags: TCPFlags.ack),
                    now: clock.now)
        #expect(table.entry(slot).state == .established)
        clock.advance(seconds: 50)
        #expect(table.find(k, hash: h, now: clock.now) == slot)
        table.touch(slot, state: FlowState.next(from: .established, proto: IPProtocol.tcp, tcpFlags: TCPFlags.fin | TCPFlags.ack),
                    now: clock.now)
        #expect(table.entry(slot).state == .closing)
        clock.advance(seconds: 2.5)
        #expect(table.find(k, hash: h, now: clock.now) == -1)
    }

    @Test func stateTransitions() {
        #expect(FlowState.next(from: nil, proto: IPProtocol.tcp, tcpFlags: TCPFlags.syn) == .synSent)
        #expect(FlowState.next(from: nil, proto: IPProtocol.tcp, tcpFlags: TCPFlags.ack) == .established)
        #expect(FlowState.next(from: .synSent, proto: IPProtocol.tcp, tcpFlags: TCPFlags.syn) == .synSent)
        #expect(FlowState.next(from: .established, proto: IPProtocol.tcp, tcpFlags: TCPFlags.rst) == .closing)
        #expect(FlowState.next(from: .closing, proto: IPProtocol.tcp, tcpFlags: TCPFlags.ack) == .closing)
        #expect(FlowState.next(from: .closing, proto: IPProtocol.tcp, tcpFlags: TCPFlags.syn) == .synSent)
        #expect(FlowState.next(from: nil, proto: IPProtocol.udp, tcpFlags: 0) == .udp)
        #expect(FlowState.next(from: nil, proto: IPProtocol.icmp, tcpFlags: 0) == .datagram)
    }

    /// The table never holds more than its capacity and refuses rather than grows.
    @Test func capacityLimit() {
        let table = FlowTable(capacity: 1024, nodeSlots: 1, timeouts: Self.timeouts)
        #expect(table.capacity == 1024)
        let now: UInt64 = 1
        var stored = 0, refused = 0
        for i in 0..<4096 {
            let k = key(i)
            if table.insert(k, hash: k.stableHash(), now: now, nodeSlot: 0, group: 0, state: .established) >= 0 {
                stored += 1
            } else {
                refused += 1
            }
        }
        #expect(stored <= 1024 && stored > 900, "stored \(stored)")
        #expect(refused == 4096 - stored)
        #expect(table.count == stored)
        #expect(table.activeFlows(slot: 0) == Int32(stored))
        // Every stored flow is still found.
        var found = 0
        for i in 0..<4096 where table.find(key(i), hash: key(i).stableHash(), now: now) >= 0 { found += 1 }
        #expect(found == stored)
    }

    /// A full bucket is reclaimed once its flows are dead, by insert or by the sweeper.
    @Test func deadFlowsAreReclaimed() {
        let table = FlowTable(capacity: 1024, nodeSlots: 1, timeouts: Self.timeouts)
        let clock = ManualClock()
        for i in 0..<4096 {
            let k = key(i)
            _ = table.insert(k, hash: k.stableHash(), now: clock.now, nodeSlot: 0, group: 0, state: .synSent)
        }
        #expect(table.count > 900)
        clock.advance(seconds: 6)
        var swept = 0
        for _ in 0..<table.bucketCount { swept += table.sweep(now: clock.now, buckets: 1) }
        #expect(table.count == 0)
        #expect(table.activeFlows(slot: 0) == 0)
        #expect(swept > 900)
        let k = key(99999)
        #expect(table.insert(k, hash: k.stableHash(), now: clock.now, nodeSlot: 0, group: 0, state: .udp) >= 0)
    }

    /// Dead and live flows mixed in buckets of every fill: the sweep (which looks only as
    /// far as a bucket's occupied prefix) frees every dead one, keeps every live one
    /// findable, and leaves the counts true.
    @Test func aSweepFreesTheDeadAmongTheLiveAndKeepsEveryLiveOne() {
        let table = FlowTable(capacity: 1024, nodeSlots: 1, timeouts: Self.timeouts)
        let clock = ManualClock()
        var live: [Int] = [], dead: [Int] = []
        for i in 0..<700 {  // buckets from empty to full
            let k = key(i)
            let state: FlowState = i % 3 == 0 ? .synSent : .udp  // 5 s against 30 s
            guard table.insert(k, hash: k.stableHash(), now: clock.now, nodeSlot: 0, group: 0, state: state) >= 0 else { continue }
            if state == .synSent { dead.append(i) } else { live.append(i) }
        }
        #expect(!dead.isEmpty && !live.isEmpty)
        clock.advance(seconds: 6)
        var swept = 0
        for _ in 0..<table.bucketCount { swept += table.sweep(now: clock.now, buckets: 1) }
        #expect(swept == dead.count)
        #expect(table.count == live.count)
        #expect(table.activeFlows(slot: 0) == Int32(live.count))
        #expect(live.allSatisfy { table.find(key($0), hash: key($0).stableHash(), now: clock.now) >= 0 })
        #expect(dead.allSatisfy { table.find(key($0), hash: key($0).stableHash(), now: clock.now) < 0 })
    }

    /// A table with a one-second sweep period, as full of SYN-sent flows (5 s timeout)
    /// as its buckets allow.
    func tableOfNewFlows(now: UInt64) -> FlowTable {
        let table = FlowTable(capacity: 8192, nodeSlots: 1, timeouts: Self.timeouts, sweepPeriod: FlowTimeouts.seconds)
        for i in 0..<8192 {
            let k = key(i)
            _ = table.insert(k, hash: k.stableHash(), now: now, nodeSlot: 0, group: 0, state: .synSent)
        }
        return table
    }

    /// Paced expiry looks at the whole table once per sweep period however often the
    /// worker calls it: the cost per second is fixed whatever the packet rate, and
    /// halfway through the period about half the dead flows are gone (no call scans the
    /// whole table).
    @Test(arguments: [10, 1000])
    func expiryIsPacedByTime(callsPerPeriod: Int) {
        let clock = ManualClock()
        let table = tableOfNewFlows(now: clock.now)
        let stored = table.count
        #expect(stored > 7000)
        clock.advance(seconds: 6)  // every flow is dead
        #expect(table.expire(now: clock.now) == 0, "the first call only starts the clock")
        let step = 1.0 / Double(callsPerPeriod)
        for _ in 0..<callsPerPeriod / 2 {
            clock.advance(seconds: step)
            table.expire(now: clock.now)
        }
        let left = Double(table.count) / Double(stored)
        #expect(left > 0.45 && left < 0.55, "after half a period \(table.count) of \(stored) left")
        for _ in callsPerPeriod / 2..<callsPerPeriod {
            clock.advance(seconds: step)
            table.expire(now: clock.now)
        }
        #expect(table.count == 0 && table.activeFlows(slot: 0) == 0)
    }

    /// However big the table, paced expiry looks at no more than `maxSweepRate` entries
    /// a second: a table of a million flows is looked over every second, the largest
    /// allowed (2^28) every 67 seconds.
    @Test func sweepPeriodGrowsWithTheTable() {
        let second = FlowTimeouts.seconds
        #expect(FlowTable.defaultSweepPeriod(capacity: 1024) == second)
        #expect(FlowTable.defaultSweepPeriod(capacity: 1 << 20) == second)
        #expect(FlowTable.defaultSweepPeriod(capacity: 1 << 24) == UInt64(1 << 24) * 250)
        for capacity in [1 << 10, 1 << 20, 1 << 22, 1 << 24, 1 << 28] {
            let period = FlowTable.defaultSweepPeriod(capacity: capacity)
            let perSecond = Double(capacity) / (Double(period) / Double(second))
            #expect(perSecond <= Double(FlowTable.maxSweepRate), "\(capacity) entries: \(perSecond) a second")
        }
        #expect(FlowTable(capacity: 8192, nodeSlots: 1).sweepPeriod == second)
    }

    /// After a long pause one call sweeps at most `maxBuckets`; the rest follows on the
    /// next calls, and never more than one pass is owed.
    @Test func expiryAfterAPauseIsSpreadOverCalls() {
        let clock = ManualClock()
        let table = tableOfNewFlows(now: clock.now)
        let stored = table.count
        table.expire(now: clock.now)
        clock.advance(seconds: 3600)
        let first = table.expire(now: clock.now, maxBuckets: 64)
        #expect(first > 0 && first <= 64 * FlowTable.ways)
        var calls = 1
        while table.count > 0 && calls < 1000 {
            clock.advance(seconds: 0.000_001)
            table.expire(now: clock.now, maxBuckets: 64)
            calls += 1
        }
        #expect(table.count == 0, "\(table.count) of \(stored) left")
        #expect(calls == table.bucketCount / 64, "one pass owed, \(calls) calls of 64 buckets")
    }

    @Test func reassignMovesTheCount() {
        let table = FlowTable(capacity: 64, nodeSlots: 3)
        let k = key(7)
        let slot = table.insert(k, hash: k.stableHash(), now: 1, nodeSlot: 1, group: 0, state: .established)
        table.reassign(slot, nodeSlot: 2, group: 0)
        #expect(table.activeFlows(slot: 1) == 0 && table.activeFlows(slot: 2) == 1)
        #expect(table.entry(slot).nodeSlot == 2)
    }

    /// Eight flows in one bucket: removing any of them keeps the others findable, and
    /// the freed slot is reused.
    @Test(arguments: 0..<8)
    func removalCompactsTheBucket(victim: Int) {
        let table = FlowTable(capacity: 64, nodeSlots: 1)
        let sameBucket: UInt64 = 0x55 << 20
        let keys = (0..<8).map { key($0) }
        for k in keys { #expect(table.insert(k, hash: sameBucket, now: 1, nodeSlot: 0, group: 0, state: .udp) >= 0) }
        #expect(table.insert(key(8), hash: sameBucket, now: 1, nodeSlot: 0, group: 0, state: .udp) == -1)
        table.remove(table.find(keys[victim], hash: sameBucket, now: 1))
        for (i, k) in keys.enumerated() {
            #expect((table.find(k, hash: sameBucket, now: 1) >= 0) == (i != victim))
        }
        #expect(table.insert(key(8), hash: sameBucket, now: 1, nodeSlot: 0, group: 0, state: .udp) >= 0)
        #expect(table.count == 8 && table.activeFlows(slot: 0) == 8)
    }
}
