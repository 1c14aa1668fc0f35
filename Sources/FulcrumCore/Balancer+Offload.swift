/// The balancer's part in the XDP offload of established flows (`FlowOffload`): it
/// offers a flow once established, and withdraws it when its node or the way back
/// changes, or when it closes.
extension Balancer {
    @usableFromInline struct OffloadView {
        @usableFromInline var enabled = false
        @usableFromInline var table: Unmanaged<FlowOffload>?
        @usableFromInline init() {}
    }

    /// Starts (or, with nil, stops) writing established flows to `table`, withdrawing
    /// what it holds (at a worker's start; a reload hands the table on with
    /// `adoptOffload` instead, keeping what it can). `offering`: whether flows are
    /// offered now (only while this LB is active: a standby's program forwards nothing,
    /// and entries written then would be stale when it takes over).
    public func attachOffload(_ table: FlowOffload?, offering: Bool) {
        if let old = offload, old !== table { old.withdrawAll(counters: counters) }
        table?.withdrawAll(counters: counters)
        offload = table
        var view = OffloadView()
        view.enabled = table != nil && offering
        view.table = table.map { Unmanaged.passUnretained($0) }
        offloadView.pointee = view
    }

    /// A reload (the worker's new layout): takes `old`'s table over without a pause in
    /// the program's forwarding. An offloaded flow whose node stays (`remap`, by identity)
    /// and whose entries this layout would write the same keeps them, renumbered; the
    /// others are withdrawn, and their flows offered again on their next frame at the
    /// worker. The counts so far go to `old`'s counters (whose totals this balancer's
    /// carry over; per group and node, counts belong to a layout, as the worker's own do).
    public func adoptOffload(from old: Balancer, remap: [SlotTarget]) {
        guard let table = old.offload else { return }
        let offering = old.offloadOffering
        old.offload = nil
        old.offloadView.pointee = OffloadView()
        table.remap(counters: old.counters) { index, oldSlot, _ in
            guard oldSlot >= 0 && oldSlot < remap.count, remap[oldSlot].slot != SlotTarget.gone.slot else { return nil }
            let to = (slot: Int(remap[oldSlot].slot), group: Int(remap[oldSlot].group))
            return writesTheSame(table, index, slot: to.slot, group: to.group) ? to : nil
        }
        offload = table
        var view = OffloadView()
        view.enabled = offering
        view.table = Unmanaged.passUnretained(table)
        offloadView.pointee = view
    }

    /// Whether this layout would write entry `index` of `table` as it is, for a flow on
    /// node slot `slot` of group `g`: the flow is still a service of the group, by the same
    /// method, and what `offerOffload` would install for it now is what the entry holds.
    /// (Where a forward entry takes frames from is the flow's ingress, which a reload does
    /// not change; a reply entry's way back is compared when it is known now, and the
    /// scan compares it again as the routes change.)
    func writesTheSame(_ table: FlowOffload, _ index: Int, slot: Int, group g: Int) -> Bool {
        guard g >= 0 && g < spec.groups.count && slot >= 0 && slot < slotCount else { return false }
        let node = slots[slot]
        let flow = table.flow(at: index)
        guard node.group == g, node.hasMAC, node.enabled,
              services.lookup(ServiceKey(address: flow.destination, proto: flow.proto, port: flow.destinationPort)) == g
        else { return false }
        let state = groupStates[g]
        switch table.action(at: index) {
        case .mat:
            return state.method == .mat
                && table.holds(index, ethernet: node.ethernet, interface: state.interface, maxFrame: state.maxFrame)
        case .natDestination:
            return state.method == .nat
                && table.holds(index, address: node.address, port: node.port == 0 ? flow.destinationPort : node.port,
                               ethernet: node.ethernet, interface: state.interface, maxFrame: state.maxFrame)
        case .natSource:
            guard state.method == .nat,
                  table.holds(index, address: state.vip, port: flow.destinationPort, from: state.interface,
                              arrivingAt: interfaceMACs[state.interface]) else { return false }
            guard let route = nextHop(to: flow.source) else { return true }
            return table.holds(index, ethernet: route.ethernet, interface: route.interface,
                               maxFrame: interfaceMaxFrames[route.interface])
        case nil:
            return false
        }
    }

    /// Whether established flows are offered to the XDP program now.
    public var offloadOffering: Bool { offloadView.pointee.enabled }

    /// The active role changed: every offloaded flow goes back to the worker (the table
    /// of record may have changed while the program was not forwarding), and flows are
    /// offered from now on only while active.
    public func setOffloadOffering(_ offering: Bool) {
        offload?.withdrawAll(counters: counters)
        offloadView.pointee.enabled = offload != nil && offering
    }

    /// A new flow's tuple may still have an entry from an earlier flow (a reused port,
    /// not yet seen gone by the scan): that entry would send the new flow's frames to the
    /// old node.
    @usableFromInline @inline(never)
    func withdrawStaleOffload(_ key: FlowKey) {
        guard let table = offload, table.used > 0 else { return }
        let index = table.find(key)
        if index >= 0 { table.withdraw(index, counters: counters) }
    }

    /// Where replies go changed: a reply entry that no longer sends along the way to its
    /// client goes, with its flow's forward entry (both are offered again on the flow's
    /// next frame at the worker).
    func revalidateOffloadedReplies() {
        offload?.revalidateReplies(counters: counters) { client in
            routeIfKnown(to: client).hop.map { ($0.ethernet, $0.interface) }
        }
    }

    @usableFromInline
    func withdrawOffloaded(slot: Int) {
        offload?.withdraw(nodeSlot: slot, counters: counters)
    }

    /// A packet of a known flow reached the worker with offload on: offload the flow if it
    /// is established (TCP after the handshake, UDP from its second datagram), withdraw
    /// it if it is closing. `ingress`: the interface it arrived on, where the XDP program
    /// will take its later packets. Out of line: with the flow offloaded, few of its
    /// packets come.
    @inlinable @inline(never)
    func offerOffload(_ index: Int, key: FlowKey, hash: UInt64, slot: Int, group g: Int, tcpFlags: UInt8, ingress: Int) {
        guard let table = offloadView.pointee.table?.takeUnretainedValue(), ingress < interfaceCount else { return }
        switch flows.entry(index).state {
        case .established:
            guard tcpFlags & (TCPFlags.syn | TCPFlags.fin | TCPFlags.rst) == 0 else { return }
        case .udp:
            break
        case .closing:
            let forward = table.find(key)
            if forward >= 0 { table.withdraw(forward, counters: counters) }
            return
        default:
            return
        }
        let state = groupStates[g]
        let node = slots[slot]
        guard node.hasMAC else { return }
        if state.method == .mat {
            if table.install(wire: key, action: .mat, ethernet: node.ethernet, interface: state.interface,
                             from: ingress, arrivingAt: interfaceMACs[ingress], maxFrame: state.maxFrame,
                             flow: key, flowHash: hash, nodeSlot: slot, group: g, counters: counters) == -1 {
                counters.count(.offloadTableFull)
            }
            return
        }
        let port = node.port == 0 ? key.destinationPort : node.port
        // A NAT flow is offloaded whole or not at all: its frames keep reaching the worker
        // (which offers it again) until the way back to the client is known and both
        // entries fit. A forward entry alone would keep the replies on the worker for good.
        guard let route = nextHop(to: key.source) else { return }
        let existing = table.find(key)
        // Room for both first: the reply entry written and then withdrawn for want of room
        // for the forward one would be churn on every frame of the flow.
        if existing < 0 && !table.hasRoom(for: 2) {
            counters.count(.offloadTableFull)
            return
        }
        let wire = FlowKey(source: node.address, destination: key.source, sourcePort: port,
                           destinationPort: key.sourcePort, proto: key.proto)
        let replyIndex = table.install(wire: wire, action: .natSource, address: state.vip, port: key.destinationPort,
                                       ethernet: route.ethernet, interface: route.interface, from: state.interface,
                                       arrivingAt: interfaceMACs[state.interface], maxFrame: interfaceMaxFrames[route.interface],
                                       flow: key, flowHash: hash, nodeSlot: slot, group: g, partner: existing,
                                       counters: counters)
        guard replyIndex >= 0 else {
            if replyIndex == -1 { counters.count(.offloadTableFull) }
            if existing >= 0 { table.withdraw(existing, counters: counters) }
            return
        }
        let forward = table.install(wire: key, action: .natDestination, address: node.address, port: port,
                                    ethernet: node.ethernet, interface: state.interface, from: ingress,
                                    arrivingAt: interfaceMACs[ingress], maxFrame: state.maxFrame,
                                    flow: key, flowHash: hash, nodeSlot: slot, group: g, partner: replyIndex,
                                    counters: counters)
        if forward < 0 {
            if forward == -1 { counters.count(.offloadTableFull) }
            table.withdraw(replyIndex, counters: counters)
            return
        }
        table.pair(forward, replyIndex)
    }

    /// A NAT node's FIN or RST: its reply entry goes (the forward one stays until the
    /// client's own FIN or RST, which the worker sees).
    @usableFromInline @inline(never)
    func replyClosing(_ wire: FlowKey) {
        offload?.withdrawOne(wire: wire, counters: counters)
    }
}
