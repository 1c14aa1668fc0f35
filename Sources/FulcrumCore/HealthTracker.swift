/// A node's health as its checks tell it: `rise` successes in a row bring a down node
/// up, `fall` failures in a row take an up node down. Pure: the checker feeds it results,
/// and it says when the node's state changes. Nodes start up (as the data plane does), so
/// a node that fails from the start goes down after `fall` failures.
public struct HealthTracker: Sendable, Equatable {
    public let rise: Int
    public let fall: Int
    public private(set) var isUp: Bool
    public private(set) var successes = 0
    public private(set) var failures = 0
    /// Why the last check failed ("refused", "timeout", "status 503", …), or nil.
    public private(set) var lastFailure: String?

    public init(rise: Int, fall: Int, up: Bool = true) {
        precondition(rise >= 1 && fall >= 1)
        self.rise = rise
        self.fall = fall
        isUp = up
    }

    /// A transition, when a result changes the node's state.
    public enum Transition: Equatable, Sendable {
        case wentUp
        case wentDown(reason: String)
    }

    /// Records one check's result; returns the transition it caused, if any.
    public mutating func record(success: Bool, reason: String? = nil) -> Transition? {
        if success {
            successes += 1
            failures = 0
            lastFailure = nil
            if !isUp && successes >= rise {
                isUp = true
                return .wentUp
            }
        } else {
            failures += 1
            successes = 0
            lastFailure = reason ?? "failed"
            if isUp && failures >= fall {
                isUp = false
                return .wentDown(reason: lastFailure!)
            }
        }
        return nil
    }
}
