import FulcrumCore
import Synchronization

/// A worker's end of the flow sync: two fixed rings to and from the sync thread, the
/// switches it sets, and counters with one writer (the worker), read as relaxed atomics.
/// On the active, the worker moves its dirty flows into `outbound` between batches (and,
/// when a standby joins, every flow: the bulk transfer); on the standby it holds what
/// arrives in `inbound` in its flow table, ready for a takeover.
public final class WorkerSync: Sendable {
    public static let ringCapacity = 16384
    public let outbound = SPSCRing<FlowSyncRecord>(capacity: WorkerSync.ringCapacity)
    public let inbound = SPSCRing<FlowSyncRecord>(capacity: WorkerSync.ringCapacity)
    /// Flows are marked when they change (the flow sync is configured).
    public let marking = Atomic<Bool>(false)
    /// Dirty flows are exported (this LB is active and a standby follows).
    public let exporting = Atomic<Bool>(false)
    /// A bulk transfer asked for (a number that goes up), and the last one whose every
    /// record is in `outbound`.
    public let bulkRequested = Atomic<UInt64>(0)
    public let bulkDone = Atomic<UInt64>(0)
    public let exported = Atomic<UInt64>(0)
    /// Flows that needed no record (the standby's stateless answer is theirs).
    public let skipped = Atomic<UInt64>(0)
    public let imported = Atomic<UInt64>(0)
    /// Records the standby could not hold, by reason.
    public let unknownService = Atomic<UInt64>(0)
    public let unknownNode = Atomic<UInt64>(0)
    public let tableFull = Atomic<UInt64>(0)

    public init() {}

    func add(_ counter: borrowing Atomic<UInt64>, _ n: Int) {
        if n > 0 { counter.store(counter.load(ordering: .relaxed) &+ UInt64(n), ordering: .relaxed) }
    }
}

extension Worker {
    /// The flow sync's share of a turn of the loop; true while a bulk transfer or a backlog
    /// has more to give (the loop then does not sleep long).
    func syncTurn(now: UInt64) -> Bool {
        let b = balancer
        if sync.inbound.count > 0 {
            var held = 0, noService = 0, noNode = 0, full = 0
            sync.inbound.drain(limit: WorkerSync.ringCapacity) { record in
                switch b.importSync(record, now: now) {
                case .held: held &+= 1
                case .unknownService: noService &+= 1
                case .unknownNode: noNode &+= 1
                case .tableFull: full &+= 1
                }
            }
            sync.add(sync.imported, held)
            sync.add(sync.unknownService, noService)
            sync.add(sync.unknownNode, noNode)
            sync.add(sync.tableFull, full)
        }
        guard sync.exporting.load(ordering: .acquiring) else { return false }
        let requested = sync.bulkRequested.load(ordering: .acquiring)
        if requested != bulkSeen {
            bulkSeen = requested
            b.flows.startBulk()
        }
        let r = b.exportSync(into: sync.outbound, now: now)
        sync.add(sync.exported, r.exported)
        sync.add(sync.skipped, r.skipped)
        let pending = b.flows.bulkPending
        if !pending && sync.bulkDone.load(ordering: .relaxed) != bulkSeen {
            sync.bulkDone.store(bulkSeen, ordering: .releasing)
        }
        return pending || b.flows.syncBacklog.buckets > 0
    }
}
