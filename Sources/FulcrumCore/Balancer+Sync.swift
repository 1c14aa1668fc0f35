/// The flow sync at the balancer: turning a flow into a record the standby can use (the
/// active's side) and a record into a flow (the standby's). Worker thread, between batches.
extension Balancer {
    /// Whether the standby needs a record for the flow at `slot`: not when the decision it
    /// would make for the flow's next packet after a takeover is the flow's node anyway,
    /// and the standby was never told otherwise. That decision is `consistentChoice` (the
    /// same Maglev lookup on both LBs) for a TCP segment that is not a SYN, and for any
    /// packet under Maglev and sh, whose scheduler is that lookup; a UDP datagram of an
    /// unknown flow under rr, wrr, lc or wlc is scheduled afresh (nothing tells it from a
    /// first one), so such flows always travel. Under Maglev and sh that saves most
    /// records; under the others, for TCP, one in the number of nodes.
    @inlinable
    public func syncRecord(slot: Int, now: UInt64) -> FlowSyncRecord? {
        let e = flows.entry(slot)
        let g = Int(e.group)
        let node = Int(e.nodeSlot)
        guard g < spec.groups.count, node < slotCount else { return nil }
        let kind = schedulers[g].kind
        if e.syncFlags & FlowSyncFlag.sent == 0
            && (e.key.proto == IPProtocol.tcp || kind == .maglev || kind == .sh)
            && consistentChoice(g, groupStates[g], hash: e.key.stableHash(), source: e.key.source) == node {
            return nil
        }
        return FlowSyncRecord(key: e.key, node: slots[node].address, nodePort: slots[node].port, state: e.state,
                              lifetime: FlowSyncRecord.lifetime(deadline: e.deadline, now: now), exportedAt: now)
    }

    /// Moves the table's dirty flows (and, during a bulk transfer, every flow) into `ring`
    /// as records, while it has room. Returns (records exported, flows that needed none).
    @discardableResult
    public func exportSync(into ring: SPSCRing<FlowSyncRecord>, now: UInt64, limit: Int = 4096,
                           bulkBuckets: Int = 4096) -> (exported: Int, skipped: Int) {
        var exported = 0, skipped = 0
        // A local function, not a closure value: passed down non-escaping, it allocates nothing.
        func take(_ slot: Int) -> FlowSyncTake {
            guard let record = syncRecord(slot: slot, now: now) else {
                skipped &+= 1
                return .skipped
            }
            guard ring.push(record) else { return .full }
            exported &+= 1
            return .taken
        }
        flows.collectDirty(now: now, limit: limit, take)
        if flows.bulkPending { flows.bulk(now: now, buckets: bulkBuckets, take) }
        return (exported, skipped)
    }

    /// Why a record could not be held.
    public enum SyncImport: Equatable, Sendable {
        case held
        /// No group serves the record's VIP, protocol and port here.
        case unknownService
        /// The group has no such node (or sorry server) here.
        case unknownNode
        /// The flow's bucket is full of live flows.
        case tableFull
    }

    /// The standby's side: holds the active's flow in this worker's table, keyed and hashed
    /// as this LB will route it once active, to the node the record names, for its lifetime.
    @discardableResult
    public func importSync(_ record: FlowSyncRecord, now: UInt64) -> SyncImport {
        let key = record.key
        let g = services.lookup(ServiceKey(address: key.destination, proto: key.proto, port: key.destinationPort))
        guard g >= 0 else { return .unknownService }
        let state = groupStates[g]
        var slot = -1
        var i = 0
        while i < state.nodeCount {
            let s = state.nodeBase &+ i
            if slots[s].address == record.node && slots[s].port == record.nodePort { slot = s; break }
            i &+= 1
        }
        if slot < 0, state.sorrySlot >= 0, slots[state.sorrySlot].address == record.node,
           slots[state.sorrySlot].port == record.nodePort {
            slot = state.sorrySlot
        }
        guard slot >= 0 else { return .unknownNode }
        let deadline = now &+ UInt64(record.lifetime) &* 1_000_000_000
        let held = flows.upsert(key, hash: key.stableHash(), now: now, nodeSlot: UInt32(slot), group: UInt16(g),
                                state: record.state, deadline: deadline, order: record.exportedAt)
        return held < 0 ? .tableFull : .held
    }
}
