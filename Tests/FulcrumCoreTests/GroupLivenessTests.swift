import FulcrumCore
import Testing

@Suite struct GroupLivenessTests {
    static let a = NodeIdentity(group: "web", address: IPAddress("198.18.2.11")!, port: 8080)
    static let b = NodeIdentity(group: "web", address: IPAddress("198.18.2.12")!, port: 8080)
    static let other = NodeIdentity(group: "dns", address: IPAddress("198.18.2.11")!, port: 53)

    /// (node, up) in turn, and the transition each must make.
    static let steps: [(NodeIdentity, Bool, GroupLiveness.Transition?)] = [
        (a, false, nil),                          // one of two down
        (other, false, .noLiveNode(group: "dns")), // dns has one node
        (b, false, .noLiveNode(group: "web")),     // both down
        (b, false, nil),                          // told again: no second alert
        (a, true, .back(group: "web")),
        (b, true, nil),
        (other, true, .back(group: "dns")),
    ]

    @Test func aGroupIsDeadWhenEveryNodeIsDownAndBackWhenOneReturns() {
        var liveness = GroupLiveness()
        for (i, (node, up, expected)) in Self.steps.enumerated() {
            let members = node.group == "web" ? [Self.a, Self.b] : [Self.other]
            #expect(liveness.record(node, up: up, members: members) == expected, "step \(i)")
        }
        #expect(liveness.down.isEmpty && liveness.dead.isEmpty)
    }

    @Test func aGroupWithNoNodesIsNeverDead() {
        var liveness = GroupLiveness()
        #expect(liveness.record(Self.a, up: false, members: []) == nil)
        #expect(liveness.dead.isEmpty)
    }
}
