import FulcrumBPF
import FulcrumCore
import FulcrumDataplane
import Foundation

/// What `--status-file` holds: the data plane's counters as JSON, rewritten atomically
/// every 0.2 s by the forwarding service. (`/v1/status` is the API's view of the same state.)
public struct StatusReport: Codable, Sendable, Equatable {
    public struct Node: Codable, Sendable, Equatable {
        public var address: String
        public var port: Int
        public var weight: Int
        public var mac: String?
        public var activeFlows: Int
        public var packets: UInt64
        public var bytes: UInt64
        public var newFlows: UInt64
        /// "up", "down: <reason>", or nil when the group is not health-checked.
        public var health: String?
    }

    public struct Group: Codable, Sendable, Equatable {
        public var name: String
        public var packets: UInt64
        public var bytes: UInt64
        public var newFlows: UInt64
        public var sorryFlows: UInt64
        public var nodes: [Node]
    }

    public var host: String
    public var configGeneration: Int
    /// Reloads refused since start (the running configuration stayed as it was).
    public var reloadsRejected: Int = 0
    /// The latest events, oldest first.
    public var events: [Event] = []
    /// What is wrong with this LB itself (`Runtime.alarms`); absent when nothing is.
    public var alarms: [String]?
    public var groups: [Group]
    public var counters: [String: UInt64]
    public var drops: [String: UInt64]
    public var xdp: [String: UInt64]
    public var sockets: [String: UInt64]
    public var flows: Int
    public var flowCapacity: Int
    public var attachModes: [String: String]
    /// BPF map entries (services, replies, vips) as the kernel holds them.
    public var mapEntries: [String: Int]
    /// The data plane's layout generation, and the one every worker has applied.
    public var layoutGeneration: UInt64
    public var appliedLayoutGeneration: UInt64

    /// A destination NAT replies could not be sent to.
    public struct Unrouted: Codable, Sendable, Equatable {
        public var destination: String
        public var reason: String
        public var interface: String?
        public var reports: Int
    }

    /// A route NAT replies follow (an override from `routes:`, or the kernel's).
    public struct Route: Codable, Sendable, Equatable {
        public var prefix: String
        public var interface: String
        public var via: String?
        public var mac: String?
        public var override: Bool
    }

    public var unroutedReplies: [Unrouted]
    public var routes: [Route]
    public var routingVersion: UInt64
    public var appliedRoutingVersion: UInt64

    public init(host: String, generation: Int, snapshot s: DataplaneSnapshot, interfaces: [String] = []) {
        self.host = host
        configGeneration = generation
        groups = s.groups.map { g in
            Group(name: g.name, packets: g.packets, bytes: g.bytes, newFlows: g.newFlows, sorryFlows: g.sorryFlows,
                  nodes: g.nodes.map {
                      Node(address: "\($0.address)", port: Int($0.port), weight: $0.weight, mac: $0.mac.map { "\($0)" },
                           activeFlows: $0.activeFlows, packets: $0.packets, bytes: $0.bytes, newFlows: $0.newFlows)
                  })
        }
        counters = Dictionary(uniqueKeysWithValues: s.global.map { ($0.key.label, $0.value) })
        drops = Dictionary(uniqueKeysWithValues: s.drops.filter { $0.value > 0 }.map { ($0.key.label, $0.value) })
        xdp = Dictionary(uniqueKeysWithValues: s.xdp.map { ($0.key.label, $0.value) })
        sockets = s.sockets
        flows = s.flows
        flowCapacity = s.flowCapacity
        attachModes = s.attachModes.mapValues(\.rawValue)
        mapEntries = s.mapEntries
        layoutGeneration = s.generation
        appliedLayoutGeneration = s.appliedGeneration
        unroutedReplies = s.unrouted.map {
            Unrouted(destination: "\($0.destination)", reason: $0.reason.rawValue, interface: $0.interface, reports: $0.reports)
        }
        routes = s.routes.map {
            Route(prefix: "\($0.prefix)/\($0.prefixLength)", interface: interfaces.indices.contains($0.interface) ? interfaces[$0.interface] : "\($0.interface)",
                  via: $0.gateway.map { "\($0)" }, mac: $0.gatewayMAC.map { "\($0)" }, override: $0.isOverride)
        }
        routingVersion = s.routingVersion
        appliedRoutingVersion = s.appliedRoutingVersion
    }

    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    public static func read(from path: String) throws -> StatusReport {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(StatusReport.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }
}
