import FulcrumCore

/// Builds frames field by field with checksums computed in full, deliberately without
/// FulcrumCore's checksum or rewrite code, so tests compare Core against an independent
/// construction.
public enum PacketBuilder {
    public static let clientMAC = MACAddress("02:00:00:00:00:c1")!
    public static let lbMAC = MACAddress("02:00:00:00:00:1b")!

    // MARK: - Checksums (RFC 1071, straight from the definition)

    public static func onesComplementSum(_ bytes: [UInt8]) -> UInt32 {
        var sum: UInt32 = 0
        var i = 0
        while i < bytes.count {
            let hi = UInt32(bytes[i])
            let lo = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            sum += hi << 8 | lo
            i += 2
        }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        return sum
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt16 { ~UInt16(onesComplementSum(bytes)) }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
    static func mac(_ m: MACAddress) -> [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: m.value >> (40 - 8 * UInt64($0))) } }
    static func wire(_ a: IPAddress) -> [UInt8] { a.isIPv4 ? Array(a.bytes[12...]) : a.bytes }

    static func pseudoHeader(_ src: IPAddress, _ dst: IPAddress, proto: UInt8, length: Int) -> [UInt8] {
        if src.isIPv4 { return wire(src) + wire(dst) + [0, proto] + be16(UInt16(length)) }
        return wire(src) + wire(dst) + be32(UInt32(length)) + [0, 0, 0, proto]
    }

    static func setChecksum(_ bytes: inout [UInt8], at offset: Int, over covered: [UInt8], udp: Bool = false) {
        var c = checksum(covered)
        if udp && c == 0 { c = 0xFFFF }
        bytes[offset] = UInt8(c >> 8)
        bytes[offset + 1] = UInt8(c & 0xFF)
    }

    // MARK: - Layers

    public static func ethernet(destination: MACAddress = lbMAC, source: MACAddress = clientMAC,
                                vlan: UInt16? = nil, etherType: UInt16, payload: [UInt8]) -> [UInt8] {
        var out = mac(destination) + mac(source)
        if let vlan { out += be16(0x8100) + be16(vlan) }
        return out + be16(etherType) + payload
    }

    public static func tcp(source: IPAddress, destination: IPAddress, sourcePort: UInt16, destinationPort: UInt16,
                           flags: UInt8 = 0x18, seq: UInt32 = 1000, ack: UInt32 = 0, options: [UInt8] = [],
                           payload: [UInt8] = []) -> [UInt8] {
        precondition(options.count % 4 == 0)
        let headerLength = 20 + options.count
        var seg = be16(sourcePort) + be16(destinationPort) + be32(seq) + be32(ack)
        seg += [UInt8(headerLength / 4) << 4, flags] + be16(64240) + [0, 0] + [0, 0]
        seg += options + payload
        setChecksum(&seg, at: 16, over: pseudoHeader(source, destination, proto: 6, length: seg.count) + seg)
        return seg
    }

    public static func udp(source: IPAddress, destination: IPAddress, sourcePort: UInt16, destinationPort: UInt16,
                           payload: [UInt8] = [], zeroChecksum: Bool = false) -> [UInt8] {
        var dgram = be16(sourcePort) + be16(destinationPort) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
        if !zeroChecksum {
            setChecksum(&dgram, at: 6, over: pseudoHeader(source, destination, proto: 17, length: dgram.count) + dgram,
                        udp: true)
        }
        return dgram
    }

    /// ICMPv4: type, code, 4 bytes of rest-of-header, body. Checksum over the message only.
    public static func icmpv4(type: UInt8, code: UInt8, rest: UInt32 = 0, body: [UInt8]) -> [UInt8] {
        var msg = [type, code, 0, 0] + be32(rest) + body
        setChecksum(&msg, at: 2, over: msg)
        return msg
    }

    /// ICMPv6: checksum includes the pseudo-header.
    public static func icmpv6(source: IPAddress, destination: IPAddress, type: UInt8, code: UInt8,
                              rest: UInt32 = 0, body: [UInt8]) -> [UInt8] {
        var msg = [type, code, 0, 0] + be32(rest) + body
        setChecksum(&msg, at: 2, over: pseudoHeader(source, destination, proto: 58, length: msg.count) + msg)
        return msg
    }

    public static func ipv4(source: IPAddress, destination: IPAddress, proto: UInt8, payload: [UInt8],
                            ttl: UInt8 = 64, identification: UInt16 = 0x1234, flagsAndFragment: UInt16 = 0x4000,
                            options: [UInt8] = [], totalLengthOverride: Int? = nil) -> [UInt8] {
        precondition(options.count % 4 == 0)
        let ihl = 5 + options.count / 4
        let total = totalLengthOverride ?? (ihl * 4 + payload.count)
        var header = [UInt8(0x40 | ihl), 0] + be16(UInt16(total)) + be16(identification) + be16(flagsAndFragment)
        header += [ttl, proto, 0, 0] + wire(source) + wire(destination) + options
        setChecksum(&header, at: 10, over: header)
        return header + payload
    }

    /// IPv6 with optional extension headers given as (type, body-without-next-header-byte).
    public static func ipv6(source: IPAddress, destination: IPAddress, nextHeader: UInt8, payload: [UInt8],
                            hopLimit: UInt8 = 64, extensions: [(type: UInt8, bytes: [UInt8])] = [],
                            payloadLengthOverride: Int? = nil) -> [UInt8] {
        var chain: [UInt8] = []
        let types = extensions.map(\.type) + [nextHeader]
        for (i, ext) in extensions.enumerated() {
            chain += [types[i + 1]] + ext.bytes
        }
        let first = extensions.first?.type ?? nextHeader
        let length = payloadLengthOverride ?? (chain.count + payload.count)
        return be32(0x6000_0000) + be16(UInt16(length)) + [first, hopLimit] + wire(source) + wire(destination)
            + chain + payload
    }

    // MARK: - Fragments

    /// A whole TCP or UDP segment (header and payload, checksum set) sent as IPv4
    /// fragments of at most `size` bytes of it each (a multiple of 8), as frames.
    public static func ipv4Fragments(source: IPAddress, destination: IPAddress, proto: UInt8, segment: [UInt8],
                                     size: Int, identification: UInt16 = 0x2222,
                                     ethernetDestination: MACAddress = lbMAC,
                                     ethernetSource: MACAddress = clientMAC) -> [[UInt8]] {
        precondition(size % 8 == 0)
        return stride(from: 0, to: segment.count, by: size).map { offset in
            let piece = Array(segment[offset..<min(offset + size, segment.count)])
            let more: UInt16 = offset + size < segment.count ? 0x2000 : 0
            return ethernet(destination: ethernetDestination, source: ethernetSource, etherType: 0x0800, payload:
                ipv4(source: source, destination: destination, proto: proto, payload: piece, identification: identification,
                     flagsAndFragment: more | UInt16(offset / 8)))
        }
    }

    /// The same for IPv6: a Fragment header (RFC 8200 §4.5) in each piece.
    public static func ipv6Fragments(source: IPAddress, destination: IPAddress, nextHeader: UInt8, segment: [UInt8],
                                     size: Int, identification: UInt32 = 0x2222_2222,
                                     ethernetDestination: MACAddress = lbMAC,
                                     ethernetSource: MACAddress = clientMAC) -> [[UInt8]] {
        precondition(size % 8 == 0)
        return stride(from: 0, to: segment.count, by: size).map { offset in
            let piece = Array(segment[offset..<min(offset + size, segment.count)])
            let more: UInt16 = offset + size < segment.count ? 1 : 0
            let header = [0] + be16(UInt16(offset / 8) << 3 | more) + be32(identification)
            return ethernet(destination: ethernetDestination, source: ethernetSource, etherType: 0x86DD, payload:
                ipv6(source: source, destination: destination, nextHeader: nextHeader, payload: piece,
                     extensions: [(44, header)]))
        }
    }

    /// Puts fragments (frames, in any order) back together: the first fragment's
    /// addresses and the segment, as one unfragmented frame whose checksums
    /// `ChecksumCheck` can verify. nil if a piece is missing.
    public static func reassemble(_ frames: [[UInt8]]) -> [UInt8]? {
        var pieces: [(offset: Int, bytes: [UInt8], more: Bool)] = []
        var head: (source: IPAddress, destination: IPAddress, proto: UInt8, v6: Bool)?
        for f in frames {
            if f[12] == 0x08 && f[13] == 0x00 {
                let ihl = Int(f[14] & 0x0F) * 4
                let total = Int(f[16]) << 8 | Int(f[17])
                let field = Int(f[20]) << 8 | Int(f[21])
                pieces.append(((field & 0x1FFF) * 8, Array(f[(14 + ihl)..<(14 + total)]), field & 0x2000 != 0))
                if field & 0x1FFF == 0 {
                    head = (IPAddress(networkBytes: f[26..<30])!, IPAddress(networkBytes: f[30..<34])!, f[23], false)
                }
            } else {
                let length = Int(f[18]) << 8 | Int(f[19])
                let field = Int(f[56]) << 8 | Int(f[57])
                pieces.append((field >> 3 * 8, Array(f[62..<(54 + length)]), field & 1 != 0))
                if field >> 3 == 0 {
                    head = (IPAddress(networkBytes: f[22..<38])!, IPAddress(networkBytes: f[38..<54])!, f[54], true)
                }
            }
        }
        guard let head else { return nil }
        pieces.sort { $0.offset < $1.offset }
        var segment: [UInt8] = []
        for p in pieces {
            guard p.offset == segment.count else { return nil }
            segment += p.bytes
        }
        guard pieces.last?.more == false else { return nil }
        return head.v6 ? ethernet(etherType: 0x86DD, payload: ipv6(source: head.source, destination: head.destination,
                                                                  nextHeader: head.proto, payload: segment))
                       : ethernet(etherType: 0x0800, payload: ipv4(source: head.source, destination: head.destination,
                                                                  proto: head.proto, payload: segment))
    }

    // MARK: - Whole frames

    public static func tcpFrame(source: IPAddress, destination: IPAddress, sourcePort: UInt16, destinationPort: UInt16,
                                flags: UInt8 = 0x18, payload: [UInt8] = [], vlan: UInt16? = nil,
                                ethernetDestination: MACAddress = lbMAC, ethernetSource: MACAddress = clientMAC) -> [UInt8] {
        let seg = tcp(source: source, destination: destination, sourcePort: sourcePort, destinationPort: destinationPort,
                      flags: flags, payload: payload)
        return ipFrame(source: source, destination: destination, proto: 6, payload: seg, vlan: vlan,
                       ethernetDestination: ethernetDestination, ethernetSource: ethernetSource)
    }

    public static func udpFrame(source: IPAddress, destination: IPAddress, sourcePort: UInt16, destinationPort: UInt16,
                                payload: [UInt8] = [], zeroChecksum: Bool = false, vlan: UInt16? = nil,
                                ethernetDestination: MACAddress = lbMAC, ethernetSource: MACAddress = clientMAC) -> [UInt8] {
        let dgram = udp(source: source, destination: destination, sourcePort: sourcePort,
                        destinationPort: destinationPort, payload: payload, zeroChecksum: zeroChecksum)
        return ipFrame(source: source, destination: destination, proto: 17, payload: dgram, vlan: vlan,
                       ethernetDestination: ethernetDestination, ethernetSource: ethernetSource)
    }

    public static func ipFrame(source: IPAddress, destination: IPAddress, proto: UInt8, payload: [UInt8],
                               vlan: UInt16? = nil, ethernetDestination: MACAddress = lbMAC,
                               ethernetSource: MACAddress = clientMAC) -> [UInt8] {
        if source.isIPv4 {
            return ethernet(destination: ethernetDestination, source: ethernetSource, vlan: vlan, etherType: 0x0800,
                            payload: ipv4(source: source, destination: destination, proto: proto, payload: payload))
        }
        return ethernet(destination: ethernetDestination, source: ethernetSource, vlan: vlan, etherType: 0x86DD,
                        payload: ipv6(source: source, destination: destination, nextHeader: proto, payload: payload))
    }

    /// An ICMP error (v4: destination unreachable / fragmentation needed; v6: packet too
    /// big) sent by `reporter` to `destination`, quoting `quoted` (an IP packet), cut to
    /// `quoteLength` bytes when given.
    public static func icmpErrorFrame(reporter: IPAddress, destination: IPAddress, quoted: [UInt8],
                                      quoteLength: Int? = nil, ethernetDestination: MACAddress = lbMAC,
                                      ethernetSource: MACAddress = clientMAC) -> [UInt8] {
        let quote = Array(quoted.prefix(quoteLength ?? quoted.count))
        if reporter.isIPv4 {
            let msg = icmpv4(type: 3, code: 4, rest: 1400, body: quote)
            return ipFrame(source: reporter, destination: destination, proto: 1, payload: msg,
                           ethernetDestination: ethernetDestination, ethernetSource: ethernetSource)
        }
        let msg = icmpv6(source: reporter, destination: destination, type: 2, code: 0, rest: 1280, body: quote)
        return ipFrame(source: reporter, destination: destination, proto: 58, payload: msg,
                       ethernetDestination: ethernetDestination, ethernetSource: ethernetSource)
    }
}

extension Array where Element == UInt8 {
    /// Runs `body` on a mutable copy of the bytes, as a frame in memory, and returns the
    /// bytes afterwards.
    public func mutatingFrame<R>(_ body: (UnsafeMutableRawPointer, Int) throws -> R) rethrows -> ([UInt8], R) {
        var copy = self
        let result = try copy.withUnsafeMutableBytes { try body($0.baseAddress!, $0.count) }
        return (copy, result)
    }

    /// Hex dump, 16 bytes a line, for test failure messages.
    public var hexDump: String {
        stride(from: 0, to: count, by: 16).map { start in
            self[start..<Swift.min(start + 16, count)].map { b in
                let s = String(b, radix: 16)
                return s.count == 1 ? "0" + s : s
            }.joined(separator: " ")
        }.joined(separator: "\n")
    }
}

