/// Why a frame was dropped or passed to the kernel rather than forwarded. Each reason is
/// a counter index in every worker; the names are what operators see in metrics.
public enum DropReason: Int, CaseIterable, Sendable {
    // Malformed: dropped.
    case truncatedEthernet = 0
    case truncatedVLAN
    case truncatedARP
    case malformedARP
    case truncatedIPv4
    case badIPv4Version
    case badIPv4HeaderLength
    case badIPv4TotalLength
    case truncatedIPv6
    case badIPv6Version
    case badIPv6PayloadLength
    case truncatedIPv6ExtensionHeader
    case tooManyIPv6ExtensionHeaders
    case fragment
    case truncatedTCP
    case badTCPDataOffset
    case truncatedUDP
    case badUDPLength
    case udpZeroChecksumIPv6
    case truncatedICMP
    case malformedICMPInnerPacket
    // Well-formed but not forwarded.
    case notForService
    case noLiveNode
    case icmpErrorWithoutFlow
    case noRouteToClient
    /// A NAT reply whose next hop (the client itself on-link, or the route's gateway) has
    /// no MAC yet: resolution is asked for, and status lists the destination.
    case nextHopUnresolved
    case transmitRingFull
    /// A frame with a NAT node's source address and port that did not arrive on the
    /// interface that node is reached through (a forged reply).
    case natReplyFromWrongSide
    /// Larger than the egress interface's MTU.
    case exceedsEgressMTU
    /// A later fragment that arrived before its datagram's first, of a VIP with several
    /// groups for its protocol (or a NAT node serving several VIPs): its path cannot be
    /// told without the ports.
    case fragmentBeforeFirst

    /// The metric label: the case name in snake_case (computed once).
    public var label: String { Self.labels[rawValue] }
    static let labels = allCases.map { MetricLabel.snakeCase(String(describing: $0)) }

    /// True for reasons that mean the frame itself was bad (as opposed to a policy drop).
    public var isMalformed: Bool { rawValue <= DropReason.malformedICMPInnerPacket.rawValue }
}

/// Counter names as operators see them in metrics and status.
public enum MetricLabel {
    /// camelCase → snake_case, with acronyms kept whole: `badTCPDataOffset` →
    /// `bad_tcp_data_offset`, `truncatedIPv4` → `truncated_ipv4`.
    public static func snakeCase(_ name: String) -> String {
        var text = name
        for (acronym, word) in [("IPv4", "Ipv4"), ("IPv6", "Ipv6"), ("ICMP", "Icmp"), ("TCP", "Tcp"), ("UDP", "Udp"),
                                ("ARP", "Arp"), ("VLAN", "Vlan"), ("NAT", "Nat"), ("MAC", "Mac"), ("MTU", "Mtu")] {
            text = text.replacing(acronym, with: word)
        }
        var out = ""
        for ch in text {
            if ch.isUppercase {
                if !out.isEmpty { out += "_" }
                out += ch.lowercased()
            } else {
                out.append(ch)
            }
        }
        return out
    }
}
