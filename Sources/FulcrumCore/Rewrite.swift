/// Where the headers of a TCP or UDP packet are: enough to rewrite one of its endpoints.
public struct TransportHeaders: Sendable {
    public var family: IPFamily
    public var proto: UInt8
    public var l3Offset: Int
    public var l4Offset: Int

    @inlinable
    public init(family: IPFamily, proto: UInt8, l3Offset: Int, l4Offset: Int) {
        self.family = family
        self.proto = proto
        self.l3Offset = l3Offset
        self.l4Offset = l4Offset
    }

    @inlinable
    public init(_ p: ParsedPacket) {
        self.init(family: p.family, proto: p.proto, l3Offset: p.l3Offset, l4Offset: p.l4Offset)
    }
}

/// The first 12 bytes of an Ethernet frame, destination then source MAC, as they lie in
/// memory: worked out once when a node's MAC is learnt, so that the per-packet MAC
/// rewrite is two stores.
public struct EthernetAddresses: Sendable, Equatable {
    @usableFromInline var head: UInt64
    @usableFromInline var tail: UInt32

    @inlinable
    public init(destination: MACAddress, source: MACAddress) {
        head = (destination.value << 16 | source.value >> 32).bigEndian
        tail = UInt32(truncatingIfNeeded: source.value).bigEndian
    }

    /// Toward a next hop whose MAC may not be known yet (all zero then: such a node is
    /// not used).
    @inlinable
    public init(toward destination: MACAddress?, from source: MACAddress) {
        self = destination.map { EthernetAddresses(destination: $0, source: source) } ?? .zero
    }

    public static let zero = EthernetAddresses(destination: .zero, source: .zero)
}

/// Frame rewrites done in place on a parsed frame. Checksums are updated incrementally
/// (RFC 1624) from the words that change, never recomputed over the payload.
public enum Rewrite {
    /// MAT (L2 direct server return): only the Ethernet addresses change.
    @inlinable @inline(__always)
    public static func mat(_ frame: UnsafeMutableRawPointer, destinationMAC: MACAddress,
                           sourceMAC: MACAddress) {
        mat(frame, EthernetAddresses(destination: destinationMAC, source: sourceMAC))
    }

    /// The same with the addresses prepared ahead: two stores.
    @inlinable @inline(__always)
    public static func mat(_ frame: UnsafeMutableRawPointer, _ addresses: EthernetAddresses) {
        frame.storeBytes(of: addresses.head, toByteOffset: 0, as: UInt64.self)
        frame.storeBytes(of: addresses.tail, toByteOffset: 8, as: UInt32.self)
    }

    /// NAT, client to node: the destination address and port become the node's. For an
    /// ICMP error addressed to the VIP, the embedded packet (which the VIP sent) has its
    /// source translated too, so that path-MTU discovery reaches the node.
    @inlinable
    public static func natForward(_ f: UnsafeMutableRawPointer, _ p: ParsedPacket,
                                  node: IPAddress, nodePort: UInt16) {
        if p.isICMPError {
            translateInner(f, p, endpointIsSource: true, address: node, port: nodePort)
            setOuterAddress(f, p, isSource: false, to: node)
        } else {
            translate(f, TransportHeaders(p), isSource: false, from: p.destination, to: node, port: nodePort)
        }
    }

    /// NAT, node to client: the source address and port become the VIP's. For an ICMP
    /// error about a packet the node received, the embedded destination becomes the VIP,
    /// and so does the outer source when the node itself sent the error.
    @inlinable
    public static func natReverse(_ f: UnsafeMutableRawPointer, _ p: ParsedPacket,
                                  vip: IPAddress, vipPort: UInt16) {
        if p.isICMPError {
            let node = p.innerDestination
            translateInner(f, p, endpointIsSource: false, address: vip, port: vipPort)
            if p.source == node { setOuterAddress(f, p, isSource: true, to: vip) }
        } else {
            translate(f, TransportHeaders(p), isSource: true, from: p.source, to: vip, port: vipPort)
        }
    }

    // MARK: - Pieces

    @inlinable @inline(__always)
    static func addressOffset(_ family: IPFamily, l3: Int, isSource: Bool) -> Int {
        if family == .ipv4 { return l3 + (isSource ? 12 : 16) }
        return l3 + (isSource ? 8 : 24)
    }

    @inlinable @inline(__always)
    static func writeAddress(_ f: UnsafeMutableRawPointer, _ family: IPFamily, at offset: Int,
                             _ address: IPAddress) {
        if family == .ipv4 {
            RawBytes.store32(f, offset, address.ipv4)
        } else {
            RawBytes.storeIPv6(f, offset, address)
        }
    }

    @inlinable @inline(__always)
    static func l4ChecksumOffset(proto: UInt8) -> Int {
        proto == IPProtocol.tcp ? 16 : 6
    }

    /// Rewrites one endpoint (address and port) of a TCP/UDP packet whose address on that
    /// side is `old`.
    @inlinable @inline(__always)
    public static func translate(_ f: UnsafeMutableRawPointer, _ h: TransportHeaders, isSource: Bool,
                                 from old: IPAddress, to address: IPAddress, port: UInt16) {
        if h.family == .ipv4 {
            translate4(f, l3: h.l3Offset, l4: h.l4Offset, proto: h.proto, isSource: isSource, to: address.ipv4,
                       port: port)
        } else {
            translate6(f, h, isSource: isSource, from: old, to: address, port: port)
        }
    }

    /// `translate` for IPv4, the common case, in few instructions: the checksum words are
    /// summed as they lie in memory (the Internet checksum comes out the same in either
    /// byte order, RFC 1071 §2(B)), so only the new address and port are swapped.
    @inlinable @inline(__always)
    static func translate4(_ f: UnsafeMutableRawPointer, l3: Int, l4: Int, proto: UInt8, isSource: Bool,
                           to address: UInt32, port: UInt16) {
        let addressOffset = l3 &+ (isSource ? 12 : 16)
        let newAddress = address.bigEndian
        var delta = ChecksumDelta()
        delta.replace32(RawBytes.loadInPlace32(f, addressOffset), newAddress)
        RawBytes.storeInPlace32(f, addressOffset, newAddress)
        delta.applyInPlace(f, at: l3 &+ 10)

        guard proto == IPProtocol.tcp || proto == IPProtocol.udp else { return }
        let portOffset = l4 &+ (isSource ? 0 : 2)
        let newPort = port.bigEndian
        delta.replace16(RawBytes.loadInPlace16(f, portOffset), newPort)  // and the pseudo-header's address
        RawBytes.storeInPlace16(f, portOffset, newPort)
        if proto == IPProtocol.udp {
            delta.applyUDPInPlace(f, at: l4 &+ 6)
        } else {
            delta.applyInPlace(f, at: l4 &+ 16)
        }
    }

    @inlinable @inline(__always)
    static func translate6(_ f: UnsafeMutableRawPointer, _ h: TransportHeaders, isSource: Bool,
                           from old: IPAddress, to address: IPAddress, port: UInt16) {
        var addressDelta = ChecksumDelta()
        addressDelta.replaceAddress(old, address)
        writeAddress(f, h.family, at: addressOffset(h.family, l3: h.l3Offset, isSource: isSource), address)
        if h.family == .ipv4 { addressDelta.apply(f, at: h.l3Offset + 10) }

        guard h.proto == IPProtocol.tcp || h.proto == IPProtocol.udp else { return }
        let portOffset = h.l4Offset + (isSource ? 0 : 2)
        var l4Delta = addressDelta  // the pseudo-header covers the address
        l4Delta.replace16(RawBytes.load16(f, portOffset), port)
        RawBytes.store16(f, portOffset, port)
        let checksumOffset = h.l4Offset + l4ChecksumOffset(proto: h.proto)
        if h.proto == IPProtocol.udp {
            l4Delta.applyUDP(f, at: checksumOffset)
        } else {
            l4Delta.apply(f, at: checksumOffset)
        }
    }

    /// Rewrites one address of a fragment that carries no TCP or UDP header (a later
    /// fragment): the IPv4 header checksum follows; IPv6 has none. (The L4 checksum,
    /// which covers the addresses too, is in the first fragment and fixed there.)
    @inlinable
    public static func translateAddress(_ f: UnsafeMutableRawPointer, family: IPFamily, l3: Int, isSource: Bool,
                                        from old: IPAddress, to address: IPAddress) {
        writeAddress(f, family, at: addressOffset(family, l3: l3, isSource: isSource), address)
        if family == .ipv4 {
            var delta = ChecksumDelta()
            delta.replaceAddress(old, address)
            delta.apply(f, at: l3 + 10)
        }
    }

    /// Rewrites the outer address of an ICMP error. ICMPv6's checksum covers the
    /// pseudo-header, ICMPv4's does not.
    @inlinable
    static func setOuterAddress(_ f: UnsafeMutableRawPointer, _ p: ParsedPacket, isSource: Bool,
                                to address: IPAddress) {
        var delta = ChecksumDelta()
        delta.replaceAddress(isSource ? p.source : p.destination, address)
        writeAddress(f, p.family, at: addressOffset(p.family, l3: p.l3Offset, isSource: isSource), address)
        if p.family == .ipv4 {
            delta.apply(f, at: p.l3Offset + 10)
        } else {
            delta.apply(f, at: p.l4Offset + 2)
        }
    }

    /// Rewrites one endpoint of the packet embedded in an ICMP error, then folds every
    /// word that changed inside the ICMP payload into the ICMP checksum.
    @inlinable
    static func translateInner(_ f: UnsafeMutableRawPointer, _ p: ParsedPacket,
                               endpointIsSource: Bool, address: IPAddress, port: UInt16) {
        var icmpDelta = ChecksumDelta()
        let old = endpointIsSource ? p.innerSource : p.innerDestination
        var addressDelta = ChecksumDelta()
        addressDelta.replaceAddress(old, address)
        icmpDelta.add(addressDelta)
        writeAddress(f, p.family, at: addressOffset(p.family, l3: p.innerL3Offset, isSource: endpointIsSource),
                     address)

        if p.family == .ipv4 {
            let checksumOffset = p.innerL3Offset + 10
            let before = RawBytes.load16(f, checksumOffset)
            addressDelta.apply(f, at: checksumOffset)
            icmpDelta.replace16(before, RawBytes.load16(f, checksumOffset))
        }

        let portOffset = p.innerL4Offset + (endpointIsSource ? 0 : 2)
        var l4Delta = addressDelta
        let oldPort = RawBytes.load16(f, portOffset)
        l4Delta.replace16(oldPort, port)
        icmpDelta.replace16(oldPort, port)
        RawBytes.store16(f, portOffset, port)

        // The embedded L4 checksum is fixed when the error quoted it (UDP always, at +6;
        // TCP only when more than the minimum 8 bytes were quoted).
        let l4ChecksumOffset = p.innerL4Offset + l4ChecksumOffset(proto: p.innerProto)
        if l4ChecksumOffset + 2 <= p.ipEnd {
            let before = RawBytes.load16(f, l4ChecksumOffset)
            if p.innerProto == IPProtocol.udp {
                l4Delta.applyUDP(f, at: l4ChecksumOffset)
            } else {
                l4Delta.apply(f, at: l4ChecksumOffset)
            }
            icmpDelta.replace16(before, RawBytes.load16(f, l4ChecksumOffset))
        }
        icmpDelta.apply(f, at: p.l4Offset + 2)
    }
}
