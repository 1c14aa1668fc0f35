import FulcrumCore
import FulcrumDataplane
import FulcrumTestSupport

/// Micro-benchmarks of FulcrumCore's per-packet path, with no I/O: frames are copied from
/// a template store into a working buffer (as a NIC's DMA would put them in UMEM) and
/// processed there. The reference run is the copy alone, so the ratio column is the
/// cost of Fulcrum's decision relative to touching the frame at all.
public struct CoreBenchmark {
    public var frames: Int
    public var flowCounts: [Int]
    public var rounds: Int
    public var flowTableCapacity: Int
    public var hugePages: Bool
    /// Skip the malloc counter's self-check (under valgrind, which replaces malloc).
    public var checkAllocations = true

    public init(frames: Int = 1_000_000, flowCounts: [Int] = [1000, 100_000], rounds: Int = 5,
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
        public var nsPerPacket: Double
        public var referenceNs: Double
        public var allocations: Int
    }

    static let frameSize = 64  // slot stride in the store; the frames are 60 bytes

    /// 60-byte UDP frames, one per packet, flows visited in a shuffled order.
    static func makeStore(frames: Int, flows: Int, destination: (Int) -> (IPAddress, IPAddress, UInt16, UInt16))
        -> UnsafeMutableRawPointer {
        let store = UnsafeMutableRawPointer.allocate(byteCount: frames * frameSize, alignment: 64)
        var templates: [[UInt8]] = []
        for f in 0..<flows {
            let (src, dst, sport, dport) = destination(f)
            templates.append(PacketBuilder.udpFrame(source: src, destination: dst, sourcePort: sport,
                                                    destinationPort: dport, payload: [UInt8](repeating: 0x5A, count: 18)))
        }
        var order = Array(0..<frames).map { $0 % flows }
        var rng = SystemRandomNumberGenerator()
        order.shuffle(using: &rng)
        for i in 0..<frames {
            templates[order[i]].withUnsafeBytes { (store + i * frameSize).copyMemory(from: $0.baseAddress!, byteCount: 60) }
        }
        return store
    }

    static func client(_ f: Int) -> IPAddress { IPAddress(ipv4: 0xC612_0000 | UInt32(f & 0xFFFF)) }

    static func spec(method: ForwardingMethod, capacity: Int) -> BalancerSpec {
        let nodes = (0..<8).map {
            NodeSpec(address: IPAddress(ipv4: 0xC612_020B + UInt32($0)), port: method == .nat ? 5353 : 0,
                     weight: 1 + $0 % 3, mac: MACAddress(value: 0x0200_0000_0200 + UInt64($0)))
        }
        let group = GroupSpec(name: "bench", vip: Fixtures.vip4, proto: IPProtocol.udp, ports: [53], method: method,
                              scheduler: .wrr, nodes: nodes)
        return BalancerSpec(groups: [group], interfaceMACs: [PacketBuilder.lbMAC],
                            returnRoutes: [ReturnRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 16, interface: 0,
                                                       nextHopMAC: Fixtures.routerMAC)],
                            flowTableCapacity: capacity)
    }

    /// Times `body` over all frames `rounds` times after one warm-up pass; median ns/frame.
    static func measure(frames: Int, rounds: Int, _ body: (Int) -> Void) -> (Double, Int) {
        for i in 0..<frames { body(i) }  // warm-up: flows inserted, caches warm
        var samples: [Double] = []
        var allocations = 0
        for r in 0..<rounds {
            let clock = ContinuousClock()
            var elapsed = Duration.zero
            let counted = AllocationCounter.count {
                elapsed = clock.measure { for i in 0..<frames { body(i) } }
            }
            if r == 0 { allocations = counted } else { allocations = max(allocations, counted) }
            let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
            samples.append(ns / Double(frames))
        }
        samples.sort()
        return (samples[samples.count / 2], allocations)
    }

    public func run() throws -> [Row] {
        if checkAllocations { try AllocationCounter.selfTest() }
        var rows: [Row] = []
        let work = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 64)
        defer { work.deallocate() }
        var sink: UInt64 = 0
        for flows in flowCounts {
            let forwardStore = Self.makeStore(frames: frames, flows: flows) {
                (Self.client($0), Fixtures.vip4, UInt16(1024 + $0 >> 16), 53)
            }
            let replyStore = Self.makeStore(frames: frames, flows: flows) {
                (IPAddress(ipv4: 0xC612_020B + UInt32($0 % 8)), Self.client($0), 5353, UInt16(1024 + $0 >> 16))
            }
            defer {
                forwardStore.deallocate()
                replyStore.deallocate()
            }
            // Reference: copy the frame into the working buffer and read one byte of it.
            let (reference, _) = Self.measure(frames: frames, rounds: rounds) { i in
                work.copyMemory(from: forwardStore + i * Self.frameSize, byteCount: 60)
                sink &+= UInt64(work.load(fromByteOffset: 23, as: UInt8.self))
            }
            let (parseOnly, parseAllocs) = Self.measure(frames: frames, rounds: rounds) { i in
                work.copyMemory(from: forwardStore + i * Self.frameSize, byteCount: 60)
                var p = ParsedPacket()
                var a = ARPPacket()
                if PacketParser.parse(work, length: 60, into: &p, arp: &a) == .ip { sink &+= UInt64(p.destinationPort) }
            }
            rows.append(Row(name: "parse", flows: flows, nsPerPacket: parseOnly, referenceNs: reference,
                            allocations: parseAllocs))

            for method in [ForwardingMethod.mat, .nat] {
                let spec = Self.spec(method: method, capacity: flowTableCapacity)
                let table = FlowTable(capacity: spec.flowTableCapacity, nodeSlots: spec.maxNodeSlots,
                                      timeouts: spec.timeouts, memory: hugePages ? HugePageMemory.table : .heap)
                let balancer = try Balancer(spec, flows: table)
                var now: UInt64 = 1_000_000_000
                let (ns, allocs) = Self.measure(frames: frames, rounds: rounds) { i in
                    work.copyMemory(from: forwardStore + i * Self.frameSize, byteCount: 60)
                    if case .transmit = balancer.process(work, length: 60, now: now) { sink &+= 1 }
                    if i & 63 == 0 {
                        now &+= 1000
                        balancer.maintain(now: now)
                    }
                }
                precondition(balancer.counters[.transmitted] > 0 && balancer.counters[.dropped] == 0)
                rows.append(Row(name: "parse+flow+\(method.rawValue) rewrite", flows: flows, nsPerPacket: ns,
                                referenceNs: reference, allocations: allocs))
                if method == .nat {
                    let (rns, rallocs) = Self.measure(frames: frames, rounds: rounds) { i in
                        work.copyMemory(from: replyStore + i * Self.frameSize, byteCount: 60)
                        if case .transmit = balancer.process(work, length: 60, now: now) { sink &+= 1 }
                    }
                    precondition(balancer.counters[.natReplies] > 0)
                    rows.append(Row(name: "parse+nat reply rewrite", flows: flows, nsPerPacket: rns,
                                    referenceNs: reference, allocations: rallocs))
                }
            }
        }
        if sink == 42 { print("") }  // keep the work observable
        return rows
    }

    /// Maglev table build time: median over `rounds` builds.
    public static func maglevBuild(nodes: Int, rounds: Int = 9) -> (milliseconds: Double, allocations: Int) {
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
        return (samples[rounds / 2], 0)
    }
}
