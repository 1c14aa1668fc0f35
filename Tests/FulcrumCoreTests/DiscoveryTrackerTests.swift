import FulcrumCore
import Testing

/// The discovery policy alone: reports and expiries at times given as numbers, the
/// decisions each must make. What the agents' listener adds (the socket, the signature,
/// the replay guard, the events) is AgentServiceTests'.
@Suite struct DiscoveryTrackerTests {
    static let second: UInt64 = 1_000_000_000
    static let timeout = 2 * second

    static let pool = DiscoveryTracker.Group(name: "pool", acceptsDiscoveredNodes: true, isIPv4: true,
                                             nodes: [IPAddress("198.18.2.12")!], port: 8080)
    static let spare = DiscoveryTracker.Group(name: "spare", acceptsDiscoveredNodes: true, isIPv4: true,
                                              nodes: [IPAddress("198.18.2.13")!], port: 9090)
    static let closed = DiscoveryTracker.Group(name: "closed", acceptsDiscoveredNodes: false, isIPv4: true,
                                               nodes: [IPAddress("198.18.2.14")!], port: 80)
    static let pool6 = DiscoveryTracker.Group(name: "pool6", acceptsDiscoveredNodes: true, isIPv4: false,
                                              nodes: [IPAddress("2001:db8::12")!], port: 8080)

    static func a(_ text: String) -> IPAddress { IPAddress(text)! }

    /// One thing that happens to the tracker, at a time in seconds.
    enum Step: Sendable {
        /// A signed report from an address (`member`: a node of a group with dynamic
        /// weights). `admitted`: whether it gets past the tracker; `decides`: what it adds.
        case report(String, at: Double, member: Bool = false, admitted: Bool = true, decides: [DiscoveryDecision] = [])
        /// The listener's tick: what it removes or disables.
        case expire(at: Double, decides: [DiscoveryDecision] = [])
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var groups: [DiscoveryTracker.Group]
        var expiry: DiscoveryExpiry = .remove
        var candidateLimit = 1024
        var steps: [Step]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "two reports in a row make an address a node of every accepting group, on each group's port",
             groups: [pool, closed, spare],
             steps: [
                .report("198.18.2.50", at: 0),
                .report("198.18.2.50", at: 0.5, decides: [.add(group: "pool", address: a("198.18.2.50"), port: 8080),
                                                          .add(group: "spare", address: a("198.18.2.50"), port: 9090)]),
             ]),
        Case(name: "a discovered node's later reports add nothing and keep it alive",
             groups: [pool],
             steps: [
                .report("198.18.2.50", at: 0),
                .report("198.18.2.50", at: 1, decides: [.add(group: "pool", address: a("198.18.2.50"), port: 8080)]),
                .report("198.18.2.50", at: 2.5),
                .report("198.18.2.50", at: 4),
                .expire(at: 5.9),                      // 1.9 s after its last report
                .expire(at: 6.1, decides: [.remove(group: "pool", address: a("198.18.2.50"), port: 8080)]),
                // Gone: it starts again as a candidate.
                .report("198.18.2.50", at: 7),
                .report("198.18.2.50", at: 7.2, decides: [.add(group: "pool", address: a("198.18.2.50"), port: 8080)]),
             ]),
        Case(name: "a group that does not accept discovered nodes takes none, and its reports are refused",
             groups: [closed],
             steps: [
                .report("198.18.2.50", at: 0, admitted: false),
                .report("198.18.2.50", at: 1, admitted: false),
                // A member of a group with dynamic weights is wanted anyway, and discovers nothing.
                .report("198.18.2.14", at: 2, member: true),
                .report("198.18.2.14", at: 3, member: true),
             ]),
        Case(name: "a configured node is not discovered into its own group",
             groups: [pool, spare],
             steps: [
                .report("198.18.2.12", at: 0),
                .report("198.18.2.12", at: 1, decides: [.add(group: "spare", address: a("198.18.2.12"), port: 9090)]),
             ]),
        Case(name: "an address of the other family than the VIP is refused",
             groups: [pool, pool6],
             steps: [
                .report("2001:db8::50", at: 0),
                .report("2001:db8::50", at: 1, decides: [.add(group: "pool6", address: a("2001:db8::50"), port: 8080)]),
                .report("198.18.2.60", at: 2),
                .report("198.18.2.60", at: 3, decides: [.add(group: "pool", address: a("198.18.2.60"), port: 8080)]),
             ]),
        Case(name: "only the IPv6 group: an IPv4 address is refused",
             groups: [pool6],
             steps: [.report("198.18.2.50", at: 0, admitted: false)]),
        Case(name: "past the candidate limit a new address is refused until candidates expire",
             groups: [pool], candidateLimit: 2,
             steps: [
                .report("198.18.2.50", at: 0),
                .report("198.18.2.51", at: 0.5),
                .report("198.18.2.52", at: 1, admitted: false),
                .report("198.18.2.12", at: 1, member: true),   // a member is wanted whatever the count
                // A candidate already counted goes on; becoming a node frees its place.
                .report("198.18.2.50", at: 1.5, decides: [.add(group: "pool", address: a("198.18.2.50"), port: 8080)]),
                .report("198.18.2.52", at: 1.6),
                .report("198.18.2.54", at: 1.7, admitted: false),
                // 198.18.2.51 silent past the timeout: forgotten, its place free again.
                .expire(at: 2.6),
                .report("198.18.2.54", at: 2.7),
             ]),
        Case(name: "a candidate silent past the timeout starts again from one report",
             groups: [pool],
             steps: [
                .report("198.18.2.50", at: 0),
                .expire(at: 2.1),
                .report("198.18.2.50", at: 2.2),
                .report("198.18.2.50", at: 2.4, decides: [.add(group: "pool", address: a("198.18.2.50"), port: 8080)]),
             ]),
        Case(name: "expiry remove: out of every group it was added to, at the timeout after its last report",
             groups: [pool, spare], expiry: .remove,
             steps: [
                .report("198.18.2.50", at: 0),
                .report("198.18.2.50", at: 1, decides: [.add(group: "pool", address: a("198.18.2.50"), port: 8080),
                                                        .add(group: "spare", address: a("198.18.2.50"), port: 9090)]),
                .report("198.18.2.40", at: 1.5),
                .report("198.18.2.40", at: 2, decides: [.add(group: "pool", address: a("198.18.2.40"), port: 8080),
                                                        .add(group: "spare", address: a("198.18.2.40"), port: 9090)]),
                .expire(at: 3),                         // exactly the timeout: not yet
                .expire(at: 3.5, decides: [.remove(group: "pool", address: a("198.18.2.50"), port: 8080),
                                           .remove(group: "spare", address: a("198.18.2.50"), port: 9090)]),
                .expire(at: 3.6),                       // once only
                .expire(at: 4.5, decides: [.remove(group: "pool", address: a("198.18.2.40"), port: 8080),
                                           .remove(group: "spare", address: a("198.18.2.40"), port: 9090)]),
             ]),
        Case(name: "expiry disable: the same nodes, disabled; two at once come in address order",
             groups: [pool], expiry: .disable,
             steps: [
                .report("198.18.2.50", at: 0),
                .report("198.18.2.40", at: 0),
                .report("198.18.2.50", at: 1, decides: [.add(group: "pool", address: a("198.18.2.50"), port: 8080)]),
                .report("198.18.2.40", at: 1, decides: [.add(group: "pool", address: a("198.18.2.40"), port: 8080)]),
                .expire(at: 2.9),
                .expire(at: 3.1, decides: [.disable(group: "pool", address: a("198.18.2.40"), port: 8080),
                                           .disable(group: "pool", address: a("198.18.2.50"), port: 8080)]),
             ]),
    ]

    @Test(arguments: cases)
    func theDecisions(_ c: Case) {
        var tracker = DiscoveryTracker(groups: c.groups, timeout: Self.timeout, expiry: c.expiry, candidateLimit: c.candidateLimit)
        let start = 1_000 * Self.second  // not 0: "long ago" is a time like any other
        func time(_ seconds: Double) -> UInt64 { start + UInt64(seconds * 1e9) }
        for (i, step) in c.steps.enumerated() {
            switch step {
            case let .report(text, at, member, admitted, decides):
                let address = Self.a(text)
                #expect(tracker.admits(address, isMember: member) == admitted, "step \(i): \(text) admitted")
                // The listener goes no further with a report the tracker refused.
                guard admitted else { continue }
                #expect(tracker.report(from: address, now: time(at)) == decides, "step \(i): \(text) at \(at) s")
            case let .expire(at, decides):
                #expect(tracker.expire(now: time(at)) == decides, "step \(i): expiry at \(at) s")
            }
        }
    }

    @Test func theReplayGuardKeepsWhatDiscoveryRemembers() {
        var tracker = DiscoveryTracker(groups: [Self.pool], timeout: Self.timeout, expiry: .remove)
        let node = Self.a("198.18.2.50"), candidate = Self.a("198.18.2.51")
        _ = tracker.report(from: node, now: Self.second)
        _ = tracker.report(from: node, now: 2 * Self.second)
        _ = tracker.report(from: candidate, now: 2 * Self.second)
        #expect(tracker.tracked == [node, candidate])
        #expect(tracker.isDiscovered(node) && !tracker.isDiscovered(candidate))
        _ = tracker.expire(now: 5 * Self.second)
        #expect(tracker.tracked.isEmpty)
    }
}
