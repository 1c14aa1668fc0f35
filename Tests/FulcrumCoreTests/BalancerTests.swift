import FulcrumCore
import FulcrumTestSupport
import Testing

@Suite struct BalancerTests {
    static let lbMAC = PacketBuilder.lbMAC
    static let macs = [Fixtures.nodeMACa, Fixtures.nodeMACb, Fixtures.nodeMACc]
    static let sorryMAC = MACAddress("02:00:00:00:02:99")!
    static let sorry4 = IPAddress("198.18.2.99")!

    static func matGroup(scheduler: SchedulerKind = .wrr, weights: [Int] = [3, 2, 1], sorry: Bool = false) -> GroupSpec {
        let nodes = [Fixtures.node4a, Fixtures.node4b, Fixtures.node4c].enumerated().map {
            NodeSpec(address: $0.element, weight: weights[$0.offset], mac: macs[$0.offset])
        }
        return GroupSpec(name: "web", vip: Fixtures.vip4, proto: IPProtocol.tcp, ports: [80, 443], method: .mat,
                         scheduler: scheduler, nodes: nodes,
                         sorry: sorry ? NodeSpec(address: sorry4, mac: sorryMAC) : nil)
    }

    static func natGroup() -> GroupSpec {
        GroupSpec(name: "dns", vip: Fixtures.vip4, proto: IPProtocol.udp, ports: [53], method: .nat, scheduler: .rr,
                  nodes: [NodeSpec(address: Fixtures.node4a, port: 5353, mac: Fixtures.nodeMACa),
                          NodeSpec(address: Fixtures.node4b, port: 5353, mac: Fixtures.nodeMACb)])
    }

    static func balancer(_ groups: [GroupSpec], capacity: Int = 4096) throws -> Balancer {
        try Balancer(BalancerSpec(
            groups: groups, interfaceMACs: [lbMAC],
            returnRoutes: [ReturnRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0,
                                       nextHopMAC: Fixtures.routerMAC)],
            flowTableCapacity: capacity))
    }

    func syn(_ i: Int, port: UInt16 = 80, flags: UInt8 = TCPFlags.syn) -> [UInt8] {
        PacketBuilder.tcpFrame(source: IPAddress(ipv4: 0xC612_0000 | UInt32(i % 200 + 2)), destination: Fixtures.vip4,
                               sourcePort: UInt16(10000 + i), destinationPort: port, flags: flags)
    }

    /// Runs a frame through the balancer; returns the verdict and the node MAC it went to.
    func run(_ b: Balancer, _ frame: [UInt8], now: UInt64 = 1_000_000_000) -> (Verdict, [UInt8]) {
        let (out, v) = frame.mutatingFrame { b.process($0, length: $1, now: now) }
        return (v, out)
    }

    func nodeIndex(_ frame: [UInt8]) -> Int? {
        let dst = MACAddress(value: frame.prefix(6).reduce(0) { $0 << 8 | UInt64($1) })
        if dst == Self.sorryMAC { return 99 }
        return Self.macs.firstIndex(of: dst)
    }

    @Test func matSpreadsNewFlowsByWeightAndKeepsThemSticky() throws {
        let b = try Self.balancer([Self.matGroup()])
        var perNode = [0, 0, 0]
        var chosen: [Int] = []
        for i in 0..<600 {
            let (v, out) = run(b, syn(i))
            #expect(v == .transmit(interface: 0))
            let n = try #require(nodeIndex(out))
            perNode[n] += 1
            chosen.append(n)
            #expect(Array(out[6..<12]) == Array(PacketBuilder.tcpFrame(source: Fixtures.client4, destination: Fixtures.vip4,
                sourcePort: 1, destinationPort: 80, ethernetSource: Self.lbMAC)[6..<12]))
            #expect(Array(out[12...]) == Array(syn(i)[12...]), "MAT must not touch L3/L4")
        }
        #expect(perNode == [300, 200, 100])
        // Later packets of each flow go where the first went.
        for i in 0..<600 {
            let (_, out) = run(b, syn(i, flags: TCPFlags.ack))
            #expect(nodeIndex(out) == chosen[i])
        }
        #expect(b.counters.group(0, .newFlows) == 600)
        #expect(b.counters.group(0, .packets) == 1200)
        #expect(b.counters.node(b.slot(group: 0, node: 0), .newFlows) == 300)
        #expect(b.flows.count == 600)
    }

    /// The worker hands the balancer whole batches, which it decides in passes; the
    /// verdicts, the bytes sent and the counters must be what deciding the same frames one
    /// at a time gives. The batch mixes services (so the last-service shortcut switches),
    /// NAT replies, frames for the kernel, a malformed frame, and two packets of one new
    /// flow (the second must find the flow the first created in the same batch).
    @Test func aMixedBatchDecidesEachFrameAsOneAtATimeDoes() throws {
        let client = IPAddress("198.18.0.7")!
        var frames: [[UInt8]] = []
        for i in 0..<12 { frames.append(syn(i, port: i % 3 == 0 ? 443 : 80)) }
        frames.append(PacketBuilder.udpFrame(source: client, destination: Fixtures.vip4, sourcePort: 4000,
                                             destinationPort: 53, payload: [1, 2, 3]))
        frames.append(PacketBuilder.udpFrame(source: Fixtures.node4a, destination: client, sourcePort: 5353,
                                             destinationPort: 4000, payload: [4, 5, 6]))
        frames.append(syn(1, port: 8080))  // no service: for the kernel
        frames.append(Array(syn(2).prefix(30)))  // cut inside the IPv4 header
        var lldp = [UInt8](repeating: 0, count: 60)
        lldp[12] = 0x88
        lldp[13] = 0xCC
        frames.append(lldp)
        frames.append(syn(40))
        frames.append(syn(40, flags: TCPFlags.ack))
        frames.append(PacketBuilder.udpFrame(source: client, destination: Fixtures.vip4, sourcePort: 4001,
                                             destinationPort: 53, payload: [7]))

        let one = try Self.balancer([Self.matGroup(), Self.natGroup()])
        let expected = frames.map { run(one, $0) }

        let batched = try Self.balancer([Self.matGroup(), Self.natGroup()])
        let batch = PacketBatch(capacity: frames.count)
        let buffers = frames.map { f -> UnsafeMutableRawPointer in
            let p = UnsafeMutableRawPointer.allocate(byteCount: f.count, alignment: 8)
            f.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: f.count) }
            return p
        }
        defer { buffers.forEach { $0.deallocate() } }
        for (k, f) in frames.enumerated() {
            batch.frames[k] = buffers[k]
            batch.lengths[k] = f.count
        }
        batched.process(batch, count: frames.count, now: 1_000_000_000, ingress: 0)

        for k in frames.indices {
            let out = Array(UnsafeRawBufferPointer(start: buffers[k], count: frames[k].count))
            #expect(batch.verdicts[k] == expected[k].0, "frame \(k)")
            #expect(out == expected[k].1, "frame \(k): bytes differ")
        }
        #expect(expected.filter { $0.0 == .transmit(interface: 0) }.count == 17)
        #expect(nodeIndex(expected[frames.count - 2].1) == nodeIndex(expected[frames.count - 3].1))
        for c in GlobalCounter.allCases { #expect(batched.counters[c] == one.counters[c], "\(c)") }
        for r in DropReason.allCases { #expect(batched.counters[r] == one.counters[r], "\(r)") }
        for slot in 0..<batched.slotCount {
            for kind in TrafficCounter.allCases {
                #expect(batched.counters.node(slot, kind) == one.counters.node(slot, kind), "slot \(slot) \(kind)")
            }
        }
        #expect(batched.flows.count == one.flows.count)
    }

    @Test func multiPortGroupServesEveryPort() throws {
        let b = try Self.balancer([Self.matGroup()])
        #expect(run(b, syn(1, port: 443)).0 == .transmit(interface: 0))
        #expect(run(b, syn(2, port: 8443)).0 == .pass)
        #expect(b.counters[.notForService] == 1)
    }

    @Test func downNodeFlowsMoveOnTheirNextPacket() throws {
        let b = try Self.balancer([Self.matGroup(weights: [1, 1, 1])])
        var chosen: [Int] = []
        for i in 0..<300 { chosen.append(nodeIndex(run(b, syn(i)).1)!) }
        b.setNodeUp(group: 0, node: 1, false)
        for i in 0..<300 {
            let n = nodeIndex(run(b, syn(i, flags: TCPFlags.ack)).1)!
            #expect(n != 1)
            if chosen[i] != 1 { #expect(n == chosen[i], "flows on live nodes stay") }
        }
        #expect(b.counters[.flowsMoved] == UInt64(chosen.filter { $0 == 1 }.count))
        #expect(b.flows.activeFlows(slot: b.slot(group: 0, node: 1)) == 0)
    }

    @Test func drainKeepsExistingFlowsAndTakesNoNewOnes() throws {
        let b = try Self.balancer([Self.matGroup(weights: [1, 1, 1])])
        var chosen: [Int] = []
        for i in 0..<90 { chosen.append(nodeIndex(run(b, syn(i)).1)!) }
        b.setWeights(group: 0, [1, 0, 1])
        for i in 0..<90 { #expect(nodeIndex(run(b, syn(i, flags: TCPFlags.ack)).1) == chosen[i]) }
        for i in 90..<190 { #expect(nodeIndex(run(b, syn(i)).1) != 1) }
        #expect(b.counters[.flowsMoved] == 0)
    }

    @Test func unknownMACIsNotChosen() throws {
        var g = Self.matGroup(weights: [1, 1, 1])
        g.nodes[2].mac = nil
        let b = try Self.balancer([g])
        for i in 0..<60 { #expect(nodeIndex(run(b, syn(i)).1) != 2) }
        b.setNodeMAC(group: 0, node: 2, Fixtures.nodeMACc)
        let later = (60..<120).map { nodeIndex(run(b, syn($0)).1) }
        #expect(later.contains(2))
    }

    @Test func sorryServerTakesNewFlowsWhileAllNodesAreDown() throws {
        let b = try Self.balancer([Self.matGroup(sorry: true)])
        for n in 0..<3 { b.setNodeUp(group: 0, node: n, false) }
        for i in 0..<10 { #expect(nodeIndex(run(b, syn(i)).1) == 99) }
        #expect(b.counters.group(0, .sorryFlows) == 10)
        b.setNodeUp(group: 0, node: 2, true)
        for i in 10..<20 { #expect(nodeIndex(run(b, syn(i)).1) == 2) }
        // Flows already on the sorry server finish there.
        #expect(nodeIndex(run(b, syn(3, flags: TCPFlags.ack)).1) == 99)
    }

    @Test func noLiveNodeAndNoSorryServerDrops() throws {
        let b = try Self.balancer([Self.matGroup()])
        for n in 0..<3 { b.setNodeUp(group: 0, node: n, false) }
        #expect(run(b, syn(1)).0 == .drop)
        #expect(b.counters[.noLiveNode] == 1)
    }

    @Test func natForwardAndReplyAreTranslated() throws {
        let b = try Self.balancer([Self.natGroup()])
        let payload = Array("query".utf8)
        let request = PacketBuilder.udpFrame(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: 40000,
                                             destinationPort: 53, payload: payload)
        let (v, out) = run(b, request)
        #expect(v == .transmit(interface: 0))
        let n = try #require(nodeIndex(out))
        let node = [Fixtures.node4a, Fixtures.node4b][n]
        #expect(out == PacketBuilder.udpFrame(source: Fixtures.client4, destination: node, sourcePort: 40000,
                                              destinationPort: 5353, payload: payload,
                                              ethernetDestination: Self.macs[n], ethernetSource: Self.lbMAC))
        let reply = PacketBuilder.udpFrame(source: node, destination: Fixtures.client4, sourcePort: 5353,
                                           destinationPort: 40000, payload: payload,
                                           ethernetDestination: Self.lbMAC, ethernetSource: Self.macs[n])
        // A reply is translated by any worker: use a second balancer with an empty flow table.
        let other = try Self.balancer([Self.natGroup()])
        let (rv, rout) = run(other, reply)
        #expect(rv == .transmit(interface: 0))
        #expect(rout == PacketBuilder.udpFrame(source: Fixtures.vip4, destination: Fixtures.client4, sourcePort: 53,
                                               destinationPort: 40000, payload: payload,
                                               ethernetDestination: Fixtures.routerMAC, ethernetSource: Self.lbMAC))
        #expect(other.counters[.natReplies] == 1)
    }

    @Test func natReplyWithoutRouteIsDropped() throws {
        let b = try Self.balancer([Self.natGroup()])
        let reply = PacketBuilder.udpFrame(source: Fixtures.node4a, destination: IPAddress("198.19.9.9")!,
                                           sourcePort: 5353, destinationPort: 40000)
        #expect(run(b, reply).0 == .drop)
        #expect(b.counters[.noRouteToClient] == 1)
    }

    @Test func fullTableFallsBackToConsistentHash() throws {
        let b = try Self.balancer([Self.matGroup(scheduler: .rr, weights: [1, 1, 1])], capacity: 8)
        var firstChoice: [Int: Int] = [:]
        for i in 0..<200 { firstChoice[i] = nodeIndex(run(b, syn(i)).1) }
        #expect(b.counters[.flowTableFull] > 150)
        #expect(b.flows.count <= 8)
        // Flows that did not fit get the same stateless answer on every packet, also the
        // ones whose ACK finds room in the table.
        var moved: [Int] = []
        for i in 0..<200 where nodeIndex(run(b, syn(i, flags: TCPFlags.ack)).1) != firstChoice[i] { moved.append(i) }
        #expect(moved.isEmpty, "flows that changed node: \(moved)")
    }

    /// The hostile test's case: a SYN decided by the fallback while the table is full; a
    /// bucket frees (the flows that filled it expire); the connection's next segments
    /// must not be scheduled anew (wrr would pick 3:2:1, not the Maglev answer).
    @Test(arguments: [SchedulerKind.wrr, .rr, .lc, .wlc, .sh])
    func flowDecidedByTheFallbackKeepsItsNodeWhenRoomFrees(scheduler: SchedulerKind) throws {
        let b = try Self.balancer([Self.matGroup(scheduler: scheduler, weights: [5, 1, 1])], capacity: 8)
        let s = FlowTimeouts.seconds
        // Fill the one bucket (8 ways) with SYNs at t = 1 s: they die at 31 s (syn timeout).
        for i in 0..<8 { _ = run(b, syn(1000 + i), now: 1 * s) }
        #expect(b.flows.count == 8)
        // 60 connections arrive while it is full: decided by the fallback.
        var first: [Int: Int] = [:]
        for i in 0..<60 { first[i] = nodeIndex(run(b, syn(i), now: 2 * s).1) }
        #expect(b.counters[.flowTableFull] == 60)
        // At 32 s the first eight are dead: the handshakes' ACKs, and data, find room.
        for round in 0..<3 {
            for i in 0..<60 {
                let node = nodeIndex(run(b, syn(i, flags: TCPFlags.ack), now: (32 + UInt64(round)) * s).1)
                #expect(node == first[i], "flow \(i) moved from node \(first[i] ?? -1) to \(node ?? -1) in round \(round)")
            }
        }
        #expect(b.flows.count == 8, "the ACKs filled the freed room")
        // A retransmitted SYN of one of them (same 5-tuple) keeps its node too.
        #expect(nodeIndex(run(b, syn(59), now: 33 * s).1) == first[59])
    }

    @Test func udpFlowsSeenWhileTheirBucketWasFullKeepTheirNode() throws {
        var group = Self.matGroup(scheduler: .wrr, weights: [5, 1, 1])
        group.proto = IPProtocol.udp
        let b = try Self.balancer([group], capacity: 8)
        let s = FlowTimeouts.seconds
        func datagram(_ i: Int) -> [UInt8] {
            PacketBuilder.udpFrame(source: IPAddress(ipv4: 0xC612_0000 | UInt32(i % 200 + 2)), destination: Fixtures.vip4,
                                   sourcePort: UInt16(10000 + i), destinationPort: 80)
        }
        for i in 0..<8 { _ = run(b, datagram(1000 + i), now: 1 * s) }
        var first: [Int: Int] = [:]
        for i in 0..<40 { first[i] = nodeIndex(run(b, datagram(i), now: 2 * s).1) }
        // The eight die at 301 s (udp timeout 300 s); the later flows keep their node.
        for i in 0..<40 {
            #expect(nodeIndex(run(b, datagram(i), now: 301 * s + 1).1) == first[i], "flow \(i)")
        }
    }

    @Test func tcpSegmentOfAnUnknownFlowGetsTheConsistentDecision() throws {
        // After a restart or a failover, an established connection's segment must land
        // where the fallback, another worker or the peer would send it: Maglev, not wrr.
        let b = try Self.balancer([Self.matGroup(scheduler: .wrr, weights: [3, 2, 1])])
        let reference = try Self.balancer([Self.matGroup(scheduler: .wrr, weights: [3, 2, 1])])
        for i in 0..<100 {
            let ack = syn(i, flags: TCPFlags.ack)
            #expect(nodeIndex(run(b, ack).1) == nodeIndex(run(reference, ack).1))
        }
        #expect(b.counters[.flowTableFull] == 0)
    }

    @Test func natReplyFromTheClientSideIsDroppedAsForged() throws {
        // Clients on interface 0, NAT nodes on interface 1.
        var nat = Self.natGroup()
        nat.interface = 1
        let b = try Balancer(BalancerSpec(
            groups: [nat], interfaceMACs: [Self.lbMAC, MACAddress("02:00:00:00:00:1c")!],
            returnRoutes: [ReturnRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0,
                                       nextHopMAC: Fixtures.routerMAC)]))
        let reply = PacketBuilder.udpFrame(source: Fixtures.node4a, destination: Fixtures.client4, sourcePort: 5353,
                                           destinationPort: 40000)
        let (_, forged) = reply.mutatingFrame { b.process($0, length: $1, now: 1, ingress: 0) }
        #expect(forged == .drop)
        #expect(b.counters[.natReplyFromWrongSide] == 1 && b.counters[.natReplies] == 0)
        let (out, genuine) = reply.mutatingFrame { b.process($0, length: $1, now: 1, ingress: 1) }
        #expect(genuine == .transmit(interface: 0))
        #expect(Array(out[26..<30]) == Array(Fixtures.vip4.bytes[12...]), "source rewritten to the VIP")
        // An ICMP error quoting a client's packet to the node, from the client side: forged too.
        let quoted = PacketBuilder.ipv4(source: Fixtures.client4, destination: Fixtures.node4a, proto: 17, payload:
            PacketBuilder.udp(source: Fixtures.client4, destination: Fixtures.node4a, sourcePort: 40000, destinationPort: 5353))
        let error = PacketBuilder.icmpErrorFrame(reporter: Fixtures.node4a, destination: Fixtures.client4, quoted: quoted)
        #expect(error.mutatingFrame { b.process($0, length: $1, now: 1, ingress: 0) }.1 == .drop)
        #expect(b.counters[.natReplyFromWrongSide] == 2)
    }

    @Test func aFrameLargerThanTheEgressMTUIsDroppedAndCounted() throws {
        // NAT nodes behind an interface with MTU 1400; clients on one with 1500.
        var nat = Self.natGroup()
        nat.interface = 1
        var spec = BalancerSpec(groups: [nat], interfaceMACs: [Self.lbMAC, MACAddress("02:00:00:00:00:1c")!],
                                returnRoutes: [ReturnRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 24,
                                                           interface: 0, nextHopMAC: Fixtures.routerMAC)])
        spec.interfaceMTUs = [1500, 1400]
        let b = try Balancer(spec)
        func datagram(_ payload: Int, port: UInt16) -> [UInt8] {
            PacketBuilder.udpFrame(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: port,
                                   destinationPort: 53, payload: [UInt8](repeating: 1, count: payload))
        }
        // IP packet = 20 + 8 + payload: 1400 fits exactly, 1401 does not.
        #expect(datagram(1372, port: 1).mutatingFrame { b.process($0, length: $1, now: 1) }.1 == .transmit(interface: 1))
        #expect(datagram(1373, port: 2).mutatingFrame { b.process($0, length: $1, now: 1) }.1 == .drop)
        #expect(b.counters[.exceedsEgressMTU] == 1)
        // Replies toward the client side (MTU 1500) are held to that interface's MTU.
        let big = PacketBuilder.udpFrame(source: Fixtures.node4a, destination: Fixtures.client4, sourcePort: 5353,
                                         destinationPort: 40000, payload: [UInt8](repeating: 1, count: 1473))
        #expect(big.mutatingFrame { b.process($0, length: $1, now: 1, ingress: 1) }.1 == .drop)
        #expect(b.counters[.exceedsEgressMTU] == 2)
    }

    // MARK: - Fragments

    static func udpGroup(method: ForwardingMethod, vip: IPAddress = Fixtures.vip4, nodes: [IPAddress], port: UInt16 = 0,
                         scheduler: SchedulerKind = .wrr) -> GroupSpec {
        GroupSpec(name: "big", vip: vip, proto: IPProtocol.udp, ports: [53], method: method, scheduler: scheduler,
                  nodes: nodes.enumerated().map { NodeSpec(address: $0.element, port: port, weight: 3 - $0.offset,
                                                           mac: macs[$0.offset]) })
    }

    @Test func everyFragmentOfADatagramReachesOneNodeInAnyOrder() throws {
        let b = try Self.balancer([Self.udpGroup(method: .mat, nodes: [Fixtures.node4a, Fixtures.node4b, Fixtures.node4c])])
        for i in 0..<60 {
            let client = IPAddress(ipv4: 0xC612_0000 | UInt32(i + 2))
            let segment = PacketBuilder.udp(source: client, destination: Fixtures.vip4, sourcePort: UInt16(20000 + i),
                                            destinationPort: 53, payload: [UInt8](repeating: UInt8(i), count: 3000))
            var pieces = PacketBuilder.ipv4Fragments(source: client, destination: Fixtures.vip4, proto: 17, segment: segment,
                                                     size: 1480, identification: UInt16(i))
            if i % 2 == 1 { pieces.reverse() }  // the first fragment last
            let nodes = Set(pieces.map { nodeIndex(run(b, $0).1) })
            #expect(nodes.count == 1 && nodes.first! != nil, "datagram \(i) went to \(nodes)")
            // A datagram whose first fragment came first follows its flow.
            if i % 2 == 0 {
                let small = PacketBuilder.udpFrame(source: client, destination: Fixtures.vip4, sourcePort: UInt16(20000 + i),
                                                   destinationPort: 53)
                #expect(nodeIndex(run(b, small).1) == nodes.first!, "datagram \(i) and its flow")
            }
        }
        #expect(b.counters[.fragments] == 180)
        #expect(b.counters[.dropped] == 0)
    }

    @Test(arguments: [false, true])
    func natRewritesEveryFragmentBothWays(ipv6: Bool) throws {
        let (client, vip, node) = ipv6 ? (Fixtures.client6, Fixtures.vip6, Fixtures.node6a)
                                       : (Fixtures.client4, Fixtures.vip4, Fixtures.node4a)
        var group = Self.udpGroup(method: .nat, vip: vip, nodes: [node], port: 5353)
        group.interface = 1
        let b = try Balancer(BalancerSpec(
            groups: [group], interfaceMACs: [Self.lbMAC, MACAddress("02:00:00:00:00:1c")!],
            returnRoutes: [ReturnRoute(prefix: ipv6 ? IPAddress("2001:2::")! : IPAddress("198.18.0.0")!,
                                       prefixLength: ipv6 ? 64 : 24, interface: 0, nextHopMAC: Fixtures.routerMAC)]))
        func fragments(_ from: IPAddress, _ to: IPAddress, _ sport: UInt16, _ dport: UInt16) -> [[UInt8]] {
            let segment = PacketBuilder.udp(source: from, destination: to, sourcePort: sport, destinationPort: dport,
                                            payload: (0..<3000).map { UInt8($0 & 0xFF) })
            return ipv6 ? PacketBuilder.ipv6Fragments(source: from, destination: to, nextHeader: 17, segment: segment, size: 1448)
                        : PacketBuilder.ipv4Fragments(source: from, destination: to, proto: 17, segment: segment, size: 1480)
        }
        // Toward the node: every fragment addressed to it, the port and checksum in the first.
        let out = fragments(client, vip, 40000, 53).map { f in f.mutatingFrame { b.process($0, length: $1, now: 1, ingress: 0) } }
        #expect(out.allSatisfy { $0.1 == .transmit(interface: 1) })
        let toNode = try #require(PacketBuilder.reassemble(out.map(\.0)))
        let whole = PacketBuilder.udpFrame(source: client, destination: node, sourcePort: 40000, destinationPort: 5353,
                                           payload: (0..<3000).map { UInt8($0 & 0xFF) })
        #expect(Array(toNode[14...]) == Array(whole[14...]), "the reassembled datagram is the node's")
        // The reply's fragments, from the node side, come back as the VIP's.
        let back = fragments(node, client, 5353, 40000).reversed().map { f in
            f.mutatingFrame { b.process($0, length: $1, now: 1, ingress: 1) }
        }
        #expect(back.allSatisfy { $0.1 == .transmit(interface: 0) })
        let toClient = try #require(PacketBuilder.reassemble(back.map(\.0)))
        let reply = PacketBuilder.udpFrame(source: vip, destination: client, sourcePort: 53, destinationPort: 40000,
                                           payload: (0..<3000).map { UInt8($0 & 0xFF) })
        #expect(Array(toClient[14...]) == Array(reply[14...]), "the reassembled reply is the VIP's")
        #expect(ChecksumCheck.problems(in: toClient).isEmpty && ChecksumCheck.problems(in: toNode).isEmpty)
        #expect(b.counters[.fragments] == UInt64(out.count + back.count))
    }

    @Test func aLaterFragmentThatCannotBeToldApartBeforeItsFirstIsDroppedAndCounted() throws {
        // Two UDP groups on one VIP: a later fragment, without ports, could be either's.
        var other = Self.udpGroup(method: .mat, nodes: [Fixtures.node4c])
        other.name = "other"
        other.ports = [54]
        other.nodes[0].mac = Self.macs[2]
        let b = try Self.balancer([Self.udpGroup(method: .mat, nodes: [Fixtures.node4a, Fixtures.node4b]), other])
        let segment = PacketBuilder.udp(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: 1, destinationPort: 54,
                                        payload: [UInt8](repeating: 1, count: 2000))
        let pieces = PacketBuilder.ipv4Fragments(source: Fixtures.client4, destination: Fixtures.vip4, proto: 17,
                                                 segment: segment, size: 1480)
        #expect(run(b, pieces[1]).0 == .drop)
        #expect(b.counters[.fragmentBeforeFirst] == 1)
        // In order, the first fragment names the group, and the later one follows it.
        #expect(nodeIndex(run(b, pieces[0]).1) == 2 && nodeIndex(run(b, pieces[1]).1) == 2)
    }

    @Test func aFragmentFloodKeepsTheTableItsSize() throws {
        let b = try Self.balancer([Self.udpGroup(method: .mat, nodes: [Fixtures.node4a, Fixtures.node4b])])
        for i in 0..<50_000 {
            let later = PacketBuilder.ethernet(etherType: 0x0800, payload: PacketBuilder.ipv4(
                source: IPAddress(ipv4: 0xC612_0000 | UInt32(i & 0xFFFF)), destination: Fixtures.vip4, proto: 17,
                payload: [UInt8](repeating: 0, count: 64), identification: UInt16(truncatingIfNeeded: i), flagsAndFragment: 0x0100))
            _ = run(b, later)
        }
        #expect(b.fragments.count(now: 1_000_000_000) <= b.fragments.capacity)
        #expect(b.counters[.fragments] == 50_000)
    }

    // MARK: - ARP and NS, answered by the worker

    @Test func aWorkerAnswersARPAndNSForItsVIPs() throws {
        let v6 = GroupSpec(name: "web6", vip: Fixtures.vip6, proto: IPProtocol.tcp, ports: [443], method: .mat,
                           scheduler: .rr, nodes: [NodeSpec(address: Fixtures.node6a, mac: Fixtures.nodeMACa)])
        let b = try Self.balancer([Self.matGroup(), v6])
        func arpRequest(for target: IPAddress) -> [UInt8] {
            PacketBuilder.ethernet(destination: .broadcast, etherType: 0x0806, payload:
                [0, 1, 8, 0, 6, 4, 0, 1] + [2, 0, 0, 0, 0, 0xc1] + Array(Fixtures.client4.bytes[12...])
                + [0, 0, 0, 0, 0, 0] + Array(target.bytes[12...]))
        }
        var request = ARPPacket()
        request.senderMAC = PacketBuilder.clientMAC
        request.senderIP = Fixtures.client4
        request.targetIP = Fixtures.vip4
        var expected = [UInt8](repeating: 0, count: 64)
        let n = expected.withUnsafeMutableBytes { FrameBuilder.arpReply($0.baseAddress!, capacity: 64, to: request, mac: Self.lbMAC) }
        let (out, verdict) = arpRequest(for: Fixtures.vip4).mutatingFrame { b.process($0, length: $1, now: 1, ingress: 0) }
        #expect(verdict == .answer(AnswerFrame(interface: 0, length: n)))
        #expect(Array(out.prefix(n)) == Array(expected.prefix(n)))
        #expect(arpRequest(for: Fixtures.router4).mutatingFrame { b.process($0, length: $1, now: 1) }.1 == .pass)
        #expect(b.counters[.arpReplies] == 1)

        let group = IPAddress(high: 0xFF02_0000_0000_0000, low: 0x0000_0001_FF00_0000 | (Fixtures.vip6.low & 0xFF_FFFF))
        let solicitation = PacketBuilder.ethernet(destination: MACAddress.ipv6Multicast(group), etherType: 0x86DD, payload:
            PacketBuilder.ipv6(source: Fixtures.client6, destination: group, nextHeader: 58, payload:
                PacketBuilder.icmpv6(source: Fixtures.client6, destination: group, type: 135, code: 0,
                                     body: Fixtures.vip6.bytes + [1, 1, 2, 0, 0, 0, 0, 0xc1]), hopLimit: 255))
        var advertisement = [UInt8](repeating: 0, count: 128)
        let m = advertisement.withUnsafeMutableBytes {
            FrameBuilder.solicitedNeighborAdvertisement($0.baseAddress!, capacity: 128, mac: Self.lbMAC, target: Fixtures.vip6,
                                                        solicitor: Fixtures.client6, solicitorMAC: PacketBuilder.clientMAC)
        }
        let (na, naVerdict) = solicitation.mutatingFrame { b.process($0, length: $1, now: 1, ingress: 0) }
        #expect(naVerdict == .answer(AnswerFrame(interface: 0, length: m)))
        #expect(Array(na.prefix(m)) == Array(advertisement.prefix(m)))
        #expect(ChecksumCheck.problems(in: Array(na.prefix(m))).isEmpty)
        #expect(b.counters[.neighborAdvertisements] == 1)
    }

    // MARK: - Where NAT replies go

    @Test func natRepliesTakeTheirNextHopFromTheRoutingTable() throws {
        let b = try Self.balancer([Self.natGroup()])
        let gateway = MACAddress("02:00:00:00:00:fe")!
        let clientMAC = MACAddress("02:00:00:00:00:c2")!
        // Kernel routes: the clients' segment on-link, a default via a router; an IPv6
        // default route, which must not catch IPv4 destinations.
        b.setRouting(RoutingTable(routes: [
            ClientRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0),
            ClientRoute(prefix: IPAddress(ipv4: 0), prefixLength: 0, interface: 0, gateway: IPAddress("198.18.0.254")!,
                        gatewayMAC: gateway),
            ClientRoute(prefix: .zero, prefixLength: 0, interface: 0, gateway: IPAddress("2001:2::fe")!),
        ], neighbors: [NeighborKey(interface: 0, address: IPAddress("198.18.0.3")!): clientMAC], version: 2,
           interfaceMACs: [Self.lbMAC]))
        func reply(to client: IPAddress) -> ([UInt8], Verdict) {
            PacketBuilder.udpFrame(source: Fixtures.node4a, destination: client, sourcePort: 5353, destinationPort: 40000)
                .mutatingFrame { b.process($0, length: $1, now: 1, ingress: 0) }
        }
        func destinationMAC(_ frame: [UInt8]) -> MACAddress { MACAddress(value: frame.prefix(6).reduce(0) { $0 << 8 | UInt64($1) }) }
        // On-link, in the kernel's neighbour table.
        let (known, v1) = reply(to: IPAddress("198.18.0.3")!)
        #expect(v1 == .transmit(interface: 0) && destinationMAC(known) == clientMAC)
        // On-link, unknown: counted, handed to the control plane to resolve.
        #expect(reply(to: IPAddress("198.18.0.9")!).1 == .drop)
        #expect(b.counters[.nextHopUnresolved] == 1)
        var unrouted: [UnroutedReply] = []
        b.drainUnrouted { unrouted.append($0) }
        #expect(unrouted == [UnroutedReply(destination: IPAddress("198.18.0.9")!, nextHop: IPAddress("198.18.0.9")!,
                                           interface: 0, reason: .unresolved)])
        // Learnt from its ARP request for the VIP: the first reply needs no resolution.
        let arp = PacketBuilder.ethernet(destination: .broadcast, source: MACAddress("02:00:00:00:00:c9")!, etherType: 0x0806,
                                         payload: [0, 1, 8, 0, 6, 4, 0, 1] + [2, 0, 0, 0, 0, 0xc9] + [198, 18, 0, 9]
                                             + [0, 0, 0, 0, 0, 0] + Array(Fixtures.vip4.bytes[12...]))
        #expect(arp.mutatingFrame { b.process($0, length: $1, now: 1, ingress: 0, capacity: 64) }.1 != .pass)
        let (learnt, v2) = reply(to: IPAddress("198.18.0.9")!)
        #expect(v2 == .transmit(interface: 0) && destinationMAC(learnt) == MACAddress("02:00:00:00:00:c9")!)
        // Off-link: the default route's gateway.
        let (far, v3) = reply(to: IPAddress("198.18.4.2")!)
        #expect(v3 == .transmit(interface: 0) && destinationMAC(far) == gateway)
        #expect(b.counters[.noRouteToClient] == 0)
        // An override comes first, whatever its prefix length.
        b.setRouting(RoutingTable(routes: [
            ClientRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0),
            ClientRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 16, interface: 0, gateway: IPAddress("198.18.0.254")!,
                        gatewayMAC: gateway, isOverride: true),
        ], neighbors: [NeighborKey(interface: 0, address: IPAddress("198.18.0.3")!): clientMAC], version: 3,
           interfaceMACs: [Self.lbMAC]))
        #expect(destinationMAC(reply(to: IPAddress("198.18.0.3")!).0) == gateway)
        // No route at all.
        #expect(reply(to: IPAddress("198.19.7.7")!).1 == .drop)
        #expect(b.counters[.noRouteToClient] == 1)
    }

    /// The worker writes a verdict per packet: it stays a word and a tag.
    @Test func aVerdictIsAWordAndATag() {
        #expect(MemoryLayout<Verdict>.size <= 9)
    }

    @Test func commandsForAnotherLayoutAreRefused() throws {
        let b = try Self.balancer([Self.matGroup()])
        // Indices a command computed for a larger layout could carry.
        b.setNodeUp(group: 0, node: 7, false)
        b.setNodeMAC(group: 3, node: 0, nil)
        b.setSorryMAC(group: 9, nil)
        b.setWeights(group: 0, [1, 2, 3, 4])
        b.setWeights(group: 5, [1])
        #expect(!b.isNode(group: 0, node: 3) && b.isNode(group: 0, node: 2))
        #expect((0..<3).allSatisfy { b.scheduler(group: 0).isEligible($0) })
        #expect(b.scheduler(group: 0).weight(of: 0) == 3)
    }

    @Test func malformedFramesAreCountedByReason() throws {
        let b = try Self.balancer([Self.matGroup()])
        var bad = syn(1)
        bad[14] = 0x43  // IHL 3
        #expect(run(b, bad).0 == .drop)
        #expect(run(b, Array(syn(1).prefix(20))).0 == .drop)
        #expect(b.counters[.badIPv4HeaderLength] == 1)
        #expect(b.counters[.truncatedIPv4] == 1)
        #expect(b.counters[.dropped] == 2)
    }

    @Test func icmpErrorFollowsItsFlow() throws {
        let b = try Self.balancer([Self.matGroup(weights: [1, 1, 1])])
        let client = IPAddress(ipv4: 0xC612_0000 | 7)
        let first = PacketBuilder.tcpFrame(source: client, destination: Fixtures.vip4, sourcePort: 10005,
                                           destinationPort: 80, flags: TCPFlags.syn)
        let node = nodeIndex(run(b, first).1)
        let quoted = PacketBuilder.ipv4(source: Fixtures.vip4, destination: client, proto: 6, payload:
            PacketBuilder.tcp(source: Fixtures.vip4, destination: client, sourcePort: 80, destinationPort: 10005))
        let error = PacketBuilder.icmpErrorFrame(reporter: Fixtures.router4, destination: Fixtures.vip4, quoted: quoted)
        #expect(nodeIndex(run(b, error).1) == node)
        let stray = PacketBuilder.icmpErrorFrame(reporter: Fixtures.router4, destination: Fixtures.vip4, quoted:
            PacketBuilder.ipv4(source: Fixtures.vip4, destination: client, proto: 6, payload:
                PacketBuilder.tcp(source: Fixtures.vip4, destination: client, sourcePort: 80, destinationPort: 1)))
        #expect(run(b, stray).0 == .drop)
        #expect(b.counters[.icmpErrorWithoutFlow] == 1)
    }

    @Test func specErrorsAreExplained() {
        var dup = Self.matGroup()
        dup.name = "web2"
        #expect(throws: BalancerSpecError.duplicateService(
            group: "web2", service: ServiceKey(address: Fixtures.vip4, proto: IPProtocol.tcp, port: 80), otherGroup: "web")) {
            try Self.balancer([Self.matGroup(), dup])
        }
        var nat2 = Self.natGroup()
        nat2.name = "dns2"
        nat2.vip = IPAddress("198.18.1.11")!
        #expect(throws: BalancerSpecError.ambiguousNATReply(
            group: "dns2", node: ServiceKey(address: Fixtures.node4a, proto: IPProtocol.udp, port: 5353), otherGroup: "dns")) {
            try Self.balancer([Self.natGroup(), nat2])
        }
    }
}
