/// A 5-tuple in the client-to-service direction. IPv4 addresses are IPv4-mapped, so one
/// key type serves both families.
public struct FlowKey: Hashable, Sendable {
    public var source: IPAddress
    public var destination: IPAddress
    /// Source port, destination port and protocol in one word (`sport << 24 | dport << 8
    /// | proto`), so that a key is five words to store, compare and hash.
    @usableFromInline var portsAndProto: UInt64

    @inlinable
    public init(source: IPAddress, destination: IPAddress, sourcePort: UInt16,
                destinationPort: UInt16, proto: UInt8) {
        self.source = source
        self.destination = destination
        portsAndProto = UInt64(sourcePort) << 24 | UInt64(destinationPort) << 8 | UInt64(proto)
    }

    @inlinable public var sourcePort: UInt16 { UInt16(truncatingIfNeeded: portsAndProto >> 24) }
    @inlinable public var destinationPort: UInt16 { UInt16(truncatingIfNeeded: portsAndProto >> 8) }
    @inlinable public var proto: UInt8 { UInt8(truncatingIfNeeded: portsAndProto) }
    /// The service side of the ports-and-protocol word: `dport << 8 | proto`.
    @inlinable var destinationPortAndProto: UInt64 { portsAndProto & 0xFF_FFFF }

    /// A well-mixed 64-bit hash that is the same in every process and on every LB, so
    /// that two LBs make the same stateless decision for a flow (unlike `Hasher`, which is
    /// seeded per process).
    @inlinable @inline(__always)
    public func stableHash(seed: UInt64 = 0) -> UInt64 {
        // Three independent multiplies (they run in parallel) and a one-multiply
        // finaliser: cheap enough for every packet, deterministic across processes and LBs.
        let a = (source.low ^ seed) &* 0x9E37_79B9_7F4A_7C15
        let b = destination.low &* 0xC2B2_AE3D_27D4_EB4F
        let c = (source.high ^ (destination.high >> 1) ^ portsAndProto) &* 0x1656_67B1_9E37_79F9
        var h = a ^ ((b << 29) | (b >> 35)) ^ c
        h ^= h >> 32
        h &*= 0xD6E8_FEB8_6659_FD93
        return h ^ (h >> 32)
    }
}

/// Deterministic hashing (murmur3's finaliser over a multiply-rotate combine).
public enum StableHash {
    @inlinable @inline(__always)
    public static func combine(_ h: UInt64, _ v: UInt64) -> UInt64 {
        var k = v &* 0x87C3_7B91_1142_53D5
        k = (k << 31) | (k >> 33)
        k = k &* 0x4CF5_AD43_2745_937F
        let x = h ^ k
        return ((x << 27) | (x >> 37)) &* 5 &+ 0x52DC_E729
    }

    @inlinable @inline(__always)
    public static func finalize(_ value: UInt64) -> UInt64 {
        var h = value
        h ^= h >> 33
        h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        h = h &* 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        return h
    }

    @inlinable
    public static func hash(_ address: IPAddress, seed: UInt64 = 0) -> UInt64 {
        finalize(combine(combine(seed ^ 0x2545_F491_4F6C_DD1D, address.high), address.low))
    }
}

extension FlowKey {
    // Written out so that the comparison inlines into other modules' hot loops.
    @inlinable @inline(__always)
    public static func == (a: FlowKey, b: FlowKey) -> Bool {
        a.source.low == b.source.low && a.destination.low == b.destination.low
            && a.portsAndProto == b.portsAndProto
            && a.source.high == b.source.high && a.destination.high == b.destination.high
    }
}
