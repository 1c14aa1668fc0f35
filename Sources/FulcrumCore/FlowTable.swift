import Synchronization
/// The lifecycle of a flow as seen from the client side.
public enum FlowState: UInt8, Sendable {
    /// A SYN was seen and nothing after it yet.
    case synSent = 1
    case established
    /// FIN or RST seen: kept briefly so retransmissions and the last ACKs still reach
    /// the same node.
    case closing
    case udp
    /// ICMP echo and other protocols that have no connection state.
    case datagram

    /// The state after a packet with these TCP flags (or a non-TCP packet) is seen.
    @inlinable @inline(__always)
    public static func next(from current: FlowState?, proto: UInt8, tcpFlags: UInt8) -> FlowState {
        if proto == IPProtocol.udp { return .udp }
        if proto != IPProtocol.tcp { return .datagram }
        if tcpFlags & (TCPFlags.fin | TCPFlags.rst) != 0 { return .closing }
        if tcpFlags & TCPFlags.syn != 0 && tcpFlags & TCPFlags.ack == 0 { return .synSent }
        // A packet of an unknown flow without SYN (after a failover or restart) is taken
        // as established: the connection exists somewhere.
        guard let current else { return .established }
        return current == .closing ? .closing : .established
    }
}

/// Idle timeouts per state, in nanoseconds. Defaults follow IPVS/LVS practice.
public struct FlowTimeouts: Sendable, Equatable {
    public var synSent: UInt64
    public var established: UInt64
    public var closing: UInt64
    public var udp: UInt64
    public var datagram: UInt64

    public static let seconds: UInt64 = 1_000_000_000

    public init(synSent: UInt64 = 30 * seconds, established: UInt64 = 900 * seconds,
                closing: UInt64 = 10 * seconds, udp: UInt64 = 300 * seconds,
                datagram: UInt64 = 30 * seconds) {
        self.synSent = synSent
        self.established = established
        self.closing = closing
        self.udp = udp
        self.datagram = datagram
    }

    @inlinable
    public func timeout(for state: FlowState) -> UInt64 {
        switch state {
        case .synSent: return synSent
        case .established: return established
        case .closing: return closing
        case .udp: return udp
        case .datagram: return datagram
        }
    }
}

/// One flow, padded to one 64-byte cache line.
public struct FlowEntry: Sendable {
    public var key: FlowKey
    /// Monotonic nanoseconds after which the entry is dead; 0 marks an empty slot.
    public var deadline: UInt64
    /// The node, as a slot number the worker assigns (group base + index in group).
    public var nodeSlot: UInt32
    public var group: UInt16
    public var state: FlowState
    /// The flow sync's marks (`FlowSyncMarks`): dirty, and the state the standby was last
    /// sent in the high nibble. In what was padding: the entry stays one cache line.
    public var syncFlags: UInt8 = 0
    /// The deadline the standby was last given for this flow (0: never sent).
    public var syncedDeadline: UInt64 = 0

    @inlinable
    public init(key: FlowKey, deadline: UInt64, nodeSlot: UInt32, group: UInt16, state: FlowState) {
        self.key = key
        self.deadline = deadline
        self.nodeSlot = nodeSlot
        self.group = group
        self.state = state
    }
}

/// Where a flow table's memory comes from. FulcrumCore makes no system calls, so the
/// data plane passes one that asks the kernel for huge pages (fewer TLB misses on a
/// table of tens of megabytes); the default is the ordinary heap.
public struct TableMemory: Sendable {
    public var allocate: @Sendable (_ bytes: Int) -> UnsafeMutableRawPointer
    public var deallocate: @Sendable (_ pointer: UnsafeMutableRawPointer, _ bytes: Int) -> Void

    public init(allocate: @escaping @Sendable (Int) -> UnsafeMutableRawPointer,
                deallocate: @escaping @Sendable (UnsafeMutableRawPointer, Int) -> Void) {
        self.allocate = allocate
        self.deallocate = deallocate
    }

    public static let heap = TableMemory(
        allocate: { UnsafeMutableRawPointer.allocate(byteCount: $0, alignment: 4096) },
        deallocate: { pointer, _ in pointer.deallocate() })
}

/// A worker's flow table: fixed capacity, no locks, no allocation after `init`.
///
/// Set-associative: a flow hashes to one bucket of `ways` 64-byte entries. The occupied
/// entries of a bucket are always a prefix of it (a removal moves the bucket's last
/// entry into the hole), so a lookup stops at the first empty entry: at the loads a
/// table is sized for, a hit or a miss reads one or two cache lines. Dead entries are
/// reclaimed when a lookup or insert meets them and by `sweep`, which the worker calls
/// with a small budget per batch, so expiry never stops the world. When a bucket holds
/// `ways` live flows the insert fails and the caller falls back to a stateless decision.
///
/// Slot numbers returned by `find`/`insert` are valid until the next `find`, `insert`,
/// `remove` or `sweep`.
// @unchecked Sendable: written only by its worker; the control plane reads counts, which may
// lag by a few packets (no torn reads of aligned words on the platforms we run on).
public final class FlowTable: @unchecked Sendable {
    public static let ways = 8

    public let bucketCount: Int
    @usableFromInline let bucketMask: Int
    @usableFromInline let entries: UnsafeMutablePointer<FlowEntry>
    /// Flows per node slot. Written by the worker only, read by the control plane
    /// (status): relaxed atomics, a plain load and store each.
    @usableFromInline let active: UnsafeMutablePointer<Atomic<Int32>>
    /// Per bucket: until when it counts as overflowed (an insert found it full of live
    /// flows). Flows first seen meanwhile were decided by the stateless fallback, so new
    /// flows of that bucket keep that decision until the last of them would have expired.
    @usableFromInline let overflowUntil: UnsafeMutablePointer<UInt64>
    public let nodeSlotCount: Int
    public let timeouts: FlowTimeouts
    /// The timeouts again, indexed by `FlowState.rawValue`: one load per packet.
    @usableFromInline let timeoutByState: UnsafeMutablePointer<UInt64>
    let memory: TableMemory
    let storageBytes: Int
    @usableFromInline var sweepCursor = 0
    /// One pass of the paced expiry over the whole table takes this long (nanoseconds).
    public let sweepPeriod: UInt64
    /// The paced expiry's account: buckets owed since it last ran.
    @usableFromInline var expiry = PacedPass()
    @usableFromInline let live = Atomic<Int>(0)
    /// Where `bucketHead` results go, so that the loads are not optimised away.
    @usableFromInline var touched: UInt64 = 0
    /// The flow sync's bookkeeping (FlowTable+Sync.swift): behind a `let` pointer, so the
    /// per-packet check pays no exclusivity check.
    @usableFromInline let sync: UnsafeMutablePointer<FlowSyncMarks>
    @usableFromInline let dirtyQueue: UnsafeMutablePointer<UInt32>
    @usableFromInline let bucketQueued: UnsafeMutablePointer<UInt64>

    /// Live entries (dead ones not yet reclaimed are counted until they are).
    public var count: Int { live.load(ordering: .relaxed) }
    public var capacity: Int { bucketCount * FlowTable.ways }
    /// Bytes of entry storage, fixed at start.
    public var memoryBytes: Int { storageBytes }

    /// - Parameters:
    ///   - capacity: entries wanted; rounded up to a power-of-two number of buckets.
    ///   - nodeSlots: how many node slots may be referenced, for per-node flow counts.
    ///   - sweepPeriod: how long `expire` takes to look at every entry once; by default
    ///     `defaultSweepPeriod(capacity:)`.
    public init(capacity: Int, nodeSlots: Int, timeouts: FlowTimeouts = FlowTimeouts(),
                memory: TableMemory = .heap, sweepPeriod: UInt64? = nil) {
        precondition(capacity > 0 && nodeSlots > 0 && (sweepPeriod ?? 1) > 0)
        self.sweepPeriod = sweepPeriod ?? FlowTable.defaultSweepPeriod(capacity: capacity)
        precondition(MemoryLayout<FlowEntry>.stride == 64)
        var buckets = 1
        while buckets * FlowTable.ways < capacity { buckets <<= 1 }
        bucketCount = buckets
        bucketMask = buckets - 1
        let slots = buckets * FlowTable.ways
        storageBytes = slots * MemoryLayout<FlowEntry>.stride
        self.memory = memory
        let raw = memory.allocate(storageBytes)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: storageBytes)
        entries = raw.bindMemory(to: FlowEntry.self, capacity: slots)
        active = .allocate(capacity: nodeSlots)
        for i in 0..<nodeSlots { (active + i).initialize(to: Atomic(0)) }
        overflowUntil = .allocate(capacity: buckets)
        overflowUntil.initialize(repeating: 0, count: buckets)
        nodeSlotCount = nodeSlots
        self.timeouts = timeouts
        timeoutByState = .allocate(capacity: 8)
        timeoutByState.initialize(repeating: 0, count: 8)
        for state in [FlowState.synSent, .established, .closing, .udp, .datagram] {
            timeoutByState[Int(state.rawValue)] = timeouts.timeout(for: state)
        }
        let queueCapacity = min(FlowTable.dirtyQueueLimit, buckets)
        sync = .allocate(capacity: 1)
        sync.initialize(to: FlowSyncMarks(queueCapacity: queueCapacity))
        dirtyQueue = .allocate(capacity: queueCapacity)
        dirtyQueue.initialize(repeating: 0, count: queueCapacity)
        let words = (buckets + 63) / 64
        bucketQueued = .allocate(capacity: words)
        bucketQueued.initialize(repeating: 0, count: words)
    }

    deinit {
        memory.deallocate(UnsafeMutableRawPointer(entries), storageBytes)
        active.deinitialize(count: nodeSlotCount).deallocate()
        overflowUntil.deallocate()
        timeoutByState.deallocate()
        sync.deallocate()
        dirtyQueue.deallocate()
        bucketQueued.deallocate()
    }

    /// Whether `hash`'s bucket has been full recently: a flow of it that the table does
    /// not hold may have been decided by the stateless fallback.
    @inlinable @inline(__always)
    public func overflowed(_ hash: UInt64, now: UInt64) -> Bool {
        overflowUntil[bucketBase(hash) / FlowTable.ways] > now
    }

    /// Flows currently held for a node slot (for least-connection scheduling).
    @inlinable @inline(__always)
    public func activeFlows(slot: Int) -> Int32 { (active + slot).pointee.load(ordering: .relaxed) }

    /// A pointer to the per-slot counts, for schedulers that read many of them.
    @inlinable public var activeCounts: UnsafePointer<Atomic<Int32>> { UnsafePointer(active) }

    /// The worker's change of a slot's count (it is the only writer).
    @inlinable @inline(__always)
    func addActive(_ slot: Int, _ n: Int32) {
        let p = active + slot
        p.pointee.store(p.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    @inlinable @inline(__always)
    func addLive(_ n: Int) { live.store(live.load(ordering: .relaxed) &+ n, ordering: .relaxed) }

    @inlinable @inline(__always)
    func bucketBase(_ hash: UInt64) -> Int {
        (Int(truncatingIfNeeded: hash >> 20) & bucketMask) &* FlowTable.ways
    }

    /// Reads the first two entries of `hash`'s bucket (one cache line each), to bring them
    /// into the cache ahead of `find`: at the loads a table is sized for, a flow is
    /// nearly always in one of them.
    @inlinable @inline(__always)
    public func bucketHead(_ hash: UInt64) -> UInt64 {
        let b = bucketBase(hash)
        return entries[b].deadline ^ entries[b &+ 1].deadline
    }

    /// The slot holding a live entry for `key`, or -1.
    @inlinable @inline(__always)
    public func find(_ key: FlowKey, hash: UInt64, now: UInt64) -> Int {
        let base = bucketBase(hash)
        var slot = base
        let end = base &+ FlowTable.ways
        while slot < end {
            let deadline = entries[slot].deadline
            if deadline == 0 { return -1 }
            if entries[slot].key == key {
                if deadline > now { return slot }
                remove(slot)
                return -1
            }
            slot &+= 1
        }
        return -1
    }

    /// The slot holding `key`, live or past its deadline but not yet reclaimed, or -1.
    /// Unlike `find`, it frees nothing: the offload's scan uses it to carry the XDP
    /// program's last stamp into a flow before deciding whether it is over.
    public func slot(of key: FlowKey, hash: UInt64) -> Int {
        let base = bucketBase(hash)
        var slot = base
        let end = base &+ FlowTable.ways
        while slot < end {
            if entries[slot].deadline == 0 { return -1 }
            if entries[slot].key == key { return slot }
            slot &+= 1
        }
        return -1
    }

    /// Stores a new flow; returns its slot, or -1 if the bucket is full of live flows.
    @inlinable
    public func insert(_ key: FlowKey, hash: UInt64, now: UInt64, nodeSlot: UInt32, group: UInt16,
                       state: FlowState) -> Int {
        let base = bucketBase(hash)
        var slot = base
        let end = base &+ FlowTable.ways
        while slot < end {
            let deadline = entries[slot].deadline
            if deadline == 0 { break }
            if deadline <= now {
                // Dead: free it, and look at this slot again (compaction moved another in).
                remove(slot)
                continue
            }
            slot &+= 1
        }
        guard slot < end else {
            let bucket = base / FlowTable.ways
            overflowUntil[bucket] = max(overflowUntil[bucket], deadline(now, state))
            return -1
        }
        entries[slot] = FlowEntry(key: key, deadline: deadline(now, state),
                                  nodeSlot: nodeSlot, group: group, state: state)
        addActive(Int(nodeSlot), 1)
        addLive(1)
        return slot
    }

    @inlinable @inline(__always)
    public func entry(_ slot: Int) -> FlowEntry { entries[slot] }

    @inlinable @inline(__always)
    public func nodeSlot(_ slot: Int) -> Int { Int(entries[slot].nodeSlot) }

    /// Records a packet of an existing flow: its state moves on and its deadline with it.
    @inlinable @inline(__always)
    public func touch(_ slot: Int, proto: UInt8, tcpFlags: UInt8, now: UInt64) {
        touch(slot, state: FlowState.next(from: entries[slot].state, proto: proto, tcpFlags: tcpFlags), now: now)
    }

    /// Records a packet of an existing flow: new state, new deadline.
    @inlinable @inline(__always)
    public func touch(_ slot: Int, state: FlowState, now: UInt64) {
        entries[slot].state = state
        let d = deadline(now, state)
        entries[slot].deadline = d
        if sync.pointee.enabled { noteSync(slot, state: state, deadline: d) }
    }

    /// When a flow in `state` seen at `now` dies.
    @inlinable @inline(__always)
    func deadline(_ now: UInt64, _ state: FlowState) -> UInt64 {
        now &+ timeoutByState[Int(state.rawValue)]
    }

    /// Moves a flow to another node (its node went down).
    @inlinable
    public func reassign(_ slot: Int, nodeSlot: UInt32, group: UInt16) {
        addActive(Int(entries[slot].nodeSlot), -1)
        entries[slot].nodeSlot = nodeSlot
        entries[slot].group = group
        addActive(Int(nodeSlot), 1)
        if sync.pointee.enabled && entries[slot].state != .synSent { markDirty(slot) }
    }

    /// Frees a slot and keeps the bucket's occupied entries a prefix.
    @inlinable
    public func remove(_ slot: Int) {
        guard entries[slot].deadline != 0 else { return }
        addActive(Int(entries[slot].nodeSlot), -1)
        addLive(-1)
        let base = slot & ~(FlowTable.ways &- 1)
        var last = base &+ FlowTable.ways &- 1
        while last > slot && entries[last].deadline == 0 { last &-= 1 }
        if last != slot { entries[slot] = entries[last] }
        entries[last].deadline = 0
    }

    /// Entries `expire` may look at per second: about 1–2% of a core, and the same
    /// share of memory bandwidth.
    public static let maxSweepRate: UInt64 = 4_000_000

    /// One second, or longer for a table too big to look over at `maxSweepRate` in a
    /// second (over 4 M entries: 4 s for 16 M), so that expiry never takes more than a
    /// small, fixed share of the worker whatever the table size.
    public static func defaultSweepPeriod(capacity: Int) -> UInt64 {
        max(FlowTimeouts.seconds, UInt64(capacity) &* (FlowTimeouts.seconds / maxSweepRate))
    }

    /// Paced expiry, for the worker to call every loop: it sweeps as many buckets as the
    /// time since the last call is due, so that the whole table is looked at once per
    /// `sweepPeriod` whatever the packet rate. Its cost per second is fixed; per packet it
    /// falls as the rate rises. (Lookups and inserts also reclaim the dead entries they
    /// meet; this keeps the flow and per-node counts true for flows never seen again.)
    /// At most `maxBuckets` per call, so a call after a long pause stays short; what it
    /// leaves is owed to the next calls. Returns the entries freed.
    @inlinable
    @discardableResult
    public func expire(now: UInt64, maxBuckets: Int = 1024) -> Int {
        let due = expiry.due(now: now, items: bucketCount, period: sweepPeriod, max: maxBuckets)
        return due == 0 ? 0 : sweep(now: now, buckets: due)
    }

    /// Reclaims dead entries in the next `buckets` buckets; returns how many it freed.
    @inlinable
    @discardableResult
    public func sweep(now: UInt64, buckets: Int) -> Int {
        var freed = 0
        var b = 0
        while b < buckets {
            let base = sweepCursor &* FlowTable.ways
            // The occupied entries are a prefix of the bucket: find where it ends (an
            // empty bucket costs one cache line, not `ways`), then go backwards from
            // there, so that compaction only moves entries already looked at.
            var end = base
            let limit = base &+ FlowTable.ways
            while end < limit && entries[end].deadline != 0 { end &+= 1 }
            var slot = end &- 1
            while slot >= base {
                let deadline = entries[slot].deadline
                if deadline != 0 && deadline <= now {
                    remove(slot)
                    freed &+= 1
                }
                slot &-= 1
            }
            sweepCursor = (sweepCursor &+ 1) & bucketMask
            b &+= 1
        }
        return freed
    }
}

/// Work paced by time: of `items` to look over once per `period`, how many are due now.
/// The account keeps at most one whole pass owed, so a call after a long pause stays
/// bounded (`max`), and what it leaves is owed to the next calls. The flow table's expiry
/// and the offload table's scan both keep one.
public struct PacedPass: Sendable {
    /// `now` at the last call, and the item-nanoseconds owed since.
    @usableFromInline var upTo: UInt64 = 0
    @usableFromInline var credit: UInt64 = 0

    @inlinable public init() {}

    @inlinable
    public mutating func due(now: UInt64, items: Int, period: UInt64, max: Int) -> Int {
        guard now > upTo else { return 0 }
        let elapsed = upTo == 0 ? 0 : Swift.min(now &- upTo, period)
        upTo = now
        credit = Swift.min(credit &+ elapsed &* UInt64(items), period &* UInt64(items))
        guard credit >= period else { return 0 }
        let due = Swift.min(Int(credit / period), max)
        credit &-= UInt64(due) &* period
        return due
    }
}

extension FlowTable {
    /// Renumbers node slots after a configuration change: `map` gives each old slot its
    /// new (slot, group), or nil when the node is gone (its flows are dropped and get a
    /// new node on their next packet). Walks the whole table; a control-path operation.
    public func remap(_ map: (UInt32) -> (slot: UInt32, group: UInt16)?) {
        for i in 0..<nodeSlotCount { (active + i).pointee.store(0, ordering: .relaxed) }
        var slot = capacity - 1
        while slot >= 0 {
            if entries[slot].deadline != 0 {
                if let target = map(entries[slot].nodeSlot), Int(target.slot) < nodeSlotCount {
                    entries[slot].nodeSlot = target.slot
                    entries[slot].group = target.group
                    addActive(Int(target.slot), 1)
                } else {
                    // Remove without touching counts (already zeroed): compact by hand.
                    addActive(Int(entries[slot].nodeSlot) % nodeSlotCount, 1)
                    remove(slot)
                }
            }
            slot -= 1
        }
    }
}
