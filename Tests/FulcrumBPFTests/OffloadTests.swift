import CFulcrumBPF
import Foundation
import FulcrumBPF
import FulcrumCore
import FulcrumSystem
import FulcrumTestSupport
import Testing

/// The XDP offload of established flows, differentially: the Swift worker decides a flow
/// and offloads it; then the same frame goes through the worker (the Balancer) and
/// through the XDP program (BPF_PROG_TEST_RUN), and the two outputs must be the same
/// bytes, checksums included.
@Suite(.serialized) struct OffloadTests {
    static let lbMAC = SteeringFixture.lbMAC
    static let entries = 1024
    static let natNode4 = Fixtures.node4a
    static let natNode6 = Fixtures.node6a

    /// MAT and NAT, TCP and UDP, both families: eight groups on one interface (the
    /// loopback device, where BPF_PROG_TEST_RUN frames arrive).
    static var groups: [GroupSpec] {
        var out: [GroupSpec] = []
        for (family, vip, matNode, natNode) in [("4", Fixtures.vip4, Fixtures.node4b, natNode4),
                                                 ("6", Fixtures.vip6, Fixtures.node6b, natNode6)] {
            for (proto, name) in [(IPProtocol.tcp, "tcp"), (IPProtocol.udp, "udp")] {
                out.append(GroupSpec(name: "mat\(family)\(name)", vip: vip, proto: proto, ports: [80], method: .mat,
                                     scheduler: .rr, nodes: [NodeSpec(address: matNode, mac: Fixtures.nodeMACb)]))
                out.append(GroupSpec(name: "nat\(family)\(name)", vip: vip, proto: proto, ports: [443], method: .nat,
                                     scheduler: .wrr, nodes: [NodeSpec(address: natNode, port: 8443, mac: Fixtures.nodeMACa)]))
            }
        }
        return out
    }

    static var spec: BalancerSpec {
        var spec = BalancerSpec(groups: groups, interfaceMACs: [lbMAC], returnRoutes: [
            ReturnRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0, nextHopMAC: Fixtures.routerMAC),
            ReturnRoute(prefix: IPAddress("2001:2::")!, prefixLength: 64, interface: 0, nextHopMAC: Fixtures.routerMAC),
        ])
        spec.interfaceMTUs = [1500]
        return spec
    }

    /// The program with the maps as the daemon fills them, offload on with one queue.
    struct Setup {
        let object: BPFObject
        let maps: FulcrumMaps
        let program: Int32
        let memory: SharedMapMemory
        let offload: FlowOffload
        let balancer: Balancer
    }

    static func setup(sharedWriters: Bool = false) throws -> Setup {
        let object = try BPFObject(path: BPFObject.locate(sourceRoot: Privileged.repositoryRoot()),
                                   mapEntries: [FULCRUM_MAP_OFFLOAD: UInt32(entries),
                                                FULCRUM_MAP_OFFLOAD_INDEX: UInt32(FlowOffload.indexWords(entries))])
        let maps = try FulcrumMaps(object)
        let spec = Self.spec
        let endpoints = try spec.endpoints()
        var services: [ServiceKey: (group: Int, nat: Bool)] = [:]
        for s in endpoints.services { services[s.key] = (s.group, s.nat) }
        var replies: [ServiceKey: Int] = [:]
        for r in endpoints.replies { replies[r.key] = r.group }
        try maps.synchronize(services: services, replies: replies, vips: Set(spec.groups.map(\.vip)))
        let lo = try InterfaceInfo.index(of: "lo")
        try maps.setInterface(ifindex: lo, slot: 0, mac: lbMAC)
        try maps.setActive(true)
        try maps.setOffload(entriesPerQueue: entries, sharedWriters: sharedWriters)
        let memory = try SharedMapMemory(maps.offload)
        let index = try SharedMapMemory(maps.offloadIndex)
        let offload = FlowOffload(region: memory.base, capacity: entries, ifindexes: [lo], owner: memory,
                                  index: index.base, indexOwner: index)
        let balancer = try Balancer(spec)
        balancer.attachOffload(offload, offering: true)
        return Setup(object: object, maps: maps, program: try object.programFD(FULCRUM_PROG_MAIN), memory: memory,
                     offload: offload, balancer: balancer)
    }

    /// One flow of the corpus: its group's kind and a client.
    struct Flow {
        var ipv6: Bool
        var proto: UInt8
        var nat: Bool
        var client: IPAddress
        var clientPort: UInt16

        var vip: IPAddress { ipv6 ? Fixtures.vip6 : Fixtures.vip4 }
        var vipPort: UInt16 { nat ? 443 : 80 }
        var node: IPAddress { ipv6 ? OffloadTests.natNode6 : OffloadTests.natNode4 }

        func toVIP(flags: UInt8 = 0x10, payload: [UInt8] = [], zeroChecksum: Bool = false) -> [UInt8] {
            proto == IPProtocol.tcp
                ? PacketBuilder.tcpFrame(source: client, destination: vip, sourcePort: clientPort, destinationPort: vipPort,
                                         flags: flags, payload: payload)
                : PacketBuilder.udpFrame(source: client, destination: vip, sourcePort: clientPort, destinationPort: vipPort,
                                         payload: payload, zeroChecksum: zeroChecksum)
        }

        /// A NAT node's reply to the client.
        func reply(flags: UInt8 = 0x10, payload: [UInt8] = [], zeroChecksum: Bool = false) -> [UInt8] {
            proto == IPProtocol.tcp
                ? PacketBuilder.tcpFrame(source: node, destination: client, sourcePort: 8443, destinationPort: clientPort,
                                         flags: flags, payload: payload, ethernetSource: Fixtures.nodeMACa)
                : PacketBuilder.udpFrame(source: node, destination: client, sourcePort: 8443, destinationPort: clientPort,
                                         payload: payload, zeroChecksum: zeroChecksum, ethernetSource: Fixtures.nodeMACa)
        }
    }

    /// The worker's decision for a flow's opening frames: after them, the flow is offloaded.
    static func establish(_ f: Flow, _ b: Balancer, now: UInt64) {
        if f.proto == IPProtocol.tcp {
            _ = f.toVIP(flags: TCPFlags.syn).mutatingFrame { b.process($0, length: $1, now: now) }
            _ = f.toVIP(flags: TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: now) }
        } else {
            _ = f.toVIP(payload: [1]).mutatingFrame { b.process($0, length: $1, now: now) }
            _ = f.toVIP(payload: [2]).mutatingFrame { b.process($0, length: $1, now: now) }
        }
    }

    /// Every length class: empty, one byte, odd and even, around 64 and 128, and up to
    /// a full 1500-byte MTU.
    static func payloadLength(_ rng: inout SplitMix, ipv6: Bool, proto: UInt8) -> Int {
        let header = (ipv6 ? 40 : 20) + (proto == IPProtocol.tcp ? 20 : 8)
        let classes = [0, 1, 2, 3, 7, 17, 64 - header, 100, 255, 511, 777, 1024, 1500 - header]
        let base = classes[Int(rng.next() % UInt64(classes.count))]
        return max(0, min(1500 - header, base + Int(rng.next() % 3)))
    }

    static func randomClient(_ rng: inout SplitMix, ipv6: Bool) -> IPAddress {
        ipv6 ? IPAddress(high: 0x2001_0002_0000_0000, low: rng.next() | 1)
             : IPAddress(ipv4: 0xC612_0000 | UInt32(truncatingIfNeeded: rng.next() % 250 + 2))  // 198.18.0.x
    }

    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"))
    func theProgramsOutputIsTheWorkersByteForByte() throws {
        let s = try Self.setup()
        defer { withExtendedLifetime(s.object) {} }
        var rng = SplitMix(seed: 0x0FF1_0AD)
        var compared = 0
        var now: UInt64 = 1_000_000_000
        let offloadedBefore = s.maps.counter(.init(FULCRUM_CNT_OFFLOADED))
        var kinds: [String: Int] = [:]
        var notOffloaded = 0
        while compared < 10_000 {
            // A new flow of a random kind, established by the worker...
            let ipv6 = rng.next() & 1 == 1, tcp = rng.next() & 1 == 1, nat = rng.next() & 1 == 1
            let f = Flow(ipv6: ipv6, proto: tcp ? IPProtocol.tcp : IPProtocol.udp, nat: nat,
                         client: Self.randomClient(&rng, ipv6: ipv6), clientPort: UInt16(1024 + rng.next() % 60000))
            now += 1000
            // Keep the table under half full: a flow whose slots are all taken is not
            // offloaded (the table-full case has its own test).
            if s.offload.offloadedFlows > Self.entries / 8 { s.offload.withdrawAll(counters: s.balancer.counters) }
            let full = s.balancer.counters[.offloadTableFull]
            Self.establish(f, s.balancer, now: now)
            let offloaded = s.balancer.counters[.offloadTableFull] == full
            if !offloaded { notOffloaded += 1 }
            // ...then a few of its frames each way through both.
            for _ in 0..<4 {
                let length = Self.payloadLength(&rng, ipv6: ipv6, proto: f.proto)
                let payload = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                let flags: [UInt8] = [0x10, 0x18, 0x30, 0x50, 0x90]
                let flag = flags[Int(rng.next() % 5)]
                let zero = !ipv6 && !tcp && rng.next() % 4 == 0
                var frames = [("to the VIP", f.toVIP(flags: flag, payload: payload, zeroChecksum: zero))]
                if nat { frames.append(("reply", f.reply(flags: flag, payload: payload, zeroChecksum: zero))) }
                for (direction, frame) in frames {
                    let (worker, verdict) = frame.mutatingFrame { s.balancer.process($0, length: $1, now: now) }
                    #expect(verdict == .transmit(interface: 0), "\(direction) \(f)")
                    let xdp = try ProgramTestRun.run(programFD: s.program, frame: frame)
                    guard offloaded else {
                        // No room: the worker's, untouched (no socket in a test run: passed).
                        #expect(xdp.verdict == ProgramTestRun.pass && xdp.output == frame)
                        continue
                    }
                    #expect(xdp.verdict == ProgramTestRun.tx, "\(direction) of \(f): verdict \(xdp.verdict)")
                    if xdp.output != worker {
                        Issue.record("\(direction) of \(f), \(frame.count) bytes: XDP\n\(xdp.output.hexDump)\nworker\n\(worker.hexDump)")
                        return
                    }
                    #expect(ChecksumCheck.problems(in: xdp.output).isEmpty || zero, "checksums of \(direction) of \(f)")
                    compared += 1
                    kinds["\(ipv6 ? 6 : 4)/\(tcp ? "tcp" : "udp")/\(nat ? "nat" : "mat")/\(direction)", default: 0] += 1
                }
            }
        }
        #expect(kinds.count == 12, "every kind compared: \(kinds)")
        #expect(notOffloaded < 20, "\(notOffloaded) flows found no free entry at under 1/4 load")
        #expect(s.maps.counter(.init(FULCRUM_CNT_OFFLOADED)) - offloadedBefore == UInt64(compared))
    }

    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"))
    func stateChangesTooLongFramesAndUnknownFlowsStayWithTheWorker() throws {
        let s = try Self.setup()
        defer { withExtendedLifetime(s.object) {} }
        let f = Flow(ipv6: false, proto: IPProtocol.tcp, nat: true, client: Fixtures.client4, clientPort: 40000)
        Self.establish(f, s.balancer, now: 1)
        #expect(s.offload.offloadedFlows == 1)
        // SYN, FIN, RST: the worker's, untouched (no socket here: passed).
        for flags in [TCPFlags.syn, TCPFlags.fin | TCPFlags.ack, TCPFlags.rst] {
            let frame = f.toVIP(flags: flags)
            let r = try ProgramTestRun.run(programFD: s.program, frame: frame)
            #expect(r.verdict == ProgramTestRun.pass && r.output == frame, "flags \(flags)")
        }
        // Longer than the egress MTU: the worker drops it as too big, so the program
        // must not send it.
        let big = f.toVIP(payload: [UInt8](repeating: 7, count: 1461))
        #expect(try ProgramTestRun.run(programFD: s.program, frame: big).verdict == ProgramTestRun.pass)
        // Another client's flow: never decided, not offloaded.
        var other = f
        other.clientPort = 40001
        #expect(try ProgramTestRun.run(programFD: s.program, frame: other.toVIP()).verdict == ProgramTestRun.pass)
        // The flow's own frame, but to another host's MAC address (flooded on a shared
        // segment): the entry names the address its frames arrive with, so the program
        // neither forwards nor rewrites it, and counts it as for another host.
        var elsewhere = f.toVIP()
        elsewhere.replaceSubrange(0..<6, with: [0x02, 0, 0, 0, 0x99, 0x99])
        let otherMACBefore = s.maps.counter(.init(FULCRUM_CNT_OTHER_MAC))
        let misdirected = try ProgramTestRun.run(programFD: s.program, frame: elsewhere)
        #expect(misdirected.verdict == ProgramTestRun.pass && misdirected.output == elsewhere)
        #expect(s.maps.counter(.init(FULCRUM_CNT_OTHER_MAC)) - otherMACBefore == 1)
        #expect(try ProgramTestRun.run(programFD: s.program, frame: f.reply()).verdict == ProgramTestRun.tx)
        // The client's FIN through the worker withdraws the flow: its next frame is the worker's.
        _ = f.toVIP(flags: TCPFlags.fin | TCPFlags.ack).mutatingFrame { s.balancer.process($0, length: $1, now: 2) }
        #expect(s.offload.offloadedFlows == 0)
        #expect(try ProgramTestRun.run(programFD: s.program, frame: f.toVIP()).verdict == ProgramTestRun.pass)
        #expect(try ProgramTestRun.run(programFD: s.program, frame: f.reply()).verdict == ProgramTestRun.pass)
    }

    /// Two flows with the same home slot: the second sits one slot on. Withdrawing the
    /// first leaves its slot marked withdrawn, which the program's probes pass over, so
    /// the second is still forwarded; withdrawing the second empties both slots, where a
    /// probe stops (a frame of a flow not offloaded then costs one slot, not eight).
    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"))
    func aWithdrawnSlotIsPassedOverAndEmptiedWhenNothingFollows() throws {
        let s = try Self.setup()
        defer { withExtendedLifetime(s.object) {} }
        func flow(_ port: UInt16) -> Flow {
            Flow(ipv6: false, proto: IPProtocol.tcp, nat: false, client: Fixtures.client4, clientPort: port)
        }
        func home(_ f: Flow) -> Int {
            let key = FlowKey(source: f.client, destination: f.vip, sourcePort: f.clientPort, destinationPort: f.vipPort,
                              proto: f.proto)
            return Int(UInt32(truncatingIfNeeded: FlowOffload.hash(key))) & (Self.entries - 1)
        }
        let a = flow(41000)
        let slot = home(a)
        let b = try #require((41001...60000).lazy.map(flow).first { home($0) == slot })
        func action(_ index: Int) -> UInt8 {
            s.memory.base.load(fromByteOffset: (index & (Self.entries - 1)) * FlowOffload.Layout.size + FlowOffload.Layout.action,
                               as: UInt8.self)
        }
        Self.establish(a, s.balancer, now: 1)
        Self.establish(b, s.balancer, now: 1)
        #expect(action(slot) == UInt8(FULCRUM_OFFLOAD_MAT) && action(slot + 1) == UInt8(FULCRUM_OFFLOAD_MAT))
        #expect(try ProgramTestRun.run(programFD: s.program, frame: b.toVIP()).verdict == ProgramTestRun.tx)

        _ = a.toVIP(flags: TCPFlags.fin | TCPFlags.ack).mutatingFrame { s.balancer.process($0, length: $1, now: 2) }
        #expect(action(slot) == FlowOffload.withdrawn)
        #expect(try ProgramTestRun.run(programFD: s.program, frame: a.toVIP()).verdict == ProgramTestRun.pass)
        #expect(try ProgramTestRun.run(programFD: s.program, frame: b.toVIP()).verdict == ProgramTestRun.tx,
                "the probe passes the withdrawn slot to the flow after it")

        _ = b.toVIP(flags: TCPFlags.fin | TCPFlags.ack).mutatingFrame { s.balancer.process($0, length: $1, now: 3) }
        #expect(action(slot) == 0 && action(slot + 1) == 0, "nothing follows them: both empty")
        #expect(try ProgramTestRun.run(programFD: s.program, frame: b.toVIP()).verdict == ProgramTestRun.pass)
        #expect(Int(FULCRUM_OFFLOAD_WITHDRAWN) == Int(FlowOffload.withdrawn))
    }

    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"))
    func aStandbysProgramForwardsNoOffloadedFrame() throws {
        let s = try Self.setup()
        defer { withExtendedLifetime(s.object) {} }
        let f = Flow(ipv6: true, proto: IPProtocol.udp, nat: false, client: Fixtures.client6, clientPort: 5000)
        Self.establish(f, s.balancer, now: 1)
        #expect(try ProgramTestRun.run(programFD: s.program, frame: f.toVIP()).verdict == ProgramTestRun.tx)
        try s.maps.setActive(false)
        let r = try ProgramTestRun.run(programFD: s.program, frame: f.toVIP())
        #expect(r.verdict == ProgramTestRun.pass && r.output == f.toVIP())
        try s.maps.setActive(true)
        #expect(try ProgramTestRun.run(programFD: s.program, frame: f.toVIP()).verdict == ProgramTestRun.tx)
    }

    /// Counted both ways the program counts into an entry: plain adds (native mode, one
    /// writer a queue) and atomic ones (generic mode).
    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"), arguments: [false, true])
    func countersAndFlowLifetimesIncludeWhatTheProgramForwarded(sharedWriters: Bool) throws {
        let s = try Self.setup(sharedWriters: sharedWriters)
        defer { withExtendedLifetime(s.object) {} }
        let f = Flow(ipv6: false, proto: IPProtocol.tcp, nat: true, client: Fixtures.client4, clientPort: 41000)
        let start = monotonicNanoseconds()
        Self.establish(f, s.balancer, now: start)
        let c = s.balancer.counters
        let (transmittedBefore, repliesBefore) = (c[.transmitted], c[.natReplies])
        let group = try #require(Self.groups.firstIndex { $0.name == "nat4tcp" })
        let slot = s.balancer.slot(group: group, node: 0)
        let nodeBefore = (c.node(slot, .packets), c.node(slot, .bytes))
        var bytes: UInt64 = 0
        // The program stamps with the coarse clock (a tick behind at most): later than the
        // handshake by more than a tick, so that the stamp is seen to move the deadline on.
        usleep(20_000)
        for i in 0..<30 {
            let frame = f.toVIP(payload: [UInt8](repeating: 1, count: i))
            bytes += UInt64(frame.count)
            #expect(try ProgramTestRun.run(programFD: s.program, frame: frame).verdict == ProgramTestRun.tx)
        }
        for _ in 0..<12 {
            #expect(try ProgramTestRun.run(programFD: s.program, frame: f.reply()).verdict == ProgramTestRun.tx)
        }
        // The worker's scan folds them in and moves the flow's deadline to its last use.
        let later = monotonicNanoseconds() + 1_000_000_000
        s.balancer.maintain(now: later - s.offload.scanPeriod)
        s.balancer.maintain(now: later)
        #expect(c[.offloaded] == 42)
        #expect(c[.transmitted] == transmittedBefore, "the worker's own frames only")
        #expect(c[.natReplies] - repliesBefore == 12)
        #expect(c.node(slot, .packets) - nodeBefore.0 == 30)
        #expect(c.node(slot, .bytes) - nodeBefore.1 == bytes)
        let key = FlowKey(source: f.client, destination: f.vip, sourcePort: f.clientPort, destinationPort: f.vipPort,
                          proto: f.proto)
        let index = s.balancer.flows.find(key, hash: key.stableHash(), now: later)
        #expect(index >= 0)
        if index >= 0 {
            // Established lifetime from the program's last stamp, not from the handshake.
            #expect(s.balancer.flows.entry(index).deadline > start + FlowTimeouts().established)
        }
        // Its node goes down: the flow's entries are withdrawn at once.
        s.balancer.setNodeUp(group: group, node: 0, false)
        #expect(s.offload.offloadedFlows == 0)
        #expect(try ProgramTestRun.run(programFD: s.program, frame: f.toVIP()).verdict == ProgramTestRun.pass)
    }

    @Test func theWorkersHashAndLayoutAreTheProgramsOwn() {
        var rng = SplitMix(seed: 7)
        for _ in 0..<1000 {
            let k = FlowKey(source: IPAddress(high: rng.next(), low: rng.next()), destination: IPAddress(high: rng.next(), low: rng.next()),
                            sourcePort: UInt16(truncatingIfNeeded: rng.next()), destinationPort: UInt16(truncatingIfNeeded: rng.next()),
                            proto: UInt8(truncatingIfNeeded: rng.next()))
            let c = fulcrum_offload_hash(k.source.high.bigEndian, k.source.low.bigEndian, k.destination.high.bigEndian,
                                         k.destination.low.bigEndian,
                                         UInt64(k.sourcePort.bigEndian) | UInt64(k.destinationPort.bigEndian) << 16 | UInt64(k.proto) << 32)
            #expect(c == FlowOffload.hash(k))
        }
        typealias L = FlowOffload.Layout
        #expect(MemoryLayout<fulcrum_offload>.size == L.size)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.seq) == L.seq)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.action) == L.action)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.proto) == L.proto)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.max_frame) == L.maxFrame)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.sport) == L.sourcePort)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.dport) == L.destinationPort)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.new_port) == L.newPort)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.src) == L.source)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.dst) == L.destination)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.new_addr) == L.newAddress)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.eth) == L.ethernet)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.ifindex) == L.ifindex)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.last_used) == L.lastUsed)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.packets) == L.packets)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.bytes) == L.bytes)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.from_ifindex) == L.fromIfindex)
        #expect(MemoryLayout<fulcrum_offload>.offset(of: \.in_mac) == L.inMAC)
        #expect(Int(FULCRUM_OFFLOAD_PROBES) == L.probes)
    }
}
