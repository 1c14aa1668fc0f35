/// The Internet checksum: full computation (RFC 1071) and incremental update (RFC 1624).
public enum Checksum {
    /// One's-complement sum of `count` bytes as 16-bit big-endian words, not yet folded.
    /// An odd trailing byte is padded with zero, as RFC 1071 says.
    @inlinable
    public static func sum(_ p: UnsafeRawPointer, count: Int, initial: UInt64 = 0) -> UInt64 {
        var acc = initial
        var i = 0
        while i &+ 1 < count {
            acc &+= UInt64(RawBytes.load16(p, i))
            i &+= 2
        }
        if i < count { acc &+= UInt64(RawBytes.load8(p, i)) << 8 }
        return acc
    }

    /// Folds carries back in until the value fits 16 bits, branch-free: the two 32-bit
    /// halves are added with end-around carry, then the two 16-bit halves, by adding the
    /// word to itself rotated (the upper half of `s + rotl(s, 16)` is `hi + lo` plus the
    /// carry out of `lo + hi`, which is the end-around carry). Any 64-bit sum.
    @inlinable @inline(__always)
    public static func fold(_ value: UInt64) -> UInt16 {
        let t = (value & 0xFFFF_FFFF) &+ (value >> 32)  // < 2^33
        let s = UInt32(truncatingIfNeeded: t) &+ UInt32(truncatingIfNeeded: t >> 32)  // cannot carry again
        return UInt16(truncatingIfNeeded: (s &+ (s << 16 | s >> 16)) >> 16)
    }

    /// The value to store in a checksum field: the complement of the folded sum.
    @inlinable @inline(__always)
    public static func finish(_ sum: UInt64) -> UInt16 { ~fold(sum) }

    /// Sum of the TCP/UDP/ICMPv6 pseudo-header (RFC 768, RFC 8200 §8.1).
    @inlinable
    public static func pseudoHeaderSum(source: IPAddress, destination: IPAddress,
                                       protocol proto: UInt8, length: Int) -> UInt64 {
        var acc: UInt64 = UInt64(proto) &+ UInt64(length & 0xFFFF) &+ UInt64(length >> 16)
        if source.isIPv4 {
            acc &+= wordSum32(source.ipv4) &+ wordSum32(destination.ipv4)
        } else {
            acc &+= wordSum128(source) &+ wordSum128(destination)
        }
        return acc
    }

    @inlinable @inline(__always)
    static func wordSum32(_ v: UInt32) -> UInt64 { UInt64(v >> 16) &+ UInt64(v & 0xFFFF) }

    @inlinable @inline(__always)
    static func wordSum64(_ v: UInt64) -> UInt64 {
        (v >> 48) &+ ((v >> 32) & 0xFFFF) &+ ((v >> 16) & 0xFFFF) &+ (v & 0xFFFF)
    }

    @inlinable @inline(__always)
    static func wordSum128(_ a: IPAddress) -> UInt64 { wordSum64(a.high) &+ wordSum64(a.low) }
}

/// Accumulates the change of some 16-bit words so that any checksum covering them can be
/// updated without reading the rest of the data: HC' = ~(~HC + ~m + m') (RFC 1624 eqn. 3).
public struct ChecksumDelta {
    @usableFromInline var acc: UInt64 = 0

    @inlinable public init() {}

    @inlinable @inline(__always)
    public mutating func replace16(_ old: UInt16, _ new: UInt16) {
        acc &+= UInt64(~old) &+ UInt64(new)
    }

    /// Two 16-bit words at once: the fold adds a 32-bit value's halves with end-around
    /// carry, which is what replacing each half would have added.
    @inlinable @inline(__always)
    public mutating func replace32(_ old: UInt32, _ new: UInt32) {
        acc &+= UInt64(~old) &+ UInt64(new)
    }

    @inlinable @inline(__always)
    public mutating func replace64(_ old: UInt64, _ new: UInt64) {
        replace32(UInt32(truncatingIfNeeded: old >> 32), UInt32(truncatingIfNeeded: new >> 32))
        replace32(UInt32(truncatingIfNeeded: old), UInt32(truncatingIfNeeded: new))
    }

    /// Replaces an address of either family: only the words that are on the wire count.
    @inlinable @inline(__always)
    public mutating func replaceAddress(_ old: IPAddress, _ new: IPAddress) {
        if old.isIPv4 {
            replace32(old.ipv4, new.ipv4)
        } else {
            replace64(old.high, new.high)
            replace64(old.low, new.low)
        }
    }

    @inlinable @inline(__always)
    public mutating func add(_ other: ChecksumDelta) { acc &+= other.acc }

    @inlinable @inline(__always)
    public var isEmpty: Bool { acc == 0 }

    /// The checksum field value after the change.
    @inlinable @inline(__always)
    public func apply(to checksum: UInt16) -> UInt16 {
        ~Checksum.fold(UInt64(~checksum) &+ acc)
    }

    /// The UDP checksum field value after the change: 0 means "none" over IPv4 and stays
    /// 0; a computed 0 is sent as 0xFFFF (RFC 768). Both read the same in either byte
    /// order.
    @inlinable @inline(__always)
    public func apply(toUDP checksum: UInt16) -> UInt16 {
        if checksum == 0 { return 0 }
        let new = apply(to: checksum)
        return new == 0 ? 0xFFFF : new
    }

    /// Updates the 16-bit checksum stored big-endian at `offset`.
    @inlinable @inline(__always)
    public func apply(_ p: UnsafeMutableRawPointer, at offset: Int) {
        RawBytes.store16(p, offset, apply(to: RawBytes.load16(p, offset)))
    }

    /// Same, for a UDP checksum (see `apply(toUDP:)`).
    @inlinable @inline(__always)
    public func applyUDP(_ p: UnsafeMutableRawPointer, at offset: Int) {
        RawBytes.store16(p, offset, apply(toUDP: RawBytes.load16(p, offset)))
    }

    /// `apply` for a delta of words taken as they lie in memory
    /// (`RawBytes.loadInPlace16`): no byte swap either way.
    @inlinable @inline(__always)
    public func applyInPlace(_ p: UnsafeMutableRawPointer, at offset: Int) {
        RawBytes.storeInPlace16(p, offset, apply(to: RawBytes.loadInPlace16(p, offset)))
    }

    /// `applyUDP` for a delta of words as they lie in memory.
    @inlinable @inline(__always)
    public func applyUDPInPlace(_ p: UnsafeMutableRawPointer, at offset: Int) {
        RawBytes.storeInPlace16(p, offset, apply(toUDP: RawBytes.loadInPlace16(p, offset)))
    }
}
