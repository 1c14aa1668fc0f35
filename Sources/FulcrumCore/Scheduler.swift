import Synchronization
/// The scheduling methods of a distribution group.
public enum SchedulerKind: String, CaseIterable, Sendable {
    /// Round robin over eligible nodes, ignoring weights.
    case rr
    /// Smooth weighted round robin (nginx's algorithm): exact proportions, interleaved.
    case wrr
    /// Least connections: the node with the fewest flows in this worker's table.
    case lc
    /// Weighted least connections: fewest flows per unit of weight.
    case wlc
    /// Source-IP hash: every flow of a client to the same node, via the Maglev table.
    case sh
    /// Maglev consistent hash of the 5-tuple.
    case maglev
}

/// Picks a node for a new flow. One per group per worker (it holds per-worker state such
/// as round-robin positions), touched only by its worker. Node indices are positions in
/// the group's node list.
public final class Scheduler {
    public let kind: SchedulerKind
    public let nodeCount: Int
    @usableFromInline let weights: UnsafeMutablePointer<Int>
    @usableFromInline let eligible: UnsafeMutablePointer<Bool>
    @usableFromInline let currentWeights: UnsafeMutablePointer<Int>
    @usableFromInline var cursor = 0
    let keys: [UInt64]
    @usableFromInline var table: MaglevTable
    /// Eligibility changed since the live table was computed. Changes come in bursts (all
    /// node MACs resolving at start, a reload), so the table is rebuilt once by `commit()`
    /// or at its next use, not once per change.
    @usableFromInline var tableIsStale = false

    /// Also the stateless fallback for every kind when the flow table is full.
    @inlinable
    public var maglev: MaglevTable {
        if tableIsStale { commit() }
        return table
    }

    /// Brings the Maglev live table up to date with eligibility changes.
    public func commit() {
        guard tableIsStale else { return }
        tableIsStale = false
        table.setEligible(Array(UnsafeBufferPointer(start: eligible, count: nodeCount)))
    }

    /// - Parameters:
    ///   - nodeKeys: a stable identity per node (see `StableHash.hash(_:)` of its address).
    ///   - weights: static weights, ≥ 0. Weight 0 = drain: no new flows.
    public init(kind: SchedulerKind, nodeKeys: [UInt64], weights: [Int],
                maglevSize: Int = MaglevTable.defaultSize) {
        precondition(nodeKeys.count == weights.count)
        precondition(weights.allSatisfy { $0 >= 0 })
        self.kind = kind
        nodeCount = nodeKeys.count
        keys = nodeKeys
        let n = max(1, nodeCount)
        self.weights = .allocate(capacity: n)
        self.weights.initialize(from: weights, count: nodeCount)
        eligible = .allocate(capacity: n)
        eligible.initialize(repeating: true, count: nodeCount)
        currentWeights = .allocate(capacity: n)
        currentWeights.initialize(repeating: 0, count: nodeCount)
        table = MaglevTable(keys: nodeKeys, weights: weights, size: maglevSize)
    }

    deinit {
        weights.deallocate()
        eligible.deallocate()
        currentWeights.deallocate()
    }

    public func weight(of node: Int) -> Int { weights[node] }
    public func isEligible(_ node: Int) -> Bool { eligible[node] }

    /// Takes a node in or out of scheduling (health, unknown MAC). Only flows on that
    /// node change their stateless (Maglev) decision.
    public func setEligible(_ node: Int, _ value: Bool) {
        guard eligible[node] != value else { return }
        eligible[node] = value
        currentWeights[node] = 0
        tableIsStale = true
    }

    /// Changes weights at run time. Flows in the flow table keep their node; the
    /// stateless table is rebuilt for the new proportions.
    /// - Parameter prebuilt: the Maglev table for `newWeights` (same keys and size), built
    ///   off the packet thread; nil builds it here (1–2 ms).
    public func setWeights(_ newWeights: [Int], table prebuilt: MaglevTable? = nil) {
        precondition(newWeights.count == nodeCount && newWeights.allSatisfy { $0 >= 0 })
        let unchanged = (0..<nodeCount).allSatisfy { weights[$0] == newWeights[$0] }
        if unchanged { return }
        for i in 0..<nodeCount {
            weights[i] = newWeights[i]
            currentWeights[i] = 0
        }
        if let prebuilt, prebuilt.size == table.size, prebuilt.nodeCount == nodeCount {
            table = prebuilt
        } else {
            table = MaglevTable(keys: keys, weights: newWeights, size: table.size)
        }
        tableIsStale = true
    }

    /// True if the node may receive new flows.
    @inlinable @inline(__always)
    public func accepts(_ node: Int) -> Bool { eligible[node] && weights[node] > 0 }

    /// The node for a new flow, or -1 when no node may take one.
    /// - Parameters:
    ///   - flowHash: `FlowKey.stableHash()` of the flow.
    ///   - sourceHash: `StableHash.hash(source address)`.
    ///   - activeFlows: per-node flow counts for this group (index = node index).
    @inlinable
    public func pick(flowHash: UInt64, sourceHash: UInt64, activeFlows: UnsafePointer<Atomic<Int32>>) -> Int {
        switch kind {
        case .rr: return pickRoundRobin()
        case .wrr: return pickSmoothWeighted()
        case .lc: return pickLeast(activeFlows, weighted: false)
        case .wlc: return pickLeast(activeFlows, weighted: true)
        case .sh: return maglev.lookup(sourceHash)
        case .maglev: return maglev.lookup(flowHash)
        }
    }

    /// The stateless decision for a flow: the node the Maglev table (over eligible
    /// nodes, by weight) gives its hash — the source address's for `sh`, the 5-tuple's
    /// otherwise. Every worker, every restart and a peer with the same nodes make the
    /// same one, so it is what a flow gets whenever its first packet was not seen here
    /// or not remembered. -1 when no node may take it.
    @inlinable
    public func consistentPick(flowHash: UInt64, sourceHash: UInt64) -> Int {
        maglev.lookup(kind == .sh ? sourceHash : flowHash)
    }

    @inlinable
    func pickRoundRobin() -> Int {
        var tried = 0
        while tried < nodeCount {
            let i = cursor
            cursor = cursor &+ 1 == nodeCount ? 0 : cursor &+ 1
            if accepts(i) { return i }
            tried &+= 1
        }
        return -1
    }

    @inlinable
    func pickSmoothWeighted() -> Int {
        var best = -1
        var total = 0
        var i = 0
        while i < nodeCount {
            if accepts(i) {
                currentWeights[i] &+= weights[i]
                total &+= weights[i]
                if best < 0 || currentWeights[i] > currentWeights[best] { best = i }
            }
            i &+= 1
        }
        if best >= 0 { currentWeights[best] &-= total }
        return best
    }

    /// Fewest flows (per weight when `weighted`); ties go round-robin from a moving start
    /// so that an idle group still spreads its first flows.
    @inlinable
    func pickLeast(_ active: UnsafePointer<Atomic<Int32>>, weighted: Bool) -> Int {
        var best = -1
        var n = 0
        let start = cursor
        while n < nodeCount {
            var i = start &+ n
            if i >= nodeCount { i &-= nodeCount }
            n &+= 1
            guard accepts(i) else { continue }
            if best < 0 {
                best = i
                continue
            }
            let better: Bool
            let ai = Int((active + i).pointee.load(ordering: .relaxed))
            let ab = Int((active + best).pointee.load(ordering: .relaxed))
            if weighted {
                // active_i / w_i < active_best / w_best, without division.
                better = ai &* weights[best] < ab &* weights[i]
            } else {
                better = ai < ab
            }
            if better { best = i }
        }
        cursor = cursor &+ 1 >= nodeCount ? 0 : cursor &+ 1
        return best
    }
}
