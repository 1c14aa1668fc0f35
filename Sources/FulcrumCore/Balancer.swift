/// What the worker should do with a frame after `Balancer.process`.
public enum Verdict: Equatable, Sendable {
    /// Send the (rewritten) frame out of this data-plane interface.
    case transmit(interface: Int)
    /// The frame was turned into an answer (an ARP reply or a neighbour advertisement
    /// for a VIP): send it, at its new length, out of the interface it came in on.
    case answer(AnswerFrame)
    /// Not ours: give it to the kernel.
    case pass
    /// Counted and dropped.
    case drop
}

/// Where an answer goes and how long it is, in one word, so that a `Verdict` stays a
/// word and a tag: the worker writes one per packet.
public struct AnswerFrame: Equatable, Sendable {
    @usableFromInline let packed: Int

    @inlinable
    public init(interface: Int, length: Int) { packed = length << 8 | interface & 0xFF }

    @inlinable public var interface: Int { packed & 0xFF }
    @inlinable public var length: Int { packed >> 8 }
}

public enum BalancerSpecError: Error, Equatable, CustomStringConvertible {
    case duplicateService(group: String, service: ServiceKey, otherGroup: String)
    case ambiguousNATReply(group: String, node: ServiceKey, otherGroup: String)
    case tooManyNodeSlots(needed: Int, limit: Int)
    case tooManyGroups(count: Int, limit: Int)
    case badInterface(group: String, interface: Int)

    public var description: String {
        switch self {
        case let .duplicateService(group, service, other):
            return "group \(group): \(service) is already served by group \(other)"
        case let .ambiguousNATReply(group, node, other):
            return "group \(group): NAT node \(node) also serves group \(other); its replies could not be told apart"
        case let .tooManyGroups(count, limit):
            return "configuration has \(count) groups; the data plane numbers at most \(limit)"
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
        /// The largest frame the group's interface sends (its MTU plus the Ethernet header).
        @usableFromInline var maxFrame: Int
    }

    @usableFromInline struct SlotState {
        @usableFromInline var address: IPAddress
        @usableFromInline var port: UInt16
        /// Toward this node: its MAC (MAT) or its next hop's (NAT), from the group's interface.
        @usableFromInline var ethernet: EthernetAddresses
        @usableFromInline var hasMAC: Bool
        @usableFromInline var up: Bool
        /// Not disabled by the operator (`NodeSpec.enabled`).
        @usableFromInline var enabled: Bool
        /// May carry flows: up, enabled, MAC known, and (for nodes) eligible in the scheduler.
        /// Kept here so a flow-table hit touches no scheduler.
        @usableFromInline var usable: Bool
        @usableFromInline var group: Int
        @usableFromInline var local: Int
    }

    @usableFromInline struct ReverseTarget {
        @usableFromInline var group: Int
        @usableFromInline var vip: IPAddress
        @usableFromInline var vipPort: UInt16
        /// The interface the group's nodes are reached through: a reply is genuine only
        /// when it arrives there.
        @usableFromInline var nodeInterface: Int
    }

    public let spec: BalancerSpec
    public let flows: FlowTable
    public let counters: WorkerCounters
    @usableFromInline let services: ServiceTable
    @usableFromInline let natReplies: ServiceTable
    /// (VIP, protocol, port 0) → the group, where only one group serves that VIP and
    /// protocol: the group of a later fragment, which has no port.
    @usableFromInline let groupsByVIP: ServiceTable
    /// (NAT node, protocol, port 0) → a reverse target, where all of that node's targets
    /// share one VIP: the way back for a reply's later fragments.
    @usableFromInline let repliesByNode: ServiceTable
    /// (VIP, 0, 0) for every VIP: the addresses ARP and NS are answered for.
    @usableFromInline let vips: ServiceTable
    /// How many bytes the frames of the batch being processed may grow to (an answer can
    /// be longer than the request it replaces).
    @usableFromInline var frameCapacity = 0
    public let fragments = FragmentTable()
    @usableFromInline let reverseTargets: UnsafeMutablePointer<ReverseTarget>
    @usableFromInline let groupStates: UnsafeMutablePointer<GroupState>
    @usableFromInline let slots: UnsafeMutablePointer<SlotState>
    @usableFromInline let schedulers: ContiguousArray<Scheduler>
    @usableFromInline let interfaceMACs: UnsafeMutablePointer<MACAddress>
    /// How many `interfaceMACs` (and `interfaceMaxFrames`) there are.
    @usableFromInline let interfaceCount: Int
    @usableFromInline let interfaceMaxFrames: UnsafeMutablePointer<Int>
    /// Where NAT replies go (the kernel's routes and neighbours, and `routes:`
    /// overrides), as the per-reply lookup reads it: behind a `let` pointer, so a reply
    /// pays neither ARC nor a dynamic exclusivity check (a `var` on a class would).
    /// Swapped between batches by `setRouting`; `routingOwner` keeps the table alive.
    @usableFromInline let routingView: UnsafeMutablePointer<RoutingView>
    var routingOwner: RoutingTable

    @usableFromInline struct RoutingView {
        @usableFromInline var hot: UnsafeMutablePointer<HotRoute>
        @usableFromInline var count: Int
        @usableFromInline unowned(unsafe) var table: RoutingTable

        init(_ table: RoutingTable) {
            hot = table.hot
            count = table.routeCount
            self.table = table
        }
    }
    /// The XDP offload table this balancer writes established flows to (`FlowOffload`,
    /// Balancer+Offload.swift), behind a `let` pointer like `routingView`.
    @usableFromInline let offloadView: UnsafeMutablePointer<OffloadView>
    public internal(set) var offload: FlowOffload?
    /// Clients learnt from their ARP and NS for the VIPs.
    public let learned = LearnedNeighbors()
    /// Destinations replies could not be sent to since the worker last took them.
    @usableFromInline let unrouted: UnsafeMutablePointer<UnroutedReply>
    @usableFromInline static let unroutedCapacity = 16
    public private(set) var unroutedCount = 0
    public let slotCount: Int
    let single = PacketBatch(capacity: 1)

    /// - Parameter flows: an existing table to keep (a reload); its node slots must have
    ///   been remapped to this spec's numbering by the caller.
    /// - Parameter routing: where NAT replies go; by default the spec's `returnRoutes`.
    public init(_ spec: BalancerSpec, flows existing: FlowTable? = nil,
                counters existingCounters: WorkerCounters? = nil, routing: RoutingTable? = nil) throws {
        self.spec = spec
        let table = routing ?? RoutingTable(
            routes: spec.returnRoutes.map {
                ClientRoute(prefix: $0.prefix, prefixLength: $0.prefixLength, interface: $0.interface,
                            gateway: .zero, gatewayMAC: $0.nextHopMAC, isOverride: true)
            }, neighbors: [:], version: 0, interfaceMACs: spec.interfaceMACs)
        routingOwner = table
        let slotCount = spec.nodeSlotCount
        guard slotCount <= spec.maxNodeSlots else {
            throw BalancerSpecError.tooManyNodeSlots(needed: slotCount, limit: spec.maxNodeSlots)
        }
        // Flow entries and the batch scratch hold a group in 16 bits.
        guard spec.groups.count <= Int(UInt16.max) else {
            throw BalancerSpecError.tooManyGroups(count: spec.groups.count, limit: Int(UInt16.max))
        }
        self.slotCount = slotCount
        flows = existing ?? FlowTable(capacity: spec.flowTableCapacity, nodeSlots: spec.maxNodeSlots,
                                      timeouts: spec.timeouts)
        counters = existingCounters ?? WorkerCounters(groups: spec.groups.count, nodeSlots: spec.maxNodeSlots)

        let endpoints = try spec.endpoints()
        var groupStates: [GroupState] = []
        var slotStates: [SlotState] = []
        let maxFrames = spec.interfaceMACs.indices.map {
            $0 < spec.interfaceMTUs.count ? spec.interfaceMTUs[$0] &+ 14 : Int.max
        }
        var schedulers: ContiguousArray<Scheduler> = []

        for (g, group) in spec.groups.enumerated() {
            guard group.interface >= 0 && group.interface < spec.interfaceMACs.count else {
                throw BalancerSpecError.badInterface(group: group.name, interface: group.interface)
            }
            let base = slotStates.count
            let interfaceMAC = spec.interfaceMACs[group.interface]
            for (i, node) in group.nodes.enumerated() {
                slotStates.append(SlotState(address: node.address, port: node.port,
                                            ethernet: EthernetAddresses(toward: node.mac, from: interfaceMAC),
                                            hasMAC: node.mac != nil, up: true, enabled: node.enabled,
                                            usable: node.mac != nil && node.enabled, group: g, local: i))
            }
            var sorrySlot = -1
            if let sorry = group.sorry {
                sorrySlot = slotStates.count
                slotStates.append(SlotState(address: sorry.address, port: sorry.port,
                                            ethernet: EthernetAddresses(toward: sorry.mac, from: interfaceMAC),
                                            hasMAC: sorry.mac != nil, up: true, enabled: true, usable: sorry.mac != nil,
                                            group: g, local: -1))
            } else {
                // Keep one slot per group reserved so numbering is stable when a sorry
                // server is added by a reload.
                slotStates.append(SlotState(address: .zero, port: 0, ethernet: .zero, hasMAC: false, up: false,
                                            enabled: true, usable: false, group: g, local: -1))
            }
            groupStates.append(GroupState(vip: group.vip, method: group.method, nodeBase: base,
                                          nodeCount: group.nodes.count, sorrySlot: sorrySlot,
                                          interface: group.interface, maxFrame: maxFrames[group.interface]))
            let scheduler = Scheduler(kind: group.scheduler,
                                      nodeKeys: Balancer.nodeKeys(group),
                                      weights: group.nodes.map(\.weight))
            for (i, node) in group.nodes.enumerated() where node.mac == nil || !node.enabled {
                scheduler.setEligible(i, false)
            }
            scheduler.commit()
            schedulers.append(scheduler)
        }

        services = ServiceTable(endpoints.services.map { ($0.key, $0.group) })
        natReplies = ServiceTable(endpoints.replies.enumerated().map { ($0.element.key, $0.offset) })
        vips = ServiceTable(Array(Set(spec.groups.map(\.vip))).map { (ServiceKey(address: $0, proto: 0, port: 0), 0) })
        groupsByVIP = ServiceTable(Self.unambiguous(spec.groups.enumerated().map {
            (ServiceKey(address: $0.element.vip, proto: $0.element.proto, port: 0), $0.offset, $0.offset)
        }))
        repliesByNode = ServiceTable(Self.unambiguous(endpoints.replies.enumerated().map {
            (ServiceKey(address: $0.element.key.address, proto: $0.element.key.proto, port: 0), $0.offset,
             Int(truncatingIfNeeded: $0.element.vip.low ^ $0.element.vip.high))
        }))
        let targets = endpoints.replies.map {
            ReverseTarget(group: $0.group, vip: $0.vip, vipPort: $0.vipPort, nodeInterface: spec.groups[$0.group].interface)
        }
        reverseTargets = .allocate(capacity: max(1, targets.count))
        reverseTargets.initialize(from: targets, count: targets.count)
        self.groupStates = .allocate(capacity: max(1, groupStates.count))
        self.groupStates.initialize(from: groupStates, count: groupStates.count)
        slots = .allocate(capacity: max(1, slotStates.count))
        slots.initialize(from: slotStates, count: slotStates.count)
        self.schedulers = schedulers
        interfaceCount = spec.interfaceMACs.count
        interfaceMACs = .allocate(capacity: max(1, spec.interfaceMACs.count))
        interfaceMACs.initialize(from: spec.interfaceMACs, count: spec.interfaceMACs.count)
        interfaceMaxFrames = .allocate(capacity: max(1, maxFrames.count))
        interfaceMaxFrames.initialize(from: maxFrames, count: maxFrames.count)
        // Raw allocations come after the last `throw`: a class whose init throws never
        // runs its deinit, so anything allocated before would leak.
        routingView = .allocate(capacity: 1)
        routingView.initialize(to: RoutingView(table))
        unrouted = .allocate(capacity: Balancer.unroutedCapacity)
        offloadView = .allocate(capacity: 1)
        offloadView.initialize(to: OffloadView())
    }

    /// The (key, value) pairs whose key has one identity among them (`same`): a key
    /// shared by pairs of different identities is left out.
    static func unambiguous(_ pairs: [(ServiceKey, Int, Int)]) -> [(ServiceKey, Int)] {
        var seen: [ServiceKey: (value: Int, identity: Int)] = [:]
        var ambiguous = Set<ServiceKey>()
        for (key, value, identity) in pairs {
            if let other = seen[key] {
                if other.identity != identity { ambiguous.insert(key) }
            } else {
                seen[key] = (value, identity)
            }
        }
        return seen.filter { !ambiguous.contains($0.key) }.map { ($0.key, $0.value.value) }
    }

    deinit {
        reverseTargets.deallocate()
        groupStates.deallocate()
        slots.deallocate()
        interfaceMACs.deallocate()
        interfaceMaxFrames.deallocate()
        unrouted.deallocate()
        routingView.deallocate()
        offloadView.deallocate()
    }

    // MARK: - Control (worker thread, between batches)

    /// Health: a node that is down gets no new flows and its flows move on their next packet.
    public func setNodeUp(group: Int, node: Int, _ up: Bool) {
        guard isNode(group: group, node: node) else { return }
        let slot = groupStates[group].nodeBase + node
        slots[slot].up = up
        schedulers[group].setEligible(node, up && slots[slot].hasMAC && slots[slot].enabled)
        slots[slot].usable = schedulers[group].isEligible(node)
        if !up { withdrawOffloaded(slot: slot) }
    }

    /// The operator's switch: disabled, a node is treated as down whatever its health.
    public func setNodeEnabled(group: Int, node: Int, _ enabled: Bool) {
        guard isNode(group: group, node: node) else { return }
        let slot = groupStates[group].nodeBase + node
        slots[slot].enabled = enabled
        schedulers[group].setEligible(node, slots[slot].up && slots[slot].hasMAC && enabled)
        slots[slot].usable = schedulers[group].isEligible(node)
        if !enabled { withdrawOffloaded(slot: slot) }
    }

    /// Health of the sorry server: a down one takes no new flows either.
    public func setSorryUp(group: Int, _ up: Bool) {
        guard group >= 0 && group < spec.groups.count else { return }
        let slot = groupStates[group].sorrySlot
        guard slot >= 0 else { return }
        slots[slot].up = up
        slots[slot].usable = up && slots[slot].hasMAC
        if !up { withdrawOffloaded(slot: slot) }
    }

    /// MAT: the node's MAC; NAT: the next hop's. nil = unknown: the node is not chosen.
    public func setNodeMAC(group: Int, node: Int, _ mac: MACAddress?) {
        guard isNode(group: group, node: node) else { return }
        let slot = groupStates[group].nodeBase + node
        slots[slot].ethernet = ethernet(toward: mac, group: group)
        slots[slot].hasMAC = mac != nil
        schedulers[group].setEligible(node, slots[slot].up && mac != nil && slots[slot].enabled)
        slots[slot].usable = schedulers[group].isEligible(node)
        withdrawOffloaded(slot: slot)
    }

    func ethernet(toward mac: MACAddress?, group: Int) -> EthernetAddresses {
        EthernetAddresses(toward: mac, from: interfaceMACs[groupStates[group].interface])
    }

    public func setSorryMAC(group: Int, _ mac: MACAddress?) {
        guard group >= 0 && group < spec.groups.count else { return }
        let slot = groupStates[group].sorrySlot
        guard slot >= 0 else { return }
        slots[slot].ethernet = ethernet(toward: mac, group: group)
        slots[slot].hasMAC = mac != nil
        slots[slot].usable = mac != nil && slots[slot].up
        withdrawOffloaded(slot: slot)
    }


    /// Weights (static or dynamic). Established flows stay where they are.
    /// - Parameter table: the group's Maglev table for these weights, built by the caller
    ///   off the packet thread (`MaglevTable(keys: Balancer.nodeKeys(group), weights:)`);
    ///   nil builds it here.
    public func setWeights(group: Int, _ weights: [Int], table: MaglevTable? = nil) {
        guard group >= 0 && group < spec.groups.count, weights.count == schedulers[group].nodeCount,
              weights.allSatisfy({ $0 >= 0 }) else { return }
        schedulers[group].setWeights(weights, table: table)
    }

    /// A group's nodes' stable identities, as its scheduler and Maglev table key them.
    public static func nodeKeys(_ group: GroupSpec) -> [UInt64] {
        group.nodes.map { StableHash.hash($0.address, seed: UInt64($0.port)) }
    }

    /// Whether (group, node) names a node of this layout: a command built for another
    /// layout is refused rather than written through a pointer out of bounds.
    public func isNode(group: Int, node: Int) -> Bool {
        group >= 0 && group < spec.groups.count && node >= 0 && node < groupStates[group].nodeCount
    }

    public func scheduler(group: Int) -> Scheduler { schedulers[group] }

    /// Rebuilds what a burst of node changes made stale, once. The worker calls it after
    /// applying a batch of commands; otherwise the next new flow of the group would.
    public func commitChanges() {
        for s in schedulers { s.commit() }
    }

    /// The slot of a group's node (for counters and flow counts).
    public func slot(group: Int, node: Int) -> Int { groupStates[group].nodeBase + node }

    /// Periodic work, every worker loop: reclaim dead flows, paced by time (see
    /// `FlowTable.expire`).
    @inlinable
    public func maintain(now: UInt64) {
        flows.expire(now: now)
        if let offload {
            offload.scan(now: now, flows: flows, counters: counters) { client in
                routeIfKnown(to: client).hop.map { ($0.ethernet, $0.interface) }
            }
        }
    }

    // MARK: - Per packet

    /// Decides what to do with one frame and rewrites it in place when it is forwarded.
    /// The worker uses `process(_:count:now:)`, which does the same for a whole batch.
    /// (A batch of one: there is one per-packet path, and tests of either use it.)
    public func process(_ frame: UnsafeMutableRawPointer, length: Int, now: UInt64, ingress: Int = 0,
                        capacity: Int? = nil) -> Verdict {
        single.frames[0] = frame
        single.lengths[0] = length
        single.frameCapacity = capacity ?? length
        process(single, count: 1, now: now, ingress: ingress)
        return single.verdicts[0]
    }

    /// Decides and rewrites a batch of frames in three passes, so that the flow-table
    /// reads of the whole batch are in flight together. The first pass parses each frame,
    /// finishes what needs no flow (NAT replies, frames for the kernel, drops) and hashes
    /// the flow of the rest; the second, a short loop, reads the flow-table bucket each of
    /// those needs; the third decides and rewrites them. Beyond the cache each bucket is
    /// a miss to memory, and a batch waits for a few of those instead of one per packet.
    /// Verdicts land in `batch.verdicts`. `ingress` is the data-plane interface the frames
    /// arrived on (a NAT reply is translated only when it came from its nodes' side).
    @inlinable
    public func process(_ batch: PacketBatch, count: Int, now: UInt64, ingress: Int) {
        precondition(count <= batch.capacity, "a batch of \(count) frames in a PacketBatch of \(batch.capacity)")
        counters.count(.received, UInt64(count))
        frameCapacity = batch.frameCapacity
        let frames = batch.frames
        let lengths = batch.lengths
        let verdicts = batch.verdicts
        let pending = batch.pending
        var waiting = 0
        var recent = RecentService()
        var i = 0
        while i < count {
            let step = classify(frames[i], length: lengths[i], now: now, ingress: ingress, recent: &recent,
                                into: &pending[waiting])
            if step.pending {
                pending[waiting].index = UInt16(truncatingIfNeeded: i)
                waiting &+= 1
            } else {
                verdicts[i] = step.verdict
            }
            i &+= 1
        }
        // Independent loads in a loop short enough that the CPU has them all outstanding
        // at once. (Swift has no prefetch; a load whose value is kept does the same.)
        var touched: UInt64 = 0
        var t = 0
        while t < waiting {
            touched ^= flows.bucketHead(pending[t].hash)
            t &+= 1
        }
        flows.touched = touched
        var w = 0
        while w < waiting {
            let k = Int(pending[w].index)
            verdicts[k] = forward(frames[k], length: lengths[k], &pending[w], now: now, ingress: ingress)
            w &+= 1
        }
    }

    /// The first half of the decision. Either a final verdict (pass, drop, a translated
    /// NAT reply or ICMP error), or `pending`: `packet` holds a flow of a service for
    /// `forward` to decide. The common frames (IPv4 TCP/UDP without options, IPv6 TCP/UDP
    /// without extension headers) take a quick parse, which stays in registers;
    /// everything else goes through `classifyOther`.
    @inlinable @inline(__always)
    func classify(_ frame: UnsafeMutableRawPointer, length: Int, now: UInt64, ingress: Int, recent: inout RecentService,
                  into packet: inout FlowPacket) -> (verdict: Verdict, pending: Bool) {
        let flow: TransportFlow
        if let q = PacketParser.quick(frame, length: length) {
            flow = TransportFlow(key: q.key, headers: q.headers, tcpFlags: q.tcpFlags)
        } else {
            let other = classifyOther(frame, length: length, now: now, ingress: ingress)
            guard let f = other.flow else { return (other.verdict, false) }
            flow = f
        }
        let key = flow.key
        var group = recent.group
        if !recent.matches(key) {
            group = services.lookup(ServiceKey(address: key.destination, proto: key.proto, port: key.destinationPort))
            if group >= 0 { recent = RecentService(key, group: group) }
        }
        if group >= 0 {
            packet = FlowPacket(key: key, hash: key.stableHash(), group: group, headers: flow.headers,
                                tcpFlags: flow.tcpFlags)
            return (.pass, true)
        }
        let target = natReplies.lookup(ServiceKey(address: key.source, proto: key.proto, port: key.sourcePort))
        if target >= 0 {
            let t = reverseTargets[target]
            guard t.nodeInterface == ingress else { return (forgedReply(), false) }
            guard let route = nextHop(to: key.destination) else { return (.drop, false) }
            Rewrite.translate(frame, flow.headers, isSource: true, from: key.source, to: t.vip, port: t.vipPort)
            if offloadView.pointee.enabled && flow.tcpFlags & (TCPFlags.fin | TCPFlags.rst) != 0 && key.proto == IPProtocol.tcp {
                replyClosing(key)
            }
            return (reply(frame, length: length, target: t, route: route), false)
        }
        return (notOurs(), false)
    }

    /// A TCP or UDP packet as `classify` needs it, from either parse.
    @usableFromInline struct TransportFlow {
        @usableFromInline var key: FlowKey
        @usableFromInline var headers: TransportHeaders
        @usableFromInline var tcpFlags: UInt8

        @inlinable init(key: FlowKey, headers: TransportHeaders, tcpFlags: UInt8) {
            self.key = key
            self.headers = headers
            self.tcpFlags = tcpFlags
        }
    }

    /// Every frame the quick parses leave: VLAN-tagged, IPv4 options, IPv6 extension
    /// headers, ICMP, ARP, other protocols and malformed frames. Finishes what needs no
    /// flow lookup; a TCP or UDP packet comes back as its flow. Out of line, so that the
    /// full `ParsedPacket` stays out of the per-packet loop's registers.
    @inlinable @inline(never)
    func classifyOther(_ frame: UnsafeMutableRawPointer, length: Int, now: UInt64, ingress: Int)
        -> (verdict: Verdict, flow: TransportFlow?) {
        var p = ParsedPacket()
        var arp = ARPPacket()
        switch PacketParser.parse(frame, length: length, into: &p, arp: &arp) {
        case .ip:
            break
        case .arp:
            return (answerARP(frame, arp, ingress: ingress), nil)
        case .other:
            counters.count(.passedToKernel)
            return (.pass, nil)
        case .fragment:
            return (fragment(frame, length: length, p, now: now, ingress: ingress), nil)
        case .drop(let reason):
            counters.count(reason)
            return (.drop, nil)
        }
        if p.isICMPError { return (icmpError(frame, length: length, p, now: now, ingress: ingress), nil) }
        if p.proto == IPProtocol.icmpv6 && p.icmpType == 135 {
            return (answerSolicitation(frame, p, ingress: ingress), nil)
        }
        guard p.proto == IPProtocol.tcp || p.proto == IPProtocol.udp else { return (notOurs(), nil) }
        return (.pass, TransportFlow(key: FlowKey(source: p.source, destination: p.destination,
                                                  sourcePort: p.sourcePort, destinationPort: p.destinationPort,
                                                  proto: p.proto),
                                     headers: TransportHeaders(p), tcpFlags: p.tcpFlags))
    }

    /// The last service a batch's frame matched: the frames of a batch mostly share one,
    /// and comparing with it is cheaper than a hash-table probe. It starts out matching
    /// nothing (no TCP or UDP key has protocol 0).
    @usableFromInline struct RecentService {
        @usableFromInline var address = IPAddress.zero
        @usableFromInline var portAndProto: UInt64 = 0
        @usableFromInline var group = -1
        @inlinable init() {}
        @inlinable init(_ key: FlowKey, group: Int) {
            address = key.destination
            portAndProto = key.destinationPortAndProto
            self.group = group
        }

        /// One test of the three words, rather than a branch for each.
        @inlinable @inline(__always)
        func matches(_ key: FlowKey) -> Bool {
            (key.destination.low ^ address.low) | (key.destination.high ^ address.high)
                | (key.destinationPortAndProto ^ portAndProto) == 0
        }
    }

    /// Larger than the egress interface's MTU: the driver would drop it unseen, so it is
    /// dropped here, counted. (Answering with ICMP "fragmentation needed" / "packet too
    /// big", as a router does, is left for later.)
    @inlinable @inline(never)
    func tooBig() -> Verdict {
        counters.count(.exceedsEgressMTU)
        return .drop
    }

    /// A frame with a NAT node's address and port as its source that arrived from the
    /// clients' side: translating it would let anyone there speak as the VIP.
    @inlinable @inline(never)
    func forgedReply() -> Verdict {
        counters.count(.natReplyFromWrongSide)
        return .drop
    }

    @inlinable @inline(__always)
    func notOurs() -> Verdict {
        counters.count(.notForService)
        counters.count(.passedToKernel)
        return .pass
    }

    /// The second half: find or create the flow, then rewrite toward its node. (`inout`
    /// only so that the batch's scratch entry is read in place rather than copied.)
    @inlinable @inline(always)
    func forward(_ frame: UnsafeMutableRawPointer, length: Int, _ packet: inout FlowPacket,
                 now: UInt64, ingress: Int) -> Verdict {
        let g = Int(packet.group)
        let slot = flowSlot(packet.key, hash: packet.hash, group: g, tcpFlags: packet.tcpFlags, isICMPError: false,
                            now: now, ingress: ingress)
        guard slot >= 0 else { return .drop }
        let state = groupStates[g]
        if state.method == .nat {
            let node = slots[slot]
            Rewrite.translate(frame, packet.headers, isSource: false, from: packet.key.destination, to: node.address,
                              port: node.port == 0 ? packet.key.destinationPort : node.port)
        }
        return send(frame, length: length, slot: slot, group: g, state)
    }

    /// An ICMP error about a flow, in either direction: its quoted header names the flow.
    /// Rare, so out of line and one at a time.
    @inlinable @inline(never)
    func icmpError(_ frame: UnsafeMutableRawPointer, length: Int, _ p: ParsedPacket, now: UInt64, ingress: Int) -> Verdict {
        let key = p.flowKey
        let g = services.lookup(ServiceKey(address: key.destination, proto: key.proto, port: key.destinationPort))
        if g >= 0 {
            // About a packet the VIP sent a client: it goes to the node of that flow.
            let slot = flowSlot(key, hash: key.stableHash(), group: g, tcpFlags: 0, isICMPError: true, now: now,
                                ingress: -1)
            guard slot >= 0 else { return .drop }
            let state = groupStates[g]
            if state.method == .nat {
                let node = slots[slot]
                counters.count(.icmpErrorsTranslated)
                Rewrite.natForward(frame, p, node: node.address,
                                   nodePort: node.port == 0 ? key.destinationPort : node.port)
            }
            return send(frame, length: length, slot: slot, group: g, state)
        }
        // About a packet a NAT node received from a client: back to the client, as the VIP.
        let target = natReplies.lookup(ServiceKey(address: p.innerDestination, proto: p.innerProto,
                                                  port: p.innerDestinationPort))
        guard target >= 0 else { return notOurs() }
        let t = reverseTargets[target]
        guard t.nodeInterface == ingress else { return forgedReply() }
        guard let route = nextHop(to: p.destination) else { return .drop }
        counters.count(.icmpErrorsTranslated)
        Rewrite.natReverse(frame, p, vip: t.vip, vipPort: t.vipPort)
        return reply(frame, length: length, target: t, route: route)
    }

    /// A fragment of a TCP or UDP datagram. Every fragment of a datagram takes the path
    /// the first of them to arrive was given (`FragmentTable`): the first fragment, which
    /// has the ports, follows its flow like any packet; a later fragment that comes first
    /// gets the group's consistent decision for the datagram. NAT rewrites the address in
    /// every fragment and the port and L4 checksum in the first. Rare, so out of line.
    @inlinable @inline(never)
    func fragment(_ frame: UnsafeMutableRawPointer, length: Int, _ p: ParsedPacket, now: UInt64,
                  ingress: Int) -> Verdict {
        let hash = FragmentTable.hash(p)
        var decision = fragments.find(p, hash: hash, now: now)
        if decision == nil {
            decision = decideFragment(p, hash: hash, now: now)
            guard let decision else { return .drop }
            fragments.insert(p, hash: hash, now: now, decision)
        }
        counters.count(.fragments)
        switch decision! {
        case let .node(g, remembered):
            var slot = remembered
            let state = groupStates[g]
            if !slotUsable(slot, group: g) {
                slot = consistentChoice(g, state, hash: hash, source: p.source)
                if slot < 0 { counters.count(.noLiveNode); return .drop }
                fragments.insert(p, hash: hash, now: now, .node(group: g, slot: slot))
            }
            if state.method == .nat {
                let node = slots[slot]
                if p.isFirstFragment {
                    Rewrite.translate(frame, TransportHeaders(p), isSource: false, from: p.destination, to: node.address,
                                      port: node.port == 0 ? p.destinationPort : node.port)
                } else {
                    Rewrite.translateAddress(frame, family: p.family, l3: p.l3Offset, isSource: false,
                                             from: p.destination, to: node.address)
                }
            }
            return send(frame, length: length, slot: slot, group: g, state)
        case let .reply(target):
            let t = reverseTargets[target]
            guard t.nodeInterface == ingress else { return forgedReply() }
            guard let route = nextHop(to: p.destination) else { return .drop }
            if p.isFirstFragment {
                Rewrite.translate(frame, TransportHeaders(p), isSource: true, from: p.source, to: t.vip, port: t.vipPort)
            } else {
                Rewrite.translateAddress(frame, family: p.family, l3: p.l3Offset, isSource: true, from: p.source, to: t.vip)
            }
            return reply(frame, length: length, target: t, route: route)
        }
    }

    /// The path of a datagram none of whose fragments was seen yet; nil when dropped
    /// (counted).
    @inlinable
    func decideFragment(_ p: ParsedPacket, hash: UInt64, now: UInt64) -> FragmentTable.Decision? {
        if p.isFirstFragment {
            let g = services.lookup(ServiceKey(address: p.destination, proto: p.proto, port: p.destinationPort))
            if g >= 0 {
                let key = p.flowKey
                let slot = flowSlot(key, hash: key.stableHash(), group: g, tcpFlags: p.tcpFlags, isICMPError: false,
                                    now: now, ingress: -1)
                return slot >= 0 ? .node(group: g, slot: slot) : nil
            }
            let target = natReplies.lookup(ServiceKey(address: p.source, proto: p.proto, port: p.sourcePort))
            if target >= 0 { return .reply(target: target) }
            counters.count(.notForService)
            return nil
        }
        let g = groupsByVIP.lookup(ServiceKey(address: p.destination, proto: p.proto, port: 0))
        if g >= 0 {
            let slot = consistentChoice(g, groupStates[g], hash: hash, source: p.source)
            if slot < 0 { counters.count(.noLiveNode); return nil }
            return .node(group: g, slot: slot)
        }
        let target = repliesByNode.lookup(ServiceKey(address: p.source, proto: p.proto, port: 0))
        if target >= 0 { return .reply(target: target) }
        counters.count(.fragmentBeforeFirst)
        return nil
    }

    /// An ARP request for a VIP (the XDP program sends only those, and only while this LB
    /// is active), answered in place with this interface's MAC.
    @inlinable @inline(never)
    func answerARP(_ frame: UnsafeMutableRawPointer, _ request: ARPPacket, ingress: Int) -> Verdict {
        guard request.operation == ARPPacket.request,
              vips.lookup(ServiceKey(address: request.targetIP, proto: 0, port: 0)) >= 0,
              ingress >= 0 && ingress < interfaceCount else {
            counters.count(.passedToKernel)
            return .pass
        }
        if request.senderIP != .zero && request.senderIP != IPAddress(ipv4: 0) {
            learned.learn(NeighborKey(interface: ingress, address: request.senderIP), request.senderMAC)
        }
        let n = FrameBuilder.arpReply(frame, capacity: frameCapacity, to: request, mac: interfaceMACs[ingress])
        guard n > 0 else { counters.count(.passedToKernel); return .pass }
        counters.count(.arpReplies)
        counters.count(.transmitted)
        return .answer(AnswerFrame(interface: ingress, length: n))
    }

    /// A neighbour solicitation for an IPv6 VIP, answered in place with a solicited
    /// advertisement carrying this interface's MAC.
    @inlinable @inline(never)
    func answerSolicitation(_ frame: UnsafeMutableRawPointer, _ p: ParsedPacket, ingress: Int) -> Verdict {
        guard let ns = NeighborSolicitation.parse(frame, p),
              vips.lookup(ServiceKey(address: ns.target, proto: 0, port: 0)) >= 0,
              ingress >= 0 && ingress < interfaceCount else { return notOurs() }
        if ns.source != .zero {
            learned.learn(NeighborKey(interface: ingress, address: ns.source), ns.sourceMAC)
        }
        let n = FrameBuilder.solicitedNeighborAdvertisement(frame, capacity: frameCapacity, mac: interfaceMACs[ingress],
                                                            target: ns.target, solicitor: ns.source,
                                                            solicitorMAC: ns.sourceMAC,
                                                            vlan: p.hasVLAN ? p.vlanTag : nil)
        guard n > 0 else { return notOurs() }
        counters.count(.neighborAdvertisements)
        counters.count(.transmitted)
        return .answer(AnswerFrame(interface: ingress, length: n))
    }

    /// The node of a flow: the one it has, or for a new flow the scheduler's pick (then
    /// remembered). -1, counted, when there is none. `ingress`: the interface the packet
    /// arrived on, or -1 for one that must not offer its flow for offload (an ICMP error,
    /// a fragment).
    @inlinable @inline(__always)
    func flowSlot(_ key: FlowKey, hash: UInt64, group g: Int, tcpFlags: UInt8, isICMPError: Bool,
                  now: UInt64, ingress: Int) -> Int {
        let index = flows.find(key, hash: hash, now: now)
        guard index >= 0 else {
            if isICMPError {
                counters.count(.icmpErrorWithoutFlow)
                return -1
            }
            return newFlow(key, hash: hash, group: g, tcpFlags: tcpFlags, now: now)
        }
        var slot = flows.nodeSlot(index)
        if !slotUsable(slot, group: g) {
            // Its node went down (or the group was reconfigured): move the flow, where
            // any worker or LB would also move it.
            slot = consistentChoice(g, groupStates[g], hash: hash, source: key.source)
            if slot < 0 { counters.count(.noLiveNode); return -1 }
            flows.reassign(index, nodeSlot: UInt32(slot), group: UInt16(g))
            counters.count(.flowsMoved)
        }
        if !isICMPError {
            flows.touch(index, proto: key.proto, tcpFlags: tcpFlags, now: now)
            if offloadView.pointee.enabled && ingress >= 0 {
                offerOffload(index, key: key, hash: hash, slot: slot, group: g, tcpFlags: tcpFlags, ingress: ingress)
            }
        }
        return slot
    }

    /// A flow the table does not hold: schedule it and remember the choice. Out of line:
    /// in steady state almost every packet belongs to a known flow.
    ///
    /// Only a connection's first packet (a TCP SYN without ACK, or a UDP datagram of a
    /// bucket that has not overflowed lately) is the scheduler's to decide. Any other
    /// packet of a flow the table does not hold — a TCP segment after a restart or a
    /// failover, or a flow that arrived while its bucket was full — gets the consistent
    /// decision the fallback made or would make, so table pressure never moves a flow.
    @inlinable @inline(never)
    func newFlow(_ key: FlowKey, hash: UInt64, group g: Int, tcpFlags: UInt8, now: UInt64) -> Int {
        let state = groupStates[g]
        let opening = key.proto != IPProtocol.tcp || tcpFlags & (TCPFlags.syn | TCPFlags.ack) == TCPFlags.syn
        let scheduled = opening && !flows.overflowed(hash, now: now)
        var slot = scheduled ? choose(g, state, hash: hash, source: key.source)
                             : consistentChoice(g, state, hash: hash, source: key.source)
        if slot < 0 { counters.count(.noLiveNode); return -1 }
        let inserted = flows.insert(key, hash: hash, now: now, nodeSlot: UInt32(slot), group: UInt16(g),
                                    state: FlowState.next(from: nil, proto: key.proto, tcpFlags: tcpFlags))
        if inserted < 0 {
            // No room: decide statelessly so every packet of the flow lands alike.
            counters.count(.flowTableFull)
            if scheduled { slot = consistentChoice(g, state, hash: hash, source: key.source) }
            if slot < 0 { counters.count(.noLiveNode); return -1 }
        }
        counters.countGroup(g, .newFlows)
        counters.countNode(slot, .newFlows)
        if slot == state.sorrySlot { counters.countGroup(g, .sorryFlows) }
        if inserted >= 0 && offloadView.pointee.table != nil { withdrawStaleOffload(key) }
        return slot
    }

    /// MAC rewrite toward the node (MAT) or its next hop (NAT), and the counts.
    @inlinable @inline(__always)
    func send(_ frame: UnsafeMutableRawPointer, length: Int, slot: Int, group g: Int, _ state: GroupState) -> Verdict {
        if length > state.maxFrame { return tooBig() }
        Rewrite.mat(frame, slots[slot].ethernet)
        let bytes = UInt64(length)
        counters.countGroup(g, packets: 1, bytes: bytes)
        counters.countNode(slot, packets: 1, bytes: bytes)
        counters.count(.transmitted)
        return .transmit(interface: state.interface)
    }

    /// Where a reply to `client` goes, as the kernel would send it: the longest-prefix
    /// route (`routes:` overrides first), and the MAC of its next hop — the client's own
    /// on-link (learnt from its ARP/NS, else the kernel's neighbour table), else the
    /// gateway's. nil (counted, and noted for the control plane to resolve) when none.
    @inlinable @inline(__always)
    func nextHop(to client: IPAddress) -> ReplyHop? {
        let found = routeIfKnown(to: client)
        if let hop = found.hop { return hop }
        return unrouted(client, route: found.route)
    }

    /// `nextHop` without counting or noting a miss: the hop, or nil with the route that
    /// matched (-1: none).
    @inlinable @inline(__always)
    func routeIfKnown(to client: IPAddress) -> (hop: ReplyHop?, route: Int) {
        let view = routingView.pointee
        let isIPv4 = client.isIPv4
        var r = 0
        while r < view.count {
            let h = view.hot[r]
            if client.high & h.highMask == h.high && client.low & h.lowMask == h.low && h.isIPv4 == isIPv4 { break }
            r &+= 1
        }
        guard r < view.count else { return (nil, -1) }
        let h = view.hot[r]
        if h.kind == HotRoute.resolved { return (ReplyHop(interface: h.interface, ethernet: h.ethernet), r) }
        if h.kind == HotRoute.unresolved { return (nil, r) }
        let key = NeighborKey(interface: h.interface, address: client)
        if let mac = learned.lookup(key) ?? view.table.neighbor(client, interface: h.interface) {
            return (ReplyHop(interface: h.interface, ethernet: EthernetAddresses(destination: mac, source: interfaceMACs[h.interface])), r)
        }
        return (nil, r)
    }

    /// Where a reply goes: the interface and the Ethernet addresses to write.
    @usableFromInline struct ReplyHop {
        @usableFromInline var interface: Int
        @usableFromInline var ethernet: EthernetAddresses
        @inlinable init(interface: Int, ethernet: EthernetAddresses) {
            self.interface = interface
            self.ethernet = ethernet
        }
    }

    /// A reply with no route (`route` -1) or no MAC for its next hop: counted, and noted
    /// for the control plane.
    @usableFromInline @inline(never)
    func unrouted(_ client: IPAddress, route r: Int) -> ReplyHop? {
        guard r >= 0 else {
            counters.count(.noRouteToClient)
            noteUnrouted(UnroutedReply(destination: client, nextHop: client, interface: -1, reason: .noRoute))
            return nil
        }
        let route = routingOwner.routes[r]
        counters.count(.nextHopUnresolved)
        noteUnrouted(UnroutedReply(destination: client, nextHop: route.gateway ?? client, interface: route.interface,
                                   reason: .unresolved))
        return nil
    }

    @usableFromInline @inline(never)
    func noteUnrouted(_ u: UnroutedReply) {
        var i = 0
        while i < unroutedCount {
            if unrouted[i].destination == u.destination { return }
            i &+= 1
        }
        guard unroutedCount < Balancer.unroutedCapacity else { return }
        (unrouted + unroutedCount).initialize(to: u)
        unroutedCount &+= 1
    }

    /// Hands the destinations replies could not be sent to since the last call (each
    /// once) to `body`, and forgets them. The worker calls it between batches. No
    /// allocation: `body` copies into storage of its own.
    public func drainUnrouted(_ body: (UnroutedReply) -> Void) {
        for i in 0..<unroutedCount { body(unrouted[i]) }
        unrouted.deinitialize(count: unroutedCount)
        unroutedCount = 0
    }

    /// The routing table in force (a reload hands it to the new balancer).
    public var currentRouting: RoutingTable { routingOwner }

    /// A new routing table (the kernel's routes or neighbours changed). Worker thread,
    /// between batches.
    public func setRouting(_ table: RoutingTable) {
        routingView.pointee = RoutingView(table)
        routingOwner = table
        revalidateOffloadedReplies()
    }

    public var routingVersion: UInt64 { routingOwner.version }

    /// A translated NAT reply out toward the client.
    @inlinable @inline(__always)
    func reply(_ frame: UnsafeMutableRawPointer, length: Int, target: ReverseTarget, route: ReplyHop) -> Verdict {
        if length > interfaceMaxFrames[route.interface] { return tooBig() }
        Rewrite.mat(frame, route.ethernet)
        counters.count(.natReplies)
        counters.count(.transmitted)
        counters.countGroup(target.group, .bytes, UInt64(length))
        return .transmit(interface: route.interface)
    }

    /// A node slot may carry a flow if it is up with a known MAC (weight 0 still may:
    /// draining keeps existing flows).
    @inlinable @inline(__always)
    func slotUsable(_ slot: Int, group g: Int) -> Bool {
        slot < slotCount && slots[slot].usable && slots[slot].group == g
    }

    /// The stateless node for a flow (`Scheduler.consistentPick`), else the sorry server.
    @inlinable
    func consistentChoice(_ g: Int, _ state: GroupState, hash: UInt64, source: IPAddress) -> Int {
        let pick = schedulers[g].consistentPick(flowHash: hash, sourceHash: StableHash.hash(source))
        if pick >= 0 { return state.nodeBase &+ pick }
        if state.sorrySlot >= 0 && slots[state.sorrySlot].usable { return state.sorrySlot }
        return -1
    }

    /// A node for a new flow: the scheduler's pick, else the sorry server.
    @inlinable
    func choose(_ g: Int, _ state: GroupState, hash: UInt64, source: IPAddress) -> Int {
        let pick = schedulers[g].pick(flowHash: hash, sourceHash: StableHash.hash(source),
                                      activeFlows: flows.activeCounts + state.nodeBase)
        if pick >= 0 { return state.nodeBase &+ pick }
        if state.sorrySlot >= 0 && slots[state.sorrySlot].usable { return state.sorrySlot }
        return -1
    }

}
