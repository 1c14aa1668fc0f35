import FulcrumAPIModels
import FulcrumConfiguration
import FulcrumCore
import FulcrumDataplane
import Foundation

/// Events as the API shows them.
public enum EventModels {
    static let time = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    public static func model(_ e: Event) -> EventModel {
        EventModel(time: time.format(e.time), sequence: Int(e.sequence), severity: e.severity.rawValue, kind: e.kind,
                   message: e.message, fields: e.fields)
    }
}

extension Runtime {
    /// The one status: the configuration in force with each group's and node's live counters
    /// and state, the drops, the alarms and the latest alerts — what `GET /v1/status`, the
    /// status file, `fulcrum status`, `fulcrumctl status` and the page show. `mapEntries`
    /// (read from the kernel, a system call per entry) is the caller's to pass or leave out.
    /// Assembled here because it reads the runtime's live parts (the committed view, the
    /// checker, the agents, the pair, a data-plane snapshot); the model, its node-state rule
    /// and its text are FulcrumAPIModels', which fulcrumctl shares without the daemon.
    public func statusModel(snapshot given: DataplaneSnapshot? = nil, events withEvents: Bool = true,
                            mapEntries: [String: Int] = [:]) -> StatusModel {
        let c = committed.value
        let snapshot = given ?? dataplane.snapshot()
        let health = checker.states
        let dynamic = c.groups.contains(where: \.dynamicWeights)
        let inForce = dynamic ? dataplane.weightsInForce : [:]
        let loads = dynamic ? (agents?.loads.withLock { $0 } ?? [:]) : [:]
        let byName = Dictionary(snapshot.groups.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // (The snapshot has no sorry server's MAC: its state is its health alone.)
        func node(_ g: FulcrumConfig.Group, _ n: FulcrumConfig.Node, live: DataplaneSnapshot.Node?, sorry: Bool = false) -> NodeStatusModel {
            let h = health[NodeIdentity(group: g.name, address: n.address, port: n.port)]
            let mac = live?.mac ?? n.mac
            let state = NodeStatusModel.state(enabled: n.enabled, healthy: h?.up,
                                              isChecked: (sorry ? g.healthCheck : g.check(for: n)) != nil,
                                              awaitsMAC: mac == nil && !sorry)
            var model = NodeStatusModel(address: "\(n.address)", port: Int(n.port), weight: n.weight, enabled: n.enabled,
                                        state: state.rawValue,
                                        healthDetail: h.flatMap { $0.up ? nil : $0.lastFailure }, mac: mac.map { "\($0)" },
                                        activeFlows: live?.activeFlows ?? 0, newFlows: live?.newFlows ?? 0,
                                        packets: live?.packets ?? 0, bytes: live?.bytes ?? 0)
            if g.dynamicWeights && !sorry {
                let id = NodeIdentity(group: g.name, address: n.address, port: n.port)
                model.effectiveWeight = inForce[id]
                model.load = loads[id]
            }
            return model
        }
        let groups = c.groups.map { g -> GroupStatusModel in
            let live = byName[g.name]
            let nodes = g.nodes.map { n in
                node(g, n, live: live?.nodes.first { $0.address == n.address && $0.port == n.port })
            }
            return GroupStatusModel(name: g.name, vip: "\(g.vip)", protocol: g.proto == IPProtocol.tcp ? "tcp" : "udp",
                                    ports: g.ports.map(Int.init), method: g.method.rawValue, scheduler: g.scheduler.rawValue,
                                    packets: live?.packets ?? 0, bytes: live?.bytes ?? 0, newFlows: live?.newFlows ?? 0,
                                    sorryFlows: live?.sorryFlows ?? 0, nodes: nodes,
                                    sorry: g.sorry.map { node(g, $0, live: nil, sorry: true) })
        }
        let alerts = withEvents ? events.events().filter { $0.severity >= .notice }.suffix(20) : []
        var model = StatusModel(host: local.nodeName, role: "standalone", version: c.version, hash: c.hash,
                                uptimeSeconds: Date().timeIntervalSince(started), flows: snapshot.flows,
                                flowCapacity: snapshot.flowCapacity, groups: groups,
                                drops: Dictionary(uniqueKeysWithValues: snapshot.drops.filter { $0.value > 0 }.map { ($0.key.label, $0.value) }),
                                events: alerts.map(EventModels.model))
        let alarms = self.alarms
        model.alarms = alarms.isEmpty ? nil : alarms
        model.reloadsRejected = controller.rejected.load(ordering: .relaxed)
        if let cluster {
            let c = cluster.status.withLock { $0 }
            model.role = c.role
            model.cluster = c
        }
        model.dataplane = Self.dataplaneModel(snapshot, interfaces: dataplane.interfaces, mapEntries: mapEntries)
        return model
    }

    static func dataplaneModel(_ s: DataplaneSnapshot, interfaces: [String], mapEntries: [String: Int]) -> DataplaneStatusModel {
        var model = DataplaneStatusModel(
            counters: Dictionary(uniqueKeysWithValues: s.global.map { ($0.key.label, $0.value) }),
            xdp: Dictionary(uniqueKeysWithValues: s.xdp.map { ($0.key.label, $0.value) }),
            sockets: s.sockets, attachModes: s.attachModes.mapValues(\.rawValue), mapEntries: mapEntries,
            layoutGeneration: s.generation, appliedLayoutGeneration: s.appliedGeneration,
            routingVersion: s.routingVersion, appliedRoutingVersion: s.appliedRoutingVersion,
            routes: s.routes.map {
                .init(prefix: "\($0.prefix)/\($0.prefixLength)",
                      interface: interfaces.indices.contains($0.interface) ? interfaces[$0.interface] : "\($0.interface)",
                      via: $0.gateway.map { "\($0)" }, mac: $0.gatewayMAC.map { "\($0)" }, override: $0.isOverride)
            },
            unroutedReplies: s.unrouted.map {
                .init(destination: "\($0.destination)", reason: $0.reason.rawValue, interface: $0.interface, reports: $0.reports)
            })
        if s.offload {
            let frames = s.global[.offloaded] ?? 0
            let all = frames + (s.global[.transmitted] ?? 0)
            model.offload = .init(flows: s.offloadedFlows, frames: frames, share: all == 0 ? 0 : Double(frames) / Double(all))
        }
        return model
    }
}

extension StatusModel {
    static let fileEncoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// Written atomically (a reader sees the old file or the new, never half).
    public func write(to path: String) throws {
        try Self.fileEncoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    public static func read(from path: String) throws -> StatusModel {
        try JSONDecoder().decode(StatusModel.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }
}
