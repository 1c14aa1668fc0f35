/// The framing every signed UDP message of the product shares (the agents' reports, the
/// pair's heartbeats, and the flow sync to come): a fixed size, four bytes of magic and
/// a version, the signed bytes, then an HMAC-SHA256 of them (32 bytes), keyed by a shared
/// key file (`SharedKey`), big-endian integers, and an (epoch, sequence) pair that a
/// `ReplayGuard` holds to. The HMAC itself is swift-crypto's, outside this module.
public protocol SignedMessage: Sendable {
    static var magic: [UInt8] { get }
    static var version: UInt8 { get }
    /// The whole datagram, HMAC included.
    static var size: Int { get }
}

extension SignedMessage {
    /// The bytes the HMAC covers.
    public static var signedBytes: Int { size - 32 }

    /// Size, magic and version; nil when they are right.
    public static func frameProblem(_ datagram: UnsafeRawBufferPointer) -> MessageRejection? {
        if datagram.count < size { return .truncated }
        if datagram.count > size { return .oversize }
        for i in 0..<4 where datagram[i] != magic[i] { return .garbage }
        return datagram[4] == version ? nil : .garbage
    }
}

/// Why a datagram is not a usable message, as every listener counts it (metric labels).
public enum MessageRejection: String, CaseIterable, Sendable, Error {
    case truncated, oversize, garbage
    case badMAC = "bad_mac"
    case oldEpoch = "old_epoch"
    case futureEpoch = "future_epoch"
    case replayed
    /// Signed and fresh, but from no sender this LB knows.
    case unknownNode = "unknown_node"
    /// The sender it names is not the address it came from.
    case sourceMismatch = "source_mismatch"
    /// Sent on another link than the one it arrived on (a copy moved between links).
    case wrongInterconnect = "wrong_interconnect"

    public init(_ staleness: Staleness) {
        switch staleness {
        case .oldEpoch: self = .oldEpoch
        case .futureEpoch: self = .futureEpoch
        case .replayed: self = .replayed
        }
    }
}

/// Big-endian integers in and out of a message's bytes.
public enum BigEndian {
    public static func append(_ v: UInt64, bytes: Int, to out: inout [UInt8]) {
        for i in stride(from: bytes - 1, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    public static func read(_ b: UnsafeRawBufferPointer, _ offset: Int, _ count: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<count { v = v << 8 | UInt64(b[offset + i]) }
        return v
    }

    public static func read(_ b: [UInt8], _ offset: Int, _ count: Int) -> UInt64 {
        b.withUnsafeBytes { read($0, offset, count) }
    }
}
