/// What the worker should do with a frame after `Balancer.process`.
public enum Verdict: Equatable, Sendable {
    /// Send the (rewritten) frame out of this data-plane interface.
    case transmit(interface: Int)
    /// Not ours: give it to the kernel.
    case pass
    /// Counted and dropped.
    case drop
}

public enum BalancerSpecError: Error, Equatable, CustomStringConvertible {
    case duplicateService(group: String, service: ServiceKey, otherGroup: String)
    case ambiguousNATReply(group: String, node: ServiceKey, otherGroup: String)
    case tooManyNodeSlots(needed: Int, limit: Int)
    case badInterface(group: String, interface: Int)

    public var description: String {
        switch self {
        case let .duplicateService(group, service, other):
            return "group \(group): \(service) is already served by group \(other)"
        case let .ambiguousNATReply(group, node, other):
            return "group \(group): NAT node \(node) also serves group \(other); its replies could not be told apart"
        case let .tooManyNodeSlots(needed, limit):
            return "configuration needs \(needed) node slots but the data plane was started with \(limit)"
        case let .badInterface(group, interface):
            return "group \(group): interface index \(interface) does not exist"
        }
    }
}

/// One worker's forwarding state and its per-packet decision. Touched only by its worker
/// thread; the control plane changes node state through the methods below on that thread
/// (the worker applies queued changes between batches).
public final class Balancer {
    @usableFromInline struct GroupState {
        @usableFromInline var vip: IPAddress
        @usableFromInline var method: ForwardingMethod
        @usableFromInline var nodeBase: Int
        @usableFromInline var nodeCount: Int
        @usableFromInline var sorrySlot: Int
        @usableFromInline var interface: Int
    }

    @usableFromInline struct SlotState {
        @usableFromInline var address: IPAddress
        @usableFromInline var port: UInt16
        @usableFromInline var mac: MACAddress
        @usableFromInline var hasMAC: Bool
        @usableFromInline var up: Bool
        /// May carry flows: up, MAC known, and (for nodes) eligible in the scheduler.
        /// Kept here so a flow-table hit touches no scheduler.
        @usableFromInline var usable: Bool
        @usableFromInline var group: Int
        @usableFromInline var local: Int
    }

    @usableFromInline struct ReverseTarget {
        @usableFromInline var group: Int
        @usableFromInline var vip: IPAddress
        @usableFromInline var vipPort: UInt16
    }

    public let spec: BalancerSpec
    public let flows: FlowTable
    public let counters: WorkerCounters
    @usableFromInline let services: ServiceTable
    @usableFromInline let natReplies: ServiceTable
    @usableFromInline let reverseTargets: UnsafeMutablePointer<ReverseTarget>
    @usableFromInline let groupStates: UnsafeMutablePointer<GroupState>
    @usableFromInline let slots: UnsafeMutablePointer<SlotState>
    @usableFromInline let schedulers: ContiguousArray<Scheduler>
    @usableFromInline let interfaceMACs: UnsafeMutablePointer<MACAddress>
    @usableFromInline let routes: UnsafeMutablePointer<ReturnRoute>
    @usableFromInline let routeCount: Int
    public let slotCount: Int

    /// - Parameter flows: an existing table to keep (a reload); its node slots must have
    ///   been remapped to this spec's numbering by the caller.
    public init(_ spec: BalancerSpec, flows existing: FlowTable? = nil,
                counters existingCounters: WorkerCounters? = nil) throws {
        self.spec = spec
        let slotCount = spec.nodeSlotCount
        guard slotCount <= spec.maxNodeSlots else {
            throw BalancerSpecError.tooManyNodeSlots(needed: slotCount, limit: spec.maxNodeSlots)
        }
        self.slotCount = slotCount
        flows = existing ?? FlowTable(capacity: spec.flowTableCapacity, nodeSlots: spec.maxNodeSlots,
                                      timeouts: spec.timeouts)
        counters = existingCounters ?? WorkerCounters(groups: spec.groups.count, nodeSlots: spec.maxNodeSlots)

        let endpoints = try spec.endpoints()
        var groupStates: [GroupState] = []
        var slotStates: [SlotState] = []
        var schedulers: ContiguousArray<Scheduler> = []

        for (g, group) in spec.groups.enumerated() {
            guard group.interface >= 0 && group.interface < spec.interfaceMACs.count else {
                throw BalancerSpecError.badInterface(group: group.name, interface: group.interface)
            }
            let base = slotStates.count
            for (i, node) in group.nodes.enumerated() {
                slotStates.append(SlotState(address: node.address, port: node.port, mac: node.mac ?? .zero,
                                            hasMAC: node.mac != nil, up: true, usable: node.mac != nil, group: g, local: i))
            }
            var sorrySlot = -1
            if let sorry = group.sorry {
                sorrySlot = slotStates.count
                slotStates.append(SlotState(address: sorry.address, port: sorry.port, mac: sorry.mac ?? .zero,
                                            hasMAC: sorry.mac != nil, up: true, usable: sorry.mac != nil, group: g, local: -1))
            } else {
                // Keep one slot per group reserved so numbering is stable when a sorry
                // server is added by a reload.
                slotStates.append(SlotState(address: .zero, port: 0, mac: .zero, hasMAC: false, up: false,
                                            usable: false, group: g, local: -1))
            }
            groupStates.append(GroupState(vip: group.vip, method: group.method, nodeBase: base,
                                          nodeCount: group.nodes.count, sorrySlot: sorrySlot,
                                          interface: group.interface))
            let scheduler = Scheduler(kind: group.scheduler,
                                      nodeKeys: group.nodes.map { StableHash.hash($0.address, seed: UInt64($0.port)) },
                                      weights: group.nodes.map(\.weight))
            for (i, node) in group.nodes.enumerated() where node.mac == nil {
                scheduler.setEligible(i, false)
            }
            scheduler.commit()
            schedulers.append(scheduler)
        }

        services = ServiceTable(endpoints.services.map { ($0.key, $0.group) })
        natReplies = ServiceTable(endpoints.replies.enumerated().map { ($0.element.key, $0.offset) })
        let targets = endpoints.replies.map { ReverseTarget(group: $0.group, vip: $0.vip, vipPort: $0.vipPort) }
        reverseTargets = .allocate(capacity: max(1, targets.count))
        reverseTargets.initialize(from: targets, count: targets.count)
        self.groupStates = .allocate(capacity: max(1, groupStates.count))
        self.groupStates.initialize(from: groupStates, count: groupStates.count)
        slots = .allocate(capacity: max(1, slotStates.count))
        slots.initialize(from: slotStates, count: slotStates.count)
        self.schedulers = schedulers
        interfaceMACs = .allocate(capacity: max(1, spec.interfaceMACs.count))
        interfaceMACs.initialize(from: spec.interfaceMACs, count: spec.interfaceMACs.count)
        let sortedRoutes = spec.returnRoutes.sorted { $0.mappedLength > $1.mappedLength }
        routes = .allocate(capacity: max(1, sortedRoutes.count))
        routes.initialize(from: sortedRoutes, count: sortedRoutes.count)
        routeCount = sortedRoutes.count
    }

    deinit {
        reverseTargets.deallocate()
        groupStates.deallocate()
        slots.deallocate()
        interfaceMACs.deallocate()
        routes.deallocate()
    }

    // MARK: - Control (worker thread, between batches)

    /// Health: a node that is down gets no new flows and its flows move on their next packet.
    public func setNodeUp(group: Int, node: Int, _ up: Bool) {
        let slot = groupStates[group].nodeBase + node
        slots[slot].up = up
        schedulers[group].setEligible(node, up && slots[slot].hasMAC)
        slots[slot].usable = schedulers[group].isEligible(node)
    }

    /// MAT: the node's MAC; NAT: the next hop's. nil = unknown: the node is not chosen.
    public func setNodeMAC(group: Int, node: Int, _ mac: MACAddress?) {
        let slot = groupStates[group].nodeBase + node
        slots[slot].mac = mac ?? .zero
        slots[slot].hasMAC = mac != nil
        schedulers[group].setEligible(node, slots[slot].up && mac != nil)
        slots[slot].usable = schedulers[group].isEligible(node)
    }

    public func setSorryMAC(group: Int, _ mac: MACAddress?) {
        let slot = groupStates[group].sorrySlot
        guard slot >= 0 else { return }
        slots[slot].mac = mac ?? .zero
        slots[slot].hasMAC = mac != nil
        slots[slot].usable = mac != nil && slots[slot].up
    }

    /// Weights (static or dynamic). Established flows stay where they are.
    public func setWeights(group: Int, _ weights: [Int]) {
        schedulers[group].setWeights(weights)
    }

    public func scheduler(group: Int) -> Scheduler { schedulers[group] }

    /// Rebuilds what a burst of node changes made stale, once. The worker calls it after
    /// applying a batch of commands; otherwise the next new flow of the group would.
    public func commitChanges() {
        for s in schedulers { s.commit() }
    }

    /// The slot of a group's node (for counters and flow counts).
    public func slot(group: Int, node: Int) -> Int { groupStates[group].nodeBase + node }
    public func sorrySlot(group: Int) -> Int { groupStates[group].sorrySlot }

    /// Periodic work: reclaim a few buckets of dead flows.
    @inlinable
    public func maintain(now: UInt64, buckets: Int = 8) {
        flows.sweep(now: now, buckets: buckets)
    }

    // MARK: - Per packet

    /// Decides what to do with one frame and rewrites it in place when it is forwarded.
    @inlinable
    public func process(_ frame: UnsafeMutableRawPointer, length: Int, now: UInt64) -> Verdict {
        counters.count(.received)
        var p = ParsedPacket()
        var arp = ARPPacket()
        switch PacketParser.parse(frame, length: length, into: &p, arp: &arp) {
        case .ip:
            break
        case .arp, .other:
            counters.count(.passedToKernel)
            return .pass
        case .drop(let reason):
            counters.count(reason)
            return .drop
        }
        guard p.hasPorts else { return notOurs() }
        let key = p.flowKey
        let group = services.lookup(ServiceKey(address: key.destination, proto: key.proto, port: key.destinationPort))
        if group >= 0 {
            return forward(frame, length: length, p, key: key, group: group, now: now)
        }
        let replyKey = p.isICMPError
            ? ServiceKey(address: p.innerDestination, proto: p.innerProto, port: p.innerDestinationPort)
            : ServiceKey(address: p.source, proto: p.proto, port: p.sourcePort)
        let target = natReplies.lookup(replyKey)
        if target >= 0 {
            return reverse(frame, length: length, p, target: reverseTargets[target])
        }
        return notOurs()
    }

    @inlinable @inline(__always)
    func notOurs() -> Verdict {
        counters.count(.notForService)
        counters.count(.passedToKernel)
        return .pass
    }

    @inlinable @inline(__always)
    func forward(_ frame: UnsafeMutableRawPointer, length: Int, _ p: ParsedPacket, key: FlowKey,
                 group g: Int, now: UInt64) -> Verdict {
        let hash = key.stableHash()
        let state = groupStates[g]
        var slot = -1
        let index = flows.find(key, hash: hash, now: now)
        if index >= 0 {
            let entry = flows.entry(index)
            slot = Int(entry.nodeSlot)
            if !slotUsable(slot, group: g) {
                // Its node went down (or the group was reconfigured): move the flow.
                slot = choose(g, state, hash: hash, source: key.source)
                if slot < 0 { counters.count(.noLiveNode); return .drop }
                flows.reassign(index, nodeSlot: UInt32(slot), group: UInt16(g))
                counters.count(.flowsMoved)
            }
            if !p.isICMPError {
                flows.touch(index, state: FlowState.next(from: entry.state, proto: key.proto, tcpFlags: p.tcpFlags),
                            now: now)
            }
        } else {
            if p.isICMPError {
                counters.count(.icmpErrorWithoutFlow)
                return .drop
            }
            slot = choose(g, state, hash: hash, source: key.source)
            if slot < 0 { counters.count(.noLiveNode); return .drop }
            let inserted = flows.insert(key, hash: hash, now: now, nodeSlot: UInt32(slot), group: UInt16(g),
                                        state: FlowState.next(from: nil, proto: key.proto, tcpFlags: p.tcpFlags))
            if inserted < 0 {
                // No room: decide statelessly so every packet of the flow lands alike.
                counters.count(.flowTableFull)
                let fallback = schedulers[g].maglev.lookup(hash)
                if fallback >= 0 { slot = state.nodeBase &+ fallback }
            }
            counters.countGroup(g, .newFlows)
            counters.countNode(slot, .newFlows)
            if slot == state.sorrySlot { counters.countGroup(g, .sorryFlows) }
        }

        let node = slots[slot]
        if state.method == .nat {
            if p.isICMPError { counters.count(.icmpErrorsTranslated) }
            Rewrite.natForward(frame, p, node: node.address,
                               nodePort: node.port == 0 ? key.destinationPort : node.port)
        }
        Rewrite.mat(frame, destinationMAC: node.mac, sourceMAC: interfaceMACs[state.interface])
        let bytes = UInt64(length)
        counters.countGroup(g, .packets)
        counters.countGroup(g, .bytes, bytes)
        counters.countNode(slot, .packets)
        counters.countNode(slot, .bytes, bytes)
        counters.count(.transmitted)
        return .transmit(interface: state.interface)
    }

    /// A node slot may carry a flow if it is up with a known MAC (weight 0 still may:
    /// draining keeps existing flows).
    @inlinable @inline(__always)
    func slotUsable(_ slot: Int, group g: Int) -> Bool {
        slot < slotCount && slots[slot].usable && slots[slot].group == g
    }

    /// A node for a new (or moved) flow: the scheduler's pick, else the sorry server.
    @inlinable
    func choose(_ g: Int, _ state: GroupState, hash: UInt64, source: IPAddress) -> Int {
        let pick = schedulers[g].pick(flowHash: hash, sourceHash: StableHash.hash(source),
                                      activeFlows: flows.activeCounts + state.nodeBase)
        if pick >= 0 { return state.nodeBase &+ pick }
        if state.sorrySlot >= 0 && slots[state.sorrySlot].hasMAC { return state.sorrySlot }
        return -1
    }

    @inlinable @inline(__always)
    func reverse(_ frame: UnsafeMutableRawPointer, length: Int, _ p: ParsedPacket,
                 target: ReverseTarget) -> Verdict {
        let client = p.destination
        var r = 0
        while r < routeCount {
            if routes[r].contains(client) { break }
            r &+= 1
        }
        guard r < routeCount else {
            counters.count(.noRouteToClient)
            return .drop
        }
        if p.isICMPError { counters.count(.icmpErrorsTranslated) }
        Rewrite.natReverse(frame, p, vip: target.vip, vipPort: target.vipPort)
        let route = routes[r]
        Rewrite.mat(frame, destinationMAC: route.nextHopMAC, sourceMAC: interfaceMACs[route.interface])
        counters.count(.natReplies)
        counters.count(.transmitted)
        counters.countGroup(target.group, .bytes, UInt64(length))
        return .transmit(interface: route.interface)
    }
}
