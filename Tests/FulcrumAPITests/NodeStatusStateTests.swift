import FulcrumAPIModels
import Testing

/// The one rule from a node's facts to the `state` every status view shows.
@Suite struct NodeStatusStateTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var enabled = true
        var healthy: Bool?
        var isChecked = true
        var awaitsMAC = false
        var state: NodeStatusModel.State
        var why: String
        var testDescription: String { why }
    }

    static let cases: [Case] = [
        Case(healthy: true, state: .up, why: "checked and answering"),
        Case(healthy: nil, isChecked: false, state: .up, why: "no check: up once it has a MAC"),
        Case(healthy: nil, state: .pending, why: "checked, no verdict yet"),
        Case(healthy: false, state: .down, why: "its check failed"),
        Case(healthy: false, awaitsMAC: true, state: .down, why: "a failed check says more than a missing MAC"),
        Case(healthy: true, awaitsMAC: true, state: .noMAC, why: "answering, but no MAC to send it frames"),
        Case(healthy: nil, awaitsMAC: true, state: .noMAC, why: "no MAC before any verdict"),
        Case(enabled: false, healthy: false, awaitsMAC: true, state: .disabled, why: "the operator's switch over everything"),
        Case(enabled: false, healthy: true, state: .disabled, why: "disabled though healthy"),
    ]

    @Test(arguments: cases)
    func theState(_ c: Case) {
        #expect(NodeStatusModel.state(enabled: c.enabled, healthy: c.healthy, isChecked: c.isChecked, awaitsMAC: c.awaitsMAC) == c.state)
    }

    /// The values Docs/openapi.yaml lists for `state`, and no other.
    @Test func theStatesAreTheDocumentedOnes() {
        #expect(NodeStatusModel.State.allCases.map(\.rawValue).sorted() == ["disabled", "down", "no_mac", "pending", "up"])
    }
}
