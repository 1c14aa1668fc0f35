import FulcrumCore
import FulcrumDataplane
import FulcrumTestSupport
import FulcrumSystem

/// Micro-benchmarks of FulcrumCore's per-packet path, with no I/O: frames are copied from
/// a template store into working buffers laid out like UMEM (as a NIC's DMA would put
/// them there), a batch of 64 at a time, and `Balancer.process` runs on the batch as the
/// worker runs it. The reference is the copy alone, so "net" (path − reference) is what
/// Fulcrum's decision costs and the ratio compares the two.
///
/// The store is timed in windows (a sixteenth of it each) and every round runs every
/// path over each window in turn, so a noisy neighbour slows all paths alike; each path
/// reports its best window and its median one.
public struct CoreBenchmark {
    public var frames: Int
    public var flowCounts: [Int]
    public var rounds: Int
    /// Timed windows per pass over the store.
    public var windows = 16
    public var flowTableCapacity: Int
    public var hugePages: Bool
    /// Skip the malloc counter's self-check (under valgrind, which replaces malloc).
    public var checkAllocations = true
    /// Run only the paths whose name contains one of these (all when empty); the
    /// reference always runs. For profiling one path under callgrind or perf.
    public var only: [String] = []

    public init(frames: Int = 1_000_000, flowCounts: [Int] = [1000, 100_000], rounds: Int = 7,
                flowTableCapacity: Int = 1 << 20, hugePages: Bool = true) {
        self.frames = frames
        self.flowCounts = flowCounts
        self.rounds = rounds
        self.flowTableCapacity = flowTableCapacity
        self.hugePages = hugePages
    }

    public struct Row {
        public var name: String
        public var flows: Int
        /// The best window's ns per packet, and the median window's.
        public var nsPerPacket: Double
        public var medianNs: Double
        public var referenceNs: Double
        public var allocations: Int
    }

    /// Frames in memory, one per packet, as a NIC would deliver them.
    struct Store {
        var base: UnsafeMutableRawPointer
        /// Bytes from one frame to the next, and each frame's length.
        var stride: Int
        var length: Int
    }

    /// Minimum-size UDP frames (60 bytes for IPv4, 62 for IPv6), one per packet, flows
    /// visited in a shuffled order.
    static func makeStore(frames: Int, flows: Int, destination: (Int) -> (IPAddress, IPAddress, UInt16, UInt16))
        -> Store {
        var templates: [[UInt8]] = []
        for f in 0..<flows {
            let (src, dst, sport, dport) = destination(f)
            let padding = src.isIPv4 ? 18 : 0
            templates.append(PacketBuilder.udpFrame(source: src, destination: dst, sourcePort: sport,
                                                    destinationPort: dport, payload: [UInt8](repeating: 0x5A, count: padding)))
        }
        let length = templates[0].count
        let stride = (length + 63) & ~63
        let store = UnsafeMutableRawPointer.allocate(byteCount: frames * stride, alignment: 64)
        var order = Array(0..<frames).map { $0 % flows }
        var rng = SplitMix(seed: UInt64(flows))  // seeded: the system generator makes a syscall per number
        order.shuffle(using: &rng)
        for i in 0..<frames {
            templates[order[i]].withUnsafeBytes { (store + i * stride).copyMemory(from: $0.baseAddress!, byteCount: length) }
        }
        return Store(base: store, stride: stride, length: length)
    }

    static func client(_ f: Int) -> IPAddress { IPAddress(ipv4: 0xC612_0000 | UInt32(f & 0xFFFF)) }
    static func client6(_ f: Int) -> IPAddress { IPAddress(high: 0x2001_0002_0000_0000, low: UInt64(f)) }

    /// One group of 8 weighted nodes behind the VIP of one family, port 53/udp.
    static func spec(method: ForwardingMethod, ipv6: Bool, capacity: Int) -> BalancerSpec {
        let nodes = (0..<8).map {
            NodeSpec(address: ipv6 ? IPAddress(high: 0x2001_0002_0002_0000, low: 0x11 + UInt64($0))
                                   : IPAddress(ipv4: 0xC612_020B + UInt32($0)),
                     port: method == .nat ? 5353 : 0, weight: 1 + $0 % 3,
                     mac: MACAddress(value: 0x0200_0000_0200 + UInt64($0)))
        }
        let group = GroupSpec(name: "bench", vip: ipv6 ? Fixtures.vip6 : Fixtures.vip4, proto: IPProtocol.udp,
                              ports: [53], method: method, scheduler: .wrr, nodes: nodes)
        return BalancerSpec(groups: [group], interfaceMACs: [PacketBuilder.lbMAC],
                            returnRoutes: [ReturnRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 16, interface: 0,
                                                       nextHopMAC: Fixtures.routerMAC)],
                            flowTableCapacity: capacity)
    }

    /// Where the working frames sit: like UMEM, one per 2 KiB chunk after 256 bytes of
    /// headroom, a batch of 64 at a time.
    static let chunk = 2048
    static let headroom = 256
    static let batchSize = 64

    /// One path under test: a pass over every batch of its store.
    struct Scenario {
        var name: String
        var body: (Int) -> Void
        var samples: [Double] = []
        var allocations = 0

        var best: Double { samples.min() ?? .infinity }
        var median: Double { samples.isEmpty ? .infinity : samples.sorted()[samples.count / 2] }
    }

    public func run() throws -> [Row] {
        if checkAllocations { try AllocationCounter.selfTest() }
        var rows: [Row] = []
        let umem = UnsafeMutableRawPointer.allocate(byteCount: Self.batchSize * Self.chunk, alignment: 4096)
        defer { umem.deallocate() }
        let batch = PacketBatch(capacity: Self.batchSize)
        for k in 0..<Self.batchSize {
            batch.frames[k] = umem + k * Self.chunk + Self.headroom
            batch.lengths[k] = 60
        }
        let batches = frames / Self.batchSize
        var sink: UInt64 = 0
        /// Copies batch `b` of `store` into the working frames (what DMA does).
        func load(_ store: Store, _ b: Int) {
            let first = store.base + b * Self.batchSize * store.stride
            for k in 0..<Self.batchSize {
                batch.frames[k].copyMemory(from: first + k * store.stride, byteCount: store.length)
                batch.lengths[k] = store.length
            }
        }
        func transmitted() -> UInt64 {
            var n: UInt64 = 0
            for k in 0..<Self.batchSize { if case .transmit = batch.verdicts[k] { n &+= 1 } }
            return n
        }
        for flows in flowCounts {
            let forwardStore = Self.makeStore(frames: frames, flows: flows) {
                (Self.client($0), Fixtures.vip4, UInt16(1024 + $0 >> 16), 53)
            }
            let replyStore = Self.makeStore(frames: frames, flows: flows) {
                (IPAddress(ipv4: 0xC612_020B + UInt32($0 % 8)), Self.client($0), 5353, UInt16(1024 + $0 >> 16))
            }
            let forward6Store = Self.makeStore(frames: frames, flows: flows) {
                (Self.client6($0), Fixtures.vip6, UInt16(1024 + $0 >> 16), 53)
            }
            defer {
                forwardStore.base.deallocate()
                replyStore.base.deallocate()
                forward6Store.base.deallocate()
            }
            // One balancer (and flow table) per path, so each table holds `flows` flows.
            func balancer(_ method: ForwardingMethod, ipv6: Bool = false) throws -> Balancer {
                let spec = Self.spec(method: method, ipv6: ipv6, capacity: flowTableCapacity)
                let table = FlowTable(capacity: spec.flowTableCapacity, nodeSlots: spec.maxNodeSlots,
                                      timeouts: spec.timeouts, memory: hugePages ? HugePageMemory.table : .heap)
                return try Balancer(spec, flows: table)
            }
            let mat = try balancer(.mat)
            let nat = try balancer(.nat)
            // The same MAT path with the flow sync on: every packet's check of its flow's
            // marks, and the worker's turn that exports what is dirty (the ring drained as
            // the sync thread would; in steady state nothing is, so what shows is the cost
            // the sync adds to every packet).
            let matSync = try balancer(.mat)
            matSync.flows.syncEnabled = true
            let syncRing = SPSCRing<FlowSyncRecord>(capacity: 16384)
            let mat6 = try balancer(.mat, ipv6: true)
            let nat6 = try balancer(.nat, ipv6: true)
            /// The worker's loop body: the clock read, a batch decided, its verdicts read,
            /// and (for flows toward the nodes) the paced expiry run. The clock is the
            /// real one, so expiry does what a worker forwarding at this rate would do.
            func path(_ name: String, _ balancer: Balancer, _ store: Store, sweep: Bool) -> Scenario {
                Scenario(name: name) { b in
                    let now = monotonicNanoseconds()
                    load(store, b)
                    balancer.process(batch, count: Self.batchSize, now: now, ingress: 0)
                    sink &+= transmitted()
                    if sweep { balancer.maintain(now: now) }
                }
            }
            /// The same NAT path, the 64 frames decided `size` at a time, each small batch
            /// with its own clock read and paced expiry, as the worker's loop does when
            /// frames arrive a few at a time (ACK-clocked TCP): what a full batch amortises.
            func batched(_ size: Int) -> Scenario {
                let small = PacketBatch(capacity: size)
                let natSmall = try! balancer(.nat)
                return Scenario(name: "IPv4 parse+flow+nat rewrite, batches of \(size)") { b in
                    load(forwardStore, b)
                    var k = 0
                    while k < Self.batchSize {
                        let now = monotonicNanoseconds()
                        for j in 0..<size {
                            small.frames[j] = batch.frames[k + j]
                            small.lengths[j] = batch.lengths[k + j]
                        }
                        natSmall.process(small, count: size, now: now, ingress: 0)
                        for j in 0..<size { if case .transmit = small.verdicts[j] { sink &+= 1 } }
                        natSmall.maintain(now: now)
                        k += size
                    }
                }
            }
            var scenarios = [
                // Reference: copy the frames into the working buffers and read a byte of each.
                Scenario(name: "reference") { b in
                    load(forwardStore, b)
                    for k in 0..<Self.batchSize { sink &+= UInt64(batch.frames[k].load(fromByteOffset: 23, as: UInt8.self)) }
                },
                Scenario(name: "IPv4 parse") { b in
                    load(forwardStore, b)
                    for k in 0..<Self.batchSize {
                        var p = ParsedPacket()
                        if case .ip = PacketParser.parse(batch.frames[k], length: forwardStore.length, into: &p) {
                            sink &+= UInt64(p.destinationPort)
                        }
                    }
                },
                path("IPv4 parse+flow+mat rewrite", mat, forwardStore, sweep: true),
                Scenario(name: "IPv4 parse+flow+mat rewrite, flow sync on") { b in
                    let now = monotonicNanoseconds()
                    load(forwardStore, b)
                    matSync.process(batch, count: Self.batchSize, now: now, ingress: 0)
                    sink &+= transmitted()
                    matSync.maintain(now: now)
                    matSync.exportSync(into: syncRing, now: now)
                    syncRing.drain { sink &+= $0.exportedAt }
                },
                path("IPv4 parse+flow+nat rewrite", nat, forwardStore, sweep: true),
                path("IPv4 parse+nat reply rewrite", nat, replyStore, sweep: false),
                path("IPv6 parse+flow+mat rewrite", mat6, forward6Store, sweep: true),
                path("IPv6 parse+flow+nat rewrite", nat6, forward6Store, sweep: true),
                batched(1), batched(4), batched(16),
            ]
            if !only.isEmpty {
                scenarios = scenarios.enumerated().filter { i, s in i == 0 || only.contains { s.name.contains($0) } }.map(\.element)
            }
            // Warm-up: flows inserted, caches and branch predictors trained.
            for s in scenarios { for b in 0..<batches { s.body(b) } }
            // Rounds interleave the paths window by window, so a noisy neighbour slows
            // all of them alike; interference only ever adds time, so the best window is
            // what the code costs, and the median shows what a busy machine gives.
            let clock = ContinuousClock()
            let perWindow = max(1, batches / windows)
            for s in scenarios.indices { scenarios[s].samples.reserveCapacity(rounds * windows) }
            for r in 0..<rounds {
                var counted = [Int](repeating: 0, count: scenarios.count)
                var start = 0
                while start < batches {
                    let end = min(start + perWindow, batches)
                    for i in scenarios.indices {
                        let body = scenarios[i].body
                        var elapsed = Duration.zero
                        counted[i] += AllocationCounter.count {
                            elapsed = clock.measure { for b in start..<end { body(b) } }
                        }
                        let ns = (Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9)
                            / Double((end - start) * Self.batchSize)
                        scenarios[i].samples.append(ns)
                    }
                    start = end
                }
                for i in scenarios.indices {
                    scenarios[i].allocations = r == 0 ? counted[i] : max(scenarios[i].allocations, counted[i])
                }
            }
            // Every path did what it is named for, and nothing was dropped.
            for b in [mat, matSync, nat, mat6, nat6] { precondition(b.counters[.dropped] == 0) }
            if scenarios.contains(where: { $0.name.contains("flow sync") }) {
                precondition(matSync.flows.syncMarks > 0, "the flow-sync path marked nothing")
            }
            for s in scenarios.dropFirst(2) where !s.name.contains("batches of") {
                let b = s.name.contains("IPv6") ? (s.name.contains("mat") ? mat6 : nat6)
                    : s.name.contains("flow sync") ? matSync : (s.name.contains("mat") ? mat : nat)
                precondition(s.name.contains("reply") ? b.counters[.natReplies] > 0 : b.counters[.transmitted] > 0,
                             "\(s.name) forwarded nothing")
            }
            let reference = scenarios[0]
            for s in scenarios.dropFirst() {
                rows.append(Row(name: s.name, flows: flows, nsPerPacket: s.best, medianNs: s.median,
                                referenceNs: reference.best, allocations: s.allocations))
            }
        }
        if sink == 42 { print("") }  // keep the work observable
        return rows
    }

    /// Maglev table build time over `rounds` builds: the median and the best.
    public static func maglevBuild(nodes: Int, rounds: Int = 9) -> (median: Double, best: Double) {
        let keys = (0..<nodes).map { StableHash.hash(IPAddress(ipv4: 0xC612_0000 + UInt32($0))) }
        let weights = (0..<nodes).map { 1 + $0 % 4 }
        var samples: [Double] = []
        let clock = ContinuousClock()
        for _ in 0..<rounds {
            var table: MaglevTable?
            let d = clock.measure { table = MaglevTable(keys: keys, weights: weights) }
            precondition(table!.slotCounts().reduce(0, +) == MaglevTable.defaultSize)
            samples.append(Double(d.components.attoseconds) / 1e15 + Double(d.components.seconds) * 1e3)
        }
        samples.sort()
        return (samples[rounds / 2], samples[0])
    }
}
