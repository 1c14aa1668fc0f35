/// Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted.
///
/// The table is derived in two steps so that a node leaving the eligible set moves only
/// the flows that were on it:
/// 1. the *base* table is the classic Maglev fill over every configured node, weighted
///    by giving node i a turn in a round only when its accumulated weight reaches the
///    largest weight (as Katran does);
/// 2. the *live* table is the base with the slots of ineligible nodes (down, drained,
///    unknown MAC) emptied and refilled by the eligible nodes, each continuing along its
///    own permutation. Every other slot keeps its owner.
/// Both steps depend only on the node keys, weights and eligibility, so two LBs with the
/// same configuration compute the same table.
public final class MaglevTable {
    /// Table size: prime, ≥ 100 × the largest supported node count, as the paper advises.
    public static let defaultSize = 65537
    public static let empty = UInt16.max

    public let size: Int
    public let nodeCount: Int
    @usableFromInline let base: UnsafeMutablePointer<UInt16>
    @usableFromInline let live: UnsafeMutablePointer<UInt16>
    // Per-node permutation parameters and fill scratch, allocated once.
    let offsets: UnsafeMutablePointer<Int>
    let skips: UnsafeMutablePointer<Int>
    let positions: UnsafeMutablePointer<Int>
    let credits: UnsafeMutablePointer<Int>
    let order: UnsafeMutablePointer<Int>
    let turn: UnsafeMutablePointer<Int>
    let taken: UnsafeMutablePointer<UInt64>
    var bitmapWords: Int { (size + 63) / 64 }
    public private(set) var liveNodeCount = 0

    /// - Parameters:
    ///   - keys: a stable identity per node (e.g. `StableHash.hash(address)`); the order
    ///     of nodes does not change which slots a node prefers.
    ///   - weights: relative weights; 0 gives a node no slots in the base table.
    public init(keys: [UInt64], weights: [Int], size: Int = MaglevTable.defaultSize) {
        precondition(keys.count == weights.count && keys.count < Int(MaglevTable.empty))
        precondition(size > 2)
        self.size = size
        nodeCount = keys.count
        base = .allocate(capacity: size)
        live = .allocate(capacity: size)
        offsets = .allocate(capacity: max(1, nodeCount))
        skips = .allocate(capacity: max(1, nodeCount))
        positions = .allocate(capacity: max(1, nodeCount))
        credits = .allocate(capacity: max(1, nodeCount))
        order = .allocate(capacity: max(1, nodeCount))
        turn = .allocate(capacity: max(1, nodeCount))
        taken = .allocate(capacity: (size + 63) / 64)
        for i in 0..<nodeCount {
            let h1 = StableHash.finalize(keys[i] ^ 0x5851_F42D_4C95_7F2D)
            let h2 = StableHash.finalize(keys[i] &+ 0x1405_7B7E_F767_814F)
            offsets[i] = Int(h1 % UInt64(size))
            skips[i] = Int(h2 % UInt64(size - 1)) + 1
        }
        base.initialize(repeating: MaglevTable.empty, count: size)
        baseIsFull = fill(base, weights: weights, eligible: nil)
        setEligible(Array(repeating: true, count: nodeCount))
    }

    deinit {
        base.deallocate()
        live.deallocate()
        offsets.deallocate()
        skips.deallocate()
        positions.deallocate()
        credits.deallocate()
        order.deallocate()
        turn.deallocate()
        taken.deallocate()
    }

    /// Recomputes the live table: slots of ineligible nodes go to eligible ones.
    /// Weights for the refill are those the base was built with.
    public func setEligible(_ eligible: [Bool], weights: [Int]? = nil) {
        precondition(eligible.count == nodeCount)
        let w = weights ?? baseWeights
        live.update(from: base, count: size)
        liveNodeCount = eligible.lazy.enumerated().filter { $0.element && w[$0.offset] > 0 }.count
        // Every slot owned and every node eligible (a fresh table): nothing to refill.
        if baseIsFull && !eligible.contains(false) { return }
        var holes = 0
        for s in 0..<size {
            let owner = live[s]
            if owner == MaglevTable.empty || !eligible[Int(owner)] {
                live[s] = MaglevTable.empty
                holes += 1
            }
        }
        if holes > 0 && liveNodeCount > 0 { fill(live, weights: w, eligible: eligible) }
    }

    private var baseWeights: [Int] = []
    /// Whether the base fill gave every slot an owner (some node had a weight).
    private var baseIsFull = false

    /// The Maglev population loop over `table`, taking only empty slots. Returns whether
    /// every slot has an owner.
    @discardableResult
    private func fill(_ table: UnsafeMutablePointer<UInt16>, weights: [Int], eligible: [Bool]?) -> Bool {
        if eligible == nil { baseWeights = weights }
        // Probing reads an occupancy bitmap (8 KiB, in L1) rather than the table
        // (128 KiB): most of the ~M ln M probes hit taken slots.
        var remaining = 0
        taken.update(repeating: 0, count: bitmapWords)
        for s in 0..<size {
            if table[s] == MaglevTable.empty { remaining += 1 } else { taken[s >> 6] |= 1 << UInt64(s & 63) }
        }
        // The nodes that take part, with their weights, packed so that the loop below
        // reads no arrays (this is the control plane's hot loop: ~M ln M probes).
        var takers = 0
        var maxWeight = 0
        for i in 0..<nodeCount where weights[i] > 0 && (eligible?[i] ?? true) {
            order[takers] = i
            turn[takers] = weights[i]
            positions[takers] = offsets[i]
            credits[takers] = 0
            maxWeight = max(maxWeight, weights[i])
            takers += 1
        }
        guard maxWeight > 0 else { return remaining == 0 }
        let size = self.size
        while remaining > 0 {
            var t = 0
            while t < takers {
                credits[t] &+= turn[t]
                if credits[t] >= maxWeight {
                    credits[t] &-= maxWeight
                    let node = order[t]
                    let skip = skips[node]
                    var c = positions[t]
                    while taken[c &>> 6] & (1 &<< UInt64(c & 63)) != 0 {
                        c = Self.step(c, skip, size)
                    }
                    taken[c &>> 6] |= 1 &<< UInt64(c & 63)
                    table[c] = UInt16(truncatingIfNeeded: node)
                    positions[t] = Self.step(c, skip, size)
                    remaining &-= 1
                    if remaining == 0 { return true }
                }
                t &+= 1
            }
        }
        return true
    }

    /// The next position along a permutation, `(c + skip) mod size`, without a branch:
    /// the wrap happens on about half the steps, too often to predict, and a
    /// mispredicted wrap cost more than the probe itself.
    @inline(__always)
    static func step(_ c: Int, _ skip: Int, _ size: Int) -> Int {
        let t = c &+ skip &- size
        return t &+ (size & (t &>> 63))
    }

    /// The node for a hash, or -1 when no node is eligible.
    @inlinable @inline(__always)
    public func lookup(_ hash: UInt64) -> Int {
        // Lemire's multiply-shift maps the hash onto [0, size) without a division.
        let index = Int(truncatingIfNeeded: (UInt64(UInt32(truncatingIfNeeded: hash >> 32)) &* UInt64(size)) >> 32)
        let owner = live[index]
        return owner == MaglevTable.empty ? -1 : Int(owner)
    }

    /// How many slots each node owns in the live table (for tests and status).
    public func slotCounts() -> [Int] {
        var counts = Array(repeating: 0, count: nodeCount)
        for s in 0..<size where live[s] != MaglevTable.empty { counts[Int(live[s])] += 1 }
        return counts
    }
}
