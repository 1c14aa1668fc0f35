import FulcrumControl
import FulcrumCore
import Prometheus
import Synchronization

/// `/metrics`: the workers' own per-worker counters (summed by `Dataplane.snapshot`), the
/// XDP program's, and the configuration's state, read at scrape time into a swift-prometheus
/// registry. Nothing is counted twice on the packet path: a counter here grows by what
/// its source grew since the previous scrape (a source that went back, a node removed and
/// added again, starts a new series).
public final class Metrics: Sendable {
    let runtime: Runtime?
    public let registry: PrometheusCollectorRegistry
    private let state = Mutex(State())
    private let requests = Mutex<[String: Counter]>([:])

    struct State {
        var counters: [String: (Counter, UInt64)] = [:]
        var gauges: [String: Gauge] = [:]
        /// The series of the last scrape in the order `collect` produces them, valid
        /// while the configuration version and the series count stay the same: then a
        /// scrape updates them by position, with no key built or hashed.
        var ordered: (version: Int, counters: [(Counter, UInt64)], gauges: [Gauge])?
    }

    /// One API request answered.
    func countRequest(method: String, status: Int) {
        let key = "\(method) \(status)"
        requests.withLock { s in
            let counter = s[key] ?? registry.makeCounter(
                descriptor: Self.descriptor("fulcrum_api_requests_total", "Requests the control API answered, by method and status."),
                labels: [("method", method), ("status", "\(status)")])
            s[key] = counter
            counter.increment()
        }
    }

    /// The API's connection governor, once the API is built (`connections`).
    private let governor = Mutex<ConnectionGovernor?>(nil)

    /// The governor for the API's listeners, counted in the metrics.
    func connections(_ limits: ConnectionGovernor.Limits) -> ConnectionGovernor {
        governor.withLock { g in
            let made = g ?? ConnectionGovernor(limits: limits)
            g = made
            return made
        }
    }

    public init(runtime: Runtime?, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.runtime = runtime
        self.registry = registry
    }

    struct Scrape {
        var version = 0
        var counters: [(name: String, labels: [(String, String)], help: String, value: UInt64)] = []
        var gauges: [(name: String, labels: [(String, String)], help: String, value: Double)] = []

        mutating func counter(_ name: String, _ labels: [(String, String)], _ help: String, _ value: UInt64) {
            counters.append((name, labels, help, value))
        }

        mutating func gauge(_ name: String, _ labels: [(String, String)], _ help: String, _ value: Double) {
            gauges.append((name, labels, help, value))
        }
    }

    func collect() -> Scrape {
        var out = Scrape()
        guard let runtime else { return out }
        let snapshot = runtime.dataplane.snapshot()
        let status = runtime.statusModel(snapshot: snapshot, events: false)
        out.version = status.version
        let health = runtime.checker.states
        out.gauge("fulcrum_config_version", [], "The version of the configuration in force.", Double(status.version))
        out.gauge("fulcrum_uptime_seconds", [], "Seconds since the daemon started.", status.uptimeSeconds)
        out.gauge("fulcrum_flows", [], "Flows in the workers' flow tables.", Double(status.flows))
        if let o = status.dataplane?.offload {
            out.gauge("fulcrum_offloaded_flows", [], "Flows whose frames the XDP program forwards itself.", Double(o.flows))
        }
        out.gauge("fulcrum_flow_capacity", [], "Flows the workers' flow tables can hold.", Double(status.flowCapacity))
        out.gauge("fulcrum_active", [], "1 while this LB answers for its VIPs.", runtime.dataplane.isActive ? 1 : 0)
        for g in status.groups {
            let l = [("group", g.name)]
            out.counter("fulcrum_group_packets_total", l, "Packets forwarded for the group.", g.packets)
            out.counter("fulcrum_group_bytes_total", l, "Bytes forwarded for the group.", g.bytes)
            out.counter("fulcrum_group_new_flows_total", l, "New flows the group scheduled.", g.newFlows)
            out.counter("fulcrum_group_sorry_flows_total", l, "New flows sent to the group's sorry server.", g.sorryFlows)
            for n in g.nodes {
                let node = IPAddress(n.address).map { NodeLabel(address: $0, port: UInt16(n.port)).description } ?? n.address
                let nl = [("group", g.name), ("node", node)]
                out.counter("fulcrum_node_packets_total", nl, "Packets forwarded to the node.", n.packets)
                out.counter("fulcrum_node_bytes_total", nl, "Bytes forwarded to the node.", n.bytes)
                out.counter("fulcrum_node_new_flows_total", nl, "New flows scheduled to the node.", n.newFlows)
                out.gauge("fulcrum_node_active_flows", nl, "Flows held for the node now.", Double(n.activeFlows))
                out.gauge("fulcrum_node_weight", nl, "The node's configured weight (0: drained).", Double(n.weight))
                out.gauge("fulcrum_node_up", nl, "1 if the node may take new flows (enabled, healthy, MAC known).",
                          n.state == "up" ? 1 : 0)
                if let address = IPAddress(n.address),
                   let h = health[NodeIdentity(group: g.name, address: address, port: UInt16(n.port))] {
                    out.counter("fulcrum_node_health_transitions_total", nl, "Times health checks took the node down or brought it up.",
                                h.transitions)
                }
                if let w = n.effectiveWeight {
                    out.gauge("fulcrum_node_effective_weight", nl, "Dynamic weights: the weight in force (static × 100, scaled by load).", Double(w))
                }
                if let load = n.load {
                    out.gauge("fulcrum_node_agent_load", nl, "Dynamic weights: the smoothed load the node's agent reports (0-1).", load)
                }
            }
        }
        if let agents = runtime.agents {
            let counts = agents.counts.withLock { $0 }
            for outcome in ["accepted"] + AgentReport.Rejection.allCases.map(\.rawValue) {
                out.counter("fulcrum_agent_reports_total", [("outcome", outcome)],
                            "Node agents' reports, accepted or why not.", counts[outcome] ?? 0)
            }
            out.counter("fulcrum_agent_reports_total", [("outcome", "queue_full")],
                        "Node agents' reports, accepted or why not.", agents.queueDrops)
        }
        if let c = status.cluster {
            for role in ["initial", "standby", "active", "fault"] {
                out.gauge("fulcrum_cluster_role", [("role", role)], "1 for this LB's role in the pair.", c.role == role ? 1 : 0)
            }
            out.gauge("fulcrum_cluster_peer_heard", [], "1 while the peer is heard on some interconnect.", c.peer.role == nil ? 0 : 1)
            out.counter("fulcrum_cluster_transitions_total", [], "Role changes of this LB since start.", UInt64(c.transitions))
            out.gauge("fulcrum_cluster_config_version", [("lb", "local")], "The configuration version each LB of the pair holds (-1: not heard).",
                      Double(c.configVersion))
            out.gauge("fulcrum_cluster_config_version", [("lb", "peer")], "The configuration version each LB of the pair holds (-1: not heard).",
                      Double(c.peerConfigVersion ?? -1))
            out.gauge("fulcrum_cluster_realtime", [], "1 if the heartbeat thread runs at SCHED_FIFO.", c.realtime ? 1 : 0)
            for (i, link) in c.interconnects.enumerated() {
                let l = [("interconnect", "\(i)")]
                out.gauge("fulcrum_cluster_interconnect_up", l, "1 while the peer's heartbeats arrive on the interconnect.", link.up ? 1 : 0)
                out.counter("fulcrum_cluster_heartbeats_sent_total", l, "Heartbeats sent on the interconnect.", link.sent)
                out.counter("fulcrum_cluster_heartbeats_received_total", l, "The peer's heartbeats admitted on the interconnect.",
                            link.received)
                for reason in MessageRejection.allCases {
                    out.counter("fulcrum_cluster_heartbeats_rejected_total", l + [("reason", reason.rawValue)],
                                "Datagrams on the interconnect refused as heartbeats, by reason.", link.rejected[reason.rawValue] ?? 0)
                }
            }
            if let f = c.flowSync {
                out.gauge("fulcrum_flowsync_ready", [("lb", "local")], "1 when the LB that would take over holds every flow (the standby's bulk transfer is whole).",
                          f.ready ? 1 : 0)
                out.gauge("fulcrum_flowsync_ready", [("lb", "peer")], "1 when the LB that would take over holds every flow (the standby's bulk transfer is whole).",
                          f.peerReady ? 1 : 0)
                out.gauge("fulcrum_flowsync_sending", [], "1 while this LB streams its flows (it is active).", f.sending ? 1 : 0)
                out.counter("fulcrum_flowsync_records_total", [("direction", "sent")], "Flow records sent to, or received from, the peer.", f.recordsSent)
                out.counter("fulcrum_flowsync_records_total", [("direction", "received")], "Flow records sent to, or received from, the peer.", f.recordsReceived)
                out.counter("fulcrum_flowsync_records_saved_total", [], "Flows that needed no record: the peer's stateless answer is their node.", f.recordsSaved)
                out.counter("fulcrum_flowsync_records_held_total", [], "Records the standby's workers hold as flows.", f.recordsHeld)
                out.counter("fulcrum_flowsync_datagrams_total", [("kind", "sent")], "Flow-sync datagrams by kind.", f.datagramsSent)
                out.counter("fulcrum_flowsync_datagrams_total", [("kind", "resent")], "Flow-sync datagrams by kind.", f.datagramsResent)
                out.counter("fulcrum_flowsync_datagrams_total", [("kind", "received")], "Flow-sync datagrams by kind.", f.datagramsReceived)
                out.counter("fulcrum_flowsync_datagrams_total", [("kind", "duplicate")], "Flow-sync datagrams by kind.", f.duplicates)
                for reason in MessageRejection.allCases {
                    out.counter("fulcrum_flowsync_rejected_total", [("reason", reason.rawValue)],
                                "Flow-sync datagrams refused, by reason.", f.rejected[reason.rawValue] ?? 0)
                }
                for reason in ["unknown_service", "unknown_node", "table_full"] {
                    out.counter("fulcrum_flowsync_not_held_total", [("reason", reason)],
                                "Records the standby could not hold, by reason.", f.notHeld[reason] ?? 0)
                }
                for reason in ["import_busy", "config_behind"] {
                    out.counter("fulcrum_flowsync_deferred_total", [("reason", reason)],
                                "Datagrams the standby left unacknowledged to come again, by reason.", f.deferred[reason] ?? 0)
                }
                out.gauge("fulcrum_flowsync_pending", [], "Records and datagrams waiting: in the workers' rings, or sent and not acknowledged.",
                          Double(f.pending))
                out.counter("fulcrum_flowsync_bulk_transfers_total", [], "Bulk transfers of every flow started (a standby joined).", f.bulkTransfers)
                // Two gauges, not a summary: the window's percentiles, without a sum or count.
                out.gauge("fulcrum_flowsync_lag_p50_seconds", [], "Median time from a record's export to its acknowledgement (last 4096 datagrams).",
                          (f.lagP50Milliseconds ?? 0) / 1000)
                out.gauge("fulcrum_flowsync_lag_p99_seconds", [], "99th percentile of the time from a record's export to its acknowledgement (last 4096 datagrams).",
                          (f.lagP99Milliseconds ?? 0) / 1000)
                out.gauge("fulcrum_flowsync_lagging", [], "1 while the standby is not keeping up.", f.lagging ? 1 : 0)
            }
            for m in c.monitors {
                out.gauge("fulcrum_cluster_monitor_up", [("type", m.type), ("target", m.target), ("action", m.action ?? "failover")],
                          "1 while the monitor passes (link, ip, dataplane).", m.up ? 1 : 0)
            }
        }
        // In a fixed order: a scrape's series line up with the previous one's.
        for reason in DropReason.allCases {
            out.counter("fulcrum_drops_total", [("reason", reason.label)], "Packets the workers dropped, by reason.",
                        snapshot.drops[reason] ?? 0)
        }
        for counter in GlobalCounter.allCases {
            out.counter("fulcrum_worker_packets_total", [("counter", counter.label)], "The workers' packet counters.",
                        snapshot.global[counter] ?? 0)
        }
        for (counter, value) in snapshot.xdp.sorted(by: { $0.key.label < $1.key.label }) {
            out.counter("fulcrum_xdp_packets_total", [("counter", counter.label)], "The XDP program's counters.", value)
        }
        for (stat, value) in snapshot.sockets.sorted(by: { $0.key < $1.key }) {
            out.counter("fulcrum_afxdp_socket_total", [("stat", stat)], "The AF_XDP sockets' statistics (summed).", value)
        }
        if let governor = governor.withLock({ $0 }) {
            out.gauge("fulcrum_api_connections_open", [], "Connections the control API holds open.", Double(governor.openConnections))
            for reason in ConnectionGovernor.Closed.allCases {
                out.counter("fulcrum_api_connections_closed_total", [("reason", reason.rawValue)],
                            "Connections the control API closed to stay within api.max_connections, api.request_timeout and api.idle_timeout.",
                            governor.closedCount(reason))
            }
        }
        return out
    }

    /// A series' name and help, as swift-prometheus takes them (no unit: it is in the name).
    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    static func key(_ name: String, _ labels: [(String, String)]) -> String {
        name + "{" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
    }

    /// Brings the registry up to date and renders it.
    public func scrape() -> [UInt8] {
        let now = collect()
        state.withLock { s in
            if let o = s.ordered, o.version == now.version, o.counters.count == now.counters.count,
               o.gauges.count == now.gauges.count {
                var counters = o.counters
                for i in now.counters.indices {
                    let (counter, last) = counters[i]
                    let value = now.counters[i].value
                    if value > last { counter.increment(by: Int64(clamping: value - last)) }
                    if value != last { counters[i].1 = value }
                }
                for i in now.gauges.indices { o.gauges[i].set(now.gauges[i].value) }
                s.ordered = (o.version, counters, o.gauges)
                // A counter that went back (a node removed and added again) needs a new
                // series: the slow path below makes it.
                if !zip(counters, now.counters).contains(where: { $0.1 > $1.value }) { return }
            }
            var seenCounters = Set<String>()
            for c in now.counters {
                let key = Self.key(c.name, c.labels)
                seenCounters.insert(key)
                if let (counter, last) = s.counters[key], c.value >= last {
                    if c.value > last { counter.increment(by: Int64(clamping: c.value - last)) }
                    s.counters[key] = (counter, c.value)
                } else {
                    if let (old, _) = s.counters[key] { registry.unregisterCounter(old) }
                    let counter = registry.makeCounter(descriptor: Self.descriptor(c.name, c.help), labels: c.labels)
                    if c.value > 0 { counter.increment(by: Int64(clamping: c.value)) }
                    s.counters[key] = (counter, c.value)
                }
            }
            for (key, (counter, _)) in s.counters where !seenCounters.contains(key) {
                registry.unregisterCounter(counter)
                s.counters[key] = nil
            }
            var seenGauges = Set<String>()
            for g in now.gauges {
                let key = Self.key(g.name, g.labels)
                seenGauges.insert(key)
                let gauge = s.gauges[key] ?? registry.makeGauge(descriptor: Self.descriptor(g.name, g.help), labels: g.labels)
                gauge.set(g.value)
                s.gauges[key] = gauge
            }
            for (key, gauge) in s.gauges where !seenGauges.contains(key) {
                registry.unregisterGauge(gauge)
                s.gauges[key] = nil
            }
            s.ordered = (now.version,
                         now.counters.map { s.counters[Self.key($0.name, $0.labels)]! },
                         now.gauges.map { s.gauges[Self.key($0.name, $0.labels)]! })
        }
        return registry.emitToBuffer()
    }
}
