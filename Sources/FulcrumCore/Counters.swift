import Synchronization

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
    /// Frames of offloaded flows that the XDP program forwarded (folded in by `FlowOffload`;
    /// in the group, node and NAT-reply counts, not in `received` and `transmitted`, which
    /// are the worker's own frames).
    case offloaded
    /// Established flows that could not be offloaded: their entry's slots were all taken.
    case offloadTableFull
    /// Offload entries taken back from the XDP program: the flow's next frames reach the
    /// worker (FIN or RST, its node down or disabled, a reused tuple, a new way back, a
    /// change of role, idle past its timeout, a reload that changes its rewrite).
    case offloadWithdrawn

    public var label: String { Self.labels[rawValue] }
    static let labels = allCases.map { MetricLabel.snakeCase(String(describing: $0)) }
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

/// A worker's counters. Each is written by its worker thread alone and read by the
/// control plane, so each is an `Atomic` accessed with relaxed ordering: a load and a
/// store (no read-modify-write, no fence), the same instructions as a plain integer on
/// x86-64 and arm64, and no data race. The class is `@unchecked Sendable` only because
/// it holds pointers; what they point at is atomic. A sum over workers may be a few
/// packets behind, which metrics tolerate.
public final class WorkerCounters: @unchecked Sendable {
    public let groupCount: Int
    public let nodeSlotCount: Int
    @usableFromInline let global: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let drops: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let groups: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let nodes: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline static let kinds = TrafficCounter.allCases.count
    let counts: (global: Int, drops: Int, groups: Int, nodes: Int)

    static func make(_ count: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        let p = UnsafeMutablePointer<Atomic<UInt64>>.allocate(capacity: count)
        for i in 0..<count { (p + i).initialize(to: Atomic(0)) }
        return p
    }

    public init(groups: Int, nodeSlots: Int) {
        groupCount = groups
        nodeSlotCount = nodeSlots
        counts = (GlobalCounter.allCases.count, DropReason.allCases.count, max(1, groups) * WorkerCounters.kinds,
                  max(1, nodeSlots) * WorkerCounters.kinds)
        global = Self.make(counts.global)
        drops = Self.make(counts.drops)
        self.groups = Self.make(counts.groups)
        nodes = Self.make(counts.nodes)
    }

    deinit {
        global.deinitialize(count: counts.global).deallocate()
        drops.deinitialize(count: counts.drops).deallocate()
        groups.deinitialize(count: counts.groups).deallocate()
        nodes.deinitialize(count: counts.nodes).deallocate()
    }

    /// The worker's increment: its own thread is the only writer.
    @inlinable @inline(__always)
    static func add(_ p: UnsafeMutablePointer<Atomic<UInt64>>, _ n: UInt64) {
        p.pointee.store(p.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    @inlinable @inline(__always)
    public func count(_ c: GlobalCounter, _ n: UInt64 = 1) { Self.add(global + c.rawValue, n) }

    @inlinable @inline(__always)
    public func count(_ reason: DropReason) {
        Self.add(drops + reason.rawValue, 1)
        Self.add(global + GlobalCounter.dropped.rawValue, 1)
    }

    @inlinable @inline(__always)
    public func countGroup(_ group: Int, _ kind: TrafficCounter, _ n: UInt64 = 1) {
        Self.add(groups + (group &* WorkerCounters.kinds &+ kind.rawValue), n)
    }

    /// One forwarded packet of a group: its two counters are neighbours.
    @inlinable @inline(__always)
    public func countGroup(_ group: Int, packets: UInt64, bytes: UInt64) {
        let base = groups + group &* WorkerCounters.kinds
        Self.add(base + TrafficCounter.packets.rawValue, packets)
        Self.add(base + TrafficCounter.bytes.rawValue, bytes)
    }

    @inlinable @inline(__always)
    public func countNode(_ slot: Int, packets: UInt64, bytes: UInt64) {
        let base = nodes + slot &* WorkerCounters.kinds
        Self.add(base + TrafficCounter.packets.rawValue, packets)
        Self.add(base + TrafficCounter.bytes.rawValue, bytes)
    }

    @inlinable @inline(__always)
    public func countNode(_ slot: Int, _ kind: TrafficCounter, _ n: UInt64 = 1) {
        Self.add(nodes + (slot &* WorkerCounters.kinds &+ kind.rawValue), n)
    }

    /// Keeps the totals that do not depend on the group layout across a reload (on the
    /// worker's thread, before the new counters are published).
    public func carryOver(from old: WorkerCounters) {
        for i in 0..<counts.global { (global + i).pointee.store((old.global + i).pointee.load(ordering: .relaxed), ordering: .relaxed) }
        for i in 0..<counts.drops { (drops + i).pointee.store((old.drops + i).pointee.load(ordering: .relaxed), ordering: .relaxed) }
    }

    public subscript(_ c: GlobalCounter) -> UInt64 { (global + c.rawValue).pointee.load(ordering: .relaxed) }
    public subscript(_ reason: DropReason) -> UInt64 { (drops + reason.rawValue).pointee.load(ordering: .relaxed) }
    public func group(_ group: Int, _ kind: TrafficCounter) -> UInt64 {
        (groups + (group * WorkerCounters.kinds + kind.rawValue)).pointee.load(ordering: .relaxed)
    }
    public func node(_ slot: Int, _ kind: TrafficCounter) -> UInt64 {
        (nodes + (slot * WorkerCounters.kinds + kind.rawValue)).pointee.load(ordering: .relaxed)
    }
}
