import FulcrumBPF
import FulcrumConfiguration
import FulcrumCore
import FulcrumDataplane
import FulcrumSystem
import Logging

/// Tells the segments that this LB now answers for the VIPs: for each VIP on every
/// data-plane interface (a NAT group's clients are not on its nodes' interface, and the
/// XDP program answers ARP and NS for a VIP on any of them), and each floating address on
/// its own interface, a gratuitous ARP in the request form and one in the reply form
/// (IPv4), or an unsolicited neighbour advertisement with Override set to all-nodes
/// (IPv6), from the interface's MAC.
public final class Announcer: Sendable {
    struct Port: Sendable {
        var ifindex: Int32
        var mac: MACAddress
    }
    let ports: [String: Port]
    /// The data-plane interfaces, where every VIP is announced.
    let dataplane: [String]
    let socket: PacketSocket
    let logger: Logger

    /// `interfaces`: the data plane's; `floating`: the other interfaces floating addresses live on.
    public init(interfaces: [String], floating: [String] = [], logger: Logger) throws {
        var ports: [String: Port] = [:]
        for name in interfaces + floating where ports[name] == nil {
            ports[name] = Port(ifindex: try InterfaceInfo.index(of: name), mac: try InterfaceFacts.mac(of: name))
        }
        self.ports = ports
        dataplane = interfaces
        socket = try PacketSocket()
        self.logger = logger
    }

    /// One round for every distinct (VIP, interface) of `groups`, and every (address,
    /// interface) of `more` (the floating addresses); returns the frames sent.
    @discardableResult
    public func announce(_ groups: [FulcrumConfig.Group], _ more: [(address: IPAddress, interface: String)] = []) -> Int {
        var seen = Set<String>()
        var sent = 0
        var frame = [UInt8](repeating: 0, count: 128)
        let vips = groups.flatMap { g in dataplane.map { (g.vip, $0) } }
        for (address, interface) in vips + more.map({ ($0.address, $0.interface) })
        where seen.insert("\(address)%\(interface)").inserted {
            guard let port = ports[interface] else { continue }
            let builders: [(UnsafeMutableRawPointer) -> Int] = address.isIPv4
                ? [{ FrameBuilder.gratuitousARPRequest($0, capacity: 128, mac: port.mac, ip: address) },
                   { FrameBuilder.gratuitousARPReply($0, capacity: 128, mac: port.mac, ip: address) }]
                : [{ FrameBuilder.unsolicitedNeighborAdvertisement($0, capacity: 128, mac: port.mac, target: address) }]
            for build in builders {
                let ok = frame.withUnsafeMutableBytes { b -> Bool in
                    let n = build(b.baseAddress!)
                    return (try? socket.send(UnsafeRawBufferPointer(rebasing: b[0..<n]), ifindex: port.ifindex)) == true
                }
                if ok { sent += 1 } else { logger.warning("cannot announce \(address) on \(interface)") }
            }
        }
        return sent
    }
}
