/// Unaligned big-endian loads and stores into a frame. Callers have already checked the
/// bounds once for the whole header; these do no checks of their own.
public enum RawBytes {
    @inlinable @inline(__always)
    public static func load8(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
        p.load(fromByteOffset: offset, as: UInt8.self)
    }

    @inlinable @inline(__always)
    public static func load16(_ p: UnsafeRawPointer, _ offset: Int) -> UInt16 {
        UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always)
    public static func load32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 {
        UInt32(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inlinable @inline(__always)
    public static func load64(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    @inlinable @inline(__always)
    public static func load48(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(load16(p, offset)) << 32 | UInt64(load32(p, offset &+ 2))
    }

    @inlinable @inline(__always)
    public static func store8(_ p: UnsafeMutableRawPointer, _ offset: Int, _ v: UInt8) {
        p.storeBytes(of: v, toByteOffset: offset, as: UInt8.self)
    }

    @inlinable @inline(__always)
    public static func store16(_ p: UnsafeMutableRawPointer, _ offset: Int, _ v: UInt16) {
        p.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable @inline(__always)
    public static func store32(_ p: UnsafeMutableRawPointer, _ offset: Int, _ v: UInt32) {
        p.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    @inlinable @inline(__always)
    public static func store64(_ p: UnsafeMutableRawPointer, _ offset: Int, _ v: UInt64) {
        p.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt64.self)
    }

    @inlinable @inline(__always)
    public static func store48(_ p: UnsafeMutableRawPointer, _ offset: Int, _ v: UInt64) {
        store16(p, offset, UInt16(truncatingIfNeeded: v >> 32))
        store32(p, offset &+ 2, UInt32(truncatingIfNeeded: v))
    }

    /// Words as they lie in memory, with no byte swap: for checksum arithmetic, which
    /// gives the same bytes in either order (RFC 1071 §2(B)).
    @inlinable @inline(__always)
    public static func loadInPlace16(_ p: UnsafeRawPointer, _ offset: Int) -> UInt16 {
        p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)
    }

    @inlinable @inline(__always)
    public static func loadInPlace32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 {
        p.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
    }

    @inlinable @inline(__always)
    public static func storeInPlace16(_ p: UnsafeMutableRawPointer, _ offset: Int, _ v: UInt16) {
        p.storeBytes(of: v, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable @inline(__always)
    public static func storeInPlace32(_ p: UnsafeMutableRawPointer, _ offset: Int, _ v: UInt32) {
        p.storeBytes(of: v, toByteOffset: offset, as: UInt32.self)
    }

    @inlinable @inline(__always)
    public static func loadMAC(_ p: UnsafeRawPointer, _ offset: Int) -> MACAddress {
        MACAddress(value: load48(p, offset))
    }

    @inlinable @inline(__always)
    public static func storeMAC(_ p: UnsafeMutableRawPointer, _ offset: Int, _ mac: MACAddress) {
        store48(p, offset, mac.value)
    }

    @inlinable @inline(__always)
    public static func loadIPv4(_ p: UnsafeRawPointer, _ offset: Int) -> IPAddress {
        IPAddress(ipv4: load32(p, offset))
    }

    @inlinable @inline(__always)
    public static func loadIPv6(_ p: UnsafeRawPointer, _ offset: Int) -> IPAddress {
        IPAddress(high: load64(p, offset), low: load64(p, offset &+ 8))
    }

    @inlinable @inline(__always)
    public static func storeIPv6(_ p: UnsafeMutableRawPointer, _ offset: Int, _ a: IPAddress) {
        store64(p, offset, a.high)
        store64(p, offset &+ 8, a.low)
    }
}
