import FulcrumCore

/// One table of frames for both halves of the data plane: the XDP program (run through
/// BPF_PROG_TEST_RUN in FulcrumBPFTests) and the Swift `Balancer` (FulcrumCoreTests), on the
/// same services, so the two cannot drift apart on what is steered, passed, answered or
/// dropped. Katran-style: {description, frame, active flag, what XDP does, what the worker
/// does with the frame if it gets it}.
public struct SteeringFixture: CustomStringConvertible, Sendable {
    /// What the XDP program does. The string is the counter that must move, by its name in
    /// fulcrum_abi.h (the one operators see in status).
    public enum XDP: Sendable, Equatable {
        /// To a worker (the fixtures run with no AF_XDP socket, so `no_socket` for a VIP).
        case steered(String)
        /// To the kernel.
        case passed(String)
        /// Answered with XDP_TX: the output frame.
        case answered([UInt8], String)
        case dropped(String)

        public var counter: String {
            switch self {
            case .steered(let c), .passed(let c), .dropped(let c), .answered(_, let c): c
            }
        }
    }

    /// What the Swift balancer decides for the same frame.
    public enum Worker: Sendable, Equatable {
        /// Sent on to a node (MAT or NAT) or, for a NAT reply, to the client.
        case forwarded
        case passed
        case answered([UInt8])
        case dropped
        /// The XDP program alone decides it; the worker is never handed such a frame (why).
        case neverSees(String)
    }

    public var description: String
    public var frame: [UInt8]
    public var active: Bool
    public var xdp: XDP
    public var worker: Worker

    /// Without `worker`, the worker does what the XDP program does.
    public init(description: String, frame: [UInt8], active: Bool = true, xdp: XDP, worker: Worker? = nil) {
        self.description = description
        self.frame = frame
        self.active = active
        self.xdp = xdp
        if let worker { self.worker = worker } else {
            switch xdp {
            case .steered: self.worker = .forwarded
            case .passed: self.worker = .passed
            case .answered(let out, _): self.worker = .answered(out)
            case .dropped: self.worker = .dropped
            }
        }
    }

    public static let lbMAC = MACAddress("02:00:00:00:00:1b")!
    public static let natNode = Fixtures.node4a
    public static let natVIP = IPAddress("198.18.1.20")!
    public static let node6 = Fixtures.node6a

    /// The services every fixture runs against: a MAT TCP service on 80/443 and a NAT UDP
    /// service on 53 (node port 5353) for IPv4; a MAT TCP service on 443 for IPv6.
    public static var groups: [GroupSpec] {
        [GroupSpec(name: "web", vip: Fixtures.vip4, proto: IPProtocol.tcp, ports: [80, 443], method: .mat, scheduler: .rr,
                   nodes: [NodeSpec(address: Fixtures.node4b, mac: Fixtures.nodeMACb)]),
         GroupSpec(name: "dns", vip: natVIP, proto: IPProtocol.udp, ports: [53], method: .nat, scheduler: .rr,
                   nodes: [NodeSpec(address: natNode, port: 5353, mac: Fixtures.nodeMACa)]),
         GroupSpec(name: "web6", vip: Fixtures.vip6, proto: IPProtocol.tcp, ports: [443], method: .mat, scheduler: .rr,
                   nodes: [NodeSpec(address: node6, mac: Fixtures.nodeMACc)])]
    }

    public static func arpRequest(for target: IPAddress) -> [UInt8] {
        PacketBuilder.ethernet(destination: .broadcast, etherType: 0x0806, payload:
            [0, 1, 8, 0, 6, 4, 0, 1] + [2, 0, 0, 0, 0, 0xc1] + Array(Fixtures.client4.bytes[12...])
            + [0, 0, 0, 0, 0, 0] + Array(target.bytes[12...]))
    }

    public static func solicitation(for target: IPAddress) -> [UInt8] {
        let group = IPAddress(high: 0xFF02_0000_0000_0000, low: 0x0000_0001_FF00_0000 | (target.low & 0xFF_FFFF))
        return PacketBuilder.ethernet(destination: MACAddress.ipv6Multicast(group), etherType: 0x86DD, payload:
            PacketBuilder.ipv6(source: Fixtures.client6, destination: group, nextHeader: 58, payload:
                PacketBuilder.icmpv6(source: Fixtures.client6, destination: group, type: 135, code: 0,
                                     body: target.bytes + [1, 1, 2, 0, 0, 0, 0, 0xc1]), hopLimit: 255))
    }

    public static func expectedARPReply() -> [UInt8] {
        var request = ARPPacket()
        request.senderMAC = PacketBuilder.clientMAC
        request.senderIP = Fixtures.client4
        request.targetIP = Fixtures.vip4
        var out = [UInt8](repeating: 0, count: 64)
        let n = out.withUnsafeMutableBytes { FrameBuilder.arpReply($0.baseAddress!, capacity: 64, to: request, mac: SteeringFixture.lbMAC) }
        return Array(out.prefix(n))
    }

    public static func expectedAdvertisement() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 128)
        let n = out.withUnsafeMutableBytes {
            FrameBuilder.solicitedNeighborAdvertisement($0.baseAddress!, capacity: 128, mac: SteeringFixture.lbMAC, target: Fixtures.vip6,
                                                        solicitor: Fixtures.client6, solicitorMAC: PacketBuilder.clientMAC)
        }
        return Array(out.prefix(n))
    }

    public static var table: [SteeringFixture] {
        let c4 = Fixtures.client4, c6 = Fixtures.client6, v4 = Fixtures.vip4, v6 = Fixtures.vip6
                var ihl3 = PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 1, destinationPort: 80)
        ihl3[14] = 0x43
        let fragment = PacketBuilder.ethernet(etherType: 0x0800, payload: PacketBuilder.ipv4(
            source: c4, destination: v4, proto: 6,
            payload: PacketBuilder.tcp(source: c4, destination: v4, sourcePort: 1, destinationPort: 80),
            flagsAndFragment: 0x2000))
        let quoted = PacketBuilder.ipv4(source: v4, destination: c4, proto: 6, payload:
            PacketBuilder.tcp(source: v4, destination: c4, sourcePort: 80, destinationPort: 40000))
        // Without an AF_XDP socket on the queue, steered frames are passed and counted
        // as `noSocket`: that counter is how these fixtures see "steered to a worker".
        return [
            SteeringFixture(description: "VIP TCP/80 over IPv4 is steered",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 80),
                       xdp: .steered("no_socket")),
            SteeringFixture(description: "VIP TCP/443 (second port of the group) is steered",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 443),
                       xdp: .steered("no_socket")),
            SteeringFixture(description: "NAT VIP UDP/53 over IPv4 is steered",
                       frame: PacketBuilder.udpFrame(source: c4, destination: SteeringFixture.natVIP, sourcePort: 40000, destinationPort: 53),
                       xdp: .steered("no_socket")),
            SteeringFixture(description: "VIP TCP/443 over IPv6 is steered",
                       frame: PacketBuilder.tcpFrame(source: c6, destination: v6, sourcePort: 40000, destinationPort: 443),
                       xdp: .steered("no_socket")),
            SteeringFixture(description: "VLAN-tagged VIP traffic goes to the kernel, never to a node still tagged",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 80, vlan: 5),
                       xdp: .passed("vlan_tagged_passed"), worker: .neverSees("the XDP program's MAC and tag gate")),
            SteeringFixture(description: "VIP traffic addressed to another host's MAC passes",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 80,
                                                     ethernetDestination: MACAddress("02:00:00:00:00:99")!),
                       xdp: .passed("other_destination_mac"), worker: .neverSees("the XDP program's MAC and tag gate")),
            SteeringFixture(description: "VIP traffic to the broadcast MAC passes",
                       frame: PacketBuilder.udpFrame(source: c4, destination: SteeringFixture.natVIP, sourcePort: 40000, destinationPort: 53,
                                                     ethernetDestination: .broadcast),
                       xdp: .passed("other_destination_mac"), worker: .neverSees("the XDP program's MAC and tag gate")),
            SteeringFixture(description: "a NAT reply to a multicast MAC passes",
                       frame: PacketBuilder.udpFrame(source: SteeringFixture.natNode, destination: c4, sourcePort: 5353, destinationPort: 40000,
                                                     ethernetDestination: MACAddress("01:00:5e:00:00:01")!),
                       xdp: .passed("other_destination_mac"), worker: .neverSees("the XDP program's MAC and tag gate")),
            SteeringFixture(description: "a frame longer than a worker's UMEM frame is dropped, counted",
                       frame: PacketBuilder.udpFrame(source: c4, destination: SteeringFixture.natVIP, sourcePort: 40000, destinationPort: 53,
                                                     payload: [UInt8](repeating: 7, count: 1800)),
                       xdp: .dropped("dropped_oversize"), worker: .neverSees("a UMEM frame bounds what the worker gets")),
            SteeringFixture(description: "NAT node reply is steered",
                       frame: PacketBuilder.udpFrame(source: SteeringFixture.natNode, destination: c4, sourcePort: 5353, destinationPort: 40000),
                       xdp: .steered("nat_replies")),
            SteeringFixture(description: "ICMP error about a VIP's packet is steered (to a worker with no flow it quotes: dropped, counted)",
                       frame: PacketBuilder.icmpErrorFrame(reporter: Fixtures.router4, destination: v4, quoted: quoted),
                       xdp: .steered("icmp_errors"), worker: .dropped),
            SteeringFixture(description: "VIP on a port that is not a service passes",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 22),
                       xdp: .passed("passed")),
            SteeringFixture(description: "UDP to the TCP VIP passes",
                       frame: PacketBuilder.udpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 80),
                       xdp: .passed("passed")),
            SteeringFixture(description: "traffic to another host passes",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: Fixtures.router4, sourcePort: 40000, destinationPort: 80),
                       xdp: .passed("passed")),
            SteeringFixture(description: "VIP traffic on a standby LB passes",
                       frame: PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 40000, destinationPort: 80),
                       active: false, xdp: .passed("standby_passed"), worker: .neverSees("the active flag is the XDP program's")),
            SteeringFixture(description: "ARP request for a VIP is answered while active",
                       frame: arpRequest(for: v4), xdp: .answered(expectedARPReply(), "arp_replies")),
            SteeringFixture(description: "ARP request for a VIP is not answered on standby",
                       frame: arpRequest(for: v4), active: false, xdp: .passed("passed"), worker: .neverSees("the active flag is the XDP program's")),
            SteeringFixture(description: "ARP request for another address passes",
                       frame: arpRequest(for: Fixtures.router4), xdp: .passed("passed")),
            SteeringFixture(description: "neighbour solicitation for an IPv6 VIP is answered while active",
                       frame: solicitation(for: v6), xdp: .answered(expectedAdvertisement(), "neighbor_advertisements")),
            SteeringFixture(description: "neighbour solicitation for a VIP is not answered on standby",
                       frame: solicitation(for: v6), active: false, xdp: .passed("passed"), worker: .neverSees("the active flag is the XDP program's")),
            SteeringFixture(description: "truncated IPv4 header is dropped",
                       frame: Array(PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 1, destinationPort: 80).prefix(24)),
                       xdp: .dropped("dropped_truncated_ip_header")),
            SteeringFixture(description: "IPv4 IHL 3 is dropped", frame: ihl3, xdp: .dropped("dropped_bad_ip_header")),
            SteeringFixture(description: "truncated TCP ports are dropped",
                       frame: Array(PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 1, destinationPort: 80).prefix(36)),
                       xdp: .dropped("dropped_truncated_ports")),
            SteeringFixture(description: "a TCP fragment to a VIP goes to a worker", frame: fragment, xdp: .steered("fragments_to_worker")),
            SteeringFixture(description: "a later fragment of a NAT node's reply goes to a worker",
                       frame: PacketBuilder.ethernet(etherType: 0x0800, payload: PacketBuilder.ipv4(
                           source: SteeringFixture.natNode, destination: c4, proto: 17, payload: [UInt8](repeating: 1, count: 64),
                           flagsAndFragment: 0x00B9)),
                       xdp: .steered("fragments_to_worker")),
            SteeringFixture(description: "a fragment for another address goes to the kernel",
                       frame: PacketBuilder.ethernet(etherType: 0x0800, payload: PacketBuilder.ipv4(
                           source: c4, destination: Fixtures.router4, proto: 17, payload: [UInt8](repeating: 1, count: 64),
                           flagsAndFragment: 0x2000)),
                       xdp: .passed("fragments_passed"), worker: .neverSees("only fragments for a service are steered")),
            SteeringFixture(description: "an IPv6 fragment of a VIP's TCP goes to a worker",
                       frame: PacketBuilder.ipv6Fragments(
                           source: c6, destination: v6, nextHeader: 6,
                           segment: PacketBuilder.tcp(source: c6, destination: v6, sourcePort: 1, destinationPort: 443,
                                                      payload: [UInt8](repeating: 1, count: 100)), size: 64)[1],
                       xdp: .steered("fragments_to_worker")),
            SteeringFixture(description: "an IPv6 atomic fragment is a whole packet, steered by its ports",
                       frame: PacketBuilder.ethernet(etherType: 0x86DD, payload: PacketBuilder.ipv6(
                           source: c6, destination: v6, nextHeader: 6,
                           payload: PacketBuilder.tcp(source: c6, destination: v6, sourcePort: 1, destinationPort: 443),
                           extensions: [(44, [0, 0, 0, 0, 0, 0, 1])])),
                       xdp: .steered("no_socket")),
            SteeringFixture(description: "truncated ARP is dropped", frame: Array(arpRequest(for: v4).prefix(30)),
                       xdp: .dropped("dropped_malformed_arp")),
            // (A frame shorter than an Ethernet header cannot be fed to BPF_PROG_TEST_RUN,
            // which refuses it, as drivers never deliver one; the program counts it as
            // dropped_truncated_ethernet all the same.)
            SteeringFixture(description: "a VLAN tag cut short is dropped",
                       frame: Array(PacketBuilder.tcpFrame(source: c4, destination: v4, sourcePort: 1, destinationPort: 80,
                                                           vlan: 5).prefix(16)),
                       xdp: .dropped("dropped_truncated_vlan")),
            SteeringFixture(description: "more IPv6 extension headers than are walked is dropped",
                       frame: PacketBuilder.ethernet(etherType: 0x86DD, payload: PacketBuilder.ipv6(
                           source: c6, destination: v6, nextHeader: 6,
                           payload: PacketBuilder.tcp(source: c6, destination: v6, sourcePort: 1, destinationPort: 443),
                           extensions: (0..<5).map { _ in (60, [0, 1, 4, 0, 0, 0, 0]) })),
                       xdp: .dropped("dropped_ipv6_extension_headers")),
            SteeringFixture(description: "an ICMP error whose quoted header is cut short is dropped",
                       frame: PacketBuilder.icmpErrorFrame(reporter: Fixtures.router4, destination: v4,
                                                           quoted: Array(quoted.prefix(12))),
                       xdp: .dropped("dropped_malformed_icmp")),
        ]
    }

}
