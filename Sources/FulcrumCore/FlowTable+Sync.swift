/// The flow sync's side of a flow table (PRODUCT.md §7, hitless failover): which flows the
/// standby must hear of, found without a lock, an allocation or a system call on the packet
/// path, in memory fixed at start.
///
/// A flow is marked *dirty* when it becomes worth keeping (its first packet after a TCP
/// handshake or its second UDP datagram: a SYN alone never is, so a SYN flood costs the
/// sync nothing), when its state or node changes, and when the standby's copy would have
/// less than half its lifetime left. The mark lives in the entry (it moves with it when a
/// bucket is compacted), and the entry's bucket goes once onto a fixed queue; a full queue
/// sets an overflow that a paced pass over the whole table clears. So what is pending is
/// bounded by the table itself: nothing grows, nothing is dropped. The worker collects
/// dirty flows between batches (`collectDirty`) and hands records to the sync thread.
public struct FlowSyncMarks: Sendable {
    /// Flows are marked (`dataplane`/`cluster.flow_sync` on); off, the check is one load.
    public var enabled = false
    @usableFromInline var queueHead = 0
    @usableFromInline var queueCount = 0
    @usableFromInline let queueCapacity: Int
    /// A dirty bucket found the queue full: a pass over the table finds it.
    @usableFromInline var overflowed = false
    @usableFromInline var scanCursor = 0
    @usableFromInline var scanning = false
    /// The bulk transfer's pass: every live flow worth keeping, whatever its marks.
    @usableFromInline var bulkCursor = -1
    /// The pass only looks again at flows never sent (a recheck after a layout or weight
    /// change: a flow whose node was the stateless answer may no longer be).
    @usableFromInline var bulkOnlyUnsent = false
    /// Marks made, for the benchmark and status.
    public var marked: UInt64 = 0

    init(queueCapacity: Int) { self.queueCapacity = queueCapacity }
}

/// The bits of `FlowEntry.syncFlags`.
public enum FlowSyncFlag {
    public static let dirty: UInt8 = 1
    /// The standby was sent this flow at least once (so a record for it is never skipped).
    public static let sent: UInt8 = 2
    /// Held from the peer's stream (`syncedDeadline` is the record's order, not a deadline).
    public static let imported: UInt8 = 4
    /// The high nibble: the `FlowState` the standby holds.
    public static let stateShift: UInt8 = 4
}

/// What `collectDirty`'s body did with a flow.
public enum FlowSyncTake {
    /// A record went out (the flow is clean until its next change).
    case taken
    /// No record is needed (the standby would decide the same); clean too.
    case skipped
    /// No room for a record now: the flow stays dirty, collection stops.
    case full
}

extension FlowTable {
    /// Buckets the dirty queue holds at most (4 bytes each); beyond, the overflow pass.
    public static let dirtyQueueLimit = 1 << 16
    /// Buckets the overflow pass looks at per call: a short stop of the packet thread.
    public static let scanBucketsPerCall = 4096

    /// Whether flows are marked for the standby.
    public var syncEnabled: Bool {
        get { sync.pointee.enabled }
        set { sync.pointee.enabled = newValue }
    }

    /// Flows marked since start.
    public var syncMarks: UInt64 { sync.pointee.marked }

    /// Buckets waiting on the dirty queue, and whether an overflow pass is owed.
    public var syncBacklog: (buckets: Int, overflowed: Bool) { (sync.pointee.queueCount, sync.pointee.overflowed) }

    /// The packet path's check, after a flow's state and deadline moved: is this a change
    /// the standby must hear? A few loads and compares on the entry's own cache line.
    @inlinable @inline(__always)
    func noteSync(_ slot: Int, state: FlowState, deadline d: UInt64) {
        let flags = entries[slot].syncFlags
        if flags & FlowSyncFlag.dirty != 0 || state == .synSent { return }
        if flags >> FlowSyncFlag.stateShift != state.rawValue
            || d &- entries[slot].syncedDeadline > timeoutByState[Int(state.rawValue)] >> 1 {
            markDirty(slot)
        }
    }

    /// Marks a flow dirty and queues its bucket once. Out of line: a flow is marked a few
    /// times in its life, not per packet.
    @usableFromInline @inline(never)
    func markDirty(_ slot: Int) {
        guard entries[slot].syncFlags & FlowSyncFlag.dirty == 0 else { return }
        entries[slot].syncFlags |= FlowSyncFlag.dirty
        sync.pointee.marked &+= 1
        let bucket = slot / FlowTable.ways
        let word = bucket >> 6, bit = UInt64(1) << UInt64(bucket & 63)
        if bucketQueued[word] & bit != 0 { return }
        let marks = sync.pointee
        if marks.queueCount == marks.queueCapacity {
            sync.pointee.overflowed = true
            return
        }
        dirtyQueue[(marks.queueHead &+ marks.queueCount) % marks.queueCapacity] = UInt32(bucket)
        sync.pointee.queueCount &+= 1
        bucketQueued[word] |= bit
    }

    /// Records that the standby now holds the flow at `slot` as it is.
    @inlinable
    public func markSynced(_ slot: Int) {
        let state = entries[slot].state
        entries[slot].syncFlags = FlowSyncFlag.sent | state.rawValue << FlowSyncFlag.stateShift
        entries[slot].syncedDeadline = entries[slot].deadline
    }

    /// Records that no record was needed: clean, with what the standby would do anyway.
    @inlinable
    public func markClean(_ slot: Int) {
        let state = entries[slot].state
        entries[slot].syncFlags = (entries[slot].syncFlags & FlowSyncFlag.sent) | state.rawValue << FlowSyncFlag.stateShift
        entries[slot].syncedDeadline = entries[slot].deadline
    }

    /// Hands the dirty, live flows to `body` (at most `limit` of them), in the order they
    /// were queued; stops when `body` says `.full`. Worker thread, between batches. Returns
    /// how many `body` was given.
    @discardableResult
    public func collectDirty(now: UInt64, limit: Int, _ body: (Int) -> FlowSyncTake) -> Int {
        var given = 0
        while sync.pointee.queueCount > 0 && given < limit {
            let bucket = Int(dirtyQueue[sync.pointee.queueHead])
            guard let n = collect(bucket: bucket, now: now, limit: limit &- given, body) else { return given }
            given &+= n.given
            if !n.complete { return given }
            sync.pointee.queueHead = (sync.pointee.queueHead &+ 1) % sync.pointee.queueCapacity
            sync.pointee.queueCount &-= 1
            bucketQueued[bucket >> 6] &= ~(UInt64(1) << UInt64(bucket & 63))
        }
        // The queue is empty: an overflow's dirty buckets are found by a pass.
        if sync.pointee.overflowed && !sync.pointee.scanning {
            sync.pointee.overflowed = false
            sync.pointee.scanning = true
            sync.pointee.scanCursor = 0
        }
        var scanned = 0
        while sync.pointee.scanning && given < limit && scanned < FlowTable.scanBucketsPerCall {
            scanned &+= 1
            let bucket = sync.pointee.scanCursor
            guard let n = collect(bucket: bucket, now: now, limit: limit &- given, body) else { return given }
            given &+= n.given
            if !n.complete { return given }
            sync.pointee.scanCursor &+= 1
            if sync.pointee.scanCursor == bucketCount { sync.pointee.scanning = false }
        }
        return given
    }

    /// The dirty live entries of one bucket to `body`; nil when `body` had no room.
    @usableFromInline
    func collect(bucket: Int, now: UInt64, limit: Int, _ body: (Int) -> FlowSyncTake) -> (given: Int, complete: Bool)? {
        var given = 0
        var slot = bucket &* FlowTable.ways
        let end = slot &+ FlowTable.ways
        while slot < end {
            let e = entries[slot]
            if e.deadline == 0 { break }
            if e.syncFlags & FlowSyncFlag.dirty != 0 && e.deadline > now {
                if given == limit { return (given, false) }
                switch body(slot) {
                case .taken: markSynced(slot)
                case .skipped: markClean(slot)
                case .full: return given == 0 ? nil : (given, false)
                }
                given &+= 1
            }
            slot &+= 1
        }
        return (given, true)
    }

    /// Starts a bulk transfer's pass over the whole table (a standby joined): every live
    /// flow worth keeping goes to `bulk`'s body, whatever its marks.
    public func startBulk() {
        sync.pointee.bulkCursor = 0
        sync.pointee.bulkOnlyUnsent = false
    }

    /// Starts a pass over the flows never sent to the standby (a layout, weight or health
    /// change may have made some of them exceptions to the stateless decision). A bulk
    /// pass under way already covers them; a recheck under way starts over.
    public func startRecheck() {
        guard sync.pointee.enabled, sync.pointee.bulkCursor < 0 || sync.pointee.bulkOnlyUnsent else { return }
        sync.pointee.bulkCursor = 0
        sync.pointee.bulkOnlyUnsent = true
    }

    /// Whether a bulk pass is under way.
    public var bulkPending: Bool { sync.pointee.bulkCursor >= 0 }

    /// The next part of the bulk pass: up to `buckets` buckets, stopping early when `body`
    /// says `.full` (the bucket is taken again next time; upserts are idempotent). Returns
    /// true when the pass is complete.
    @discardableResult
    public func bulk(now: UInt64, buckets: Int, _ body: (Int) -> FlowSyncTake) -> Bool {
        guard sync.pointee.bulkCursor >= 0 else { return true }
        var b = 0
        while b < buckets && sync.pointee.bulkCursor < bucketCount {
            var slot = sync.pointee.bulkCursor &* FlowTable.ways
            let end = slot &+ FlowTable.ways
            while slot < end {
                let e = entries[slot]
                if e.deadline == 0 { break }
                if e.deadline > now && e.state != .synSent
                    && !(sync.pointee.bulkOnlyUnsent && e.syncFlags & FlowSyncFlag.sent != 0) {
                    switch body(slot) {
                    case .taken: markSynced(slot)
                    case .skipped: markClean(slot)
                    case .full: return false
                    }
                }
                slot &+= 1
            }
            sync.pointee.bulkCursor &+= 1
            b &+= 1
        }
        if sync.pointee.bulkCursor >= bucketCount {
            sync.pointee.bulkCursor = -1
            return true
        }
        return false
    }

    /// The standby's side: holds a flow the active sent, to node `nodeSlot`, in `state`,
    /// until `deadline`. An existing entry is updated (an upsert: the same record twice
    /// changes nothing), unless it holds a record of a later `order` (a resend that filled a
    /// gap after newer records of the flow); -1 when the bucket is full of live flows.
    @discardableResult
    public func upsert(_ key: FlowKey, hash: UInt64, now: UInt64, nodeSlot: UInt32, group: UInt16,
                       state: FlowState, deadline: UInt64, order: UInt64 = 0) -> Int {
        var slot = find(key, hash: hash, now: now)
        if slot >= 0 && order != 0 && entries[slot].syncFlags & FlowSyncFlag.imported != 0 && entries[slot].syncedDeadline > order {
            return slot
        }
        if slot < 0 {
            slot = insert(key, hash: hash, now: now, nodeSlot: nodeSlot, group: group, state: state)
            if slot < 0 { return -1 }
        } else if entries[slot].nodeSlot != nodeSlot || entries[slot].group != group {
            addActive(Int(entries[slot].nodeSlot), -1)
            entries[slot].nodeSlot = nodeSlot
            entries[slot].group = group
            addActive(Int(nodeSlot), 1)
        }
        entries[slot].state = state
        entries[slot].deadline = max(deadline, now &+ 1)
        // Held for a takeover. Marked sent (once active, this LB never skips it as its own
        // stateless answer: the old active may hold another node for it) and imported, with
        // the record's order where a sent flow keeps the deadline it was sent (the state
        // nibble is 0, so the first packet after a takeover marks it dirty and resets both).
        entries[slot].syncFlags = FlowSyncFlag.sent | FlowSyncFlag.imported
        entries[slot].syncedDeadline = order
        return slot
    }
}
