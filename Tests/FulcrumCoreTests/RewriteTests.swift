import FulcrumCore
import FulcrumTestSupport
import Testing

/// Each case: an input frame, a rewrite, and the frame it must become, built
/// independently by PacketBuilder with checksums computed in full.
struct RewriteCase: CustomStringConvertible, Sendable {
    enum Operation: Sendable {
        case mat
        case natForward(node: IPAddress, port: UInt16)
        case natReverse(vip: IPAddress, port: UInt16)
    }
    var description: String
    var input: [UInt8]
    var operation: Operation
    var expected: [UInt8]
}

@Suite struct RewriteTests {
    static let payload = Array("GET / HTTP/1.1\r\nHost: fulcrum\r\n\r\n".utf8)
    static let lb = PacketBuilder.lbMAC
    static let client = PacketBuilder.clientMAC

    static var cases: [RewriteCase] {
        let c4 = Fixtures.client4, v4 = Fixtures.vip4, n4 = Fixtures.node4a
        let c6 = Fixtures.client6, v6 = Fixtures.vip6, n6 = Fixtures.node6a
        let nodeMAC = Fixtures.nodeMACa
        let p = payload
        var out: [RewriteCase] = []

        // MAT: only the Ethernet header changes.
        for (name, c, v) in [("IPv4", c4, v4), ("IPv6", c6, v6)] {
            out.append(RewriteCase(
                description: "MAT TCP \(name)",
                input: PacketBuilder.tcpFrame(source: c, destination: v, sourcePort: 40000, destinationPort: 80, payload: p),
                operation: .mat,
                expected: PacketBuilder.tcpFrame(source: c, destination: v, sourcePort: 40000, destinationPort: 80,
                                                 payload: p, ethernetDestination: nodeMAC, ethernetSource: lb)))
        }
        out.append(RewriteCase(
            description: "MAT UDP IPv4 with VLAN tag",
            input: PacketBuilder.udpFrame(source: c4, destination: v4, sourcePort: 4, destinationPort: 53, payload: p, vlan: 7),
            operation: .mat,
            expected: PacketBuilder.udpFrame(source: c4, destination: v4, sourcePort: 4, destinationPort: 53, payload: p,
                                             vlan: 7, ethernetDestination: nodeMAC, ethernetSource: lb)))

        // NAT forward and reverse, TCP and UDP, both families.
        for (name, c, v, n) in [("IPv4", c4, v4, n4), ("IPv6", c6, v6, n6)] {
            out.append(RewriteCase(
                description: "NAT forward TCP \(name)",
                input: PacketBuilder.tcpFrame(source: c, destination: v, sourcePort: 40000, destinationPort: 80, payload: p),
                operation: .natForward(node: n, port: 8080),
                expected: PacketBuilder.tcpFrame(source: c, destination: n, sourcePort: 40000, destinationPort: 8080,
                                                 payload: p, ethernetDestination: nodeMAC, ethernetSource: lb)))
            out.append(RewriteCase(
                description: "NAT forward UDP \(name)",
                input: PacketBuilder.udpFrame(source: c, destination: v, sourcePort: 40001, destinationPort: 53, payload: p),
                operation: .natForward(node: n, port: 5353),
                expected: PacketBuilder.udpFrame(source: c, destination: n, sourcePort: 40001, destinationPort: 5353,
                                                 payload: p, ethernetDestination: nodeMAC, ethernetSource: lb)))
            out.append(RewriteCase(
                description: "NAT reverse TCP \(name)",
                input: PacketBuilder.tcpFrame(source: n, destination: c, sourcePort: 8080, destinationPort: 40000,
                                              payload: p, ethernetDestination: lb, ethernetSource: nodeMAC),
                operation: .natReverse(vip: v, port: 80),
                expected: PacketBuilder.tcpFrame(source: v, destination: c, sourcePort: 80, destinationPort: 40000,
                                                 payload: p, ethernetDestination: nodeMAC, ethernetSource: lb)))
            out.append(RewriteCase(
                description: "NAT reverse UDP \(name)",
                input: PacketBuilder.udpFrame(source: n, destination: c, sourcePort: 5353, destinationPort: 40001,
                                              payload: p, ethernetDestination: lb, ethernetSource: nodeMAC),
                operation: .natReverse(vip: v, port: 53),
                expected: PacketBuilder.udpFrame(source: v, destination: c, sourcePort: 53, destinationPort: 40001,
                                                 payload: p, ethernetDestination: nodeMAC, ethernetSource: lb)))
        }
        out.append(RewriteCase(
            description: "NAT forward UDP IPv4 without checksum keeps it absent",
            input: PacketBuilder.udpFrame(source: c4, destination: v4, sourcePort: 1, destinationPort: 53, payload: p,
                                          zeroChecksum: true),
            operation: .natForward(node: n4, port: 53),
            expected: PacketBuilder.udpFrame(source: c4, destination: n4, sourcePort: 1, destinationPort: 53, payload: p,
                                             zeroChecksum: true, ethernetDestination: nodeMAC, ethernetSource: lb)))

        // ICMP errors: path-MTU discovery through NAT.
        for (name, c, v, n, router) in [("IPv4", c4, v4, n4, Fixtures.router4), ("IPv6", c6, v6, n6, Fixtures.router6)] {
            for (proto, quoteLength) in [(UInt8(6), Int?.none), (6, 28 + (c.isIPv4 ? 0 : 20)), (17, nil), (17, 28 + (c.isIPv4 ? 0 : 20))] {
                func quoted(_ src: IPAddress, _ sport: UInt16, _ dst: IPAddress, _ dport: UInt16) -> [UInt8] {
                    let l4 = proto == 6
                        ? PacketBuilder.tcp(source: src, destination: dst, sourcePort: sport, destinationPort: dport, payload: p)
                        : PacketBuilder.udp(source: src, destination: dst, sourcePort: sport, destinationPort: dport, payload: p)
                    return src.isIPv4
                        ? PacketBuilder.ipv4(source: src, destination: dst, proto: proto, payload: l4)
                        : PacketBuilder.ipv6(source: src, destination: dst, nextHeader: proto, payload: l4)
                }
                let label = "\(proto == 6 ? "TCP" : "UDP"), \(quoteLength == nil ? "whole packet" : "8 bytes") quoted"
                // A router tells the VIP its reply was too big; the node must hear it.
                out.append(RewriteCase(
                    description: "NAT forward ICMP error \(name), \(label)",
                    input: PacketBuilder.icmpErrorFrame(reporter: router, destination: v, quoted: quoted(v, 80, c, 40000),
                                                        quoteLength: quoteLength),
                    operation: .natForward(node: n, port: 8080),
                    expected: PacketBuilder.icmpErrorFrame(reporter: router, destination: n,
                                                           quoted: quoted(n, 8080, c, 40000), quoteLength: quoteLength,
                                                           ethernetDestination: nodeMAC, ethernetSource: lb)))
                // The node reports an error about the client's packet; the client must see the VIP.
                out.append(RewriteCase(
                    description: "NAT reverse ICMP error from the node \(name), \(label)",
                    input: PacketBuilder.icmpErrorFrame(reporter: n, destination: c, quoted: quoted(c, 40000, n, 8080),
                                                        quoteLength: quoteLength, ethernetDestination: lb,
                                                        ethernetSource: nodeMAC),
                    operation: .natReverse(vip: v, port: 80),
                    expected: PacketBuilder.icmpErrorFrame(reporter: v, destination: c, quoted: quoted(c, 40000, v, 80),
                                                           quoteLength: quoteLength, ethernetDestination: nodeMAC,
                                                           ethernetSource: lb)))
            }
            // An error from a router on the node side keeps its own source.
            let inner = c.isIPv4
                ? PacketBuilder.ipv4(source: c, destination: n, proto: 17, payload:
                    PacketBuilder.udp(source: c, destination: n, sourcePort: 40000, destinationPort: 5353, payload: p))
                : PacketBuilder.ipv6(source: c, destination: n, nextHeader: 17, payload:
                    PacketBuilder.udp(source: c, destination: n, sourcePort: 40000, destinationPort: 5353, payload: p))
            let translatedInner = c.isIPv4
                ? PacketBuilder.ipv4(source: c, destination: v, proto: 17, payload:
                    PacketBuilder.udp(source: c, destination: v, sourcePort: 40000, destinationPort: 53, payload: p))
                : PacketBuilder.ipv6(source: c, destination: v, nextHeader: 17, payload:
                    PacketBuilder.udp(source: c, destination: v, sourcePort: 40000, destinationPort: 53, payload: p))
            out.append(RewriteCase(
                description: "NAT reverse ICMP error from a node-side router \(name)",
                input: PacketBuilder.icmpErrorFrame(reporter: router, destination: c, quoted: inner,
                                                    ethernetDestination: lb, ethernetSource: nodeMAC),
                operation: .natReverse(vip: v, port: 53),
                expected: PacketBuilder.icmpErrorFrame(reporter: router, destination: c, quoted: translatedInner,
                                                       ethernetDestination: nodeMAC, ethernetSource: lb)))
        }
        return out
    }

    @Test(arguments: cases)
    func rewriteProducesTheIndependentlyBuiltFrame(c: RewriteCase) throws {
        let (output, result) = c.input.mutatingFrame { frame, length -> ParseResult in
            var p = ParsedPacket()
            var arp = ARPPacket()
            let r = PacketParser.parse(frame, length: length, into: &p, arp: &arp)
            guard r == .ip else { return r }
            switch c.operation {
            case .mat: break
            case let .natForward(node, port): Rewrite.natForward(frame, p, node: node, nodePort: port)
            case let .natReverse(vip, port): Rewrite.natReverse(frame, p, vip: vip, vipPort: port)
            }
            Rewrite.mat(frame, destinationMAC: Fixtures.nodeMACa, sourceMAC: PacketBuilder.lbMAC)
            return r
        }
        try #require(result == .ip)
        #expect(output == c.expected, "got\n\(output.hexDump)\nexpected\n\(c.expected.hexDump)")
        #expect(ChecksumCheck.problems(in: output).isEmpty, "\(ChecksumCheck.problems(in: output))")
    }

    /// A UDP checksum that computes to zero after the rewrite goes out as 0xFFFF (zero
    /// would mean "no checksum", RFC 768), in both families.
    @Test(arguments: [false, true])
    func udpChecksumThatComputesToZeroIsSentAsAllOnes(v6: Bool) throws {
        let client = v6 ? Fixtures.client6 : Fixtures.client4
        let vip = v6 ? Fixtures.vip6 : Fixtures.vip4
        let node = v6 ? Fixtures.node6a : Fixtures.node4a
        let input = PacketBuilder.udpFrame(source: client, destination: vip, sourcePort: 40000, destinationPort: 53)
        // The node port whose translated frame has a checksum of all ones.
        let checksumAt = 14 + (v6 ? 40 : 20) + 6
        let port = try #require((1...UInt16.max).first { port in
            let f = PacketBuilder.udpFrame(source: client, destination: node, sourcePort: 40000, destinationPort: port)
            return f[checksumAt] == 0xFF && f[checksumAt + 1] == 0xFF
        })
        let expected = PacketBuilder.udpFrame(source: client, destination: node, sourcePort: 40000, destinationPort: port)
        let (output, _) = input.mutatingFrame { frame, length -> Void in
            var p = ParsedPacket()
            var arp = ARPPacket()
            _ = PacketParser.parse(frame, length: length, into: &p, arp: &arp)
            Rewrite.natForward(frame, p, node: node, nodePort: port)
        }
        #expect(output == expected, "got\n\(output.hexDump)\nexpected\n\(expected.hexDump)")
    }

    /// Random ports and addresses: the incremental update always equals full recomputation.
    @Test func randomisedNATChecksums() {
        var rng = SplitMix(seed: 1624)
        for i in 0..<2000 {
            let v6 = i % 2 == 1
            let client = v6 ? IPAddress(high: 0x2001_0002_0000_0000, low: .random(in: 0...UInt64.max, using: &rng))
                            : IPAddress(ipv4: 0xC612_0000 | .random(in: 0...0xFFFF, using: &rng))
            let node = v6 ? IPAddress(high: 0x2001_0002_0002_0000, low: .random(in: 0...UInt64.max, using: &rng))
                          : IPAddress(ipv4: 0xC613_0000 | .random(in: 0...0xFFFF, using: &rng))
            let vip = v6 ? Fixtures.vip6 : Fixtures.vip4
            let sport = UInt16.random(in: 1...0xFFFF, using: &rng)
            let nport = UInt16.random(in: 1...0xFFFF, using: &rng)
            let body = (0..<Int.random(in: 0..<64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let tcp = i % 4 < 2
            let input = tcp
                ? PacketBuilder.tcpFrame(source: client, destination: vip, sourcePort: sport, destinationPort: 443, payload: body)
                : PacketBuilder.udpFrame(source: client, destination: vip, sourcePort: sport, destinationPort: 443, payload: body)
            let expected = tcp
                ? PacketBuilder.tcpFrame(source: client, destination: node, sourcePort: sport, destinationPort: nport, payload: body)
                : PacketBuilder.udpFrame(source: client, destination: node, sourcePort: sport, destinationPort: nport, payload: body)
            let (output, _) = input.mutatingFrame { frame, length -> Void in
                var p = ParsedPacket()
                var arp = ARPPacket()
                _ = PacketParser.parse(frame, length: length, into: &p, arp: &arp)
                Rewrite.natForward(frame, p, node: node, nodePort: nport)
            }
            #expect(output == expected, "case \(i)")
        }
    }
}
