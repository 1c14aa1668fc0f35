/// A batch of frames for `Balancer.process(_:count:now:)`: where each frame is, its length,
/// and after the call its verdict. Allocated once per worker and reused for every batch,
/// so the per-packet path allocates nothing.
public final class PacketBatch: @unchecked Sendable {
    public let capacity: Int
    public let frames: UnsafeMutablePointer<UnsafeMutableRawPointer>
    public let lengths: UnsafeMutablePointer<Int>
    public let verdicts: UnsafeMutablePointer<Verdict>
    /// The balancer's scratch between its passes.
    @usableFromInline let pending: UnsafeMutablePointer<FlowPacket>

    public init(capacity: Int = 64) {
        precondition(capacity > 0)
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
/// of a frame between its passes over a batch.
@usableFromInline struct FlowPacket {
    @usableFromInline var key: FlowKey
    @usableFromInline var hash: UInt64
    @usableFromInline var group: Int
    @usableFromInline var headers: TransportHeaders
    @usableFromInline var tcpFlags: UInt8
    /// The frame's position in its batch.
    @usableFromInline var index: Int = 0

    @inlinable
    init(key: FlowKey, hash: UInt64, group: Int, headers: TransportHeaders, tcpFlags: UInt8) {
        self.key = key
        self.hash = hash
        self.group = group
        self.headers = headers
        self.tcpFlags = tcpFlags
    }

    @inlinable
    init() {
        self.init(key: FlowKey(source: .zero, destination: .zero, sourcePort: 0, destinationPort: 0, proto: 0),
                  hash: 0, group: -1, headers: TransportHeaders(family: .ipv4, proto: 0, l3Offset: 0, l4Offset: 0),
                  tcpFlags: 0)
    }
}
