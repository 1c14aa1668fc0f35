import FulcrumCore
import FulcrumTestSupport
import Testing

/// The worker's side of the offload table, on ordinary memory (no BPF): when entries are
/// written and when they must go. (Tests/FulcrumBPFTests/OffloadTests runs the XDP
/// program against the same table.)
@Suite struct FlowOffloadTests {
    static let lbMAC = MACAddress("02:00:00:00:00:1b")!
    static let capacity = 256

    final class Region {
        let base = UnsafeMutableRawPointer.allocate(byteCount: FlowOffloadTests.capacity * FlowOffload.Layout.size,
                                                    alignment: 64)
        init() { base.initializeMemory(as: UInt8.self, repeating: 0, count: FlowOffloadTests.capacity * FlowOffload.Layout.size) }
        deinit { base.deallocate() }
    }

    static func nat() -> GroupSpec {
        GroupSpec(name: "nat", vip: Fixtures.vip4, proto: IPProtocol.tcp, ports: [80], method: .nat, scheduler: .rr,
                  nodes: [NodeSpec(address: Fixtures.node4a, port: 8080, mac: Fixtures.nodeMACa),
                          NodeSpec(address: Fixtures.node4b, port: 8080, mac: Fixtures.nodeMACb)])
    }

    static func route(_ mac: MACAddress) -> ReturnRoute {
        ReturnRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0, nextHopMAC: mac)
    }

    /// A balancer with offload attached, and its table.
    static func setup() throws -> (Balancer, FlowOffload, Region) {
        let region = Region()
        let table = FlowOffload(region: region.base, capacity: capacity, ifindexes: [7], owner: region)
        let b = try Balancer(BalancerSpec(groups: [nat()], interfaceMACs: [lbMAC], returnRoutes: [route(Fixtures.routerMAC)]))
        b.attachOffload(table, offering: true)
        return (b, table, region)
    }

    /// Whether the occupancy index the XDP program reads first says of every slot what
    /// the slot says: set while an entry or a withdrawn mark is there.
    static func indexAgrees(_ table: FlowOffload, _ region: Region) -> Bool {
        (0..<capacity).allSatisfy { i in
            let action = region.base.load(fromByteOffset: i * FlowOffload.Layout.size + FlowOffload.Layout.action, as: UInt8.self)
            return table.indexed(i) == (action != 0)
        }
    }

    static func segment(_ port: UInt16, _ flags: UInt8) -> [UInt8] {
        PacketBuilder.tcpFrame(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: port, destinationPort: 80,
                               flags: flags)
    }

    /// SYN, then the handshake's ACK: established, so offered.
    static func open(_ b: Balancer, _ port: UInt16, now: UInt64) {
        _ = segment(port, TCPFlags.syn).mutatingFrame { b.process($0, length: $1, now: now) }
        _ = segment(port, TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: now) }
    }

    static func key(_ port: UInt16) -> FlowKey {
        FlowKey(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: port, destinationPort: 80, proto: IPProtocol.tcp)
    }

    @Test func anEstablishedNATFlowGetsAForwardAndAReplyEntryAndFINEndsThem() throws {
        let (b, table, _) = try Self.setup()
        _ = Self.segment(1000, TCPFlags.syn).mutatingFrame { b.process($0, length: $1, now: 1) }
        #expect(table.offloadedFlows == 0, "a SYN is never offered")
        _ = Self.segment(1000, TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: 1) }
        #expect(table.offloadedFlows == 1)
        #expect(table.find(Self.key(1000)) >= 0)
        _ = Self.segment(1000, TCPFlags.fin | TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: 2) }
        #expect(table.offloadedFlows == 0 && table.find(Self.key(1000)) < 0)
    }

    @Test func aStandbyOffersNothingAndTheRoleChangeWithdrawsEverything() throws {
        let (b, table, _) = try Self.setup()
        Self.open(b, 1000, now: 1)
        #expect(table.offloadedFlows == 1)
        b.setOffloadOffering(false)
        #expect(table.offloadedFlows == 0)
        Self.open(b, 1001, now: 2)
        _ = Self.segment(1000, TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: 2) }
        #expect(table.offloadedFlows == 0, "nothing offered while standby")
        b.setOffloadOffering(true)
        _ = Self.segment(1000, TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: 3) }
        #expect(table.offloadedFlows == 1)
    }

    @Test func aReusedTupleLosesTheEntryOfTheFlowBefore() throws {
        let (b, table, _) = try Self.setup()
        Self.open(b, 1000, now: 1)
        #expect(table.offloadedFlows == 1)
        // The flow leaves the table (expired, say) before the scan saw it go; a new
        // connection on the same tuple opens: its SYN must take the old entry away.
        let index = b.flows.find(Self.key(1000), hash: Self.key(1000).stableHash(), now: 1)
        b.flows.remove(index)
        _ = Self.segment(1000, TCPFlags.syn).mutatingFrame { b.process($0, length: $1, now: 2) }
        #expect(table.offloadedFlows == 0 && table.find(Self.key(1000)) < 0)
    }

    @Test func aRouteChangeWithdrawsOnlyRepliesThatWouldGoElsewhere() throws {
        let (b, table, _) = try Self.setup()
        Self.open(b, 1000, now: 1)
        #expect(table.offloadedFlows == 1)
        let same = RoutingTable(routes: [ClientRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0,
                                                     gateway: .zero, gatewayMAC: Fixtures.routerMAC, isOverride: true)],
                                neighbors: [:], version: 2, interfaceMACs: [Self.lbMAC])
        b.setRouting(same)
        #expect(table.offloadedFlows == 1, "the way back is the same: kept")
        let moved = RoutingTable(routes: [ClientRoute(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0,
                                                      gateway: .zero, gatewayMAC: Fixtures.nodeMACc, isOverride: true)],
                                 neighbors: [:], version: 3, interfaceMACs: [Self.lbMAC])
        b.setRouting(moved)
        #expect(table.offloadedFlows == 0, "replies would go to the old router: the flow goes back to the worker")
        _ = Self.segment(1000, TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: 2) }
        #expect(table.offloadedFlows == 1, "offered again, along the new way")
    }

    /// A withdrawn slot that a flow after it still needs stays marked (probes pass over
    /// it); one that no flow's probes pass is emptied: at once by the withdrawal when it
    /// can reach it, else by the scan, so that a frame of a flow not offloaded stops there.
    @Test func withdrawnSlotsAreEmptiedOnceNoFlowsProbesPassThem() throws {
        let region = Region()
        let table = FlowOffload(region: region.base, capacity: Self.capacity, ifindexes: [7], owner: region)
        let mat = GroupSpec(name: "mat", vip: Fixtures.vip4, proto: IPProtocol.tcp, ports: [80], method: .mat, scheduler: .rr,
                            nodes: [NodeSpec(address: Fixtures.node4a, mac: Fixtures.nodeMACa)])
        let b = try Balancer(BalancerSpec(groups: [mat], interfaceMACs: [Self.lbMAC]))
        b.attachOffload(table, offering: true)
        func home(_ port: UInt16) -> Int { Int(UInt32(truncatingIfNeeded: FlowOffload.hash(Self.key(port)))) & (Self.capacity - 1) }
        func action(_ slot: Int) -> UInt8 {
            region.base.load(fromByteOffset: (slot & (Self.capacity - 1)) * FlowOffload.Layout.size + FlowOffload.Layout.action,
                             as: UInt8.self)
        }
        let h = home(2000)
        // A in its home slot h; K in its own home, the slot after; J shares A's home, so it
        // sits two on and its probes pass both.
        let kPort = try #require((2001...60000).first { home(UInt16($0)) == (h + 1) & (Self.capacity - 1) }.map(UInt16.init))
        let jPort = try #require((2001...60000).first { home(UInt16($0)) == h }.map(UInt16.init))
        for port in [2000, kPort, jPort] { Self.open(b, UInt16(port), now: 1) }
        #expect(action(h) != 0 && action(h + 1) != 0 && action(h + 2) != 0)

        // A goes: J still needs its slot, which stays marked through a whole scan.
        _ = Self.segment(2000, TCPFlags.fin | TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: 2) }
        #expect(action(h) == FlowOffload.withdrawn)
        b.maintain(now: 1_000)
        b.maintain(now: 1_000 + table.scanPeriod)
        #expect(action(h) == FlowOffload.withdrawn, "J's probes pass it")
        #expect(table.find(Self.key(jPort)) >= 0)

        // J goes: its own slot is emptied at once, but the withdrawal stops at K, in use,
        // so A's slot, which nothing needs now, is left to the scan, which empties it.
        _ = Self.segment(jPort, TCPFlags.fin | TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: 3) }
        #expect(action(h + 2) == 0)
        #expect(action(h) == FlowOffload.withdrawn)
        b.maintain(now: 2_000 + table.scanPeriod)
        b.maintain(now: 2_000 + 2 * table.scanPeriod)
        b.maintain(now: 2_000 + 3 * table.scanPeriod)
        #expect(action(h) == 0)
        #expect(table.find(Self.key(kPort)) >= 0 && table.offloadedFlows == 1, "K stays offloaded")
        #expect(Self.indexAgrees(table, region))
    }

    @Test func theScanWithdrawsAFlowWhoseNodeChangedInTheTable() throws {
        let (b, table, _) = try Self.setup()
        Self.open(b, 1000, now: 1)
        let index = b.flows.find(Self.key(1000), hash: Self.key(1000).stableHash(), now: 1)
        let other = b.flows.nodeSlot(index) == 0 ? 1 : 0
        b.flows.reassign(index, nodeSlot: UInt32(other), group: 0)  // as a flow-sync record would
        b.maintain(now: 1_000)
        b.maintain(now: 1_000 + table.scanPeriod)
        #expect(table.offloadedFlows == 0)
    }

    @Test func aNATFlowWithNoWayBackIsNotOffloadedAtAll() throws {
        // No route to the client: a forward entry alone would keep the replies on the
        // worker for the flow's life, so neither goes.
        let region = Region()
        let table = FlowOffload(region: region.base, capacity: Self.capacity, ifindexes: [7], owner: region)
        let b = try Balancer(BalancerSpec(groups: [Self.nat()], interfaceMACs: [Self.lbMAC]))
        b.attachOffload(table, offering: true)
        Self.open(b, 1000, now: 1)
        #expect(table.offloadedFlows == 0 && table.find(Self.key(1000)) < 0)
    }

    @Test func aNodeGoingDownTakesItsFlowsEntriesAndTheFlowMoves() throws {
        let (b, table, _) = try Self.setup()
        Self.open(b, 1000, now: 1)
        let index = b.flows.find(Self.key(1000), hash: Self.key(1000).stableHash(), now: 1)
        let node = b.flows.nodeSlot(index)
        b.setNodeUp(group: 0, node: node, false)
        #expect(table.offloadedFlows == 0)
        _ = Self.segment(1000, TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: 2) }
        #expect(table.offloadedFlows == 1)
        #expect(b.counters[.flowsMoved] == 1)
    }

    /// A reload, as the worker makes it (`takeOver`): an offloaded flow whose node stays,
    /// and whose entries the new layout writes the same, keeps them, renumbered to the new
    /// node slots, with what the program counted before in the old counters and after in
    /// the new ones; a flow whose node is gone, or whose rewrite changes, goes back to the
    /// worker.
    @Test func aReloadKeepsTheOffloadedFlowsItDoesNotChangeAndRenumbersThem() throws {
        let (b, table, region) = try Self.setup()
        let ports = Array(UInt16(1000)..<1008)
        for port in ports { Self.open(b, port, now: 1) }
        #expect(table.offloadedFlows == 8)
        func node(_ balancer: Balancer, _ port: UInt16) -> Int {
            balancer.flows.nodeSlot(balancer.flows.find(Self.key(port), hash: Self.key(port).stableHash(), now: 1))
        }
        /// The program forwarding `n` frames of the flow on `port`: its forward entry's counts.
        func forwarded(_ port: UInt16, _ n: UInt64) {
            let e = region.base + table.find(Self.key(port)) * FlowOffload.Layout.size
            for (offset, add) in [(FlowOffload.Layout.packets, n), (FlowOffload.Layout.bytes, 100 * n)] {
                e.storeBytes(of: e.load(fromByteOffset: offset, as: UInt64.self) + add, toByteOffset: offset, as: UInt64.self)
            }
        }
        func reload(_ old: Balancer, _ groups: [GroupSpec]) throws -> Balancer {
            let spec = BalancerSpec(groups: groups, interfaceMACs: [Self.lbMAC], returnRoutes: [Self.route(Fixtures.routerMAC)])
            let next = try Balancer(spec, flows: old.flows, counters: WorkerCounters(groups: groups.count, nodeSlots: spec.maxNodeSlots))
            next.takeOver(from: old, remap: old.spec.slotRemap(to: spec))
            return next
        }

        // A group ahead of the NAT one: the NAT nodes' slots move from 0 and 1 to 2 and 3.
        let mat = GroupSpec(name: "mat", vip: IPAddress("198.18.1.99")!, proto: IPProtocol.tcp, ports: [80], method: .mat,
                            scheduler: .rr, nodes: [NodeSpec(address: Fixtures.node4c, mac: Fixtures.nodeMACc)])
        let onA = ports.filter { node(b, $0) == 0 }
        #expect(onA.count == 4, "round robin: four flows a node")
        forwarded(1000, 3)
        let oldSlot = node(b, 1000)
        let oldNodePackets = b.counters.node(oldSlot, .packets)
        let b2 = try reload(b, [mat, Self.nat()])
        #expect(table.offloadedFlows == 8, "nothing changed for them: all kept")
        #expect(b2.counters[.offloadWithdrawn] == 0)
        #expect(b.counters.node(oldSlot, .packets) == oldNodePackets + 3, "counted before the reload: the old layout's")
        #expect(b2.counters[.offloaded] == 3, "carried over")
        let newSlot = node(b2, 1000)
        #expect(newSlot == oldSlot + 2)
        forwarded(1000, 5)
        b2.maintain(now: 1_000)
        b2.maintain(now: 1_000 + table.scanPeriod)
        #expect(table.offloadedFlows == 8, "the scan finds each entry's flow on the entry's (renumbered) node")
        #expect(b2.counters.node(newSlot, .packets) == 5 && b2.counters.node(newSlot, .bytes) == 500)
        #expect(b2.counters.group(1, .packets) == 5 && b2.counters[.offloaded] == 8)

        // Node a's port changes: it is another node now, and its flows leave the table;
        // node b's flows are untouched.
        var moved = Self.nat()
        moved.nodes[0].port = 8081
        let b3 = try reload(b2, [mat, moved])
        #expect(table.offloadedFlows == 4)
        #expect(b3.counters[.offloadWithdrawn] == 8, "node a's four flows, two entries each")
        #expect(onA.allSatisfy { table.find(Self.key($0)) < 0 })

        // The group becomes MAT: the remaining entries would be written otherwise.
        var asMAT = moved
        asMAT.method = .mat
        #expect(Self.indexAgrees(table, region))
        let b4 = try reload(b3, [mat, asMAT])
        #expect(table.offloadedFlows == 0 && b4.counters[.offloadWithdrawn] == 16)
        #expect(Self.indexAgrees(table, region))
        #expect((0..<Self.capacity).allSatisfy { !table.indexed($0) }, "every slot empty again, and its bit clear")
    }

    /// The program adds a frame's packet, then its bytes; a scan may read the entry in
    /// between. Every frame is counted whole in the end, in the scan that sees its bytes
    /// even when no later frame comes, and a count never goes backwards.
    @Test func aFrameCountedBetweenItsPacketAndItsBytesIsCountedWhole() throws {
        let (b, table, region) = try Self.setup()
        Self.open(b, 1000, now: 1)
        let e = region.base + table.find(Self.key(1000)) * FlowOffload.Layout.size
        func add(_ offset: Int, _ n: UInt64) {
            e.storeBytes(of: e.load(fromByteOffset: offset, as: UInt64.self) &+ n, toByteOffset: offset, as: UInt64.self)
        }
        var now: UInt64 = 1_000
        func scan() {
            now += table.scanPeriod
            b.maintain(now: now)
        }
        scan()  // the scan's pace starts here: each scan() after it is a whole pass
        let before = (b.counters.group(0, .packets), b.counters.group(0, .bytes))
        add(FlowOffload.Layout.packets, 1)  // the frame's packet, and a scan before its bytes
        scan()
        add(FlowOffload.Layout.bytes, 1500)
        scan()
        #expect(b.counters.group(0, .packets) == before.0 + 1 && b.counters.group(0, .bytes) == before.1 + 1500,
                "the last frame's bytes, with no frame after it")
        add(FlowOffload.Layout.bytes, 700)  // the next frame's bytes read before its packet
        scan()
        add(FlowOffload.Layout.packets, 1)
        scan()
        #expect(b.counters.group(0, .packets) == before.0 + 2 && b.counters.group(0, .bytes) == before.1 + 2200)
        // Two writers for an instant undo an add: the count read is the new start.
        add(FlowOffload.Layout.packets, UInt64.max)  // one less than read last
        scan()
        add(FlowOffload.Layout.packets, 1)
        add(FlowOffload.Layout.bytes, 100)
        scan()
        #expect(b.counters.group(0, .packets) == before.0 + 3 && b.counters.group(0, .bytes) == before.1 + 2300)
        #expect(table.offloadedFlows == 1)
    }

    /// The table is filled to half at most: a NAT flow takes two entries, so 256 entries
    /// take 64 flows, and the flows after them stay with the worker, counted. A NAT flow
    /// is refused whole when one entry is left: never a reply entry written and taken back.
    @Test func theTableIsFilledToHalfAtMost() throws {
        let (b, table, region) = try Self.setup()
        // One flow whose reply entry went (the node's FIN): an odd number of entries used.
        Self.open(b, 1999, now: 1)
        for node in [Fixtures.node4a, Fixtures.node4b] {
            table.withdrawOne(wire: FlowKey(source: node, destination: Fixtures.client4, sourcePort: 8080,
                                            destinationPort: 1999, proto: IPProtocol.tcp), counters: b.counters)
        }
        #expect(b.counters[.offloadWithdrawn] == 1)
        for port in UInt16(2000)..<2080 { Self.open(b, port, now: 1) }
        for port in UInt16(2000)..<2080 {  // the refused ones' next frames at the worker
            _ = Self.segment(port, TCPFlags.ack).mutatingFrame { b.process($0, length: $1, now: 2) }
        }
        #expect(Self.indexAgrees(table, region))
        #expect(table.offloadedFlows <= Self.capacity / 4)
        #expect(table.offloadedFlows >= Self.capacity / 4 - 8, "refused only at half, or for want of a slot near home")
        #expect(b.counters[.offloadTableFull] >= UInt64(81 - table.offloadedFlows))
        #expect(b.counters[.offloadWithdrawn] == 1, "no entry written and taken back for want of room")
    }
}
