/// One flow as the active tells the standby of it: state, not an event. The node is named
/// by its identity (address and port), never by a slot number, so the record means the
/// same on an LB whose layout numbers nodes otherwise; for NAT that pair is the
/// translation itself. The lifetime is what is left of the flow's idle timeout, coarse
/// (whole seconds, rounded up): the standby ages its copy by it.
public struct FlowSyncRecord: Sendable, Equatable, BitwiseCopyable {
    public var key: FlowKey
    public var node: IPAddress
    public var nodePort: UInt16
    public var state: FlowState
    /// Seconds the flow lives on without another packet.
    public var lifetime: UInt16
    /// When the worker handed it over (monotonic ns, this LB's): the lag is measured from it.
    public var exportedAt: UInt64

    public init(key: FlowKey, node: IPAddress, nodePort: UInt16, state: FlowState, lifetime: UInt16,
                exportedAt: UInt64 = 0) {
        self.key = key
        self.node = node
        self.nodePort = nodePort
        self.state = state
        self.lifetime = lifetime
        self.exportedAt = exportedAt
    }

    /// Whole seconds from `now` to `deadline`, rounded up, at most `UInt16.max`.
    @inlinable
    public static func lifetime(deadline: UInt64, now: UInt64) -> UInt16 {
        guard deadline > now else { return 0 }
        let s = (deadline &- now &+ 999_999_999) / 1_000_000_000
        return UInt16(clamping: s)
    }

    // MARK: Wire format

    /// Bytes a record takes on the wire: 22 for IPv4, 58 for IPv6 (a MAT node of the other
    /// family than its VIP's takes its own width: 34 or 46).
    @inlinable
    public var encodedSize: Int {
        (key.source.isIPv4 ? 10 : 34) + (node.isIPv4 ? 4 : 16) + 8
    }
    public static let v4Size = 22
    public static let v6Size = 58

    /// Writes the record at `p` (which has `encodedSize` bytes of room): a flags byte
    /// (bit 7: an IPv6 flow; bit 6: a node of the other family; bits 0–2: state), the
    /// protocol, both ports, source, destination, node, node port, lifetime; integers
    /// big-endian, addresses in network order.
    @inlinable
    public func encode(to p: UnsafeMutableRawPointer) -> Int {
        let v4 = key.source.isIPv4
        let nodeV4 = node.isIPv4
        p.storeBytes(of: (v4 ? 0 : 0x80) | (nodeV4 == v4 ? 0 : 0x40) | state.rawValue & 0x07, toByteOffset: 0, as: UInt8.self)
        p.storeBytes(of: key.proto, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: key.sourcePort.bigEndian, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: key.destinationPort.bigEndian, toByteOffset: 4, as: UInt16.self)
        var o = 6
        for (i, a) in [key.source, key.destination, node].enumerated() {
            if i < 2 ? v4 : nodeV4 {
                p.storeBytes(of: a.ipv4.bigEndian, toByteOffset: o, as: UInt32.self)
                o &+= 4
            } else {
                p.storeBytes(of: a.high.bigEndian, toByteOffset: o, as: UInt64.self)
                p.storeBytes(of: a.low.bigEndian, toByteOffset: o &+ 8, as: UInt64.self)
                o &+= 16
            }
        }
        p.storeBytes(of: nodePort.bigEndian, toByteOffset: o, as: UInt16.self)
        p.storeBytes(of: lifetime.bigEndian, toByteOffset: o &+ 2, as: UInt16.self)
        return o &+ 4
    }

    /// Reads a record from `bytes` at `offset`; nil (and the reason) when it does not fit
    /// or is not one. Returns the record and the bytes it took.
    public static func decode(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> (FlowSyncRecord, Int)? {
        guard offset < bytes.count else { return nil }
        let flags = bytes[offset]
        let v4 = flags & 0x80 == 0
        let nodeV4 = v4 != (flags & 0x40 != 0)
        let width = v4 ? 4 : 16, nodeWidth = nodeV4 ? 4 : 16
        let size = 6 + 2 * width + nodeWidth + 4
        guard offset + size <= bytes.count, flags & 0x38 == 0,
              let state = FlowState(rawValue: flags & 0x07) else { return nil }
        func u16(_ o: Int) -> UInt16 { UInt16(bytes[offset + o]) << 8 | UInt16(bytes[offset + o + 1]) }
        func address(_ o: Int, _ four: Bool) -> IPAddress {
            if four { return IPAddress(ipv4: UInt32(BigEndian.read(bytes, offset + o, 4))) }
            return IPAddress(high: BigEndian.read(bytes, offset + o, 8), low: BigEndian.read(bytes, offset + o + 8, 8))
        }
        let key = FlowKey(source: address(6, v4), destination: address(6 + width, v4), sourcePort: u16(2),
                          destinationPort: u16(4), proto: bytes[offset + 1])
        let node = address(6 + 2 * width, nodeV4)
        let tail = 6 + 2 * width + nodeWidth
        return (FlowSyncRecord(key: key, node: node, nodePort: u16(tail), state: state, lifetime: u16(tail + 2)), size)
    }
}

/// The flow sync's datagrams, signed like every UDP message of the product (magic and
/// version, big-endian integers, an HMAC-SHA256 of the rest in the last 32 bytes, computed
/// outside this module) but of varying length: a header, then records or an
/// acknowledgement. Data flows active → standby on a *stream*: an epoch (Unix ms at its
/// start, later for each new stream) and a sequence from 1. Acknowledgements flow back.
public enum FlowSyncWire {
    public static let magic: [UInt8] = Array("FLSY".utf8)
    public static let version: UInt8 = 1
    public static let macSize = 32
    /// magic 4, version 1, kind 1, flags 1, reserved 1, epoch 8, sequence 8, config version 4, count 2.
    public static let headerSize = 30
    /// The largest datagram: an Ethernet MTU's UDP payload over IPv6.
    public static let maxDatagram = 1452

    public enum Kind: UInt8, Sendable {
        /// Records (`count` of them).
        case data = 1
        /// The end of a bulk transfer: the standby is ready once it holds every datagram up
        /// to this one's sequence.
        case bulkEnd = 2
        /// Standby → active: what it holds (`Ack`).
        case ack = 3
    }

    public struct Header: Sendable, Equatable {
        public var kind: Kind
        public var flags: UInt8
        public var epoch: UInt64
        public var sequence: UInt64
        public var configVersion: UInt32
        public var count: UInt16

        public init(kind: Kind, flags: UInt8 = 0, epoch: UInt64, sequence: UInt64, configVersion: UInt32, count: UInt16) {
            self.kind = kind
            self.flags = flags
            self.epoch = epoch
            self.sequence = sequence
            self.configVersion = configVersion
            self.count = count
        }

        public func encode(to p: UnsafeMutableRawPointer) {
            for i in 0..<4 { p.storeBytes(of: FlowSyncWire.magic[i], toByteOffset: i, as: UInt8.self) }
            p.storeBytes(of: FlowSyncWire.version, toByteOffset: 4, as: UInt8.self)
            p.storeBytes(of: kind.rawValue, toByteOffset: 5, as: UInt8.self)
            p.storeBytes(of: flags, toByteOffset: 6, as: UInt8.self)
            p.storeBytes(of: UInt8(0), toByteOffset: 7, as: UInt8.self)
            p.storeBytes(of: epoch.bigEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: sequence.bigEndian, toByteOffset: 16, as: UInt64.self)
            p.storeBytes(of: configVersion.bigEndian, toByteOffset: 24, as: UInt32.self)
            p.storeBytes(of: count.bigEndian, toByteOffset: 28, as: UInt16.self)
        }

        /// The header of a datagram whose MAC was checked; nil and why when it is not one.
        public static func decode(_ b: UnsafeRawBufferPointer) -> Result<Header, MessageRejection> {
            guard b.count >= headerSize + macSize else { return .failure(.truncated) }
            guard b.count <= maxDatagram else { return .failure(.oversize) }
            for i in 0..<4 where b[i] != magic[i] { return .failure(.garbage) }
            guard b[4] == version, let kind = Kind(rawValue: b[5]) else { return .failure(.garbage) }
            return .success(Header(kind: kind, flags: b[6], epoch: BigEndian.read(b, 8, 8), sequence: BigEndian.read(b, 16, 8),
                                   configVersion: UInt32(BigEndian.read(b, 24, 4)), count: UInt16(BigEndian.read(b, 28, 2))))
        }
    }

    /// The standby's acknowledgement: the stream it follows, every sequence up to
    /// `cumulative` held, the highest it holds, the first gaps between (each resent by the
    /// active; every other sequence up to `highest` is held, and is not), whether it
    /// is ready (the bulk transfer done), and whether it needs one (it holds no stream).
    /// Its own epoch and sequence (the header's) are a `ReplayGuard`'s.
    public struct Ack: Sendable, Equatable {
        public var stream: UInt64
        public var cumulative: UInt64
        /// The highest sequence held (`cumulative` when there is no gap).
        public var highest: UInt64
        public var ready: Bool
        public var needsBulk: Bool
        public var missing: [UInt64]
        public static let maxMissing = 64

        public init(stream: UInt64, cumulative: UInt64, highest: UInt64? = nil, ready: Bool, needsBulk: Bool, missing: [UInt64]) {
            self.stream = stream
            self.cumulative = cumulative
            self.highest = max(cumulative, highest ?? cumulative)
            self.ready = ready
            self.needsBulk = needsBulk
            self.missing = Array(missing.prefix(Self.maxMissing))
        }

        /// Body bytes after the header: stream 8, cumulative 8, highest 8, then each missing
        /// sequence 8.
        /// Header flags: bit 0 ready, bit 1 needs a bulk transfer; count: missing sequences.
        public func encode(to p: UnsafeMutableRawPointer) -> Int {
            p.storeBytes(of: stream.bigEndian, toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: cumulative.bigEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: highest.bigEndian, toByteOffset: 16, as: UInt64.self)
            for (i, s) in missing.enumerated() { p.storeBytes(of: s.bigEndian, toByteOffset: 24 + 8 * i, as: UInt64.self) }
            return 24 + 8 * missing.count
        }

        public var flags: UInt8 { (ready ? 1 : 0) | (needsBulk ? 2 : 0) }

        public static func decode(_ body: UnsafeRawBufferPointer, header: Header) -> Ack? {
            let n = Int(header.count)
            guard n <= maxMissing, body.count == 24 + 8 * n else { return nil }
            return Ack(stream: BigEndian.read(body, 0, 8), cumulative: BigEndian.read(body, 8, 8),
                       highest: BigEndian.read(body, 16, 8), ready: header.flags & 1 != 0, needsBulk: header.flags & 2 != 0,
                       missing: (0..<n).map { BigEndian.read(body, 24 + 8 * $0, 8) })
        }
    }
}

// Plain words: a record is copied into and out of the sync rings as bytes.
extension IPAddress: BitwiseCopyable {}
extension FlowKey: BitwiseCopyable {}
extension FlowState: BitwiseCopyable {}
