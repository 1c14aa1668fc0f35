import FulcrumCore
import FulcrumTestSupport
import Testing

/// The XDP program's steering table (FulcrumBPFTests runs it through BPF_PROG_TEST_RUN),
/// through the Swift balancer on the same services: what XDP steers, the worker forwards;
/// what XDP answers, the worker answers with the same bytes; what XDP drops as malformed,
/// the worker drops too (and counts); what XDP leaves to the kernel, the worker passes.
@Suite struct SteeringTableTests {
    static let fixtures = SteeringFixture.table.filter { if case .neverSees = $0.worker { false } else { true } }

    @Test(arguments: fixtures)
    func theWorkerAgreesWithTheXDPProgram(_ f: SteeringFixture) throws {
        let b = try Balancer(BalancerSpec(
            groups: SteeringFixture.groups, interfaceMACs: [SteeringFixture.lbMAC],
            returnRoutes: [ReturnRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0, nextHopMAC: Fixtures.routerMAC),
                           ReturnRoute(prefix: IPAddress("2001:2::")!, prefixLength: 64, interface: 0, nextHopMAC: Fixtures.routerMAC)],
            flowTableCapacity: 64))
        func drops() -> UInt64 { DropReason.allCases.reduce(0) { $0 + b.counters[$1] } }
        let dropsBefore = drops()
        let (out, verdict) = f.frame.mutatingFrame { b.process($0, length: $1, now: 1_000_000_000) }
        switch f.worker {
        case .forwarded:
            #expect(verdict == .transmit(interface: 0), "\(verdict)")
            #expect(out != f.frame, "a forwarded frame is rewritten (at least its MACs)")
        case .passed:
            #expect(verdict == .pass, "\(verdict)")
        case .answered(let expected):
            guard case .answer(let a) = verdict else { Issue.record("\(verdict)"); return }
            #expect(Array(out.prefix(a.length)) == expected, "got\n\(Array(out.prefix(a.length)).hexDump)\nexpected\n\(expected.hexDump)")
        case .dropped:
            #expect(verdict == .drop, "\(verdict)")
            #expect(drops() == dropsBefore + 1, "the drop is counted")
        case .neverSees:
            break
        }
    }
}
