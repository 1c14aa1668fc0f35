/// What identifies a service: VIP, protocol and port.
public struct ServiceKey: Hashable, Sendable {
    public var address: IPAddress
    public var proto: UInt8
    public var port: UInt16

    @inlinable
    public init(address: IPAddress, proto: UInt8, port: UInt16) {
        self.address = address
        self.proto = proto
        self.port = port
    }

    @inlinable @inline(__always)
    var hash: UInt64 {
        let x = (address.low ^ address.high &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(proto) << 16 | UInt64(port))
        let h = x &* 0xC2B2_AE3D_27D4_EB4F
        return h ^ (h >> 29)
    }

    @inlinable @inline(__always)
    public static func == (a: ServiceKey, b: ServiceKey) -> Bool {
        a.address.low == b.address.low && a.port == b.port && a.proto == b.proto
            && a.address.high == b.address.high
    }
}

extension ServiceKey: CustomStringConvertible {
    /// "198.18.1.10 tcp/80", "[2001:2::1]:53/udp" style is avoided: address, protocol, port.
    public var description: String {
        let name = proto == IPProtocol.tcp ? "tcp" : proto == IPProtocol.udp ? "udp" : "proto \(proto)"
        return "\(address) \(name)/\(port)"
    }
}

/// An immutable open-addressing map from `ServiceKey` to a small integer, built once per
/// configuration. Used for VIP:port → group, and for NAT replies, node:port → group.
public final class ServiceTable: @unchecked Sendable {
    @usableFromInline let keys: UnsafeMutablePointer<ServiceKey>
    @usableFromInline let values: UnsafeMutablePointer<Int32>
    @usableFromInline let mask: Int
    public let count: Int

    /// - Precondition: keys are distinct.
    public init(_ pairs: [(ServiceKey, Int)]) {
        var size = 8
        while size < pairs.count * 2 { size <<= 1 }
        mask = size - 1
        keys = .allocate(capacity: size)
        values = .allocate(capacity: size)
        values.initialize(repeating: -1, count: size)
        count = pairs.count
        for (key, value) in pairs {
            var i = Int(truncatingIfNeeded: key.hash) & mask
            while values[i] >= 0 {
                precondition(!(keys[i] == key), "duplicate service key")
                i = (i + 1) & mask
            }
            (keys + i).initialize(to: key)
            values[i] = Int32(value)
        }
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    /// The value for `key`, or -1.
    @inlinable @inline(__always)
    public func lookup(_ key: ServiceKey) -> Int {
        var i = Int(truncatingIfNeeded: key.hash) & mask
        while true {
            let v = values[i]
            if v < 0 { return -1 }
            if keys[i] == key { return Int(v) }
            i = (i &+ 1) & mask
        }
    }
}
