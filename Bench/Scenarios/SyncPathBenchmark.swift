import Crypto
import FulcrumAPIModels
import FulcrumConfiguration
import FulcrumControl
import FulcrumCore
import FulcrumDataplane
import FulcrumSystem
import FulcrumTestSupport
import Foundation
import Logging
import Synchronization

/// `fulcrum-bench sync`, Fulcrum's own path: what the flow sync sustains and how far behind
/// it runs, with no data plane and no root.
///
/// - **Worker, export**: a table of `flows` established flows under wrr (8 nodes, uneven
///   weights), every one an exception to the stateless answer or not as it falls; the bulk
///   pass that turns them into records (ns per flow).
/// - **Wire**: two `FlowSyncService`s, the real ones, on the loopback (two threads, UDP,
///   HMAC-SHA256, acknowledgements), records pushed into the active's worker ring at
///   increasing offered rates, and as fast as it goes: records per second delivered into
///   the standby's worker ring, and the lag p50/p99 the active measures (export to
///   acknowledgement).
/// - **Standby, import**: those records held in a standby's table (ns per record).
/// - **Bulk of `flows`**: the three together, pipelined as they run in the daemon (each on
///   its own thread): the slowest stage bounds the time.
public struct SyncPathBenchmark {
    public var flows: Int
    public var rates: [Int]
    public var seconds: Double

    public init(flows: Int = 1_000_000, rates: [Int] = [100_000, 300_000, 1_000_000], seconds: Double = 2) {
        self.flows = flows
        self.rates = rates
        self.seconds = seconds
    }

    public struct RateRow: Sendable {
        /// Offered records per second (0: as fast as the path takes them).
        public var offered: Int
        public var delivered: Double
        public var lagP50Ms: Double?
        public var lagP99Ms: Double?
        public var resent: UInt64
    }

    public struct Result: Sendable {
        public var exportNsPerFlow: Double
        public var exceptions: Int
        public var saved: Int
        public var importNsPerRecord: Double
        public var rates: [RateRow]
        /// The bulk transfer of `flows` flows, bounded by its slowest stage.
        public var bulkSeconds: Double
    }

    static func spec(capacity: Int) -> BalancerSpec {
        let nodes = (0..<8).map {
            NodeSpec(address: IPAddress(ipv4: 0xC612_020B + UInt32($0)), weight: 1 + $0 % 3,
                     mac: MACAddress(value: 0x0200_0000_0200 + UInt64($0)))
        }
        let group = GroupSpec(name: "bench", vip: Fixtures.vip4, proto: IPProtocol.tcp, ports: [80], method: .mat,
                              scheduler: .wrr, nodes: nodes)
        return BalancerSpec(groups: [group], interfaceMACs: [PacketBuilder.lbMAC], flowTableCapacity: capacity)
    }

    static func key(_ i: Int) -> FlowKey {
        FlowKey(source: IPAddress(ipv4: 0xC612_0000 &+ UInt32(truncatingIfNeeded: i >> 14)),
                destination: Fixtures.vip4, sourcePort: UInt16(1024 + i & 0x3FFF), destinationPort: 80, proto: IPProtocol.tcp)
    }

    public func run() throws -> Result {
        let clock = ContinuousClock()
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        // A table of established flows, as the active's worker holds them after their
        // handshakes (the scheduler's picks: wrr).
        let capacity = flows * 4
        let active = try Balancer(Self.spec(capacity: capacity))
        let syn = PacketBuilder.tcpFrame(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: 1, destinationPort: 80,
                                         flags: TCPFlags.syn)
        var frame = syn
        let now = monotonicNanoseconds()
        for i in 0..<flows {
            let k = Self.key(i)
            frame.withUnsafeMutableBytes { b in
                let p = b.baseAddress!
                p.storeBytes(of: k.source.ipv4.bigEndian, toByteOffset: 26, as: UInt32.self)
                p.storeBytes(of: k.sourcePort.bigEndian, toByteOffset: 34, as: UInt16.self)
                p.storeBytes(of: UInt8(TCPFlags.syn), toByteOffset: 47, as: UInt8.self)
                _ = active.process(p, length: b.count, now: now)
                p.storeBytes(of: UInt8(TCPFlags.ack), toByteOffset: 47, as: UInt8.self)
                _ = active.process(p, length: b.count, now: now)
            }
        }
        // (A bucket full of live flows sends a flow to the stateless decision, unheld: a few.)
        precondition(active.flows.count >= flows * 99 / 100, "the table holds \(active.flows.count) of \(flows) flows")
        // Worker: the bulk pass.
        active.flows.syncEnabled = true
        active.flows.startBulk()
        let ring = SPSCRing<FlowSyncRecord>(capacity: 1 << 16)
        var records: [FlowSyncRecord] = []
        records.reserveCapacity(flows)
        var skipped = 0
        let export = clock.measure {
            while active.flows.bulkPending {
                skipped += active.exportSync(into: ring, now: now, bulkBuckets: 4096).skipped
                ring.drain { records.append($0) }
            }
        }
        let exportNs = seconds(export) * 1e9 / Double(flows)
        // Standby: holding them.
        let standby = try Balancer(Self.spec(capacity: capacity))
        let importTime = clock.measure {
            for r in records { _ = standby.importSync(r, now: now) }
        }
        precondition(standby.flows.count >= records.count * 99 / 100, "the standby holds \(standby.flows.count) of \(records.count)")
        let importNs = seconds(importTime) * 1e9 / Double(max(1, records.count))
        // Wire: the services on the loopback.
        var rows: [RateRow] = []
        for (i, rate) in (rates + [0]).enumerated() {
            rows.append(try wire(records: records, rate: rate, port: UInt16(47400 + i)))
        }
        let fastest = rows.last!.delivered
        let bulk = max(seconds(export), seconds(importTime), Double(records.count) / max(1, fastest))
        return Result(exportNsPerFlow: exportNs, exceptions: records.count, saved: skipped, importNsPerRecord: importNs,
                      rates: rows, bulkSeconds: bulk)
    }

    /// Pushes records into the active's worker ring at `rate` a second (0: as fast as it
    /// takes them) for `seconds`, and counts what reaches the standby's worker ring.
    func wire(records: [FlowSyncRecord], rate: Int, port: UInt16) throws -> RateRow {
        let key = SymmetricKey(data: Array(repeating: UInt8(3), count: 32))
        let events = try EventLog(file: nil)
        func side(_ local: String, _ peer: String) throws -> (FlowSyncService, WorkerSync, RoleCell) {
            var c = FulcrumConfig.Cluster(role: .master, peer: "peer", interconnects: [.init(local: IPAddress(local)!, peer: IPAddress(peer)!)], keyFile: "/dev/null")
            c.flowSyncPort = port
            let w = WorkerSync()
            let role = RoleCell()
            let s = try FlowSyncService(cluster: c, key: key, channels: [WorkerSyncChannel(sync: w, wake: {})], role: role,
                                        configVersion: { 1 }, events: events, logger: Logger(label: "bench"))
            Thread { s.loop() }.start()
            return (s, w, role)
        }
        let (a, aw, arole) = try side("127.0.0.1", "127.0.0.2")
        let (b, bw, brole) = try side("127.0.0.2", "127.0.0.1")
        defer { a.stop(); b.stop() }
        brole.set(.standby)
        arole.set(.active)
        // Ready (an empty bulk transfer: the stand-in worker finishes it at once).
        let start = Date()
        while !(a.status.withLock { $0.peerReady }) {
            aw.bulkDone.store(aw.bulkRequested.load(ordering: .acquiring), ordering: .releasing)
            bw.inbound.drain { _ in }
            guard Date().timeIntervalSince(start) < 5 else { throw SyncBenchFailure(description: "the loopback pair did not become ready") }
            usleep(1000)
        }
        var pushed = 0, delivered = 0
        let began = monotonicNanoseconds()
        let end = began + UInt64(seconds * 1e9)
        var t = began
        while t < end {
            let due = rate == 0 ? Int.max : Int(Double(t - began) / 1e9 * Double(rate))
            while pushed < due {
                var r = records[pushed % records.count]
                r.exportedAt = monotonicNanoseconds()
                guard aw.outbound.push(r) else { break }
                pushed += 1
            }
            delivered += bw.inbound.drain { _ in }
            // Workers hand records over between batches, not in a spin: a core left to the
            // sync threads (the machine has two).
            if rate != 0 { usleep(100) }
            t = monotonicNanoseconds()
        }
        let elapsed = Double(t - began) / 1e9
        // The last acknowledgements, then the lag as the active measured it.
        let settle = Date()
        while Date().timeIntervalSince(settle) < 1 {
            delivered += bw.inbound.drain { _ in }
            if a.status.withLock({ $0.inFlight == 0 && $0.pending == 0 }) { break }
            usleep(1000)
        }
        usleep(200_000)
        let s = a.status.withLock { $0 }
        return RateRow(offered: rate, delivered: Double(delivered) / elapsed, lagP50Ms: s.lagP50Milliseconds,
                       lagP99Ms: s.lagP99Milliseconds, resent: s.datagramsResent)
    }
}

struct SyncBenchFailure: Error, CustomStringConvertible { var description: String }
