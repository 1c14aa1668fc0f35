import FulcrumBPF
import FulcrumCore
import FulcrumTestSupport
import Testing

/// The operator's documentation names every counter the LB shows, so none appears in
/// status or metrics without an explanation.
@Suite struct DocsTests {
    @Test func operationsExplainsEveryCounter() throws {
        let doc = try String(contentsOfFile: Privileged.repositoryRoot() + "/Docs/OPERATIONS.md", encoding: .utf8)
        let labels = XDPCounter.allCases.map(\.label) + DropReason.allCases.map(\.label) + GlobalCounter.allCases.map(\.label)
        let missing = labels.filter { !doc.contains("`\($0)`") }
        #expect(missing.isEmpty, "OPERATIONS.md does not explain: \(missing)")
    }
}
