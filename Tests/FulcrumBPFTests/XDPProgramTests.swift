import CFulcrumBPF
import Foundation
import FulcrumBPF
import FulcrumCore
import FulcrumTestSupport
import Testing

/// Katran-style: a table of {description, input frame, map contents, expected verdict,
/// expected output bytes, counter that must move}, run through BPF_PROG_TEST_RUN.
struct XDPFixture: CustomStringConvertible, Sendable {
    var description: String
    var frame: [UInt8]
    var active = true
    var verdict: UInt32
    /// nil: the frame must come out unchanged.
    var output: [UInt8]?
    var counter: XDPCounter
}

@Suite(.serialized) struct XDPProgramTests {
    static let lbMAC = MACAddress("02:00:00:00:00:1b")!
    static let natNode = Fixtures.node4a
    static let natVIP = IPAddress("198.18.1.20")!

    /// Map contents for every fixture: a MAT TCP service on 80/443 and a NAT UDP service
    /// on 53 (node port 5353) for IPv4; a TCP service on 443 for IPv6.
    static func program() throws -> (BPFObject, FulcrumMaps, Int32) {
        let object = try BPFObject(path: BPFObject.locate(sourceRoot: Privileged.repositoryRoot()))
        let maps = try FulcrumMaps(object)
        for port: UInt16 in [80, 443] {
            try maps.setService(ServiceKey(address: Fixtures.vip4, proto: IPProtocol.tcp, port: port), group: 0, nat: false)
        }
        try maps.setService(ServiceKey(address: natVIP, proto: IPProtocol.udp, port: 53), group: 1, nat: true)
        try maps.setReply(ServiceKey(address: natNode, proto: IPProtocol.udp, port: 5353), group: 1)
        try maps.setReply(ServiceKey(address: natNode, proto: IPProtocol.udp, port: 0), group: 1)  // its fragments
        try maps.setService(ServiceKey(address: Fixtures.vip6, proto: IPProtocol.tcp, port: 443), group: 2, nat: false)
        try maps.setVIP(Fixtures.vip4)
        try maps.setVIP(natVIP)
        try maps.setVIP(Fixtures.vip6)
        // BPF_PROG_TEST_RUN delivers frames as if they arrived on the loopback device.
        try maps.setInterface(ifindex: try InterfaceInfo.index(of: "lo"), slot: 0, mac: lbMAC)
        return (object, maps, try object.programFD(FULCRUM_PROG_MAIN))
    }

    static func arpRequest(for target: IPAddress) -> [UInt8] {
        PacketBuilder.ethernet(destination: .broadcast, etherType: 0x0806, payload:
            [0, 1, 8, 0, 6, 4, 0, 1] + [2, 0, 0, 0, 0, 0xc1] + Array(Fixtures.client4.bytes[12...])
            + [0, 0, 0, 0, 0, 0] + Array(target.bytes[12...]))
    }

    static func solicitation(for target: IPAddress) -> [UInt8] {
        let group = IPAddress(high: 0xFF02_0000_0000_0000, low: 0x0000_0001_FF00_0000 | (target.low & 0xFF_FFFF))
        return PacketBuilder.ethernet(destination: MACAddress.ipv6Multicast(group), etherType: 0x86DD, payload:
            PacketBuilder.ipv6(source: Fixtures.client6, destination: group, nextHeader: 58, payload:
                PacketBuilder.icmpv6(source: Fixtures.client6, destination: group, type: 135, code: 0,
                                     body: target.bytes + [1, 1, 2, 0, 0, 0, 0, 0xc1]), hopLimit: 255))
    }

    static func expectedARPReply() -> [UInt8] {
        var request = ARPPacket()
        request.senderMAC = PacketBuilder.clientMAC
        request.senderIP = Fixtures.client4
        request.targetIP = Fixtures.vip4
        var out = [UInt8](repeating: 0, count: 64)
        let n = out.withUnsafeMutableBytes { FrameBuilder.arpReply($0.baseAddress!, capacity: 64, to: request, mac: lbMAC) }
        return Array(out.prefix(n))
    }

    static func expectedAdvertisement() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 128)
        let n = out.withUnsafeMutableBytes {
            FrameBuilder.solicitedNeighborAdvertisement($0.baseAddress!, capacity: 128, mac: lbMAC, target: Fixtures.vip6,
                                                        solicitor: Fixtures.client6, solicitorMAC: PacketBuilder.clientMAC)
        }
        return Array(out.prefix(n))
    }

    static var fixtures: [XDPFixture] {
        let c4 = Fixtures.client4, c6 = Fixtures.client6, v4 = Fixtures.vip4, v6 = Fixtures.vip6
        let pass = ProgramTestRun.pass
        var ihl3 = PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 1, destinationPort: 80)
        ihl3[14] = 0x43
        let fragment = PacketBuilder.ethernet(etherType: 0x0800, payload: PacketBuilder.ipv4(
            source: c4, destination: v4, proto: 6,
            payload: PacketBuilder.tcp(source: c4, destination: v4, sourcePort: 1, destinationPort: 80),
            flagsAndFragment: 0x2000))
        let quoted = PacketBuilder.ipv4(source: v4, destination: c4, proto: 6, payload:
            PacketBuilder.tcp(source: v4, destination: c4, sourcePort: 80, destinationPort: 40000))
        // Without an AF_XDP socket on the queue, steered frames are passed and counted
        // as `noSocket`: that counter is how these fixtures see "steered to a worker".
        return [
            XDPFixture(description: "VIP TCP/80 over IPv4 is steered",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 80),
                       verdict: pass, counter: .noSocket),
            XDPFixture(description: "VIP TCP/443 (second port of the group) is steered",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 443),
                       verdict: pass, counter: .noSocket),
            XDPFixture(description: "NAT VIP UDP/53 over IPv4 is steered",
                       frame: PacketBuilder.udpFrame(source: c4, destination: natVIP, sourcePort: 40000, destinationPort: 53),
                       verdict: pass, counter: .noSocket),
            XDPFixture(description: "VIP TCP/443 over IPv6 is steered",
                       frame: PacketBuilder.tcpFrame(source: c6, destination: v6, sourcePort: 40000, destinationPort: 443),
                       verdict: pass, counter: .noSocket),
            XDPFixture(description: "VLAN-tagged VIP traffic goes to the kernel, never to a node still tagged",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 80, vlan: 5),
                       verdict: pass, counter: .vlanTagged),
            XDPFixture(description: "VIP traffic addressed to another host's MAC passes",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 80,
                                                     ethernetDestination: MACAddress("02:00:00:00:00:99")!),
                       verdict: pass, counter: .otherDestinationMAC),
            XDPFixture(description: "VIP traffic to the broadcast MAC passes",
                       frame: PacketBuilder.udpFrame(source: c4, destination: natVIP, sourcePort: 40000, destinationPort: 53,
                                                     ethernetDestination: .broadcast),
                       verdict: pass, counter: .otherDestinationMAC),
            XDPFixture(description: "a NAT reply to a multicast MAC passes",
                       frame: PacketBuilder.udpFrame(source: natNode, destination: c4, sourcePort: 5353, destinationPort: 40000,
                                                     ethernetDestination: MACAddress("01:00:5e:00:00:01")!),
                       verdict: pass, counter: .otherDestinationMAC),
            XDPFixture(description: "a frame longer than a worker's UMEM frame is dropped, counted",
                       frame: PacketBuilder.udpFrame(source: c4, destination: natVIP, sourcePort: 40000, destinationPort: 53,
                                                     payload: [UInt8](repeating: 7, count: 1800)),
                       verdict: ProgramTestRun.drop, counter: .droppedOversize),
            XDPFixture(description: "NAT node reply is steered",
                       frame: PacketBuilder.udpFrame(source: natNode, destination: c4, sourcePort: 5353, destinationPort: 40000),
                       verdict: pass, counter: .natReplies),
            XDPFixture(description: "ICMP error about a VIP's packet is steered",
                       frame: PacketBuilder.icmpErrorFrame(reporter: Fixtures.router4, destination: v4, quoted: quoted),
                       verdict: pass, counter: .icmpErrors),
            XDPFixture(description: "VIP on a port that is not a service passes",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 22),
                       verdict: pass, counter: .passed),
            XDPFixture(description: "UDP to the TCP VIP passes",
                       frame: PacketBuilder.udpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 80),
                       verdict: pass, counter: .passed),
            XDPFixture(description: "traffic to another host passes",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: Fixtures.router4, sourcePort: 40000, destinationPort: 80),
                       verdict: pass, counter: .passed),
            XDPFixture(description: "VIP traffic on a standby LB passes",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 80),
                       active: false, verdict: pass, counter: .standbyPassed),
            XDPFixture(description: "ARP request for a VIP is answered while active",
                       frame: arpRequest(for: v4), verdict: ProgramTestRun.tx, output: expectedARPReply(), counter: .arpReplies),
            XDPFixture(description: "ARP request for a VIP is not answered on standby",
                       frame: arpRequest(for: v4), active: false, verdict: pass, counter: .passed),
            XDPFixture(description: "ARP request for another address passes",
                       frame: arpRequest(for: Fixtures.router4), verdict: pass, counter: .passed),
            XDPFixture(description: "neighbour solicitation for an IPv6 VIP is answered while active",
                       frame: solicitation(for: v6), verdict: ProgramTestRun.tx, output: expectedAdvertisement(),
                       counter: .neighborAdvertisements),
            XDPFixture(description: "neighbour solicitation for a VIP is not answered on standby",
                       frame: solicitation(for: v6), active: false, verdict: pass, counter: .passed),
            XDPFixture(description: "truncated IPv4 header is dropped",
                       frame: Array(PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 1, destinationPort: 80).prefix(24)),
                       verdict: ProgramTestRun.drop, counter: .droppedTruncatedIP),
            XDPFixture(description: "IPv4 IHL 3 is dropped", frame: ihl3, verdict: ProgramTestRun.drop, counter: .droppedBadIPHeader),
            XDPFixture(description: "truncated TCP ports are dropped",
                       frame: Array(PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 1, destinationPort: 80).prefix(36)),
                       verdict: ProgramTestRun.drop, counter: .droppedTruncatedPorts),
            XDPFixture(description: "a TCP fragment to a VIP goes to a worker", frame: fragment, verdict: pass,
                       counter: .fragmentsToWorker),
            XDPFixture(description: "a later fragment of a NAT node's reply goes to a worker",
                       frame: PacketBuilder.ethernet(etherType: 0x0800, payload: PacketBuilder.ipv4(
                           source: natNode, destination: c4, proto: 17, payload: [UInt8](repeating: 1, count: 64),
                           flagsAndFragment: 0x00B9)),
                       verdict: pass, counter: .fragmentsToWorker),
            XDPFixture(description: "a fragment for another address goes to the kernel",
                       frame: PacketBuilder.ethernet(etherType: 0x0800, payload: PacketBuilder.ipv4(
                           source: c4, destination: Fixtures.router4, proto: 17, payload: [UInt8](repeating: 1, count: 64),
                           flagsAndFragment: 0x2000)),
                       verdict: pass, counter: .fragmentsPassed),
            XDPFixture(description: "an IPv6 fragment of a VIP's TCP goes to a worker",
                       frame: PacketBuilder.ipv6Fragments(
                           source: c6, destination: v6, nextHeader: 6,
                           segment: PacketBuilder.tcp(source: c6, destination: v6, sourcePort: 1, destinationPort: 443,
                                                      payload: [UInt8](repeating: 1, count: 100)), size: 64)[1],
                       verdict: pass, counter: .fragmentsToWorker),
            XDPFixture(description: "an IPv6 atomic fragment is a whole packet, steered by its ports",
                       frame: PacketBuilder.ethernet(etherType: 0x86DD, payload: PacketBuilder.ipv6(
                           source: c6, destination: v6, nextHeader: 6,
                           payload: PacketBuilder.tcp(source: c6, destination: v6, sourcePort: 1, destinationPort: 443),
                           extensions: [(44, [0, 0, 0, 0, 0, 0, 1])])),
                       verdict: pass, counter: .noSocket),
            XDPFixture(description: "truncated ARP is dropped", frame: Array(arpRequest(for: v4).prefix(30)),
                       verdict: ProgramTestRun.drop, counter: .droppedMalformedARP),
            // (A frame shorter than an Ethernet header cannot be fed to BPF_PROG_TEST_RUN,
            // which refuses it, as drivers never deliver one; the program counts it as
            // dropped_truncated_ethernet all the same.)
            XDPFixture(description: "a VLAN tag cut short is dropped",
                       frame: Array(PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 1, destinationPort: 80,
                                                           vlan: 5).prefix(16)),
                       verdict: ProgramTestRun.drop, counter: .droppedTruncatedVLAN),
            XDPFixture(description: "more IPv6 extension headers than are walked is dropped",
                       frame: PacketBuilder.ethernet(etherType: 0x86DD, payload: PacketBuilder.ipv6(
                           source: c6, destination: v6, nextHeader: 6,
                           payload: PacketBuilder.tcp(source: c6, destination: v6, sourcePort: 1, destinationPort: 443),
                           extensions: (0..<5).map { _ in (60, [0, 1, 4, 0, 0, 0, 0]) })),
                       verdict: ProgramTestRun.drop, counter: .droppedIPv6Extensions),
            XDPFixture(description: "an ICMP error whose quoted header is cut short is dropped",
                       frame: PacketBuilder.icmpErrorFrame(reporter: Fixtures.router4, destination: v4,
                                                           quoted: Array(quoted.prefix(12))),
                       verdict: ProgramTestRun.drop, counter: .droppedMalformedICMP),
        ]
    }

    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"), arguments: fixtures)
    func fixture(_ f: XDPFixture) throws {
        let (object, maps, program) = try Self.program()
        defer { withExtendedLifetime(object) {} }  // the program fd belongs to the object
        try maps.setActive(f.active)
        let before = maps.counter(f.counter)
        let result = try ProgramTestRun.run(programFD: program, frame: f.frame)
        #expect(result.verdict == f.verdict)
        let expected = f.output ?? f.frame
        #expect(result.output == expected, "got\n\(result.output.hexDump)\nexpected\n\(expected.hexDump)")
        #expect(maps.counter(f.counter) == before + 1, "counter \(f.counter.label)")
        #expect(maps.counter(.received) >= 1)
    }

    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"))
    func nothingIsSteeredOrAnsweredOnAForeignInterface() throws {
        let (object, maps, program) = try Self.program()
        defer { withExtendedLifetime(object) {} }
        try maps.setActive(true)
        try maps.removeInterface(ifindex: try InterfaceInfo.index(of: "lo"))
        for frame in [Self.arpRequest(for: Fixtures.vip4),
                      PacketBuilder.tcpFrame(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: 1, destinationPort: 80)] {
            let result = try ProgramTestRun.run(programFD: program, frame: frame)
            #expect(result.verdict == ProgramTestRun.pass && result.output == frame)
        }
        #expect(maps.counter(.passed) == 2 && maps.counter(.noSocket) == 0 && maps.counter(.arpReplies) == 0)
    }

    /// Overload: openings over the budget are dropped in XDP; segments of known flows
    /// and other protocols never wait behind them.
    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"))
    func newConnectionsOverTheBudgetAreDroppedAndKnownFlowsAreNot() throws {
        let (object, maps, program) = try Self.program()
        defer { withExtendedLifetime(object) {} }
        try maps.setActive(true)
        // One a second, a burst of three: within this test nothing refills.
        try maps.setAdmission(perSecond: 1, burst: 3)
        // The buckets are per CPU: every frame is run from one pinned thread.
        let outcome = Self.onOneCPU { Self.budgetCase(program: program) }
        let pass = ProgramTestRun.pass, drop = ProgramTestRun.drop
        // (Without an AF_XDP socket, a steered frame is passed and counted no_socket.)
        #expect(outcome.openings == [pass, pass, pass, drop, drop, drop])
        #expect(outcome.others == [pass, pass, pass, pass], "established segments, a SYN-ACK and UDP")
        #expect(maps.counter(.droppedOverBudget) == 3 && maps.counter(.noSocket) == 7)
        // No limit: every opening passes.
        try maps.setAdmission(perSecond: 0, burst: 1)
        #expect(try ProgramTestRun.run(programFD: program, frame: Self.opening(3000)).verdict == pass)
        #expect(maps.counter(.droppedOverBudget) == 3)
    }

    static func opening(_ port: UInt16, flags: UInt8 = TCPFlags.syn) -> [UInt8] {
        PacketBuilder.tcpFrame(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: port, destinationPort: 80,
                               flags: flags)
    }

    static func budgetCase(program: Int32) -> (openings: [UInt32], others: [UInt32]) {
        func verdict(_ frame: [UInt8]) -> UInt32 { (try? ProgramTestRun.run(programFD: program, frame: frame).verdict) ?? 99 }
        let openings = (UInt16(1000)..<1006).map { verdict(opening($0)) }
        let others = [opening(2000, flags: TCPFlags.ack), opening(2001, flags: TCPFlags.ack | 0x08 /* PSH */),
                      opening(2002, flags: TCPFlags.syn | TCPFlags.ack),
                      PacketBuilder.udpFrame(source: Fixtures.client4, destination: natVIP, sourcePort: 1, destinationPort: 53)]
            .map(verdict)
        return (openings, others)
    }

    /// Runs `body` on a thread of its own pinned to one CPU, and waits for its result.
    static func onOneCPU<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: T?
        let thread = Thread {
            _ = fulcrum_pin_current_thread(0)
            result = body()
            done.signal()
        }
        thread.start()
        done.wait()
        return result!
    }

    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"))
    func mapsAreReplacedWithoutLosingWhatStays() throws {
        let (_, maps, _) = try Self.program()
        let keep = ServiceKey(address: Fixtures.vip4, proto: IPProtocol.tcp, port: 80)
        try maps.synchronize(services: [keep: (0, false)], replies: [:], vips: [Fixtures.vip4])
        #expect(maps.services.keys(as: fulcrum_service_key.self).count == 1)
        #expect(maps.replies.keys(as: fulcrum_service_key.self).isEmpty)
        #expect(maps.vips.keys(as: fulcrum_addr.self).count == 1)
    }

    @Test func privilegesAreThereWhenRequired() {
        if Privileged.required {
            #expect(Privileged.available, "FULCRUM_REQUIRE_PRIVILEGED=1 but: \(Privileged.reason ?? "")")
        }
        #expect(XDPCounter.allCases.count == Int(FULCRUM_CNT_MAX.rawValue))
    }

    @Test func theParserWalksAsManyExtensionHeadersAsTheXDPProgram() {
        #expect(PacketParser.maxExtensionHeaders == Int(FULCRUM_IPV6_MAX_EXTENSION_HEADERS))
    }

    /// The names come from fulcrum_abi.h: each counter has its own, every drop is
    /// counted under a reason, and the program has no catch-all "malformed".
    @Test func counterNamesComeFromTheABIHeader() {
        let labels = XDPCounter.allCases.map(\.label)
        #expect(Set(labels).count == labels.count, "\(labels)")
        #expect(!labels.contains("unknown") && !labels.contains("malformed"))
        #expect(XDPCounter.received.label == "received" && XDPCounter.droppedOversize.label == "dropped_oversize")
        #expect(XDPCounter.allCases.filter(\.isDrop).count == 10)
    }
}
