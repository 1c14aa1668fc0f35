// libFuzzer entry point for FulcrumCore's packet path. Built by `make fuzz` with
// `swiftc -sanitize=fuzzer,address` over FulcrumCore's sources (libFuzzer provides main).
// Every input is parsed (the quick IPv4 and IPv6 parses must agree with the full one),
// looked for a neighbour solicitation, and run through a balancer with MAT and NAT groups
// in both families, so rewrites of odd frames are exercised too.

private func address(_ s: String) -> IPAddress { IPAddress(s)! }

nonisolated(unsafe) private let balancer: Balancer = {
    let mac = MACAddress(value: 0x0200_0000_001B)
    func nodes(_ a: [String], port: UInt16) -> [NodeSpec] {
        a.enumerated().map { NodeSpec(address: address($0.element), port: port, weight: $0.offset + 1,
                                      mac: MACAddress(value: 0x0200_0000_0200 + UInt64($0.offset))) }
    }
    let groups = [
        GroupSpec(name: "mat4", vip: address("198.18.1.10"), proto: IPProtocol.tcp, ports: [80, 443], method: .mat,
                  scheduler: .maglev, nodes: nodes(["198.18.2.11", "198.18.2.12"], port: 0)),
        GroupSpec(name: "nat4", vip: address("198.18.1.10"), proto: IPProtocol.udp, ports: [53], method: .nat,
                  scheduler: .wrr, nodes: nodes(["198.18.2.11", "198.18.2.12"], port: 5353),
                  sorry: NodeSpec(address: address("198.18.2.99"), port: 5353, mac: mac)),
        GroupSpec(name: "nat6", vip: address("2001:2:1::10"), proto: IPProtocol.tcp, ports: [80], method: .nat,
                  scheduler: .lc, nodes: nodes(["2001:2:2::11", "2001:2:2::12"], port: 8080)),
        GroupSpec(name: "mat6", vip: address("2001:2:1::10"), proto: IPProtocol.udp, ports: [53], method: .mat,
                  scheduler: .sh, nodes: nodes(["2001:2:2::11"], port: 0)),
    ]
    return try! Balancer(BalancerSpec(
        groups: groups, interfaceMACs: [mac],
        returnRoutes: [ReturnRoute(prefix: .zero, prefixLength: 0, interface: 0, nextHopMAC: mac),
                       ReturnRoute(prefix: address("198.18.0.0"), prefixLength: 15, interface: 0, nextHopMAC: mac)],
        flowTableCapacity: 256))
}()

nonisolated(unsafe) private var clock: UInt64 = 1_000_000_000

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // An exact-size copy: the balancer rewrites in place, and ASan sees any overread.
    let frame = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 8)
    defer { frame.deallocate() }
    frame.copyMemory(from: data, byteCount: size)

    var p = ParsedPacket()
    var arp = ARPPacket()
    let result = PacketParser.parse(frame, length: size, into: &p, arp: &arp)
    if result == .ip {
        precondition(p.l4Offset <= p.ipEnd && p.ipEnd <= size)
        _ = NeighborSolicitation.parse(frame, p)
    }
    // The balancer trusts the quick parse: what it accepts, the full parser reads alike.
    if let q = PacketParser.quick(frame, length: size) {
        precondition(result == .ip && p.family == q.family && !p.hasVLAN && !p.isICMPError)
        precondition(p.l3Offset == QuickFlow.l3Offset && p.l4Offset == q.l4Offset)
        precondition(p.source == q.source && p.destination == q.destination)
        precondition(p.sourcePort == q.sourcePort && p.destinationPort == q.destinationPort)
        precondition(p.proto == q.proto && p.tcpFlags == q.tcpFlags)
    }
    clock &+= 7_000_000_000
    _ = balancer.process(frame, length: size, now: clock)
    balancer.maintain(now: clock)
    return 0
}
