import FulcrumCore

/// Addresses of the test topology, all inside the benchmarking ranges 198.18.0.0/15 and
/// 2001:2::/48.
public enum Fixtures {
    public static let client4 = IPAddress("198.18.0.2")!
    public static let vip4 = IPAddress("198.18.1.10")!
    public static let node4a = IPAddress("198.18.2.11")!
    public static let node4b = IPAddress("198.18.2.12")!
    public static let node4c = IPAddress("198.18.2.13")!
    public static let router4 = IPAddress("198.18.0.1")!
    public static let client6 = IPAddress("2001:2::2")!
    public static let vip6 = IPAddress("2001:2:1::10")!
    public static let node6a = IPAddress("2001:2:2::11")!
    public static let node6b = IPAddress("2001:2:2::12")!
    public static let router6 = IPAddress("2001:2::1")!
    public static let nodeMACa = MACAddress("02:00:00:00:02:11")!
    public static let nodeMACb = MACAddress("02:00:00:00:02:12")!
    public static let nodeMACc = MACAddress("02:00:00:00:02:13")!
    public static let routerMAC = MACAddress("02:00:00:00:00:01")!

    /// A named frame for table-driven tests.
    public struct Frame: Sendable, CustomStringConvertible {
        public var name: String
        public var bytes: [UInt8]
        public var description: String { name }
        public init(_ name: String, _ bytes: [UInt8]) {
            self.name = name
            self.bytes = bytes
        }
    }

    /// Well-formed frames of every kind the parser knows.
    public static var wellFormed: [Frame] {
        let payload = Array("hello, fulcrum".utf8)
        let tcp4 = PacketBuilder.tcpFrame(source: client4, destination: vip4, sourcePort: 40000, destinationPort: 80,
                                          flags: TCPFlags.syn, payload: [])
        let udp4 = PacketBuilder.udpFrame(source: client4, destination: vip4, sourcePort: 40001, destinationPort: 53,
                                          payload: payload)
        let tcp6 = PacketBuilder.tcpFrame(source: client6, destination: vip6, sourcePort: 40002, destinationPort: 443,
                                          payload: payload)
        let udp6 = PacketBuilder.udpFrame(source: client6, destination: vip6, sourcePort: 40003, destinationPort: 53,
                                          payload: payload)
        let vlan = PacketBuilder.udpFrame(source: client4, destination: vip4, sourcePort: 40004, destinationPort: 53,
                                          payload: payload, vlan: 100)
        let quoted4 = PacketBuilder.ipv4(source: vip4, destination: client4, proto: 17,
                                         payload: PacketBuilder.udp(source: vip4, destination: client4, sourcePort: 53,
                                                                    destinationPort: 40001, payload: payload))
        let icmpErr4 = PacketBuilder.icmpErrorFrame(reporter: router4, destination: vip4, quoted: quoted4)
        let quoted6 = PacketBuilder.ipv6(source: vip6, destination: client6, nextHeader: 6,
                                         payload: PacketBuilder.tcp(source: vip6, destination: client6, sourcePort: 443,
                                                                    destinationPort: 40002, payload: payload))
        let icmpErr6 = PacketBuilder.icmpErrorFrame(reporter: router6, destination: vip6, quoted: quoted6)
        let options4 = PacketBuilder.ethernet(etherType: 0x0800, payload: PacketBuilder.ipv4(
            source: client4, destination: vip4, proto: 6, payload: PacketBuilder.tcp(
                source: client4, destination: vip4, sourcePort: 40005, destinationPort: 80, payload: payload),
            options: [0x94, 0x04, 0, 0]))  // router alert
        let ext6 = PacketBuilder.ethernet(etherType: 0x86DD, payload: PacketBuilder.ipv6(
            source: client6, destination: vip6, nextHeader: 17,
            payload: PacketBuilder.udp(source: client6, destination: vip6, sourcePort: 40006, destinationPort: 53,
                                       payload: payload),
            extensions: [(0, [0, 1, 4, 0, 0, 0, 0]), (60, [0, 1, 4, 0, 0, 0, 0]), (44, [0, 0, 0, 0, 0, 0, 1])]))
        let echo4 = PacketBuilder.ipFrame(source: client4, destination: vip4, proto: 1,
                                          payload: PacketBuilder.icmpv4(type: 8, code: 0, rest: 0x0001_0001, body: payload))
        let arp = PacketBuilder.ethernet(destination: .broadcast, etherType: 0x0806, payload:
            [0, 1, 8, 0, 6, 4, 0, 1] + [2, 0, 0, 0, 0, 0xc1] + [198, 18, 0, 2] + [0, 0, 0, 0, 0, 0] + [198, 18, 1, 10])
        return [
            Frame("TCP SYN over IPv4", tcp4), Frame("UDP over IPv4", udp4), Frame("TCP over IPv6", tcp6),
            Frame("UDP over IPv6", udp6), Frame("UDP over IPv4 with an 802.1Q tag", vlan),
            Frame("ICMPv4 fragmentation-needed quoting UDP", icmpErr4),
            Frame("ICMPv6 packet-too-big quoting TCP", icmpErr6),
            Frame("IPv4 with options", options4),
            Frame("IPv6 with hop-by-hop, destination options and an atomic fragment header", ext6),
            Frame("ICMPv4 echo request", echo4), Frame("ARP request", arp),
        ]
    }
}
