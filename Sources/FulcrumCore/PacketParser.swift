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

    @inlinable public init() {}

    /// The transport protocol of the flow this packet belongs to.
    @inlinable public var flowProto: UInt8 { isICMPError ? innerProto : proto }

    /// True when the packet carries TCP or UDP ports that identify a flow.
    @inlinable public var hasPorts: Bool {
        isICMPError || proto == IPProtocol.tcp || proto == IPProtocol.udp
    }

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
    /// A malformed or unhandled frame.
    case drop(DropReason)
}

/// Parses Ethernet frames without trapping: every read is preceded by a bounds check
/// against the frame length, and every inconsistency is a `DropReason`.
public enum PacketParser {
    /// IPv6 extension headers walked before giving up (RFC 7045 sets no limit; 8 matches
    /// what common routers and Katran accept).
    public static let maxExtensionHeaders = 8

    @inlinable
    public static func parse(_ frame: UnsafeRawPointer, length: Int,
                             into p: inout ParsedPacket, arp: inout ARPPacket) -> ParseResult {
        guard length >= 14 else { return .drop(.truncatedEthernet) }
        var etherType = RawBytes.load16(frame, 12)
        var l3 = 14
        var hasVLAN = false
        var tag: UInt16 = 0
        if etherType == EtherType.vlan {
            guard length >= 18 else { return .drop(.truncatedVLAN) }
            hasVLAN = true
            tag = RawBytes.load16(frame, 14)
            etherType = RawBytes.load16(frame, 16)
            l3 = 18
        }
        switch etherType {
        case EtherType.ipv4:
            p.hasVLAN = hasVLAN
            p.vlanTag = tag
            return parseIPv4(frame, length: length, at: l3, into: &p)
        case EtherType.ipv6:
            p.hasVLAN = hasVLAN
            p.vlanTag = tag
            return parseIPv6(frame, length: length, at: l3, into: &p)
        case EtherType.arp:
            arp.hasVLAN = hasVLAN
            arp.vlanTag = tag
            return parseARP(frame, length: length, at: l3, into: &arp)
        default:
            return .other
        }
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
        // More-fragments set or a non-zero offset: the ports are missing or unreliable.
        guard RawBytes.load16(f, l3 + 6) & 0x3FFF == 0 else { return .drop(.fragment) }
        p.family = .ipv4
        p.l3Offset = l3
        p.l4Offset = l3 + headerLength
        p.ipEnd = l3 + totalLength
        p.proto = RawBytes.load8(f, l3 + 9)
        p.source = RawBytes.loadIPv4(f, l3 + 12)
        p.destination = RawBytes.loadIPv4(f, l3 + 16)
        return parseTransport(f, into: &p)
    }

    @inlinable
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
        let walk = walkExtensionHeaders(f, end: p.ipEnd, next: &next, offset: &offset)
        if walk != .ip { return walk }
        p.proto = next
        p.l4Offset = offset
        return parseTransport(f, into: &p)
    }

    /// Skips hop-by-hop, routing, destination-options and atomic-fragment headers.
    @inlinable
    static func walkExtensionHeaders(_ f: UnsafeRawPointer, end: Int, next: inout UInt8,
                                     offset: inout Int) -> ParseResult {
        var count = 0
        while true {
            switch next {
            case IPProtocol.hopByHop, IPProtocol.routing, IPProtocol.destinationOptions:
                guard end - offset >= 8 else { return .drop(.truncatedIPv6ExtensionHeader) }
                let headerLength = (Int(RawBytes.load8(f, offset + 1)) + 1) &* 8
                guard headerLength <= end - offset else {
                    return .drop(.truncatedIPv6ExtensionHeader)
                }
                next = RawBytes.load8(f, offset)
                offset += headerLength
            case IPProtocol.fragment:
                guard end - offset >= 8 else { return .drop(.truncatedIPv6ExtensionHeader) }
                // Only an atomic fragment (offset 0, no more fragments; RFC 6946) is whole.
                guard RawBytes.load16(f, offset + 2) & 0xFFF9 == 0 else { return .drop(.fragment) }
                next = RawBytes.load8(f, offset)
                offset += 8
            default:
                return .ip
            }
            count += 1
            if count > maxExtensionHeaders { return .drop(.tooManyIPv6ExtensionHeaders) }
        }
    }

    @inlinable @inline(__always)
    static func parseTransport(_ f: UnsafeRawPointer, into p: inout ParsedPacket) -> ParseResult {
        let l4 = p.l4Offset
        let available = p.ipEnd - l4
        p.isICMPError = false
        p.sourcePort = 0
        p.destinationPort = 0
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
            guard available >= 8 else { return .drop(.truncatedICMP) }
            if (p.proto == IPProtocol.icmp) != (p.family == .ipv4) { return .ip }
            p.icmpType = RawBytes.load8(f, l4)
            p.icmpCode = RawBytes.load8(f, l4 + 1)
            if isError(type: p.icmpType, family: p.family) {
                return parseInner(f, into: &p)
            }
            if isEcho(type: p.icmpType, family: p.family) {
                p.sourcePort = RawBytes.load16(f, l4 + 4)
                p.destinationPort = p.sourcePort
            }
        default:
            break
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

    /// The packet inside an ICMP error: an IP header of the same family plus at least the
    /// eight bytes of TCP/UDP header that carry the ports (RFC 792, RFC 4443 §2.4).
    @inlinable
    static func parseInner(_ f: UnsafeRawPointer, into p: inout ParsedPacket) -> ParseResult {
        let inner = p.l4Offset + 8
        let end = p.ipEnd
        var proto: UInt8
        var l4: Int
        if p.family == .ipv4 {
            guard end - inner >= 20 else { return .drop(.malformedICMPInnerPacket) }
            let versionIHL = RawBytes.load8(f, inner)
            let headerLength = Int(versionIHL & 0x0F) &* 4
            guard versionIHL >> 4 == 4, headerLength >= 20, headerLength <= end - inner else {
                return .drop(.malformedICMPInnerPacket)
            }
            proto = RawBytes.load8(f, inner + 9)
            l4 = inner + headerLength
            p.innerSource = RawBytes.loadIPv4(f, inner + 12)
            p.innerDestination = RawBytes.loadIPv4(f, inner + 16)
        } else {
            guard end - inner >= 40, RawBytes.load8(f, inner) >> 4 == 6 else {
                return .drop(.malformedICMPInnerPacket)
            }
            proto = RawBytes.load8(f, inner + 6)
            l4 = inner + 40
            p.innerSource = RawBytes.loadIPv6(f, inner + 8)
            p.innerDestination = RawBytes.loadIPv6(f, inner + 24)
            let walk = walkExtensionHeaders(f, end: end, next: &proto, offset: &l4)
            if walk != .ip { return .drop(.malformedICMPInnerPacket) }
        }
        // An error about something other than TCP/UDP belongs to no flow: not for us.
        guard proto == IPProtocol.tcp || proto == IPProtocol.udp else { return .ip }
        guard end - l4 >= 8 else { return .drop(.malformedICMPInnerPacket) }
        p.isICMPError = true
        p.innerL3Offset = inner
        p.innerL4Offset = l4
        p.innerProto = proto
        p.innerSourcePort = RawBytes.load16(f, l4)
        p.innerDestinationPort = RawBytes.load16(f, l4 + 2)
        return .ip
    }
}
