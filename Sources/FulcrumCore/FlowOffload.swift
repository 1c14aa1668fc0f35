import Synchronization

/// The worker's side of the XDP offload table (`fulcrum_offload` in fulcrum_abi.h): its
/// queue's region of a BPF array that the kernel and the worker share by mmap. The
/// worker decides every flow; once one is established it writes the flow's rewrite here
/// with `install`, and the XDP program forwards the flow's later frames itself, stamping
/// each entry's last use and counting its frames and bytes. `scan` folds those counts
/// into the worker's counters and the stamps into its flow table, which stays the table
/// of record (expiry, least-connection counts, the flow sync).
///
/// Entries are written only on the worker's thread, under a sequence lock the program
/// checks (fulcrum_abi.h). A flow's entry is withdrawn when its node stops being usable,
/// on a reload that changes its rewrite (`remap`), on a change of the active role, at FIN
/// or RST, and when the flow leaves the flow table. No allocation after `init`, no system
/// call.
public final class FlowOffload: @unchecked Sendable {
    /// The entry's layout (struct fulcrum_offload; a test holds these equal to the C
    /// struct's offsets).
    public enum Layout {
        public static let size = 128
        public static let seq = 0
        public static let action = 4
        public static let proto = 5
        public static let maxFrame = 6
        public static let sourcePort = 8
        public static let destinationPort = 10
        public static let newPort = 12
        public static let source = 16
        public static let destination = 32
        public static let newAddress = 48
        public static let ethernet = 64
        public static let ifindex = 76
        public static let lastUsed = 80
        public static let packets = 88
        public static let bytes = 96
        public static let fromIfindex = 104
        public static let inMAC = 108
        public static let probes = 8
    }

    /// `install`'s answer for an interface offloaded flows may not leave by.
    public static let notHere = -2

    public enum Action: UInt8, Sendable {
        case mat = 1
        case natDestination = 2
        case natSource = 3
    }

    /// What the worker keeps of each entry: which flow and node it stands for and what of
    /// its counts was folded already.
    @usableFromInline struct Shadow {
        @usableFromInline var flow = FlowKey(source: .zero, destination: .zero, sourcePort: 0, destinationPort: 0, proto: 0)
        @usableFromInline var flowHash: UInt64 = 0
        @usableFromInline var packets: UInt64 = 0
        @usableFromInline var bytes: UInt64 = 0
        @usableFromInline var lastUsed: UInt64 = 0
        @usableFromInline var nodeSlot: Int32 = -1
        /// The other entry of a NAT flow (its replies, or its forward entry), or -1.
        @usableFromInline var partner: Int32 = -1
        @usableFromInline var group: UInt16 = 0
        @usableFromInline var action: UInt8 = 0
        init() {}
    }

    @usableFromInline let region: UnsafeMutableRawPointer
    let owner: AnyObject?
    /// A bit a slot, set while the slot is not empty (FULCRUM_MAP_OFFLOAD_INDEX).
    @usableFromInline let occupancy: UnsafeMutablePointer<UInt64>
    let ownsIndex: Bool
    let indexOwner: AnyObject?
    public let capacity: Int
    @usableFromInline let mask: Int
    @usableFromInline let shadow: UnsafeMutablePointer<Shadow>
    /// The kernel's index of each data-plane interface, by the balancer's numbering.
    @usableFromInline let ifindexes: [Int32]
    /// Whether offloaded flows may leave by each (`FulcrumConfig.Interface.offload`).
    @usableFromInline let egress: [Bool]
    /// Forward entries held (one per offloaded flow), for status.
    let liveFlows = Atomic<Int>(0)
    /// Entries in use.
    @usableFromInline var used = 0
    /// Slots marked withdrawn now (FULCRUM_OFFLOAD_WITHDRAWN: probes pass over them).
    /// There is none while no entry is in use: a slot is emptied only by `reclaim`, which
    /// goes on to the marks before it, so no mark is ever followed by an empty slot, and
    /// the last entry's withdrawal empties every mark.
    var marks = 0
    var scanCursor = 0
    var scanPace = PacedPass()
    /// One `scan` pass over the region takes this long (ns): the counters and the flow
    /// table's deadlines follow the XDP program's by at most this much.
    public let scanPeriod: UInt64

    /// - Parameters:
    ///   - region: `capacity` entries of `Layout.size` bytes, zeroed, shared with the XDP
    ///     program (or ordinary memory, in tests).
    ///   - capacity: a power of two.
    ///   - ifindexes: by interface number.
    ///   - egress: by interface number, whether offloaded flows may leave by it (all,
    ///     when shorter).
    ///   - owner: what keeps `region` mapped, held as long as this table.
    ///   - index: `indexWords(capacity)` words, zeroed, shared with the XDP program
    ///     (FULCRUM_MAP_OFFLOAD_INDEX), kept mapped by `indexOwner`; nil: the table's own.
    public init(region: UnsafeMutableRawPointer, capacity: Int, ifindexes: [Int32], egress: [Bool] = [],
                scanPeriod: UInt64 = 250_000_000, owner: AnyObject? = nil,
                index: UnsafeMutableRawPointer? = nil, indexOwner: AnyObject? = nil) {
        self.egress = ifindexes.indices.map { $0 < egress.count ? egress[$0] : true }
        self.owner = owner
        self.indexOwner = indexOwner
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "offload capacity must be a power of two")
        self.region = region
        self.capacity = capacity
        mask = capacity - 1
        self.ifindexes = ifindexes
        self.scanPeriod = scanPeriod
        shadow = .allocate(capacity: capacity)
        shadow.initialize(repeating: Shadow(), count: capacity)
        let words = Self.indexWords(capacity)
        if let index {
            occupancy = index.bindMemory(to: UInt64.self, capacity: words)
            ownsIndex = false
        } else {
            occupancy = .allocate(capacity: words)
            occupancy.initialize(repeating: 0, count: words)
            ownsIndex = true
        }
    }

    deinit {
        shadow.deallocate()
        if ownsIndex { occupancy.deallocate() }
    }

    /// Whether `entries` more slots may be taken: the table is filled (entries and
    /// withdrawn marks) to half at most. The program's lookup for a flow not offloaded
    /// walks from the flow's home slot to an empty one, a cache miss each, so a full
    /// table made every such frame probe all eight slots (805 ns a frame at 1 M NAT flows,
    /// against ~250 with offload off); half full, a miss costs 2.5 probes on average. The
    /// flows beyond stay with the worker.
    public func hasRoom(for entries: Int) -> Bool { used &+ marks &+ entries <= capacity / 2 }

    /// Words of the occupancy index for `capacity` slots (FULCRUM_OFFLOAD_INDEX_WORDS).
    public static func indexWords(_ capacity: Int) -> Int { ((capacity - 1) >> 6) + 1 }

    /// Whether slot `i`'s bit is set in the index the program reads first.
    public func indexed(_ i: Int) -> Bool { occupancy[i >> 6] & (1 << UInt64(i & 63)) != 0 }

    /// Sets slot `i`'s bit: before its first entry is written.
    @inlinable @inline(__always)
    func markOccupied(_ i: Int) { occupancy[i >> 6] |= 1 << UInt64(i & 63) }

    /// Flows whose frames the XDP program forwards now.
    public var offloadedFlows: Int { liveFlows.load(ordering: .relaxed) }

    // MARK: - The hash the XDP program computes

    /// fulcrum_offload_hash over a frame's key, as the program reads it from the frame:
    /// the addresses as four words and the ports and protocol as one, little-endian loads
    /// of network-order bytes.
    @inlinable
    public static func hash(_ k: FlowKey) -> UInt64 {
        let ports = UInt64(k.sourcePort.bigEndian) | UInt64(k.destinationPort.bigEndian) << 16 | UInt64(k.proto) << 32
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15
        h = mix(h, k.source.high.bigEndian)
        h = mix(h, k.source.low.bigEndian)
        h = mix(h, k.destination.high.bigEndian)
        h = mix(h, k.destination.low.bigEndian)
        h = mix(h, ports)
        return h ^ (h >> 29)
    }

    @inlinable @inline(__always)
    static func mix(_ h: UInt64, _ v: UInt64) -> UInt64 {
        let x = (h ^ v) &* 0xFF51_AFD7_ED55_8CCD
        return x ^ (x >> 32)
    }

    @inlinable @inline(__always)
    func probe(_ h: UInt64, _ i: Int) -> Int {
        Int((UInt32(truncatingIfNeeded: h) &+ UInt32(i)) & UInt32(truncatingIfNeeded: mask))
    }

    @inlinable @inline(__always)
    func entry(_ index: Int) -> UnsafeMutableRawPointer { region + index &* Layout.size }

    @inlinable @inline(__always)
    func keyMatches(_ e: UnsafeMutableRawPointer, _ k: FlowKey) -> Bool {
        e.load(fromByteOffset: Layout.proto, as: UInt8.self) == k.proto
            && e.loadUnaligned(fromByteOffset: Layout.sourcePort, as: UInt16.self) == k.sourcePort.bigEndian
            && e.loadUnaligned(fromByteOffset: Layout.destinationPort, as: UInt16.self) == k.destinationPort.bigEndian
            && e.loadUnaligned(fromByteOffset: Layout.source, as: UInt64.self) == k.source.high.bigEndian
            && e.loadUnaligned(fromByteOffset: Layout.source + 8, as: UInt64.self) == k.source.low.bigEndian
            && e.loadUnaligned(fromByteOffset: Layout.destination, as: UInt64.self) == k.destination.high.bigEndian
            && e.loadUnaligned(fromByteOffset: Layout.destination + 8, as: UInt64.self) == k.destination.low.bigEndian
    }

    /// The entry holding `wire` (the key as frames carry it), or -1.
    @inlinable
    public func find(_ wire: FlowKey) -> Int {
        let h = Self.hash(wire)
        for i in 0..<Layout.probes {
            let index = probe(h, i)
            if shadow[index].action != 0 && keyMatches(entry(index), wire) { return index }
        }
        return -1
    }

    // MARK: - Writing

    /// Opens an entry for writing: its sequence becomes odd, so the program skips it.
    @inlinable @inline(__always)
    func beginWrite(_ e: UnsafeMutableRawPointer) -> UInt32 {
        let seq = e.load(fromByteOffset: Layout.seq, as: UInt32.self)
        e.storeBytes(of: seq | 1, toByteOffset: Layout.seq, as: UInt32.self)
        atomicMemoryFence(ordering: .releasing)
        return seq | 1
    }

    /// Closes it: even again, and never 0 (0 is "never written").
    @inlinable @inline(__always)
    func endWrite(_ e: UnsafeMutableRawPointer, _ odd: UInt32) {
        atomicMemoryFence(ordering: .releasing)
        var next = odd &+ 1
        if next == 0 { next = 2 }
        e.storeBytes(of: next, toByteOffset: Layout.seq, as: UInt32.self)
    }

    /// Writes (or rewrites) the entry for frames carrying `wire` that arrive on
    /// `fromInterface` addressed to `inMAC` (its address): the rewrite for `action`, then
    /// out of `interface` toward `ethernet`. `flow` is the flow's key in
    /// the flow table (client to VIP) with its table hash; `nodeSlot` and `group` say
    /// whose counters its traffic goes to. An entry that already says the same is left
    /// alone. Returns the entry, -1 when its slots are all taken, or `notHere` when
    /// offloaded flows may not leave by `interface`.
    @discardableResult
    public func install(wire: FlowKey, action: Action, address: IPAddress = .zero, port: UInt16 = 0,
                        ethernet: EthernetAddresses, interface: Int, from fromInterface: Int, arrivingAt inMAC: MACAddress,
                        maxFrame: Int,
                        flow: FlowKey, flowHash: UInt64, nodeSlot: Int, group: Int, partner: Int = -1,
                        counters: WorkerCounters?) -> Int {
        guard interface >= 0 && interface < ifindexes.count && egress[interface] else { return Self.notHere }
        let h = Self.hash(wire)
        var free = -1
        var index = -1
        for i in 0..<Layout.probes {
            let candidate = probe(h, i)
            if shadow[candidate].action == 0 {
                if free < 0 { free = candidate }
            } else if keyMatches(entry(candidate), wire) {
                index = candidate
                break
            }
        }
        if index >= 0 {
            let s = shadow[index]
            if s.action == action.rawValue && Int(s.nodeSlot) == nodeSlot && Int(s.partner) == partner
                && holds(index, address: address, port: port, ethernet: ethernet, interface: interface,
                         from: fromInterface, arrivingAt: inMAC, maxFrame: maxFrame) {
                return index
            }
            fold(index, into: counters)  // the counts so far belong to the node it had
            // A partner it no longer has goes with the change (it would be left pointing here).
            let old = Int(s.partner)
            if old != partner && old >= 0 && old < capacity && shadow[old].action != 0 && Int(shadow[old].partner) == index {
                shadow[index].partner = -1
                clear(old, counters: counters)
            }
        } else {
            // At most half full (`hasRoom`); a withdrawn mark reused takes no more.
            guard free >= 0 else { return -1 }
            let reusesMark = actionByte(free) == Self.withdrawn
            guard reusesMark || hasRoom(for: 1) else { return -1 }
            index = free
            used &+= 1
            if reusesMark { marks -= 1 } else { markOccupied(index) }
            if action != .natSource { liveFlows.add(1, ordering: .relaxed) }
        }
        let e = entry(index)
        let odd = beginWrite(e)
        e.storeBytes(of: action.rawValue, toByteOffset: Layout.action, as: UInt8.self)
        e.storeBytes(of: wire.proto, toByteOffset: Layout.proto, as: UInt8.self)
        e.storeBytes(of: UInt16(clamping: maxFrame), toByteOffset: Layout.maxFrame, as: UInt16.self)
        e.storeBytes(of: wire.sourcePort.bigEndian, toByteOffset: Layout.sourcePort, as: UInt16.self)
        e.storeBytes(of: wire.destinationPort.bigEndian, toByteOffset: Layout.destinationPort, as: UInt16.self)
        e.storeBytes(of: port.bigEndian, toByteOffset: Layout.newPort, as: UInt16.self)
        Self.storeAddress(e, Layout.source, wire.source)
        Self.storeAddress(e, Layout.destination, wire.destination)
        Self.storeAddress(e, Layout.newAddress, address)
        e.storeBytes(of: ethernet.head, toByteOffset: Layout.ethernet, as: UInt64.self)
        e.storeBytes(of: ethernet.tail, toByteOffset: Layout.ethernet + 8, as: UInt32.self)
        e.storeBytes(of: UInt32(bitPattern: ifindexes[interface]), toByteOffset: Layout.ifindex, as: UInt32.self)
        e.storeBytes(of: ifindex(fromInterface), toByteOffset: Layout.fromIfindex, as: UInt32.self)
        e.storeBytes(of: Self.macBytes(inMAC), toByteOffset: Layout.inMAC, as: UInt64.self)
        endWrite(e, odd)
        var s = shadow[index]
        s.flow = flow
        s.flowHash = flowHash
        s.nodeSlot = Int32(truncatingIfNeeded: nodeSlot)
        s.partner = Int32(truncatingIfNeeded: partner)
        s.group = UInt16(truncatingIfNeeded: group)
        s.action = action.rawValue
        s.packets = e.load(fromByteOffset: Layout.packets, as: UInt64.self)
        s.bytes = e.load(fromByteOffset: Layout.bytes, as: UInt64.self)
        s.lastUsed = e.load(fromByteOffset: Layout.lastUsed, as: UInt64.self)
        shadow[index] = s
        return index
    }

    /// The kernel's index of interface `interface`, as an entry holds it (0 for no
    /// interface: an entry that takes frames from none).
    func ifindex(_ interface: Int) -> UInt32 {
        interface >= 0 && interface < ifindexes.count ? UInt32(bitPattern: ifindexes[interface]) : 0
    }

    /// Whether entry `index` writes and takes frames as given; what is left nil is not
    /// compared. The one reading of an entry's rewrite: `install` leaves an entry that
    /// says the same alone, a reload keeps one its new layout would write the same
    /// (`Balancer.writesTheSame`), and the scan keeps a reply entry that sends along the
    /// way back (`sendsAlong`).
    func holds(_ index: Int, address: IPAddress? = nil, port: UInt16? = nil, ethernet: EthernetAddresses? = nil,
               interface: Int? = nil, from: Int? = nil, arrivingAt inMAC: MACAddress? = nil, maxFrame: Int? = nil) -> Bool {
        let e = entry(index)
        if let ethernet, e.loadUnaligned(fromByteOffset: Layout.ethernet, as: UInt64.self) != ethernet.head
            || e.loadUnaligned(fromByteOffset: Layout.ethernet + 8, as: UInt32.self) != ethernet.tail { return false }
        if let interface, e.loadUnaligned(fromByteOffset: Layout.ifindex, as: UInt32.self) != ifindex(interface) { return false }
        if let maxFrame, e.loadUnaligned(fromByteOffset: Layout.maxFrame, as: UInt16.self) != UInt16(clamping: maxFrame) { return false }
        if let port, e.loadUnaligned(fromByteOffset: Layout.newPort, as: UInt16.self) != port.bigEndian { return false }
        if let address, Self.loadAddress(e, Layout.newAddress) != address { return false }
        if let from, e.loadUnaligned(fromByteOffset: Layout.fromIfindex, as: UInt32.self) != ifindex(from) { return false }
        if let inMAC, e.loadUnaligned(fromByteOffset: Layout.inMAC, as: UInt64.self) != Self.macBytes(inMAC) { return false }
        return true
    }

    /// What entry `index` does (nil: empty or withdrawn) and the flow-table key of its flow.
    func action(at index: Int) -> Action? { Action(rawValue: shadow[index].action) }
    func flow(at index: Int) -> FlowKey { shadow[index].flow }

    /// `in_mac` and the two pad bytes after it, as they lie in the entry: the address's
    /// six bytes in network order, then zeros.
    static func macBytes(_ mac: MACAddress) -> UInt64 { (mac.value << 16).bigEndian }

    /// Links a NAT flow's two entries, so that withdrawing one withdraws the other.
    @inlinable
    public func pair(_ forward: Int, _ reply: Int) {
        guard forward >= 0 && reply >= 0 else { return }
        shadow[forward].partner = Int32(truncatingIfNeeded: reply)
        shadow[reply].partner = Int32(truncatingIfNeeded: forward)
    }

    static func loadAddress(_ e: UnsafeMutableRawPointer, _ offset: Int) -> IPAddress {
        IPAddress(high: UInt64(bigEndian: e.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
                  low: UInt64(bigEndian: e.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
    }

    @inlinable @inline(__always)
    static func storeAddress(_ e: UnsafeMutableRawPointer, _ offset: Int, _ a: IPAddress) {
        e.storeBytes(of: a.high.bigEndian, toByteOffset: offset, as: UInt64.self)
        e.storeBytes(of: a.low.bigEndian, toByteOffset: offset + 8, as: UInt64.self)
    }

    /// Takes an entry out of the program's hands (and its partner with it); what it
    /// counted since the last fold is folded into `counters`.
    public func withdraw(_ index: Int, counters: WorkerCounters?) {
        guard index >= 0 && index < capacity && shadow[index].action != 0 else { return }
        let partner = Int(shadow[index].partner)
        clear(index, counters: counters)
        if partner >= 0 && partner < capacity && shadow[partner].action != 0 && Int(shadow[partner].partner) == index {
            clear(partner, counters: counters)
        }
    }

    /// Withdraws the entry for `wire` alone (a NAT reply's FIN or RST: the flow's forward
    /// entry stays until the client closes).
    public func withdrawOne(wire: FlowKey, counters: WorkerCounters?) {
        let index = find(wire)
        guard index >= 0 else { return }
        let partner = Int(shadow[index].partner)
        if partner >= 0 && partner < capacity && Int(shadow[partner].partner) == index { shadow[partner].partner = -1 }
        clear(index, counters: counters)
    }

    /// Withdraws one entry: marked withdrawn, which the program's probes pass over (a flow
    /// placed after it is still found), then emptied by `reclaim` if no flow needs it.
    func clear(_ index: Int, counters: WorkerCounters?) {
        setAction(index, Self.withdrawn)
        marks += 1
        fold(index, into: counters)
        counters?.count(.offloadWithdrawn)
        if shadow[index].action != Action.natSource.rawValue { liveFlows.add(-1, ordering: .relaxed) }
        shadow[index] = Shadow()
        used &-= 1
        reclaim(from: index)
    }

    /// Empties withdrawn slot `index` if no flow's probes pass it (no entry in the slots
    /// after it, within FULCRUM_OFFLOAD_PROBES, has its home slot at or before it), then
    /// the withdrawn slots before it while the same holds. A probe that meets an empty
    /// slot stops (fulcrum_abi.h), so a frame of a flow not offloaded costs the program
    /// one slot, not eight. `clear` calls it for the slot it withdraws; the scan, for the
    /// marks a withdrawal could not reach (behind an entry still in use then).
    func reclaim(from index: Int) {
        var i = index
        for _ in 0..<capacity {
            guard actionByte(i) == Self.withdrawn && !probesPass(i) else { return }
            setAction(i, 0)
            occupancy[i >> 6] &= ~(1 << UInt64(i & 63))  // after the slot is empty: a reader seeing the bit finds it so
            marks -= 1
            i = (i &- 1) & mask
        }
    }

    /// Whether a flow in the slots after `i` has its home at or before `i`: its probes
    /// pass `i`, which must not be empty.
    func probesPass(_ i: Int) -> Bool {
        for d in 1..<Layout.probes {
            let j = (i &+ d) & mask
            guard shadow[j].action != 0 else { continue }
            let home = probe(Self.hash(wireKey(j)), 0)
            if (i &- home) & mask < (j &- home) & mask { return true }
        }
        return false
    }

    /// FULCRUM_OFFLOAD_WITHDRAWN.
    public static let withdrawn: UInt8 = 0xFF

    func actionByte(_ index: Int) -> UInt8 { entry(index).load(fromByteOffset: Layout.action, as: UInt8.self) }

    func setAction(_ index: Int, _ action: UInt8) {
        let e = entry(index)
        let odd = beginWrite(e)
        e.storeBytes(of: action, toByteOffset: Layout.action, as: UInt8.self)
        endWrite(e, odd)
    }

    /// Withdraws every entry of flows on `nodeSlot` (it went down, was disabled or its
    /// MAC changed): their next frames go to the worker, which moves or re-offloads them.
    public func withdraw(nodeSlot: Int, counters: WorkerCounters?) {
        guard used > 0 else { return }
        for i in 0..<capacity where shadow[i].action != 0 && Int(shadow[i].nodeSlot) == nodeSlot {
            withdraw(i, counters: counters)
        }
    }

    /// Withdraws everything (a change of the active role, offload attached or detached).
    public func withdrawAll(counters: WorkerCounters?) {
        guard used > 0 else { return }
        for i in 0..<capacity where shadow[i].action != 0 { withdraw(i, counters: counters) }
    }

    // MARK: - A reload

    /// A reload: every entry in use is either kept, renumbered to the new layout's node
    /// slot and group that `target` gives (from its old ones), or withdrawn when `target`
    /// gives nil (its node is gone, or the new layout would write the entry otherwise); a
    /// NAT flow's two entries go together. The program keeps forwarding a kept entry
    /// throughout: nothing in it is written. What it counted so far is folded into
    /// `counters`, the old layout's (the new one carries them over), so that its later
    /// counts go to the new numbering.
    public func remap(counters: WorkerCounters?,
                      _ target: (_ index: Int, _ nodeSlot: Int, _ group: Int) -> (slot: Int, group: Int)?) {
        guard used > 0 else { return }
        // Each entry is judged by its own old numbering: a renumbered partner changes
        // nothing of its judgement, and a withdrawn one took this entry along already.
        for i in 0..<capacity where shadow[i].action != 0 {
            fold(i, into: counters)
            guard let to = target(i, Int(shadow[i].nodeSlot), Int(shadow[i].group)) else {
                withdraw(i, counters: counters)
                continue
            }
            shadow[i].nodeSlot = Int32(truncatingIfNeeded: to.slot)
            shadow[i].group = UInt16(truncatingIfNeeded: to.group)
        }
    }

    func wireKey(_ index: Int) -> FlowKey {
        let e = entry(index)
        return FlowKey(source: Self.loadAddress(e, Layout.source), destination: Self.loadAddress(e, Layout.destination),
                       sourcePort: UInt16(bigEndian: e.loadUnaligned(fromByteOffset: Layout.sourcePort, as: UInt16.self)),
                       destinationPort: UInt16(bigEndian: e.loadUnaligned(fromByteOffset: Layout.destinationPort,
                                                                          as: UInt16.self)),
                       proto: e.load(fromByteOffset: Layout.proto, as: UInt8.self))
    }

    // MARK: - Counts and ageing

    /// Adds what the program counted for entry `index` since the last fold to `counters`
    /// (nil: drops it, for a node change that rewrites the entry).
    func fold(_ index: Int, into counters: WorkerCounters?) {
        let e = entry(index)
        let packets = e.load(fromByteOffset: Layout.packets, as: UInt64.self)
        let bytes = e.load(fromByteOffset: Layout.bytes, as: UInt64.self)
        let s = shadow[index]
        // What moved since the last fold: a frame whose packet and bytes were read on
        // either side of the program's two adds is counted in two folds, whole in the
        // sum. Never backwards: a slot rewritten for a flow of another interface while a
        // frame of its old flow was still being counted has two writers for that
        // instant, and a plain add may then undo one; the count read is the new start.
        guard packets != s.packets || bytes != s.bytes else { return }
        let backwards = packets < s.packets || bytes < s.bytes
        shadow[index].packets = packets
        shadow[index].bytes = bytes
        guard !backwards, let counters else { return }
        let dp = packets &- s.packets
        let db = bytes &- s.bytes
        // `received` and `transmitted` stay the worker's own frames (the XDP program's
        // `to_worker` equals `received`); the traffic counters include these.
        counters.count(.offloaded, dp)
        let g = Int(s.group)
        if s.action == Action.natSource.rawValue {
            counters.count(.natReplies, dp)
            if g < counters.groupCount { counters.countGroup(g, .bytes, db) }
        } else {
            if g < counters.groupCount { counters.countGroup(g, packets: dp, bytes: db) }
            let slot = Int(s.nodeSlot)
            if slot >= 0 && slot < counters.nodeSlotCount { counters.countNode(slot, packets: dp, bytes: db) }
        }
    }

    /// Paced work for every worker loop: looks at the entries due (the whole region once
    /// per `scanPeriod`, at most `maxEntries` a call), folds their counts, carries their
    /// last use into the flow table, and withdraws a flow's entries when the flow left the
    /// table or has another node there now (a flow-sync record, a reused tuple). A reply
    /// entry goes with its flow, when it lost its partner, and when `replyHop` (the way to
    /// its client now) is not where the entry sends. Returns the entries looked at.
    @discardableResult
    public func scan(now: UInt64, flows: FlowTable, counters: WorkerCounters, maxEntries: Int = 4096,
                     replyHop: (IPAddress) -> (ethernet: EthernetAddresses, interface: Int)?) -> Int {
        let due = scanPace.due(now: now, items: capacity, period: scanPeriod, max: maxEntries)
        guard due > 0 else { return 0 }
        guard used > 0 else {
            scanCursor = (scanCursor &+ due) & mask
            return due
        }
        for _ in 0..<due {
            let i = scanCursor
            scanCursor = (scanCursor &+ 1) & mask
            let action = shadow[i].action
            guard action != 0 else {
                if marks > 0 { reclaim(from: i) }
                continue
            }
            fold(i, into: counters)
            let s = shadow[i]
            if action == Action.natSource.rawValue {
                let partner = Int(s.partner)
                let paired = partner >= 0 && partner < capacity && shadow[partner].action != 0 && Int(shadow[partner].partner) == i
                if !paired || !sendsAlong(i, replyHop(wireKey(i).destination)) { withdraw(i, counters: counters) }
                continue
            }
            // The stamp first, then the flow: an entry used since the last look keeps its
            // flow alive even if the flow's deadline passed in between.
            let slot = flows.slot(of: s.flow, hash: s.flowHash)
            guard slot >= 0, flows.nodeSlot(slot) == Int(s.nodeSlot) else {
                withdraw(i, counters: counters)
                continue
            }
            let lastUsed = entry(i).load(fromByteOffset: Layout.lastUsed, as: UInt64.self)
            if lastUsed > s.lastUsed {
                shadow[i].lastUsed = lastUsed
                flows.touch(slot, state: flows.entry(slot).state, now: min(lastUsed, now))
            } else if flows.entry(slot).deadline <= now {
                withdraw(i, counters: counters)  // idle past its timeout: the flow is over
            }
        }
        return due
    }

    /// Whether entry `index` sends where `hop` says. A hop not known now (a learnt MAC
    /// evicted from its cache, a neighbour entry being refreshed) keeps the entry: only a
    /// different way is a reason to withdraw it.
    func sendsAlong(_ index: Int, _ hop: (ethernet: EthernetAddresses, interface: Int)?) -> Bool {
        guard let hop else { return true }
        guard hop.interface >= 0 && hop.interface < ifindexes.count, egress[hop.interface] else { return false }
        return holds(index, ethernet: hop.ethernet, interface: hop.interface)
    }

    /// Withdraws (with its flow's forward entry) every reply entry that `replyHop` says
    /// goes another way now: the routes or neighbours changed. The flow's next frame at
    /// the worker offers both again, along the new way.
    public func revalidateReplies(counters: WorkerCounters?,
                                  _ replyHop: (IPAddress) -> (ethernet: EthernetAddresses, interface: Int)?) {
        guard used > 0 else { return }
        for i in 0..<capacity where shadow[i].action == Action.natSource.rawValue {
            if !sendsAlong(i, replyHop(wireKey(i).destination)) { withdraw(i, counters: counters) }
        }
    }
}
