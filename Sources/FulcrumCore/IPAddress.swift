/// An IPv4 or IPv6 address held in 128 bits, network order split into two host-order words.
///
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) so that one
/// fixed-size type serves flow keys of both families without branching or padding.
public struct IPAddress: Hashable, Sendable, Comparable {
    /// Bytes 0–7 of the address, as a big-endian number.
    public var high: UInt64
    /// Bytes 8–15 of the address, as a big-endian number.
    public var low: UInt64

    @inlinable
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// An IPv4 address given as a host-order 32-bit number (198.18.0.1 = 0xC612_0001).
    @inlinable
    public init(ipv4: UInt32) {
        self.high = 0
        self.low = 0x0000_FFFF_0000_0000 | UInt64(ipv4)
    }

    @inlinable
    public var isIPv4: Bool { high == 0 && (low >> 32) == 0x0000_FFFF }

    /// The host-order IPv4 value; meaningful only when `isIPv4`.
    @inlinable
    public var ipv4: UInt32 { UInt32(truncatingIfNeeded: low) }

    public static let zero = IPAddress(high: 0, low: 0)

    /// From an address as it lies on the wire or in a socket address: 4 bytes (IPv4) or
    /// 16 (IPv6), network order. nil for any other count.
    public init?<Bytes: Collection>(networkBytes b: Bytes) where Bytes.Element == UInt8 {
        switch b.count {
        case 4: self.init(ipv4: b.reduce(0) { $0 << 8 | UInt32($1) })
        case 16: self.init(high: b.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }, low: b.suffix(8).reduce(0) { $0 << 8 | UInt64($1) })
        default: return nil
        }
    }

    /// An address a single host can own and answer for: not unspecified (0.0.0.0, ::),
    /// "this network" (0/8), loopback, multicast, or the IPv4 limited broadcast. A VIP or
    /// a node must be one.
    public var isHostUnicast: Bool {
        if isIPv4 {
            let first = ipv4 >> 24
            return first != 0 && first != 127 && first < 224  // 224/4 multicast, 240/4 reserved and broadcast
        }
        if high == 0 && (low == 0 || low == 1) { return false }  // :: and ::1
        return high >> 56 != 0xFF  // ff00::/8 multicast
    }

    @inlinable
    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        a.high != b.high ? a.high < b.high : a.low < b.low
    }

    /// The 16 bytes in network order.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            out[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i)))
            out[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i)))
        }
        return out
    }
}

extension IPAddress {
    /// Parses dotted-quad IPv4 or RFC 4291/5952 IPv6 text. Returns nil for anything else.
    public init?(_ text: some StringProtocol) {
        if text.contains(":") {
            guard let v6 = IPAddress.parseIPv6(Substring(text)) else { return nil }
            self = v6
        } else {
            guard let v4 = IPAddress.parseIPv4(Substring(text)) else { return nil }
            self.init(ipv4: v4)
        }
    }

    static func parseIPv4(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let octet = UInt32(part), octet <= 255,
                  !(part.count > 1 && part.first == "0")
            else { return nil }
            value = value << 8 | octet
        }
        return value
    }

    static func parseIPv6(_ text: Substring) -> IPAddress? {
        // Split on "::" at most once; each side is a list of 16-bit groups, the last of
        // which may be an embedded IPv4 address.
        var halves: [String]
        if let gap = text.firstRange(of: "::") {
            halves = [String(text[..<gap.lowerBound]), String(text[gap.upperBound...])]
            guard !halves[1].contains("::") else { return nil }
        } else {
            halves = [String(text)]
        }
        func groups(_ s: String) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            let fields = s.split(separator: ":", omittingEmptySubsequences: false)
            for (index, field) in fields.enumerated() {
                if field.contains(".") {
                    guard index == fields.count - 1, let v4 = parseIPv4(field) else { return nil }
                    out.append(UInt16(v4 >> 16))
                    out.append(UInt16(v4 & 0xFFFF))
                } else {
                    guard (1...4).contains(field.count), field.allSatisfy(\.isHexDigit),
                          let g = UInt16(field, radix: 16) else { return nil }
                    out.append(g)
                }
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        var all: [UInt16]
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count <= 7 else { return nil }
            all = head + [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard head.count == 8 else { return nil }
            all = head
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for i in 0..<4 { high = high << 16 | UInt64(all[i]) }
        for i in 4..<8 { low = low << 16 | UInt64(all[i]) }
        return IPAddress(high: high, low: low)
    }
}

extension IPAddress: CustomStringConvertible {
    public var description: String {
        if isIPv4 {
            let v = ipv4
            return "\(v >> 24).\(v >> 16 & 0xFF).\(v >> 8 & 0xFF).\(v & 0xFF)"
        }
        var groups = [UInt16](repeating: 0, count: 8)
        for i in 0..<4 {
            groups[i] = UInt16(truncatingIfNeeded: high >> (48 - 16 * UInt64(i)))
            groups[4 + i] = UInt16(truncatingIfNeeded: low >> (48 - 16 * UInt64(i)))
        }
        // RFC 5952: compress the longest run (≥ 2) of zero groups, the first if tied.
        var bestStart = -1, bestLength = 1, runStart = -1
        for i in 0...8 {
            if i < 8 && groups[i] == 0 {
                if runStart < 0 { runStart = i }
            } else if runStart >= 0 {
                if i - runStart > bestLength { bestStart = runStart; bestLength = i - runStart }
                runStart = -1
            }
        }
        func hex(_ range: Range<Int>) -> String {
            groups[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }
}

/// A 48-bit Ethernet address.
public struct MACAddress: Hashable, Sendable {
    /// The six bytes as a big-endian number in the low 48 bits.
    public var value: UInt64

    @inlinable
    public init(value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var v: UInt64 = 0
        for p in parts {
            guard p.count == 2, let b = UInt8(p, radix: 16) else { return nil }
            v = v << 8 | UInt64(b)
        }
        self.value = v
    }

    public static let broadcast = MACAddress(value: 0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(value: 0)

    @inlinable
    public var isMulticast: Bool { (value >> 40) & 1 == 1 }

    /// The all-nodes / solicited-node style IPv6 multicast MAC for an address (RFC 2464 §7).
    @inlinable
    public static func ipv6Multicast(_ address: IPAddress) -> MACAddress {
        MACAddress(value: 0x3333_0000_0000 | (address.low & 0xFFFF_FFFF))
    }
}

extension MACAddress: CustomStringConvertible {
    public var description: String {
        (0..<6).map { i -> String in
            let b = UInt8(truncatingIfNeeded: value >> (40 - 8 * UInt64(i)))
            return b < 16 ? "0" + String(b, radix: 16) : String(b, radix: 16)
        }.joined(separator: ":")
    }
}
