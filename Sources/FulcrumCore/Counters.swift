/// Counters that are not per drop reason, group or node.
public enum GlobalCounter: Int, CaseIterable, Sendable {
    case received = 0
    case transmitted
    case passedToKernel
    case dropped
    /// New flows whose bucket was full: decided by the stateless consistent hash.
    case flowTableFull
    /// Flows whose node left scheduling (down) and were moved on their next packet.
    case flowsMoved
    case natReplies
    case icmpErrorsTranslated
    /// Fragments of TCP/UDP datagrams forwarded (each fragment of a datagram on one path).
    case fragments
    /// ARP requests and neighbour solicitations for VIPs answered by a worker.
    case arpReplies
    case neighborAdvertisements

    public var label: String { MetricLabel.snakeCase(String(describing: self)) }
}

/// Per-group and per-node counter kinds.
public enum TrafficCounter: Int, CaseIterable, Sendable {
    case packets = 0
    case bytes
    case newFlows
    /// Group only: new flows sent to the sorry server.
    case sorryFlows

    public var label: String {
        switch self {
        case .packets: return "packets"
        case .bytes: return "bytes"
        case .newFlows: return "new_flows"
        case .sorryFlows: return "sorry_flows"
        }
    }
}

/// A worker's counters: plain integers owned by the worker thread, read by the control
/// plane (torn reads of a 64-bit aligned word do not happen on the platforms we run on;
/// a sum over workers may be a few packets behind, which metrics tolerate).
public final class WorkerCounters: @unchecked Sendable {
    public let groupCount: Int
    public let nodeSlotCount: Int
    @usableFromInline let global: UnsafeMutablePointer<UInt64>
    @usableFromInline let drops: UnsafeMutablePointer<UInt64>
    @usableFromInline let groups: UnsafeMutablePointer<UInt64>
    @usableFromInline let nodes: UnsafeMutablePointer<UInt64>
    @usableFromInline static let kinds = TrafficCounter.allCases.count

    public init(groups: Int, nodeSlots: Int) {
        groupCount = groups
        nodeSlotCount = nodeSlots
        global = .allocate(capacity: GlobalCounter.allCases.count)
        global.initialize(repeating: 0, count: GlobalCounter.allCases.count)
        drops = .allocate(capacity: DropReason.allCases.count)
        drops.initialize(repeating: 0, count: DropReason.allCases.count)
        self.groups = .allocate(capacity: max(1, groups) * WorkerCounters.kinds)
        self.groups.initialize(repeating: 0, count: max(1, groups) * WorkerCounters.kinds)
        nodes = .allocate(capacity: max(1, nodeSlots) * WorkerCounters.kinds)
        nodes.initialize(repeating: 0, count: max(1, nodeSlots) * WorkerCounters.kinds)
    }

    deinit {
        global.deallocate()
        drops.deallocate()
        groups.deallocate()
        nodes.deallocate()
    }

    @inlinable @inline(__always)
    public func count(_ c: GlobalCounter, _ n: UInt64 = 1) { global[c.rawValue] &+= n }

    @inlinable @inline(__always)
    public func count(_ reason: DropReason) {
        drops[reason.rawValue] &+= 1
        global[GlobalCounter.dropped.rawValue] &+= 1
    }

    @inlinable @inline(__always)
    public func countGroup(_ group: Int, _ kind: TrafficCounter, _ n: UInt64 = 1) {
        groups[group &* WorkerCounters.kinds &+ kind.rawValue] &+= n
    }

    /// One forwarded packet of a group: its two counters are neighbours.
    @inlinable @inline(__always)
    public func countGroup(_ group: Int, packets: UInt64, bytes: UInt64) {
        let base = groups + group &* WorkerCounters.kinds
        base[TrafficCounter.packets.rawValue] &+= packets
        base[TrafficCounter.bytes.rawValue] &+= bytes
    }

    @inlinable @inline(__always)
    public func countNode(_ slot: Int, packets: UInt64, bytes: UInt64) {
        let base = nodes + slot &* WorkerCounters.kinds
        base[TrafficCounter.packets.rawValue] &+= packets
        base[TrafficCounter.bytes.rawValue] &+= bytes
    }

    @inlinable @inline(__always)
    public func countNode(_ slot: Int, _ kind: TrafficCounter, _ n: UInt64 = 1) {
        nodes[slot &* WorkerCounters.kinds &+ kind.rawValue] &+= n
    }

    /// Keeps the totals that do not depend on the group layout across a reload.
    public func carryOver(from old: WorkerCounters) {
        global.update(from: old.global, count: GlobalCounter.allCases.count)
        drops.update(from: old.drops, count: DropReason.allCases.count)
    }

    public subscript(_ c: GlobalCounter) -> UInt64 { global[c.rawValue] }
    public subscript(_ reason: DropReason) -> UInt64 { drops[reason.rawValue] }
    public func group(_ group: Int, _ kind: TrafficCounter) -> UInt64 {
        groups[group * WorkerCounters.kinds + kind.rawValue]
    }
    public func node(_ slot: Int, _ kind: TrafficCounter) -> UInt64 {
        nodes[slot * WorkerCounters.kinds + kind.rawValue]
    }
}
