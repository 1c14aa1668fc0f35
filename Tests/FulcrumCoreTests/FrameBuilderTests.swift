import FulcrumCore
import FulcrumTestSupport
import Testing

@Suite struct FrameBuilderTests {
    let mac = MACAddress("02:00:00:00:00:1b")!

    func build(_ body: (UnsafeMutableRawPointer, Int) -> Int) -> [UInt8] {
        var buffer = [UInt8](repeating: 0xEE, count: 128)
        let n = buffer.withUnsafeMutableBytes { body($0.baseAddress!, $0.count) }
        return Array(buffer.prefix(n))
    }

    @Test func gratuitousARPRequest() {
        let f = build { FrameBuilder.gratuitousARPRequest($0, capacity: $1, mac: mac, ip: Fixtures.vip4) }
        let expected: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0x1b, 0x08, 0x06,
                                 0, 1, 0x08, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0x1b, 198, 18, 1, 10,
                                 0, 0, 0, 0, 0, 0, 198, 18, 1, 10]
        #expect(f == expected)
    }

    @Test func gratuitousARPReplyWithVLAN() {
        let f = build { FrameBuilder.gratuitousARPReply($0, capacity: $1, mac: mac, ip: Fixtures.vip4, vlan: 42) }
        let expected: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0x1b, 0x81, 0x00, 0, 42, 0x08, 0x06,
                                 0, 1, 0x08, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 0x1b, 198, 18, 1, 10,
                                 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 198, 18, 1, 10]
        #expect(f == expected)
    }

    @Test func arpReplyAnswersTheRequester() {
        var request = ARPPacket()
        request.operation = ARPPacket.request
        request.senderMAC = PacketBuilder.clientMAC
        request.senderIP = Fixtures.client4
        request.targetIP = Fixtures.vip4
        let f = build { FrameBuilder.arpReply($0, capacity: $1, to: request, mac: mac) }
        var parsed = ParsedPacket()
        var arp = ARPPacket()
        let r = withExactAllocation(f) { PacketParser.parse($0, length: $1, into: &parsed, arp: &arp) }
        #expect(r == .arp)
        #expect(Array(f[0..<6]) == [2, 0, 0, 0, 0, 0xc1])
        #expect(arp.operation == ARPPacket.reply)
        #expect(arp.senderMAC == mac && arp.senderIP == Fixtures.vip4)
        #expect(arp.targetMAC == PacketBuilder.clientMAC && arp.targetIP == Fixtures.client4)
    }

    @Test func shortBufferWritesNothing() {
        var buffer = [UInt8](repeating: 0, count: 41)
        let n = buffer.withUnsafeMutableBytes {
            FrameBuilder.gratuitousARPRequest($0.baseAddress!, capacity: $0.count, mac: mac, ip: Fixtures.vip4)
        }
        #expect(n == 0)
        #expect(buffer.allSatisfy { $0 == 0 })
    }

    @Test func unsolicitedNeighborAdvertisement() {
        let f = build { FrameBuilder.unsolicitedNeighborAdvertisement($0, capacity: $1, mac: mac, target: Fixtures.vip6) }
        let body: [UInt8] = Fixtures.vip6.bytes + [2, 1, 2, 0, 0, 0, 0, 0x1b]
        let expected = PacketBuilder.ethernet(
            destination: MACAddress("33:33:00:00:00:01")!, source: mac, etherType: 0x86DD,
            payload: PacketBuilder.ipv6(source: Fixtures.vip6, destination: IPAddress("ff02::1")!, nextHeader: 58,
                                        payload: PacketBuilder.icmpv6(source: Fixtures.vip6, destination: IPAddress("ff02::1")!,
                                                                      type: 136, code: 0, rest: 0x2000_0000, body: body),
                                        hopLimit: 255))
        #expect(f == expected, "\(f.hexDump)\nvs\n\(expected.hexDump)")
        #expect(ChecksumCheck.problems(in: f).isEmpty)
    }

    @Test func solicitationIsAnsweredWithSolicitedAdvertisement() throws {
        let solicitedNode = IPAddress("ff02::1:ff00:10")!
        let ns = PacketBuilder.ethernet(
            destination: MACAddress.ipv6Multicast(solicitedNode), etherType: 0x86DD,
            payload: PacketBuilder.ipv6(source: Fixtures.client6, destination: solicitedNode, nextHeader: 58,
                                        payload: PacketBuilder.icmpv6(source: Fixtures.client6, destination: solicitedNode,
                                                                      type: 135, code: 0,
                                                                      body: Fixtures.vip6.bytes + [1, 1, 2, 0, 0, 0, 0, 0xc1]),
                                        hopLimit: 255))
        var p = ParsedPacket()
        var arp = ARPPacket()
        let solicitation = try #require(withExactAllocation(ns) { frame, n -> NeighborSolicitation? in
            guard PacketParser.parse(frame, length: n, into: &p, arp: &arp) == .ip else { return nil }
            return NeighborSolicitation.parse(frame, p)
        })
        #expect(solicitation.target == Fixtures.vip6)
        #expect(solicitation.sourceMAC == PacketBuilder.clientMAC)
        let f = build {
            FrameBuilder.solicitedNeighborAdvertisement($0, capacity: $1, mac: mac, target: solicitation.target,
                                                        solicitor: solicitation.source, solicitorMAC: solicitation.sourceMAC)
        }
        #expect(Array(f[0..<6]) == [2, 0, 0, 0, 0, 0xc1])
        #expect(Array(f[(14 + 24)..<(14 + 40)]) == Fixtures.client6.bytes)
        #expect(f[14 + 40] == 136 && f[14 + 44] == 0x60)  // Solicited + Override
        #expect(ChecksumCheck.problems(in: f).isEmpty)
    }

    @Test func solicitationWithBadHopLimitIsIgnored() {
        let solicitedNode = IPAddress("ff02::1:ff00:10")!
        let ns = PacketBuilder.ethernet(etherType: 0x86DD, payload: PacketBuilder.ipv6(
            source: Fixtures.client6, destination: solicitedNode, nextHeader: 58,
            payload: PacketBuilder.icmpv6(source: Fixtures.client6, destination: solicitedNode, type: 135, code: 0,
                                          body: Fixtures.vip6.bytes), hopLimit: 64))
        var p = ParsedPacket()
        var arp = ARPPacket()
        let s = withExactAllocation(ns) { frame, n -> NeighborSolicitation? in
            _ = PacketParser.parse(frame, length: n, into: &p, arp: &arp)
            return NeighborSolicitation.parse(frame, p)
        }
        #expect(s == nil)
    }
}
