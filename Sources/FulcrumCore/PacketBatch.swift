/// A batch of frames for `Balancer.process(_:count:now:)`: where each frame is, its length,
/// and after the call its verdict. Allocated once per worker and reused for every batch,
/// so the per-packet path allocates nothing.
public final class PacketBatch: @unchecked Sendable {
    public let capacity: Int
    public let frames: UnsafeMutablePointer<UnsafeMutableRawPointer>
    public let lengths: UnsafeMutablePointer<Int>
    public let verdicts: UnsafeMutablePointer<Verdict>
    /// How many bytes each frame's buffer holds from the frame's start; 0: no more than
    /// the frame's own length (an answer longer than its request is then not built).
    public var frameCapacity = 0
    /// The balancer's scratch between its passes.
    @usableFromInline let pending: UnsafeMutablePointer<FlowPacket>

    /// Frames are numbered in 16 bits between the balancer's passes.
    public static let maxCapacity = Int(UInt16.max)

    public init(capacity: Int = 64) {
        precondition(capacity > 0 && capacity <= PacketBatch.maxCapacity)
        self.capacity = capacity
        frames = .allocate(capacity: capacity)
        // A placeholder until the caller fills them in: a non-nil pointer that is never read.
        frames.initialize(repeating: UnsafeMutableRawPointer(bitPattern: 0x40)!, count: capacity)
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: 0, count: capacity)
        verdicts = .allocate(capacity: capacity)
        verdicts.initialize(repeating: .pass, count: capacity)
        pending = .allocate(capacity: capacity)
        pending.initialize(repeating: FlowPacket(), count: capacity)
    }

    deinit {
        frames.deallocate()
        lengths.deallocate()
        verdicts.deallocate()
        pending.deallocate()
    }
}

/// What the flow decision needs of a TCP/UDP packet of a service: what `Balancer` keeps
/// of a frame between its passes over a batch. One cache line, in narrow fields, so that
/// carrying it costs few stores and loads.
@usableFromInline struct FlowPacket {
    @usableFromInline var key: FlowKey
    @usableFromInline var hash: UInt64
    @usableFromInline var group: UInt16
    /// The frame's position in its batch.
    @usableFromInline var index: UInt16 = 0
    @usableFromInline var l3Offset: UInt16
    @usableFromInline var l4Offset: UInt16
    @usableFromInline var family: IPFamily
    @usableFromInline var tcpFlags: UInt8

    @inlinable
    init(key: FlowKey, hash: UInt64, group: Int, headers: TransportHeaders, tcpFlags: UInt8) {
        self.key = key
        self.hash = hash
        self.group = UInt16(truncatingIfNeeded: group)
        l3Offset = UInt16(truncatingIfNeeded: headers.l3Offset)
        l4Offset = UInt16(truncatingIfNeeded: headers.l4Offset)
        family = headers.family
        self.tcpFlags = tcpFlags
    }

    @inlinable
    init() {
        self.init(key: FlowKey(source: .zero, destination: .zero, sourcePort: 0, destinationPort: 0, proto: 0),
                  hash: 0, group: 0, headers: TransportHeaders(family: .ipv4, proto: 0, l3Offset: 0, l4Offset: 0),
                  tcpFlags: 0)
    }

    @inlinable @inline(__always)
    var headers: TransportHeaders {
        TransportHeaders(family: family, proto: key.proto, l3Offset: Int(l3Offset), l4Offset: Int(l4Offset))
    }
}
