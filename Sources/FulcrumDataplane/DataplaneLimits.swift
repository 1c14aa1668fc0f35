import CFulcrumBPF
import FulcrumCore

/// What the data plane can hold: the BPF maps' capacities (from fulcrum_abi.h) and the
/// node slots fixed at start. `fulcrum check`, `fulcrum run` and every reload ask the
/// same question here, before anything is touched, so that a configuration the data
/// plane would refuse half-way is refused whole.
public enum DataplaneLimits {
    public static let services = Int(FULCRUM_MAX_SERVICES)
    public static let natReplies = Int(FULCRUM_MAX_REPLIES)
    public static let vips = Int(FULCRUM_MAX_VIPS)
    public static let interfaces = Int(FULCRUM_MAX_INTERFACES)
    /// Flow entries and the batch scratch hold a group number in 16 bits.
    public static let groups = Int(UInt16.max)

    public enum Exceeded: Error, Equatable, CustomStringConvertible {
        case services(needed: Int, limit: Int)
        case natReplies(needed: Int, limit: Int)
        case vips(needed: Int, limit: Int)
        case nodeSlots(needed: Int, limit: Int)
        case groups(needed: Int, limit: Int)

        public var description: String {
            switch self {
            case let .services(n, l):
                return "\(n) VIP:port services (each port of each group is one); the data plane holds at most \(l)"
            case let .natReplies(n, l):
                return "\(n) NAT reply entries (each NAT node and sorry server once per port, and once more for fragments); the data plane holds at most \(l)"
            case let .vips(n, l):
                return "\(n) distinct VIPs; the data plane answers for at most \(l)"
            case let .nodeSlots(n, l):
                return "\(n) node slots (every node of every group, plus one per group for its sorry server); dataplane.max_node_slots is \(l): raise it (takes effect at the next start)"
            case let .groups(n, l):
                return "\(n) groups; at most \(l)"
            }
        }
    }

    /// The spec's endpoints, or the first conflict (`BalancerSpecError`) or limit
    /// (`Exceeded`) that would make the data plane refuse it.
    @discardableResult
    public static func check(_ spec: BalancerSpec) throws -> Endpoints {
        if spec.groups.count > groups { throw Exceeded.groups(needed: spec.groups.count, limit: groups) }
        for g in spec.groups where g.interface < 0 || g.interface >= spec.interfaceMACs.count {
            throw BalancerSpecError.badInterface(group: g.name, interface: g.interface)
        }
        let endpoints = try spec.endpoints()
        if endpoints.services.count > services {
            throw Exceeded.services(needed: endpoints.services.count, limit: services)
        }
        let replyEntries = endpoints.replies.count + endpoints.replyNodes.count
        if replyEntries > natReplies {
            throw Exceeded.natReplies(needed: replyEntries, limit: natReplies)
        }
        let vipCount = Set(spec.groups.map(\.vip)).count
        if vipCount > vips { throw Exceeded.vips(needed: vipCount, limit: vips) }
        if spec.nodeSlotCount > spec.maxNodeSlots {
            throw Exceeded.nodeSlots(needed: spec.nodeSlotCount, limit: spec.maxNodeSlots)
        }
        return endpoints
    }
}
