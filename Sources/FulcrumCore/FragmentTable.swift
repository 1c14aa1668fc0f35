/// Where the fragments of one IP datagram go: a worker's small, fixed table that keeps
/// every fragment of a datagram on one path, whatever order they arrive in.
///
/// Keyed by what all fragments of a datagram share (source, destination, protocol and
/// IP identification), it remembers the decision made for the first fragment that
/// arrived: toward a node (group and node slot) or back to a client (a NAT reply's
/// target). Entries live `lifetime` nanoseconds. The table is 4-way set-associative with
/// a fixed number of sets; a full set evicts its oldest entry, so memory never grows,
/// and a fragment flood only costs the datagrams whose entries it evicts.
public final class FragmentTable {
    public enum Decision: Equatable, Sendable {
        /// Toward a node of a group: the node slot, as the balancer numbers them.
        case node(group: Int, slot: Int)
        /// A NAT node's reply: the index of its reverse target.
        case reply(target: Int)
    }

    @usableFromInline struct Entry {
        @usableFromInline var source: IPAddress
        @usableFromInline var destination: IPAddress
        @usableFromInline var id: UInt32
        @usableFromInline var proto: UInt8
        @usableFromInline var decision: Decision
        /// 0: empty.
        @usableFromInline var deadline: UInt64

        @inlinable
        init(source: IPAddress, destination: IPAddress, id: UInt32, proto: UInt8, decision: Decision, deadline: UInt64) {
            self.source = source
            self.destination = destination
            self.id = id
            self.proto = proto
            self.decision = decision
            self.deadline = deadline
        }
    }

    public static let ways = 4
    /// Fragments of one datagram arrive within milliseconds of each other; the kernel's
    /// own reassembly gives up after 30 s, but a forwarder needs far less.
    public static let defaultLifetime: UInt64 = 2 * FlowTimeouts.seconds

    public let capacity: Int
    public let lifetime: UInt64
    @usableFromInline let setMask: Int
    @usableFromInline let entries: UnsafeMutablePointer<Entry>

    /// - Parameter capacity: entries, rounded up to a power of two (at least `ways`).
    public init(capacity: Int = 4096, lifetime: UInt64 = FragmentTable.defaultLifetime) {
        var sets = 1
        while sets * FragmentTable.ways < capacity { sets <<= 1 }
        self.capacity = sets * FragmentTable.ways
        self.lifetime = lifetime
        setMask = sets - 1
        entries = .allocate(capacity: self.capacity)
        entries.initialize(repeating: Entry(source: .zero, destination: .zero, id: 0, proto: 0,
                                            decision: .reply(target: 0), deadline: 0),
                           count: self.capacity)
    }

    deinit { entries.deallocate() }

    /// The hash of what a datagram's fragments share. Also the consistent hash a later
    /// fragment is scheduled by when it arrives before the first.
    @inlinable
    public static func hash(_ p: ParsedPacket) -> UInt64 {
        FlowKey(source: p.source, destination: p.destination, sourcePort: UInt16(truncatingIfNeeded: p.fragmentID >> 16),
                destinationPort: UInt16(truncatingIfNeeded: p.fragmentID), proto: p.proto).stableHash(seed: 0x46_52_41_47)
    }

    @inlinable
    func matches(_ e: Entry, _ p: ParsedPacket) -> Bool {
        e.id == p.fragmentID && e.proto == p.proto && e.source == p.source && e.destination == p.destination
    }

    /// The decision for `p`'s datagram, if one of its fragments was seen within the lifetime.
    @inlinable
    public func find(_ p: ParsedPacket, hash: UInt64, now: UInt64) -> Decision? {
        let base = (Int(truncatingIfNeeded: hash >> 16) & setMask) &* FragmentTable.ways
        var i = base
        while i < base &+ FragmentTable.ways {
            if entries[i].deadline > now && matches(entries[i], p) { return entries[i].decision }
            i &+= 1
        }
        return nil
    }

    /// Remembers the decision for `p`'s datagram, in a free or expired way, else over the
    /// oldest entry of its set.
    @inlinable
    public func insert(_ p: ParsedPacket, hash: UInt64, now: UInt64, _ decision: Decision) {
        let base = (Int(truncatingIfNeeded: hash >> 16) & setMask) &* FragmentTable.ways
        var victim = base
        var i = base
        while i < base &+ FragmentTable.ways {
            if entries[i].deadline <= now || matches(entries[i], p) {
                victim = i
                break
            }
            if entries[i].deadline < entries[victim].deadline { victim = i }
            i &+= 1
        }
        entries[victim] = Entry(source: p.source, destination: p.destination, id: p.fragmentID, proto: p.proto,
                                decision: decision, deadline: now &+ lifetime)
    }

    /// Live entries (for status and tests; walks the table).
    public func count(now: UInt64) -> Int {
        (0..<capacity).reduce(0) { $0 + (entries[$1].deadline > now ? 1 : 0) }
    }
}
