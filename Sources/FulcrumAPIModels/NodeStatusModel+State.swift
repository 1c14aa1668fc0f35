extension NodeStatusModel {
    /// What `state` says of a node, and so what every view of the one status model shows
    /// (the status file, `GET /v1/status`, `fulcrum status`, `fulcrumctl status`, the page).
    public enum State: String, Sendable, CaseIterable {
        case up
        /// Its health check failed (`health_detail` says why).
        case down
        /// An operator's switch: it takes no new flows.
        case disabled
        /// No MAC in the neighbour table yet: the data plane cannot send it a frame.
        case noMAC = "no_mac"
        /// Checked, with no answer yet (after a start or a reload).
        case pending
    }

    /// The one rule from a node's facts to its state, first match wins: an operator's
    /// switch over health, a failed check over a missing MAC (the check says more), and a
    /// node with no check and a MAC is up. Kept here, beside the model, rather than in the
    /// daemon that assembles the status, so that the rule is read and tested in one place.
    /// - Parameters:
    ///   - healthy: its last health verdict; nil before the first.
    ///   - isChecked: a health check applies to it.
    ///   - awaitsMAC: it needs a MAC and has none (a sorry server's MAC is not tracked).
    public static func state(enabled: Bool, healthy: Bool?, isChecked: Bool, awaitsMAC: Bool) -> State {
        if !enabled { return .disabled }
        if healthy == false { return .down }
        if awaitsMAC { return .noMAC }
        if healthy == nil && isChecked { return .pending }
        return .up
    }
}
