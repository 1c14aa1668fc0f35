import FulcrumBPF
import FulcrumCore
import FulcrumDataplane
import FulcrumSystem
import Logging

/// Tells the segment that this LB now answers for the VIPs: for each VIP on its group's
/// interface, a gratuitous ARP in the request form and one in the reply form (IPv4), or an
/// unsolicited neighbour advertisement with Override set to all-nodes (IPv6), from the
/// interface's MAC.
public final class Announcer: Sendable {
    struct Port: Sendable {
        var ifindex: Int32
        var mac: MACAddress
    }
    let ports: [String: Port]
    let socket: PacketSocket
    let logger: Logger

    public init(interfaces: [String], logger: Logger) throws {
        var ports: [String: Port] = [:]
        for name in interfaces { ports[name] = Port(ifindex: try InterfaceInfo.index(of: name), mac: try InterfaceFacts.mac(of: name)) }
        self.ports = ports
        socket = try PacketSocket()
        self.logger = logger
    }

    /// One round for every distinct (VIP, interface) of `groups`; returns the frames sent.
    @discardableResult
    public func announce(_ groups: [FulcrumConfig.Group]) -> Int {
        var seen = Set<String>()
        var sent = 0
        var frame = [UInt8](repeating: 0, count: 128)
        for g in groups where seen.insert("\(g.vip)%\(g.interface)").inserted {
            guard let port = ports[g.interface] else { continue }
            let builders: [(UnsafeMutableRawPointer) -> Int] = g.vip.isIPv4
                ? [{ FrameBuilder.gratuitousARPRequest($0, capacity: 128, mac: port.mac, ip: g.vip) },
                   { FrameBuilder.gratuitousARPReply($0, capacity: 128, mac: port.mac, ip: g.vip) }]
                : [{ FrameBuilder.unsolicitedNeighborAdvertisement($0, capacity: 128, mac: port.mac, target: g.vip) }]
            for build in builders {
                let ok = frame.withUnsafeMutableBytes { b -> Bool in
                    let n = build(b.baseAddress!)
                    return (try? socket.send(UnsafeRawBufferPointer(rebasing: b[0..<n]), ifindex: port.ifindex)) == true
                }
                if ok { sent += 1 } else { logger.warning("cannot announce \(g.vip) on \(g.interface)") }
            }
        }
        return sent
    }
}
