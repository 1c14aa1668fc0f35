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

    /// One round for every distinct (VIP, interface) of `groups`, and every (address,
    /// interface) of `more` (the floating addresses); returns the frames sent.
    @discardableResult
    public func announce(_ groups: [FulcrumConfig.Group], _ more: [(address: IPAddress, interface: String)] = []) -> Int {
        var seen = Set<String>()
        var sent = 0
        var frame = [UInt8](repeating: 0, count: 128)
        for (address, interface) in groups.map({ ($0.vip, $0.interface) }) + more.map({ ($0.address, $0.interface) })
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
