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
    @inlinable
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

/// One flow. 64 bytes: one cache line.
public struct FlowEntry: Sendable {
    public var key: FlowKey
    /// Monotonic nanoseconds after which the entry is dead.
    public var deadline: UInt64
    /// The node, as a slot number the worker assigns (group base + index in group).
    public var nodeSlot: UInt32
    public var group: UInt16
    public var state: FlowState

    @inlinable
    public init(key: FlowKey, deadline: UInt64, nodeSlot: UInt32, group: UInt16, state: FlowState) {
        self.key = key
        self.deadline = deadline
        self.nodeSlot = nodeSlot
        self.group = group
        self.state = state
    }
}

/// A worker's flow table: fixed capacity, no locks, no allocation after `init`.
///
/// Set-associative: a flow hashes to one bucket of `ways` slots. A separate array of
/// 32-bit tags (one per slot, 0 = empty) lets a lookup touch one cache line of tags and
/// one of entries. Dead entries are reclaimed when an insert meets them and by `sweep`,
/// which the worker calls with a small budget per batch, so expiry costs a little on
/// every batch and never stops the world. When a bucket has no free or dead slot the
/// insert fails and the caller falls back to a stateless decision.
public final class FlowTable {
    public static let ways = 8

    public let bucketCount: Int
    @usableFromInline let bucketMask: Int
    @usableFromInline let tags: UnsafeMutablePointer<UInt32>
    @usableFromInline let entries: UnsafeMutablePointer<FlowEntry>
    @usableFromInline let active: UnsafeMutablePointer<Int32>
    public let nodeSlotCount: Int
    public let timeouts: FlowTimeouts
    @usableFromInline var sweepCursor = 0
    /// Live entries (dead ones not yet reclaimed are still counted until they are).
    public var count: Int { liveCount }
    @usableFromInline var liveCount = 0

    public var capacity: Int { bucketCount * FlowTable.ways }

    /// - Parameters:
    ///   - capacity: entries wanted; rounded up to a power-of-two number of buckets.
    ///   - nodeSlots: how many node slots may be referenced, for per-node flow counts.
    public init(capacity: Int, nodeSlots: Int, timeouts: FlowTimeouts = FlowTimeouts()) {
        precondition(capacity > 0 && nodeSlots > 0)
        var buckets = 1
        while buckets * FlowTable.ways < capacity { buckets <<= 1 }
        bucketCount = buckets
        bucketMask = buckets - 1
        let slots = buckets * FlowTable.ways
        tags = .allocate(capacity: slots)
        tags.initialize(repeating: 0, count: slots)
        entries = .allocate(capacity: slots)
        active = .allocate(capacity: nodeSlots)
        active.initialize(repeating: 0, count: nodeSlots)
        nodeSlotCount = nodeSlots
        self.timeouts = timeouts
    }

    deinit {
        tags.deallocate()
        entries.deallocate()
        active.deallocate()
    }

    public static var bytesPerEntry: Int { MemoryLayout<FlowEntry>.stride + MemoryLayout<UInt32>.stride }

    @inlinable @inline(__always)
    static func tag(_ hash: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: hash >> 32) | 1 }

    /// Flows currently held for a node slot (for least-connection scheduling).
    @inlinable @inline(__always)
    public func activeFlows(slot: Int) -> Int32 { active[slot] }

    /// A pointer to the per-slot counts, for schedulers that read many of them.
    @inlinable public var activeCounts: UnsafePointer<Int32> { UnsafePointer(active) }

    /// The slot holding a live entry for `key`, or -1.
    @inlinable
    public func find(_ key: FlowKey, hash: UInt64, now: UInt64) -> Int {
        let base = (Int(truncatingIfNeeded: hash) & bucketMask) &* FlowTable.ways
        let t = FlowTable.tag(hash)
        var i = 0
        while i < FlowTable.ways {
            let slot = base &+ i
            if tags[slot] == t && entries[slot].key == key {
                if entries[slot].deadline > now { return slot }
                remove(slot)
                return -1
            }
            i &+= 1
        }
        return -1
    }

    /// Stores a new flow; returns its slot, or -1 if the bucket is full of live flows.
    @inlinable
    public func insert(_ key: FlowKey, hash: UInt64, now: UInt64, nodeSlot: UInt32, group: UInt16,
                       state: FlowState) -> Int {
        let base = (Int(truncatingIfNeeded: hash) & bucketMask) &* FlowTable.ways
        var i = 0
        var chosen = -1
        while i < FlowTable.ways {
            let slot = base &+ i
            if tags[slot] == 0 { chosen = slot; break }
            if entries[slot].deadline <= now {
                remove(slot)
                chosen = slot
                break
            }
            i &+= 1
        }
        guard chosen >= 0 else { return -1 }
        tags[chosen] = FlowTable.tag(hash)
        entries[chosen] = FlowEntry(key: key, deadline: now &+ timeouts.timeout(for: state),
                                    nodeSlot: nodeSlot, group: group, state: state)
        active[Int(nodeSlot)] &+= 1
        liveCount &+= 1
        return chosen
    }

    @inlinable @inline(__always)
    public func entry(_ slot: Int) -> FlowEntry { entries[slot] }

    /// Records a packet of an existing flow: new state, new deadline.
    @inlinable @inline(__always)
    public func touch(_ slot: Int, state: FlowState, now: UInt64) {
        entries[slot].state = state
        entries[slot].deadline = now &+ timeouts.timeout(for: state)
    }

    /// Moves a flow to another node (its node went down).
    @inlinable
    public func reassign(_ slot: Int, nodeSlot: UInt32, group: UInt16) {
        active[Int(entries[slot].nodeSlot)] &-= 1
        entries[slot].nodeSlot = nodeSlot
        entries[slot].group = group
        active[Int(nodeSlot)] &+= 1
    }

    @inlinable
    public func remove(_ slot: Int) {
        guard tags[slot] != 0 else { return }
        tags[slot] = 0
        active[Int(entries[slot].nodeSlot)] &-= 1
        liveCount &-= 1
    }

    /// Reclaims dead entries in the next `buckets` buckets; returns how many it freed.
    @inlinable
    @discardableResult
    public func sweep(now: UInt64, buckets: Int) -> Int {
        var freed = 0
        var b = 0
        while b < buckets {
            let base = sweepCursor &* FlowTable.ways
            var i = 0
            while i < FlowTable.ways {
                let slot = base &+ i
                if tags[slot] != 0 && entries[slot].deadline <= now {
                    remove(slot)
                    freed &+= 1
                }
                i &+= 1
            }
            sweepCursor = (sweepCursor &+ 1) & bucketMask
            b &+= 1
        }
        return freed
    }

    /// Drops every flow (used when the table is replaced, and by tests).
    public func removeAll() {
        for slot in 0..<capacity where tags[slot] != 0 { remove(slot) }
    }
}
