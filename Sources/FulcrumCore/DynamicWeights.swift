/// Weights from the load the nodes' agents report (`dynamic_weights: cpu`), for one
/// group. Pure arithmetic with the clock as a parameter:
///
/// - each node's load is smoothed: `ewma += alpha × (load − ewma)`;
/// - its weight is its static weight × `scale` × (1 − ewma), never below `floor` of that
///   (a live node keeps some share), and exactly `static × scale` for a node whose agent
///   has never reported or has been silent for `silence` of its intervals;
/// - the weight in force moves only when the computed one differs from it by at least
///   `hysteresis` of `static × scale`, so small wobbles of load do not rebuild tables.
///
/// A static weight of 0 (drained) stays 0.
public struct DynamicWeights: Sendable {
    public struct Parameters: Sendable, Equatable {
        /// Each report's share in the smoothed load (0 < alpha ≤ 1).
        public var alpha: Double = 0.3
        /// The least share of its weight a loaded live node keeps.
        public var floor: Double = 0.1
        /// The least change of weight, as a share of the static weight, that is applied.
        public var hysteresis: Double = 0.1
        /// Reporting intervals without a report after which the static weight applies.
        public var silence: Int = 3
        /// Static weights are multiplied by this, so that shares have room below 1.
        public var scale: Int = 100

        public init(alpha: Double = 0.3, floor: Double = 0.1, hysteresis: Double = 0.1, silence: Int = 3, scale: Int = 100) {
            self.alpha = alpha
            self.floor = floor
            self.hysteresis = hysteresis
            self.silence = silence
            self.scale = scale
        }
    }

    public struct Node: Sendable, Equatable {
        public var staticWeight: Int
        /// Smoothed load, 0…1; nil before the first report.
        public var load: Double?
        /// When the last report came (nanoseconds, the caller's clock) and its interval.
        public var lastReport: UInt64 = 0
        public var interval: UInt64 = 1_000_000_000
        /// The weight in force.
        public var weight: Int
        public var silent: Bool { load == nil }
    }

    public let parameters: Parameters
    public private(set) var nodes: [Node]

    public init(staticWeights: [Int], parameters: Parameters = Parameters()) {
        self.parameters = parameters
        nodes = staticWeights.map { Node(staticWeight: $0, load: nil, weight: $0 * parameters.scale) }
    }

    /// A report for node `i`: `load` 0…1, `interval` between the agent's reports.
    public mutating func report(_ i: Int, load: Double, interval: UInt64, now: UInt64) {
        let l = min(1, max(0, load))
        let previous = nodes[i].load
        nodes[i].load = previous.map { $0 + parameters.alpha * (l - $0) } ?? l
        nodes[i].lastReport = now
        nodes[i].interval = max(1, interval)
    }

    /// What a node's weight would be now, before hysteresis.
    public func target(_ i: Int) -> Int {
        let n = nodes[i]
        let full = n.staticWeight * parameters.scale
        guard let load = n.load, full > 0 else { return full }
        let wanted = Double(full) * (1 - load)
        return max(Int((Double(full) * parameters.floor).rounded(.up)), Int(wanted.rounded()))
    }

    /// What changed at `now`: agents gone silent (their nodes back to their static
    /// weights), and the weights in force after hysteresis. `changed` is true when any
    /// weight moved.
    public mutating func tick(now: UInt64) -> (changed: Bool, silenced: [Int]) {
        var changed = false
        var silenced: [Int] = []
        for i in nodes.indices {
            if nodes[i].load != nil && now &- nodes[i].lastReport > UInt64(parameters.silence) &* nodes[i].interval {
                nodes[i].load = nil
                silenced.append(i)
            }
            let target = target(i)
            let full = nodes[i].staticWeight * parameters.scale
            let step = max(1, Int(Double(full) * parameters.hysteresis))
            let silentNow = nodes[i].load == nil
            if target != nodes[i].weight && (silentNow || abs(target - nodes[i].weight) >= step || target == 0) {
                nodes[i].weight = target
                changed = true
            }
        }
        return (changed, silenced)
    }

    public var weights: [Int] { nodes.map(\.weight) }
}
