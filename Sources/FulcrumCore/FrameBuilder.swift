/// Builds the frames an active LB sends to announce or defend its addresses. Each writes
/// into a caller-owned buffer and returns the frame length, or 0 if `capacity` is short.
public enum FrameBuilder {
    public static let arpFrameLength = 42
    /// Ethernet + IPv6 + ICMPv6 NA (24) + target link-layer address option (8).
    public static let neighborAdvertisementLength = 14 + 40 + 32
    static let ipv6AllNodes = IPAddress(high: 0xFF02_0000_0000_0000, low: 1)

    /// Writes the Ethernet header (with an 802.1Q tag when `vlan` is set); returns its length.
    @inlinable
    static func ethernet(_ f: UnsafeMutableRawPointer, destination: MACAddress, source: MACAddress,
                         etherType: UInt16, vlan: UInt16?) -> Int {
        RawBytes.storeMAC(f, 0, destination)
        RawBytes.storeMAC(f, 6, source)
        if let vlan {
            RawBytes.store16(f, 12, EtherType.vlan)
            RawBytes.store16(f, 14, vlan)
            RawBytes.store16(f, 16, etherType)
            return 18
        }
        RawBytes.store16(f, 12, etherType)
        return 14
    }

    @inlinable
    static func arp(_ f: UnsafeMutableRawPointer, capacity: Int, ethernetDestination: MACAddress,
                    operation: UInt16, senderMAC: MACAddress, senderIP: IPAddress,
                    targetMAC: MACAddress, targetIP: IPAddress, vlan: UInt16?) -> Int {
        let total = arpFrameLength + (vlan == nil ? 0 : 4)
        guard capacity >= total, senderIP.isIPv4, targetIP.isIPv4 else { return 0 }
        let o = ethernet(f, destination: ethernetDestination, source: senderMAC,
                         etherType: EtherType.arp, vlan: vlan)
        RawBytes.store16(f, o, 1)  // Ethernet
        RawBytes.store16(f, o + 2, EtherType.ipv4)
        RawBytes.store8(f, o + 4, 6)
        RawBytes.store8(f, o + 5, 4)
        RawBytes.store16(f, o + 6, operation)
        RawBytes.storeMAC(f, o + 8, senderMAC)
        RawBytes.store32(f, o + 14, senderIP.ipv4)
        RawBytes.storeMAC(f, o + 18, targetMAC)
        RawBytes.store32(f, o + 24, targetIP.ipv4)
        return total
    }

    /// Gratuitous ARP, request form (RFC 5227 "ARP announcement": sender = target = VIP,
    /// target MAC zero), broadcast.
    public static func gratuitousARPRequest(_ f: UnsafeMutableRawPointer, capacity: Int,
                                            mac: MACAddress, ip: IPAddress, vlan: UInt16? = nil) -> Int {
        arp(f, capacity: capacity, ethernetDestination: .broadcast, operation: ARPPacket.request,
            senderMAC: mac, senderIP: ip, targetMAC: .zero, targetIP: ip, vlan: vlan)
    }

    /// Gratuitous ARP, reply form (sender = target = VIP, target MAC broadcast), for
    /// hosts that update their caches only from replies.
    public static func gratuitousARPReply(_ f: UnsafeMutableRawPointer, capacity: Int,
                                          mac: MACAddress, ip: IPAddress, vlan: UInt16? = nil) -> Int {
        arp(f, capacity: capacity, ethernetDestination: .broadcast, operation: ARPPacket.reply,
            senderMAC: mac, senderIP: ip, targetMAC: .broadcast, targetIP: ip, vlan: vlan)
    }

    /// The reply to an ARP request for one of our addresses, unicast to the requester.
    public static func arpReply(_ f: UnsafeMutableRawPointer, capacity: Int, to request: ARPPacket,
                                mac: MACAddress) -> Int {
        arp(f, capacity: capacity, ethernetDestination: request.senderMAC, operation: ARPPacket.reply,
            senderMAC: mac, senderIP: request.targetIP, targetMAC: request.senderMAC,
            targetIP: request.senderIP, vlan: request.hasVLAN ? request.vlanTag : nil)
    }

    /// An unsolicited neighbour advertisement (RFC 4861 §7.2.6): to all-nodes, Override
    /// set, Solicited clear, with our link-layer address. `router` sets the R flag, for a
    /// floating gateway address.
    public static func unsolicitedNeighborAdvertisement(
        _ f: UnsafeMutableRawPointer, capacity: Int, mac: MACAddress, target: IPAddress,
        router: Bool = false, vlan: UInt16? = nil
    ) -> Int {
        neighborAdvertisement(f, capacity: capacity, ethernetDestination: MACAddress.ipv6Multicast(ipv6AllNodes),
                              source: target, destination: ipv6AllNodes, mac: mac, target: target,
                              solicited: false, router: router, vlan: vlan)
    }

    /// The answer to a neighbour solicitation for one of our addresses (RFC 4861 §7.2.4).
    /// A solicitation from the unspecified address (duplicate address detection) is
    /// answered to all-nodes with Solicited clear.
    public static func solicitedNeighborAdvertisement(
        _ f: UnsafeMutableRawPointer, capacity: Int, mac: MACAddress, target: IPAddress,
        solicitor: IPAddress, solicitorMAC: MACAddress, router: Bool = false, vlan: UInt16? = nil
    ) -> Int {
        if solicitor == .zero {
            return neighborAdvertisement(f, capacity: capacity,
                                         ethernetDestination: MACAddress.ipv6Multicast(ipv6AllNodes),
                                         source: target, destination: ipv6AllNodes, mac: mac,
                                         target: target, solicited: false, router: router, vlan: vlan)
        }
        return neighborAdvertisement(f, capacity: capacity, ethernetDestination: solicitorMAC,
                                     source: target, destination: solicitor, mac: mac, target: target,
                                     solicited: true, router: router, vlan: vlan)
    }

    static func neighborAdvertisement(
        _ f: UnsafeMutableRawPointer, capacity: Int, ethernetDestination: MACAddress,
        source: IPAddress, destination: IPAddress, mac: MACAddress, target: IPAddress,
        solicited: Bool, router: Bool, vlan: UInt16?
    ) -> Int {
        let total = neighborAdvertisementLength + (vlan == nil ? 0 : 4)
        guard capacity >= total, !target.isIPv4 else { return 0 }
        let l3 = ethernet(f, destination: ethernetDestination, source: mac,
                          etherType: EtherType.ipv6, vlan: vlan)
        let icmpLength = 32
        RawBytes.store32(f, l3, 0x6000_0000)
        RawBytes.store16(f, l3 + 4, UInt16(icmpLength))
        RawBytes.store8(f, l3 + 6, IPProtocol.icmpv6)
        RawBytes.store8(f, l3 + 7, 255)  // hop limit 255: receivers discard anything else
        RawBytes.storeIPv6(f, l3 + 8, source)
        RawBytes.storeIPv6(f, l3 + 24, destination)
        let l4 = l3 + 40
        RawBytes.store8(f, l4, 136)
        RawBytes.store8(f, l4 + 1, 0)
        RawBytes.store16(f, l4 + 2, 0)
        let flags: UInt32 = (router ? 0x8000_0000 : 0) | (solicited ? 0x4000_0000 : 0) | 0x2000_0000
        RawBytes.store32(f, l4 + 4, flags)
        RawBytes.storeIPv6(f, l4 + 8, target)
        RawBytes.store8(f, l4 + 24, 2)  // option: target link-layer address
        RawBytes.store8(f, l4 + 25, 1)  // length in units of 8 bytes
        RawBytes.storeMAC(f, l4 + 26, mac)
        let sum = Checksum.sum(UnsafeRawPointer(f) + l4, count: icmpLength,
                               initial: Checksum.pseudoHeaderSum(source: source, destination: destination,
                                                                 protocol: IPProtocol.icmpv6, length: icmpLength))
        RawBytes.store16(f, l4 + 2, Checksum.finish(sum))
        return total
    }
}

/// A neighbour solicitation (ICMPv6 type 135) read from a parsed frame.
public struct NeighborSolicitation: Equatable, Sendable {
    public var target: IPAddress
    public var source: IPAddress
    /// From the source link-layer address option, or the Ethernet source when absent.
    public var sourceMAC: MACAddress

    /// Reads a solicitation, or nil when the frame is not one or is malformed (RFC 4861
    /// §7.1.1: hop limit 255, code 0, at least 24 bytes, options of non-zero length).
    public static func parse(_ f: UnsafeRawPointer, _ p: ParsedPacket) -> NeighborSolicitation? {
        guard p.family == .ipv6, p.proto == IPProtocol.icmpv6, p.icmpType == 135, p.icmpCode == 0,
              p.ipEnd - p.l4Offset >= 24, RawBytes.load8(f, p.l3Offset + 7) == 255
        else { return nil }
        var ns = NeighborSolicitation(target: RawBytes.loadIPv6(f, p.l4Offset + 8), source: p.source,
                                      sourceMAC: RawBytes.loadMAC(f, 6))
        var option = p.l4Offset + 24
        while p.ipEnd - option >= 2 {
            let length = Int(RawBytes.load8(f, option + 1)) * 8
            guard length > 0, length <= p.ipEnd - option else { return nil }
            if RawBytes.load8(f, option) == 1 && length >= 8 {
                ns.sourceMAC = RawBytes.loadMAC(f, option + 2)
            }
            option += length
        }
        return ns
    }
}
