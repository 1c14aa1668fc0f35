public enum EtherType {
    public static let ipv4: UInt16 = 0x0800
    public static let arp: UInt16 = 0x0806
    public static let vlan: UInt16 = 0x8100
    public static let ipv6: UInt16 = 0x86DD
}

public enum IPProtocol {
    public static let icmp: UInt8 = 1
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
    public static let icmpv6: UInt8 = 58
    public static let hopByHop: UInt8 = 0
    public static let routing: UInt8 = 43
    public static let fragment: UInt8 = 44
    public static let destinationOptions: UInt8 = 60
}

public enum TCPFlags {
    public static let fin: UInt8 = 0x01
    public static let syn: UInt8 = 0x02
    public static let rst: UInt8 = 0x04
    public static let ack: UInt8 = 0x10
}

public enum IPFamily: UInt8, Sendable {
    case ipv4 = 4
    case ipv6 = 6
}

/// What the parser found in a frame. Offsets are from the start of the frame.
public struct ParsedPacket: Sendable {
    public var l3Offset: Int = 0
    public var l4Offset: Int = 0
    /// One past the last byte of the IP datagram (frames may carry Ethernet padding after it).
    public var ipEnd: Int = 0
    public var vlanTag: UInt16 = 0
    public var hasVLAN: Bool = false
    public var family: IPFamily = .ipv4
    public var proto: UInt8 = 0
    public var source: IPAddress = .zero
    public var destination: IPAddress = .zero
    /// TCP/UDP ports; for ICMP echo, the identifier as both; otherwise 0.
    public var sourcePort: UInt16 = 0
    public var destinationPort: UInt16 = 0
    public var tcpFlags: UInt8 = 0
    public var icmpType: UInt8 = 0
    public var icmpCode: UInt8 = 0

    /// Set for ICMP/ICMPv6 errors (unreachable, time exceeded, parameter problem, packet
    /// too big) whose embedded packet is TCP or UDP: that packet's header identifies the flow.
    public var isICMPError: Bool = false
    public var innerL3Offset: Int = 0
    public var innerL4Offset: Int = 0
    public var innerProto: UInt8 = 0
    public var innerSource: IPAddress = .zero
    public var innerDestination: IPAddress = .zero
    public var innerSourcePort: UInt16 = 0
    public var innerDestinationPort: UInt16 = 0

    /// For `ParseResult.fragment`: the datagram's identification (IPv4's 16 bits or
    /// IPv6's 32), and whether this is its first fragment, the one with the ports.
    public var fragmentID: UInt32 = 0
    public var isFirstFragment: Bool = false

    @inlinable public init() {}

    /// The flow in the client-to-service direction, as the LB would have seen its packets
    /// arrive. An ICMP error travels against the flow, so its inner header is reversed.
    @inlinable public var flowKey: FlowKey {
        if isICMPError {
            return FlowKey(source: innerDestination, destination: innerSource,
                           sourcePort: innerDestinationPort, destinationPort: innerSourcePort,
                           proto: innerProto)
        }
        return FlowKey(source: source, destination: destination,
                       sourcePort: sourcePort, destinationPort: destinationPort, proto: proto)
    }
}

/// What a quick parse (`PacketParser.quickIPv4`, `quickIPv6`) reads from a common frame.
/// The frame is untagged, so its network header starts at byte 14, and its TCP or UDP
/// header follows an IP header of fixed size: at byte 34 for IPv4, 54 for IPv6.
public struct QuickFlow: Sendable, Equatable {
    public var family: IPFamily
    public var source: IPAddress
    public var destination: IPAddress
    /// Source port in the high half, destination port in the low.
    public var ports: UInt32
    public var proto: UInt8
    public var tcpFlags: UInt8

    public static let l3Offset = 14

    @inlinable
    public init(family: IPFamily, source: IPAddress, destination: IPAddress, ports: UInt32, proto: UInt8,
                tcpFlags: UInt8) {
        self.family = family
        self.source = source
        self.destination = destination
        self.ports = ports
        self.proto = proto
        self.tcpFlags = tcpFlags
    }

    @inlinable public var l4Offset: Int { family == .ipv4 ? 34 : 54 }
    @inlinable public var sourcePort: UInt16 { UInt16(truncatingIfNeeded: ports >> 16) }
    @inlinable public var destinationPort: UInt16 { UInt16(truncatingIfNeeded: ports) }

    @inlinable public var key: FlowKey {
        FlowKey(source: source, destination: destination, sourcePort: sourcePort, destinationPort: destinationPort,
                proto: proto)
    }

    @inlinable public var headers: TransportHeaders {
        TransportHeaders(family: family, proto: proto, l3Offset: QuickFlow.l3Offset, l4Offset: l4Offset)
    }
}

/// An ARP packet for IPv4 over Ethernet.
public struct ARPPacket: Sendable, Equatable {
    public var operation: UInt16 = 0
    public var senderMAC: MACAddress = .zero
    public var senderIP: IPAddress = .zero
    public var targetMAC: MACAddress = .zero
    public var targetIP: IPAddress = .zero
    public var offset: Int = 0
    public var vlanTag: UInt16 = 0
    public var hasVLAN: Bool = false
    @inlinable public init() {}

    public static let request: UInt16 = 1
    public static let reply: UInt16 = 2
}

public enum ParseResult: Equatable, Sendable {
    /// An IP packet; fields are in the `ParsedPacket`.
    case ip
    /// An ARP packet; fields are in the `ARPPacket`.
    case arp
    /// A frame of another EtherType: not ours, for the kernel.
    case other
    /// A fragment of a TCP or UDP datagram: addresses, protocol, `fragmentID`,
    /// `isFirstFragment`, and in the first fragment the ports (and TCP flags).
    case fragment
    /// A malformed or unhandled frame.
    case drop(DropReason)
}

/// Parses Ethernet frames without trapping: every read is preceded by a bounds check
/// against the frame length, and every inconsistency is a `DropReason`.
///
/// The common path (Ethernet, optional 802.1Q, IPv4 or IPv6, TCP or UDP) is written to
/// inline whole into the caller's per-packet loop. The rare paths (ARP, IPv6 extension
/// headers, ICMP) are out of line and hand their findings back by value, so the caller's
/// `ParsedPacket` never escapes and the compiler can keep it in registers.
public enum PacketParser {
    /// IPv6 extension headers walked before giving up (RFC 7045 sets no limit; 8 matches
    /// what common routers and Katran accept).
    /// The same limit as the XDP program's (FULCRUM_IPV6_MAX_EXTENSION_HEADERS in
    /// fulcrum_abi.h; FulcrumCore imports no C, so a test holds the two equal).
    public static let maxExtensionHeaders = 4

    /// Parses a frame; ARP packets are decoded into `arp`.
    @inlinable
    public static func parse(_ frame: UnsafeRawPointer, length: Int,
                             into p: inout ParsedPacket, arp: inout ARPPacket) -> ParseResult {
        let (etherType, l3, tag) = ethernet(frame, length: length)
        if etherType == EtherType.arp {
            arp.hasVLAN = tag >= 0
            arp.vlanTag = tag >= 0 ? UInt16(truncatingIfNeeded: tag) : 0
            return parseARP(frame, length: length, at: l3, into: &arp)
        }
        return parseNetwork(frame, length: length, etherType: etherType, l3: l3, tag: tag, into: &p)
    }

    /// Parses a frame for forwarding: ARP is validated (a malformed one is still a drop
    /// reason) but not decoded.
    @inlinable @inline(__always)
    public static func parse(_ frame: UnsafeRawPointer, length: Int,
                             into p: inout ParsedPacket) -> ParseResult {
        let (etherType, l3, tag) = ethernet(frame, length: length)
        if etherType == EtherType.arp { return checkARP(frame, length: length, at: l3) }
        return parseNetwork(frame, length: length, etherType: etherType, l3: l3, tag: tag, into: &p)
    }

    /// The common frame, checked in one pass with few branches: untagged Ethernet, IPv4
    /// without options or fragmentation, a whole TCP or UDP header. nil for anything
    /// else, and then `parse` decides. `parse` accepts every frame this accepts and reads
    /// the same fields from it (a differential test and the fuzzer hold it to that), so
    /// the per-packet path may take this first and fall back to `parse`.
    @inlinable @inline(__always)
    public static func quickIPv4(_ f: UnsafeRawPointer, length: Int) -> QuickFlow? {
        guard length >= 42 else { return nil }  // Ethernet + IPv4 + a UDP header
        // Bytes 12–14 as they lie in memory: EtherType 0x0800, version 4 with IHL 5.
        let head = UInt32(littleEndian: f.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        let totalLength = Int(RawBytes.load16(f, 16))
        // More-fragments or an offset: a fragment, which `parse` drops.
        guard head & 0x00FF_FFFF == 0x0045_0008, RawBytes.load16(f, 20) & 0x3FFF == 0,
              totalLength <= length &- 14 else { return nil }
        let proto = RawBytes.load8(f, 23)
        let available = totalLength &- 20
        var tcpFlags: UInt8 = 0
        if proto == IPProtocol.udp {
            let udpLength = Int(RawBytes.load16(f, 38))
            guard udpLength >= 8, udpLength <= available else { return nil }
        } else if proto == IPProtocol.tcp {
            guard available >= 20 else { return nil }  // so the frame holds bytes 34–53
            let dataOffset = Int(RawBytes.load8(f, 46) >> 4) &* 4
            guard dataOffset >= 20, dataOffset <= available else { return nil }
            tcpFlags = RawBytes.load8(f, 47)
        } else {
            return nil
        }
        return QuickFlow(family: .ipv4, source: RawBytes.loadIPv4(f, 26), destination: RawBytes.loadIPv4(f, 30),
                         ports: RawBytes.load32(f, 34), proto: proto, tcpFlags: tcpFlags)
    }

    /// The quick parse of either family: nil when the frame is not a common one.
    @inlinable @inline(__always)
    public static func quick(_ f: UnsafeRawPointer, length: Int) -> QuickFlow? {
        quickIPv4(f, length: length) ?? quickIPv6(f, length: length)
    }

    /// `quickIPv4` for IPv6: untagged Ethernet, no extension headers, a whole TCP or UDP
    /// header (and a UDP checksum, which IPv6 requires). The same promise: `parse`
    /// accepts every frame this accepts and reads the same fields from it.
    @inlinable @inline(__always)
    public static func quickIPv6(_ f: UnsafeRawPointer, length: Int) -> QuickFlow? {
        guard length >= 62 else { return nil }  // Ethernet + IPv6 + a UDP header
        // Bytes 12–14 as they lie in memory: EtherType 0x86DD, then version 6.
        let head = UInt32(littleEndian: f.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        let payloadLength = Int(RawBytes.load16(f, 18))
        guard head & 0x00F0_FFFF == 0x0060_DD86, payloadLength > 0, payloadLength <= length &- 54 else {
            return nil
        }
        let proto = RawBytes.load8(f, 20)
        var tcpFlags: UInt8 = 0
        if proto == IPProtocol.udp {
            let udpLength = Int(RawBytes.load16(f, 58))
            guard udpLength >= 8, udpLength <= payloadLength, RawBytes.load16(f, 60) != 0 else { return nil }
        } else if proto == IPProtocol.tcp {
            guard payloadLength >= 20 else { return nil }  // so the frame holds bytes 54–73
            let dataOffset = Int(RawBytes.load8(f, 66) >> 4) &* 4
            guard dataOffset >= 20, dataOffset <= payloadLength else { return nil }
            tcpFlags = RawBytes.load8(f, 67)
        } else {
            return nil
        }
        return QuickFlow(family: .ipv6, source: RawBytes.loadIPv6(f, 22), destination: RawBytes.loadIPv6(f, 38),
                         ports: RawBytes.load32(f, 54), proto: proto, tcpFlags: tcpFlags)
    }

    /// The EtherType, where the network header starts, and the VLAN tag (-1: none).
    /// `l3` = 0 means the Ethernet or VLAN header itself is cut short.
    @inlinable @inline(__always)
    static func ethernet(_ f: UnsafeRawPointer, length: Int) -> (etherType: UInt16, l3: Int, tag: Int) {
        guard length >= 14 else { return (0, 0, -1) }
        let etherType = RawBytes.load16(f, 12)
        if etherType != EtherType.vlan { return (etherType, 14, -1) }
        guard length >= 18 else { return (0, 0, -1) }
        return (RawBytes.load16(f, 16), 18, Int(RawBytes.load16(f, 14)))
    }

    @inlinable @inline(__always)
    static func parseNetwork(_ f: UnsafeRawPointer, length: Int, etherType: UInt16, l3: Int, tag: Int,
                             into p: inout ParsedPacket) -> ParseResult {
        switch etherType {
        case EtherType.ipv4:
            p.hasVLAN = tag >= 0
            p.vlanTag = tag >= 0 ? UInt16(truncatingIfNeeded: tag) : 0
            return parseIPv4(f, length: length, at: l3, into: &p)
        case EtherType.ipv6:
            p.hasVLAN = tag >= 0
            p.vlanTag = tag >= 0 ? UInt16(truncatingIfNeeded: tag) : 0
            return parseIPv6(f, length: length, at: l3, into: &p)
        case 0 where l3 == 0:
            return .drop(length >= 14 ? .truncatedVLAN : .truncatedEthernet)
        default:
            return .other
        }
    }

    @inlinable @inline(never)
    static func checkARP(_ f: UnsafeRawPointer, length: Int, at o: Int) -> ParseResult {
        var arp = ARPPacket()
        return parseARP(f, length: length, at: o, into: &arp)
    }

    @inlinable
    static func parseARP(_ f: UnsafeRawPointer, length: Int, at o: Int,
                         into a: inout ARPPacket) -> ParseResult {
        guard length - o >= 28 else { return .drop(.truncatedARP) }
        guard RawBytes.load16(f, o) == 1, RawBytes.load16(f, o + 2) == EtherType.ipv4,
              RawBytes.load8(f, o + 4) == 6, RawBytes.load8(f, o + 5) == 4
        else { return .drop(.malformedARP) }
        a.offset = o
        a.operation = RawBytes.load16(f, o + 6)
        a.senderMAC = RawBytes.loadMAC(f, o + 8)
        a.senderIP = RawBytes.loadIPv4(f, o + 14)
        a.targetMAC = RawBytes.loadMAC(f, o + 18)
        a.targetIP = RawBytes.loadIPv4(f, o + 24)
        return .arp
    }

    @inlinable @inline(__always)
    static func parseIPv4(_ f: UnsafeRawPointer, length: Int, at l3: Int,
                          into p: inout ParsedPacket) -> ParseResult {
        guard length - l3 >= 20 else { return .drop(.truncatedIPv4) }
        let versionIHL = RawBytes.load8(f, l3)
        guard versionIHL >> 4 == 4 else { return .drop(.badIPv4Version) }
        let headerLength = Int(versionIHL & 0x0F) &* 4
        guard headerLength >= 20, headerLength <= length - l3 else {
            return .drop(.badIPv4HeaderLength)
        }
        let totalLength = Int(RawBytes.load16(f, l3 + 2))
        guard totalLength >= headerLength, totalLength <= length - l3 else {
            return .drop(.badIPv4TotalLength)
        }
        p.family = .ipv4
        p.l3Offset = l3
        p.l4Offset = l3 + headerLength
        p.ipEnd = l3 + totalLength
        p.proto = RawBytes.load8(f, l3 + 9)
        p.source = RawBytes.loadIPv4(f, l3 + 12)
        p.destination = RawBytes.loadIPv4(f, l3 + 16)
        // More-fragments set or a non-zero offset: a fragment; only the first has ports.
        let fragment = RawBytes.load16(f, l3 + 6) & 0x3FFF
        if fragment != 0 {
            return parseFragment(f, into: &p, id: UInt32(RawBytes.load16(f, l3 + 4)), first: fragment & 0x1FFF == 0)
        }
        return parseTransport(f, into: &p)
    }

    @inlinable @inline(__always)
    static func parseIPv6(_ f: UnsafeRawPointer, length: Int, at l3: Int,
                          into p: inout ParsedPacket) -> ParseResult {
        guard length - l3 >= 40 else { return .drop(.truncatedIPv6) }
        guard RawBytes.load8(f, l3) >> 4 == 6 else { return .drop(.badIPv6Version) }
        let payloadLength = Int(RawBytes.load16(f, l3 + 4))
        // Zero means a jumbogram (RFC 2675), which Ethernet cannot carry.
        guard payloadLength > 0, payloadLength <= length - l3 - 40 else {
            return .drop(.badIPv6PayloadLength)
        }
        p.family = .ipv6
        p.l3Offset = l3
        p.ipEnd = l3 + 40 + payloadLength
        p.source = RawBytes.loadIPv6(f, l3 + 8)
        p.destination = RawBytes.loadIPv6(f, l3 + 24)
        var next = RawBytes.load8(f, l3 + 6)
        var offset = l3 + 40
        var fragment: IPv6Fragment?
        if isExtensionHeader(next) {
            let walk = walkExtensionHeaders(f, end: p.ipEnd, next: next, offset: offset)
            guard case .ip = walk.result else { return walk.result }
            next = walk.next
            offset = walk.offset
            fragment = walk.fragment
        }
        p.proto = next
        p.l4Offset = offset
        if let fragment { return parseFragment(f, into: &p, id: fragment.id, first: fragment.first) }
        return parseTransport(f, into: &p)
    }

    @inlinable @inline(__always)
    static func isExtensionHeader(_ next: UInt8) -> Bool {
        next == IPProtocol.hopByHop || next == IPProtocol.routing || next == IPProtocol.fragment
            || next == IPProtocol.destinationOptions
    }

    /// An IPv6 Fragment header that is not atomic.
    @usableFromInline struct IPv6Fragment {
        @usableFromInline var id: UInt32
        @usableFromInline var first: Bool
        @inlinable init(id: UInt32, first: Bool) {
            self.id = id
            self.first = first
        }
    }

    /// Skips hop-by-hop, routing, destination-options and atomic-fragment headers; returns
    /// the upper-layer protocol and where its header starts. At a real fragment's header
    /// it notes the fragment; a later fragment ends the walk there (what follows is the
    /// middle of the datagram), a first one goes on to the upper-layer header.
    @inlinable @inline(never)
    static func walkExtensionHeaders(_ f: UnsafeRawPointer, end: Int, next start: UInt8, offset begin: Int)
        -> (result: ParseResult, next: UInt8, offset: Int, fragment: IPv6Fragment?) {
        var next = start
        var offset = begin
        var count = 0
        var fragment: IPv6Fragment?
        while true {
            switch next {
            case IPProtocol.hopByHop, IPProtocol.routing, IPProtocol.destinationOptions:
                guard end - offset >= 8 else { return (.drop(.truncatedIPv6ExtensionHeader), next, offset, nil) }
                let headerLength = (Int(RawBytes.load8(f, offset + 1)) + 1) &* 8
                guard headerLength <= end - offset else {
                    return (.drop(.truncatedIPv6ExtensionHeader), next, offset, nil)
                }
                next = RawBytes.load8(f, offset)
                offset += headerLength
            case IPProtocol.fragment:
                guard end - offset >= 8, fragment == nil else {
                    return (.drop(.truncatedIPv6ExtensionHeader), next, offset, nil)
                }
                let field = RawBytes.load16(f, offset + 2)
                next = RawBytes.load8(f, offset)
                // An atomic fragment (offset 0, no more fragments; RFC 6946) is whole.
                if field & 0xFFF9 != 0 {
                    fragment = IPv6Fragment(id: RawBytes.load32(f, offset + 4), first: field & 0xFFF8 == 0)
                }
                offset += 8
                if let fragment, !fragment.first { return (.ip, next, offset, fragment) }
            default:
                return (.ip, next, offset, fragment)
            }
            count += 1
            if count > maxExtensionHeaders { return (.drop(.tooManyIPv6ExtensionHeaders), next, offset, nil) }
        }
    }

    /// A fragment of a TCP or UDP datagram. The first must hold the whole TCP or UDP
    /// header (RFC 1858's tiny fragments are refused); its UDP length is the datagram's,
    /// so it may exceed what this fragment carries. Fragments of anything else are not
    /// a service's: dropped, as `fragment`.
    @inlinable @inline(never)
    static func parseFragment(_ f: UnsafeRawPointer, into p: inout ParsedPacket, id: UInt32, first: Bool) -> ParseResult {
        guard p.proto == IPProtocol.tcp || p.proto == IPProtocol.udp else { return .drop(.fragment) }
        p.fragmentID = id
        p.isFirstFragment = first
        p.isICMPError = false
        p.tcpFlags = 0
        p.sourcePort = 0
        p.destinationPort = 0
        guard first else { return .fragment }
        let l4 = p.l4Offset
        let available = p.ipEnd - l4
        if p.proto == IPProtocol.tcp {
            guard available >= 20 else { return .drop(.truncatedTCP) }
            let dataOffset = Int(RawBytes.load8(f, l4 + 12) >> 4) &* 4
            guard dataOffset >= 20, dataOffset <= available else { return .drop(.badTCPDataOffset) }
            p.tcpFlags = RawBytes.load8(f, l4 + 13)
        } else {
            guard available >= 8 else { return .drop(.truncatedUDP) }
            guard Int(RawBytes.load16(f, l4 + 4)) > available else { return .drop(.badUDPLength) }
            if p.family == .ipv6 && RawBytes.load16(f, l4 + 6) == 0 { return .drop(.udpZeroChecksumIPv6) }
        }
        p.sourcePort = RawBytes.load16(f, l4)
        p.destinationPort = RawBytes.load16(f, l4 + 2)
        return .fragment
    }

    @inlinable @inline(__always)
    static func parseTransport(_ f: UnsafeRawPointer, into p: inout ParsedPacket) -> ParseResult {
        let l4 = p.l4Offset
        let available = p.ipEnd - l4
        p.isICMPError = false
        p.tcpFlags = 0
        p.icmpType = 0
        p.icmpCode = 0
        switch p.proto {
        case IPProtocol.tcp:
            guard available >= 20 else { return .drop(.truncatedTCP) }
            let dataOffset = Int(RawBytes.load8(f, l4 + 12) >> 4) &* 4
            guard dataOffset >= 20, dataOffset <= available else { return .drop(.badTCPDataOffset) }
            p.sourcePort = RawBytes.load16(f, l4)
            p.destinationPort = RawBytes.load16(f, l4 + 2)
            p.tcpFlags = RawBytes.load8(f, l4 + 13)
        case IPProtocol.udp:
            guard available >= 8 else { return .drop(.truncatedUDP) }
            let udpLength = Int(RawBytes.load16(f, l4 + 4))
            guard udpLength >= 8, udpLength <= available else { return .drop(.badUDPLength) }
            if p.family == .ipv6 && RawBytes.load16(f, l4 + 6) == 0 {
                return .drop(.udpZeroChecksumIPv6)
            }
            p.sourcePort = RawBytes.load16(f, l4)
            p.destinationPort = RawBytes.load16(f, l4 + 2)
        case IPProtocol.icmp, IPProtocol.icmpv6:
            let icmp = parseICMP(f, family: p.family, proto: p.proto, l4: l4, end: p.ipEnd)
            p.sourcePort = icmp.identifier
            p.destinationPort = icmp.identifier
            p.icmpType = icmp.type
            p.icmpCode = icmp.code
            if let quote = icmp.quote {
                p.isICMPError = true
                p.innerL3Offset = quote.l3Offset
                p.innerL4Offset = quote.l4Offset
                p.innerProto = quote.proto
                p.innerSource = quote.source
                p.innerDestination = quote.destination
                p.innerSourcePort = quote.sourcePort
                p.innerDestinationPort = quote.destinationPort
            }
            return icmp.result
        default:
            p.sourcePort = 0
            p.destinationPort = 0
        }
        return .ip
    }

    @inlinable
    static func isError(type: UInt8, family: IPFamily) -> Bool {
        family == .ipv4 ? (type == 3 || type == 11 || type == 12) : (type >= 1 && type <= 4)
    }

    @inlinable
    static func isEcho(type: UInt8, family: IPFamily) -> Bool {
        family == .ipv4 ? (type == 8 || type == 0) : (type == 128 || type == 129)
    }

    /// The header quoted inside an ICMP error.
    @usableFromInline struct Quote {
        @usableFromInline var l3Offset: Int
        @usableFromInline var l4Offset: Int
        @usableFromInline var proto: UInt8
        @usableFromInline var source: IPAddress
        @usableFromInline var destination: IPAddress
        @usableFromInline var sourcePort: UInt16
        @usableFromInline var destinationPort: UInt16

        @inlinable
        init(l3Offset: Int, l4Offset: Int, proto: UInt8, source: IPAddress, destination: IPAddress,
             sourcePort: UInt16, destinationPort: UInt16) {
            self.l3Offset = l3Offset
            self.l4Offset = l4Offset
            self.proto = proto
            self.source = source
            self.destination = destination
            self.sourcePort = sourcePort
            self.destinationPort = destinationPort
        }
    }

    @usableFromInline struct ICMPFindings {
        @usableFromInline var result: ParseResult
        @usableFromInline var type: UInt8 = 0
        @usableFromInline var code: UInt8 = 0
        /// The echo identifier (it stands in for both ports), else 0.
        @usableFromInline var identifier: UInt16 = 0
        @usableFromInline var quote: Quote?

        @inlinable init(_ result: ParseResult) { self.result = result }
    }

    /// ICMP and ICMPv6: type, code, the echo identifier, or for an error about TCP/UDP the
    /// quoted header that names the flow.
    @inlinable @inline(never)
    static func parseICMP(_ f: UnsafeRawPointer, family: IPFamily, proto: UInt8, l4: Int,
                          end: Int) -> ICMPFindings {
        guard end - l4 >= 8 else { return ICMPFindings(.drop(.truncatedICMP)) }
        var findings = ICMPFindings(.ip)
        // ICMPv4 inside IPv6 (or the reverse) is nothing we serve: for the kernel.
        if (proto == IPProtocol.icmp) != (family == .ipv4) { return findings }
        findings.type = RawBytes.load8(f, l4)
        findings.code = RawBytes.load8(f, l4 + 1)
        if isError(type: findings.type, family: family) {
            let (result, quote) = parseQuote(f, family: family, at: l4 + 8, end: end)
            findings.result = result
            findings.quote = quote
        } else if isEcho(type: findings.type, family: family) {
            findings.identifier = RawBytes.load16(f, l4 + 4)
        }
        return findings
    }

    /// The packet inside an ICMP error: an IP header of the same family plus at least the
    /// eight bytes of TCP/UDP header that carry the ports (RFC 792, RFC 4443 §2.4).
    @inlinable
    static func parseQuote(_ f: UnsafeRawPointer, family: IPFamily, at inner: Int,
                           end: Int) -> (ParseResult, Quote?) {
        var proto: UInt8
        var l4: Int
        let source: IPAddress
        let destination: IPAddress
        if family == .ipv4 {
            guard end - inner >= 20 else { return (.drop(.malformedICMPInnerPacket), nil) }
            let versionIHL = RawBytes.load8(f, inner)
            let headerLength = Int(versionIHL & 0x0F) &* 4
            guard versionIHL >> 4 == 4, headerLength >= 20, headerLength <= end - inner else {
                return (.drop(.malformedICMPInnerPacket), nil)
            }
            proto = RawBytes.load8(f, inner + 9)
            l4 = inner + headerLength
            source = RawBytes.loadIPv4(f, inner + 12)
            destination = RawBytes.loadIPv4(f, inner + 16)
        } else {
            guard end - inner >= 40, RawBytes.load8(f, inner) >> 4 == 6 else {
                return (.drop(.malformedICMPInnerPacket), nil)
            }
            proto = RawBytes.load8(f, inner + 6)
            l4 = inner + 40
            source = RawBytes.loadIPv6(f, inner + 8)
            destination = RawBytes.loadIPv6(f, inner + 24)
            let walk = walkExtensionHeaders(f, end: end, next: proto, offset: l4)
            guard case .ip = walk.result, walk.fragment == nil else { return (.drop(.malformedICMPInnerPacket), nil) }
            proto = walk.next
            l4 = walk.offset
        }
        // An error about something other than TCP/UDP belongs to no flow: not for us.
        guard proto == IPProtocol.tcp || proto == IPProtocol.udp else { return (.ip, nil) }
        guard end - l4 >= 8 else { return (.drop(.malformedICMPInnerPacket), nil) }
        return (.ip, Quote(l3Offset: inner, l4Offset: l4, proto: proto, source: source, destination: destination,
                           sourcePort: RawBytes.load16(f, l4), destinationPort: RawBytes.load16(f, l4 + 2)))
    }
}
