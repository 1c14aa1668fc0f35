import CFulcrumBPF
import Foundation
import FulcrumBPF
import FulcrumCore
import FulcrumSystem
import FulcrumTestSupport
import Testing

/// The steering table (FulcrumTestSupport's `SteeringFixture`, which the Swift balancer's
/// tests run too) through BPF_PROG_TEST_RUN: verdict, output bytes, the counter that moves.
@Suite(.serialized) struct XDPProgramTests {
    static let lbMAC = SteeringFixture.lbMAC
    static let natNode = SteeringFixture.natNode
    static let natVIP = SteeringFixture.natVIP

    /// The maps as the daemon fills them for the fixtures' groups (group i → slot i).
    static func program() throws -> (BPFObject, FulcrumMaps, Int32) {
        let object = try BPFObject(path: BPFObject.locate(sourceRoot: Privileged.repositoryRoot()))
        let maps = try FulcrumMaps(object)
        for (i, g) in SteeringFixture.groups.enumerated() {
            for port in g.ports {
                try maps.setService(ServiceKey(address: g.vip, proto: g.proto, port: port), group: i, nat: g.method == .nat)
            }
            if g.method == .nat {
                for n in g.nodes {
                    try maps.setReply(ServiceKey(address: n.address, proto: g.proto, port: n.port), group: i)
                    try maps.setReply(ServiceKey(address: n.address, proto: g.proto, port: 0), group: i)  // its fragments
                }
            }
            try maps.setVIP(g.vip)
        }
        // BPF_PROG_TEST_RUN delivers frames as if they arrived on the loopback device.
        try maps.setInterface(ifindex: try InterfaceInfo.index(of: "lo"), slot: 0, mac: lbMAC)
        return (object, maps, try object.programFD(FULCRUM_PROG_MAIN))
    }

    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"), arguments: SteeringFixture.table)
    func fixture(_ f: SteeringFixture) throws {
        let (object, maps, program) = try Self.program()
        defer { withExtendedLifetime(object) {} }  // the program fd belongs to the object
        try maps.setActive(f.active)
        let counter = try #require(XDPCounter.allCases.first { $0.label == f.xdp.counter }, "no counter \(f.xdp.counter)")
        let before = maps.counter(counter)
        let result = try ProgramTestRun.run(programFD: program, frame: f.frame)
        let (verdict, expected): (UInt32, [UInt8]) = switch f.xdp {
        case .steered, .passed: (ProgramTestRun.pass, f.frame)  // no AF_XDP socket: a steered frame is passed, counted
        case .answered(let out, _): (ProgramTestRun.tx, out)
        case .dropped: (ProgramTestRun.drop, f.frame)
        }
        #expect(result.verdict == verdict)
        #expect(result.output == expected, "got\n\(result.output.hexDump)\nexpected\n\(expected.hexDump)")
        #expect(maps.counter(counter) == before + 1, "counter \(counter.label)")
        #expect(maps.counter(.received) >= 1)
    }

    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"))
    func nothingIsSteeredOrAnsweredOnAForeignInterface() throws {
        let (object, maps, program) = try Self.program()
        defer { withExtendedLifetime(object) {} }
        try maps.setActive(true)
        try maps.removeInterface(ifindex: try InterfaceInfo.index(of: "lo"))
        for frame in [SteeringFixture.arpRequest(for: Fixtures.vip4),
                      PacketBuilder.tcpFrame(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: 1, destinationPort: 80)] {
            let result = try ProgramTestRun.run(programFD: program, frame: frame)
            #expect(result.verdict == ProgramTestRun.pass && result.output == frame)
        }
        #expect(maps.counter(.passed) == 2 && maps.counter(.noSocket) == 0 && maps.counter(.arpReplies) == 0)
    }

    /// The dead-man switch: an active program whose daemon's deadline has passed answers
    /// no ARP for a VIP and steers nothing (the frames go to the kernel, counted); with the
    /// deadline ahead, or none (0, standalone), it answers.
    @Test(.enabled(if: Privileged.available, "\(Privileged.reason ?? "")"))
    func aDaemonPastItsDeadlineStopsAnsweringForTheVIPs() throws {
        let (object, maps, program) = try Self.program()
        defer { withExtendedLifetime(object) {} }
        try maps.setActive(true)
        let arp = SteeringFixture.arpRequest(for: Fixtures.vip4)
        let tcp = PacketBuilder.tcpFrame(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: 1, destinationPort: 80)
        let now = SystemClock().nanoseconds()
        // (The program reads the coarse clock, which lags by up to a tick: a deadline
        // 100 ms past is past for it.)
        for (until, answers) in [(UInt64(0), true), (now + 60_000_000_000, true), (now - 100_000_000, false), (UInt64(1), false)] {
            try maps.setAliveUntil(until)
            let stale = maps.counter(.staleDaemonPassed), replies = maps.counter(.arpReplies)
            let a = try ProgramTestRun.run(programFD: program, frame: arp)
            #expect((a.verdict == ProgramTestRun.tx) == answers, "deadline \(until): ARP answered \(a.verdict == ProgramTestRun.tx)")
            #expect(maps.counter(.arpReplies) == replies + (answers ? 1 : 0))
            let t = try ProgramTestRun.run(programFD: program, frame: tcp)
            #expect(t.verdict == ProgramTestRun.pass && t.output == tcp)
            #expect(maps.counter(.staleDaemonPassed) == stale + (answers ? 0 : 2), "both frames counted as a stale daemon's")
        }
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
