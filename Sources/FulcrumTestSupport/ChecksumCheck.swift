import FulcrumCore

/// Verifies every checksum in a frame by full recomputation, with its own minimal parser
/// (Ethernet, optional VLAN, IPv4/IPv6 without extension headers, TCP/UDP/ICMP/ICMPv6,
/// and the IPv4 header quoted in an ICMP error).
public enum ChecksumCheck {
    /// A list of what is wrong; empty when every checksum verifies.
    public static func problems(in frame: [UInt8]) -> [String] {
        var out: [String] = []
        var l3 = 14
        var etherType = UInt16(frame[12]) << 8 | UInt16(frame[13])
        if etherType == 0x8100 {
            etherType = UInt16(frame[16]) << 8 | UInt16(frame[17])
            l3 = 18
        }
        let src: [UInt8], dst: [UInt8], proto: UInt8, l4: Int, end: Int
        if etherType == 0x0800 {
            let ihl = Int(frame[l3] & 0x0F) * 4
            if PacketBuilder.onesComplementSum(Array(frame[l3..<(l3 + ihl)])) != 0xFFFF {
                out.append("IPv4 header checksum")
            }
            src = Array(frame[(l3 + 12)..<(l3 + 16)])
            dst = Array(frame[(l3 + 16)..<(l3 + 20)])
            proto = frame[l3 + 9]
            l4 = l3 + ihl
            end = l3 + (Int(frame[l3 + 2]) << 8 | Int(frame[l3 + 3]))
        } else if etherType == 0x86DD {
            src = Array(frame[(l3 + 8)..<(l3 + 24)])
            dst = Array(frame[(l3 + 24)..<(l3 + 40)])
            proto = frame[l3 + 6]
            l4 = l3 + 40
            end = l4 + (Int(frame[l3 + 4]) << 8 | Int(frame[l3 + 5]))
        } else {
            return out
        }
        let segment = Array(frame[l4..<end])
        let length = segment.count
        let pseudo: [UInt8] = src.count == 4
            ? src + dst + [0, proto, UInt8(length >> 8), UInt8(length & 0xFF)]
            : src + dst + [0, 0, UInt8(length >> 8), UInt8(length & 0xFF)] + [0, 0, 0, proto]
        switch proto {
        case 6:
            if PacketBuilder.onesComplementSum(pseudo + segment) != 0xFFFF { out.append("TCP checksum") }
        case 17:
            let stored = UInt16(segment[6]) << 8 | UInt16(segment[7])
            if !(stored == 0 && src.count == 4) && PacketBuilder.onesComplementSum(pseudo + segment) != 0xFFFF {
                out.append("UDP checksum")
            }
        case 1:
            if PacketBuilder.onesComplementSum(segment) != 0xFFFF { out.append("ICMP checksum") }
            if [3, 11, 12].contains(segment[0]) && segment.count >= 28 {
                let inner = Array(segment[8...])
                let ihl = Int(inner[0] & 0x0F) * 4
                if inner.count >= ihl && PacketBuilder.onesComplementSum(Array(inner[0..<ihl])) != 0xFFFF {
                    out.append("inner IPv4 header checksum")
                }
            }
        case 58:
            if PacketBuilder.onesComplementSum(pseudo + segment) != 0xFFFF { out.append("ICMPv6 checksum") }
        default:
            break
        }
        return out
    }
}

/// Copies bytes into an allocation of exactly their size, so that AddressSanitizer
/// reports any read past the end (an `Array`'s spare capacity would hide it).
public func withExactAllocation<R>(_ bytes: [UInt8], _ body: (UnsafeMutableRawPointer, Int) -> R) -> R {
    let p = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(bytes.count, 1), alignment: 1)
    defer { p.deallocate() }
    bytes.withUnsafeBytes { if !bytes.isEmpty { p.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) } }
    return body(p, bytes.count)
}
