import FulcrumCore
import FulcrumTestSupport
import Testing

@Suite struct ParserTests {
    func parse(_ bytes: [UInt8]) -> (ParseResult, ParsedPacket, ARPPacket) {
        withExactAllocation(bytes) { p, n in
            var packet = ParsedPacket()
            var arp = ARPPacket()
            let r = PacketParser.parse(p, length: n, into: &packet, arp: &arp)
            return (r, packet, arp)
        }
    }

    @Test func tcpOverIPv4() {
        let f = PacketBuilder.tcpFrame(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: 40000,
                                       destinationPort: 80, flags: TCPFlags.syn)
        let (r, p, _) = parse(f)
        #expect(r == .ip)
        #expect(p.family == .ipv4 && p.proto == IPProtocol.tcp)
        #expect(p.source == Fixtures.client4 && p.destination == Fixtures.vip4)
        #expect(p.sourcePort == 40000 && p.destinationPort == 80)
        #expect(p.tcpFlags == TCPFlags.syn)
        #expect(p.l3Offset == 14 && p.l4Offset == 34 && p.ipEnd == f.count)
    }

    /// The per-packet path tries `quickIPv4` and `quickIPv6` first and trusts what they
    /// return, so every frame they accept must be one the full parser takes as IP, with
    /// the same fields. Frames near the common cases, with header bytes changed and
    /// lengths cut or padded, probe each of their checks from both sides.
    @Test(arguments: [IPFamily.ipv4, .ipv6])
    func quickParseAcceptsOnlyWhatTheFullParserAcceptsAndReadsTheSameFields(family: IPFamily) {
        let v6 = family == .ipv6
        let client = v6 ? Fixtures.client6 : Fixtures.client4
        let vip = v6 ? Fixtures.vip6 : Fixtures.vip4
        let payload = Array("fulcrum".utf8)
        let bases = [
            PacketBuilder.tcpFrame(source: client, destination: vip, sourcePort: 40000, destinationPort: 80,
                                   flags: TCPFlags.syn),
            PacketBuilder.tcpFrame(source: client, destination: vip, sourcePort: 40001, destinationPort: 443,
                                   payload: payload),
            PacketBuilder.udpFrame(source: client, destination: vip, sourcePort: 40002, destinationPort: 53),
            PacketBuilder.udpFrame(source: client, destination: vip, sourcePort: 40003, destinationPort: 53,
                                   payload: payload, zeroChecksum: !v6),
        ]
        let l4 = 14 + (v6 ? 40 : 20)
        // The bytes the quick parse checks: EtherType to the protocol, and ports to TCP flags.
        let network = v6 ? 12...21 : 12...23
        let transport = l4...(l4 + 19)
        func quick(_ frame: UnsafeRawPointer, _ n: Int) -> QuickFlow? {
            v6 ? PacketParser.quickIPv6(frame, length: n) : PacketParser.quickIPv4(frame, length: n)
        }
        // Unchanged, each is the common case.
        for f in bases { #expect(withExactAllocation(f) { quick($0, $1) } != nil) }
        // A UDP checksum of zero is "none" over IPv4 and malformed over IPv6 (RFC 8200).
        let zeroChecksum = PacketBuilder.udpFrame(source: client, destination: vip, sourcePort: 40004,
                                                  destinationPort: 53, zeroChecksum: true)
        #expect(withExactAllocation(zeroChecksum) { quick($0, $1) != nil } == !v6)
        var rng = SplitMix(seed: v6 ? 0x0A56 : 0x0A54)
        var accepted = 0
        var declined = 0
        for i in 0..<40_000 {
            var f = bases[i % bases.count]
            for _ in 0..<Int.random(in: 1...2, using: &rng) {
                let range = Bool.random(using: &rng) ? network : transport
                let at = Int.random(in: range.lowerBound...min(f.count - 1, range.upperBound), using: &rng)
                f[at] = Bool.random(using: &rng) ? UInt8.random(in: 0...255, using: &rng) : f[at] ^ (1 << (i % 8))
            }
            switch Int.random(in: 0..<8, using: &rng) {
            case 0: f.removeLast(Int.random(in: 1...min(30, f.count), using: &rng))
            case 1: f += [UInt8](repeating: 0, count: Int.random(in: 1...20, using: &rng))
            default: break
            }
            withExactAllocation(f) { frame, n in
                var full = ParsedPacket()
                let result = PacketParser.parse(frame, length: n, into: &full)
                guard let q = quick(frame, n) else {
                    declined += 1
                    return
                }
                accepted += 1
                #expect(result == .ip, "case \(i): \(f.hexDump)")
                #expect(q.family == family && full.family == family && !full.hasVLAN && !full.isICMPError, "case \(i)")
                #expect(full.l3Offset == 14 && full.l4Offset == l4 && q.l4Offset == l4, "case \(i)")
                #expect(full.source == q.source && full.destination == q.destination, "case \(i)")
                #expect(full.sourcePort == q.sourcePort && full.destinationPort == q.destinationPort, "case \(i)")
                #expect(full.proto == q.proto && full.tcpFlags == q.tcpFlags, "case \(i)")
            }
        }
        // Both sides of the checks were reached.
        #expect(accepted > 5000 && declined > 5000, "accepted \(accepted), declined \(declined)")
    }

    @Test func vlanTaggedUDP() {
        let f = PacketBuilder.udpFrame(source: Fixtures.client4, destination: Fixtures.vip4, sourcePort: 1,
                                       destinationPort: 53, vlan: 100)
        let (r, p, _) = parse(f)
        #expect(r == .ip)
        #expect(p.hasVLAN && p.vlanTag == 100 && p.l3Offset == 18)
        #expect(p.destinationPort == 53)
    }

    @Test func ipv6ExtensionHeadersAreWalked() throws {
        let frame = try #require(Fixtures.wellFormed.first { $0.name.contains("hop-by-hop") })
        let (r, p, _) = parse(frame.bytes)
        #expect(r == .ip)
        #expect(p.proto == IPProtocol.udp && p.destinationPort == 53)
        #expect(p.l4Offset == 14 + 40 + 8 + 8 + 8)
    }

    @Test func icmpErrorIdentifiesItsFlow() throws {
        let frame = try #require(Fixtures.wellFormed.first { $0.name.contains("ICMPv4 fragmentation") })
        let (r, p, _) = parse(frame.bytes)
        #expect(r == .ip)
        #expect(p.isICMPError)
        #expect(p.innerSource == Fixtures.vip4 && p.innerSourcePort == 53)
        // The flow is the client's, toward the VIP.
        let key = p.flowKey
        #expect(key.source == Fixtures.client4 && key.destination == Fixtures.vip4)
        #expect(key.sourcePort == 40001 && key.destinationPort == 53 && key.proto == IPProtocol.udp)
    }

    @Test func icmpv6ErrorIdentifiesItsFlow() throws {
        let frame = try #require(Fixtures.wellFormed.first { $0.name.contains("ICMPv6 packet-too-big") })
        let (r, p, _) = parse(frame.bytes)
        #expect(r == .ip && p.isICMPError && p.family == .ipv6)
        #expect(p.flowKey == FlowKey(source: Fixtures.client6, destination: Fixtures.vip6, sourcePort: 40002,
                                     destinationPort: 443, proto: IPProtocol.tcp))
    }

    @Test func arpRequest() throws {
        let frame = try #require(Fixtures.wellFormed.first { $0.name == "ARP request" })
        let (r, _, a) = parse(frame.bytes)
        #expect(r == .arp)
        #expect(a.operation == ARPPacket.request && a.targetIP == Fixtures.vip4 && a.senderIP == Fixtures.client4)
        #expect(a.senderMAC == PacketBuilder.clientMAC)
    }

    @Test func otherEtherTypesAreNotOurs() {
        let lldp = PacketBuilder.ethernet(etherType: 0x88CC, payload: [UInt8](repeating: 0, count: 46))
        #expect(parse(lldp).0 == .other)
    }

    // MARK: - Lies and truncation

    static var lies: [(String, [UInt8], DropReason)] {
        let c = Fixtures.client4, v = Fixtures.vip4
        let seg = PacketBuilder.tcp(source: c, destination: v, sourcePort: 1, destinationPort: 80)
        func v4(_ bytes: [UInt8]) -> [UInt8] { PacketBuilder.ethernet(etherType: 0x0800, payload: bytes) }
        func v6(_ bytes: [UInt8]) -> [UInt8] { PacketBuilder.ethernet(etherType: 0x86DD, payload: bytes) }
        var ihlTooSmall = PacketBuilder.ipv4(source: c, destination: v, proto: 6, payload: seg)
        ihlTooSmall[0] = 0x44
        var ihlTooBig = PacketBuilder.ipv4(source: c, destination: v, proto: 6, payload: [])
        ihlTooBig[0] = 0x4F
        var version = PacketBuilder.ipv4(source: c, destination: v, proto: 6, payload: seg)
        version[0] = 0x55
        let totalTooBig = PacketBuilder.ipv4(source: c, destination: v, proto: 6, payload: seg, totalLengthOverride: 200)
        let totalTooSmall = PacketBuilder.ipv4(source: c, destination: v, proto: 6, payload: seg, totalLengthOverride: 12)
        var dataOffset = seg
        dataOffset[12] = 0x30
        var dataOffsetBig = seg
        dataOffsetBig[12] = 0xF0
        var udpLength = PacketBuilder.udp(source: c, destination: v, sourcePort: 1, destinationPort: 53, payload: [1, 2])
        udpLength[5] = 200
        var udpShort = udpLength
        udpShort[5] = 4
        let c6 = Fixtures.client6, v6a = Fixtures.vip6
        let useg = PacketBuilder.udp(source: c6, destination: v6a, sourcePort: 1, destinationPort: 53, payload: [1])
        let plTooBig = PacketBuilder.ipv6(source: c6, destination: v6a, nextHeader: 17, payload: useg,
                                          payloadLengthOverride: 500)
        let jumbo = PacketBuilder.ipv6(source: c6, destination: v6a, nextHeader: 17, payload: useg,
                                       payloadLengthOverride: 0)
        let extLie = PacketBuilder.ipv6(source: c6, destination: v6a, nextHeader: 17, payload: useg,
                                        extensions: [(0, [200, 0, 0, 0, 0, 0, 0])])
        let loop = PacketBuilder.ipv6(source: c6, destination: v6a, nextHeader: 17, payload: useg,
                                      extensions: Array(repeating: (60, [0, 1, 4, 0, 0, 0, 0]), count: 9))
        let frag6 = PacketBuilder.ipv6(source: c6, destination: v6a, nextHeader: 17, payload: useg,
                                       extensions: [(44, [0, 0, 1, 0, 0, 0, 1])])
        let zeroSum6 = PacketBuilder.ipv6(source: c6, destination: v6a, nextHeader: 17, payload:
            PacketBuilder.udp(source: c6, destination: v6a, sourcePort: 1, destinationPort: 53, zeroChecksum: true))
        let icmpBadInner = PacketBuilder.ipv4(source: Fixtures.router4, destination: v, proto: 1,
                                              payload: PacketBuilder.icmpv4(type: 3, code: 4, body: [0x45, 0, 0]))
        let quotedNoPorts = Array(PacketBuilder.ipv4(source: v, destination: c, proto: 17,
            payload: PacketBuilder.udp(source: v, destination: c, sourcePort: 53, destinationPort: 1)).prefix(24))
        let icmpShortInner = PacketBuilder.ipv4(source: Fixtures.router4, destination: v, proto: 1,
                                                payload: PacketBuilder.icmpv4(type: 3, code: 4, body: quotedNoPorts))
        var arpBad = PacketBuilder.ethernet(destination: .broadcast, etherType: 0x0806, payload:
            [0, 1, 8, 0, 6, 4, 0, 1] + [UInt8](repeating: 0, count: 20))
        arpBad[18] = 8
        return [
            ("IHL below 5", v4(ihlTooSmall), .badIPv4HeaderLength),
            ("IHL past the end", v4(ihlTooBig), .badIPv4HeaderLength),
            ("IP version 5 in an IPv4 frame", v4(version), .badIPv4Version),
            ("total length past the frame", v4(totalTooBig), .badIPv4TotalLength),
            ("total length below the header", v4(totalTooSmall), .badIPv4TotalLength),
            ("first fragment too short for its TCP header (RFC 1858)",
             v4(PacketBuilder.ipv4(source: c, destination: v, proto: 6, payload: Array(seg.prefix(16)), flagsAndFragment: 0x2000)),
             .truncatedTCP),
            ("ICMP fragment", v4(PacketBuilder.ipv4(source: c, destination: v, proto: 1, payload: seg, flagsAndFragment: 0x2000)),
             .fragment),
            ("TCP data offset 3", v4(PacketBuilder.ipv4(source: c, destination: v, proto: 6, payload: dataOffset)), .badTCPDataOffset),
            ("TCP data offset past the end", v4(PacketBuilder.ipv4(source: c, destination: v, proto: 6, payload: dataOffsetBig)), .badTCPDataOffset),
            ("UDP length past the datagram", v4(PacketBuilder.ipv4(source: c, destination: v, proto: 17, payload: udpLength)), .badUDPLength),
            ("UDP length below 8", v4(PacketBuilder.ipv4(source: c, destination: v, proto: 17, payload: udpShort)), .badUDPLength),
            ("IPv6 payload length past the frame", v6(plTooBig), .badIPv6PayloadLength),
            ("IPv6 jumbogram", v6(jumbo), .badIPv6PayloadLength),
            ("IPv6 extension header length past the end", v6(extLie), .truncatedIPv6ExtensionHeader),
            ("nine IPv6 extension headers", v6(loop), .tooManyIPv6ExtensionHeaders),
            ("five IPv6 extension headers, one more than the XDP program walks",
             v6(PacketBuilder.ipv6(source: c6, destination: v6a, nextHeader: 17, payload: useg,
                                   extensions: Array(repeating: (60, [0, 1, 4, 0, 0, 0, 0]), count: 5))),
             .tooManyIPv6ExtensionHeaders),
            ("IPv6 first fragment whose UDP length is only its own", v6(frag6), .badUDPLength),
            ("UDP over IPv6 without checksum", v6(zeroSum6), .udpZeroChecksumIPv6),
            ("ICMP error quoting 3 bytes", v4(icmpBadInner), .malformedICMPInnerPacket),
            ("ICMP error quoting no ports", v4(icmpShortInner), .malformedICMPInnerPacket),
            ("ARP with a wrong hardware length", arpBad, .malformedARP),
            ("runt", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], .truncatedEthernet),
        ]
    }

    @Test(arguments: zip(lies.map { Fixtures.Frame($0.0, $0.1) }, lies.map(\.2)))
    func headerLiesAreDropReasons(frame: Fixtures.Frame, reason: DropReason) {
        #expect(parse(frame.bytes).0 == .drop(reason))
    }

    @Test func fragmentsOfTCPAndUDPAreParsedWithTheirIdentity() throws {
        let c = Fixtures.client4, v = Fixtures.vip4
        let segment = PacketBuilder.udp(source: c, destination: v, sourcePort: 40000, destinationPort: 53,
                                        payload: [UInt8](repeating: 9, count: 3000))
        let pieces = PacketBuilder.ipv4Fragments(source: c, destination: v, proto: 17, segment: segment, size: 1480,
                                                 identification: 0xBEEF)
        #expect(pieces.count == 3)
        for (i, frame) in pieces.enumerated() {
            let (r, p, _) = parse(frame)
            #expect(r == .fragment)
            #expect(p.fragmentID == 0xBEEF && p.isFirstFragment == (i == 0) && p.proto == 17)
            #expect(p.source == c && p.destination == v)
            #expect(p.sourcePort == (i == 0 ? 40000 : 0) && p.destinationPort == (i == 0 ? 53 : 0))
        }
        let c6 = Fixtures.client6, v6 = Fixtures.vip6
        let segment6 = PacketBuilder.tcp(source: c6, destination: v6, sourcePort: 40001, destinationPort: 443,
                                         flags: TCPFlags.ack, payload: [UInt8](repeating: 7, count: 3000))
        let pieces6 = PacketBuilder.ipv6Fragments(source: c6, destination: v6, nextHeader: 6, segment: segment6, size: 1448,
                                                  identification: 0xDEAD_BEEF)
        for (i, frame) in pieces6.enumerated() {
            let (r, p, _) = parse(frame)
            #expect(r == .fragment)
            #expect(p.fragmentID == 0xDEAD_BEEF && p.isFirstFragment == (i == 0) && p.proto == 6)
            #expect(p.destinationPort == (i == 0 ? 443 : 0) && p.tcpFlags == (i == 0 ? TCPFlags.ack : 0))
        }
        #expect(PacketBuilder.reassemble(pieces.reversed()).map(ChecksumCheck.problems) == [])
        #expect(PacketBuilder.reassemble(pieces6).map(ChecksumCheck.problems) == [])
    }

    /// Every well-formed frame cut at every byte offset parses to a verdict without
    /// reading past the end (the allocation is exact, so AddressSanitizer would see it).
    @Test(arguments: Fixtures.wellFormed)
    func truncationAtEveryOffset(frame: Fixtures.Frame) {
        let full = parse(frame.bytes).0
        #expect(full != .drop(.truncatedEthernet))
        for cut in 0..<frame.bytes.count {
            let (r, p, _) = parse(Array(frame.bytes.prefix(cut)))
            switch r {
            case .drop:
                continue
            case .ip:
                // A cut can land in Ethernet padding only if the IP datagram is intact.
                #expect(p.ipEnd <= cut, "cut \(cut) parsed past the end")
            case .fragment:
                #expect(p.ipEnd <= cut, "cut \(cut) parsed past the end")
            case .arp, .other:
                #expect(cut >= 14)
            }
        }
    }

    /// Flipping any single bit of any well-formed frame never traps and never yields
    /// offsets outside the frame.
    @Test(arguments: Fixtures.wellFormed)
    func everySingleBitFlip(frame: Fixtures.Frame) {
        for byte in 0..<frame.bytes.count {
            for bit in 0..<8 {
                var bytes = frame.bytes
                bytes[byte] ^= 1 << bit
                let (r, p, _) = parse(bytes)
                if r == .ip {
                    #expect(p.l4Offset <= p.ipEnd && p.ipEnd <= bytes.count)
                    if p.isICMPError { #expect(p.innerL4Offset + 8 <= p.ipEnd) }
                }
            }
        }
    }

    /// Operators read these names in status and metrics.
    @Test func dropReasonLabelsAreReadableSnakeCase() {
        #expect(DropReason.truncatedIPv4.label == "truncated_ipv4")
        #expect(DropReason.badTCPDataOffset.label == "bad_tcp_data_offset")
        #expect(DropReason.udpZeroChecksumIPv6.label == "udp_zero_checksum_ipv6")
        #expect(DropReason.malformedICMPInnerPacket.label == "malformed_icmp_inner_packet")
        #expect(DropReason.truncatedVLAN.label == "truncated_vlan")
        #expect(DropReason.malformedARP.label == "malformed_arp")
        #expect(GlobalCounter.flowTableFull.label == "flow_table_full")
        let labels = DropReason.allCases.map(\.label) + GlobalCounter.allCases.map(\.label)
        for label in labels {
            let words = label.split(separator: "_", omittingEmptySubsequences: false)
            #expect(words.allSatisfy { $0.count > 1 }, "\(label) has an empty or one-letter word")
            #expect(label.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "_" }, "\(label)")
        }
        #expect(Set(labels).count == labels.count)
    }
}
