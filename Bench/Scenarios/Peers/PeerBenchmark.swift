import FulcrumBPF
import FulcrumCore
import FulcrumDataplane
import FulcrumTestSupport
import Foundation
import Histogram

/// The scenarios of `fulcrum-bench mat|nat|new-flows|connections|latency|bulk|all`: Fulcrum
/// and the systems a user would pick instead, on one topology (`PeerTopology`), on the
/// same cores, one at a time, with the runs of all systems interleaved.
public struct PeerBenchmark {
    public struct Options: Sendable {
        public var quick = false
        public var runs = 3
        public var seconds = 2.0
        /// Seconds per latency measurement: a p99 needs samples (5 s at 1,000/s is 5,000).
        public var latencySeconds = 5.0
        /// Seconds per bulk measurement (iperf3 takes whole seconds), after one omitted.
        public var bulkSeconds = 5.0
        /// Flow counts for mat and nat.
        public var flows = [1000, 1_000_000]
        /// Fulcrum's flow table in new-flows, small enough to fill in the first second.
        public var newFlowsTable = 65536
        public var wrkConnections = 32
        public var latencyConnections = 16
        public var rates: [Double] = [1000, 5000]
        public var clientCPU = 0
        public var lbCPU = 1
        public var root = "."
        /// bulk, connections and latency: the LB's veths' receive work in threads pinned
        /// to the LB's CPU (`PeerTopology.pinLBReceiveWork`), not on the sending CPU.
        public var lbReceiveOnLBCPU = true
        /// bulk and connections: the client's and servers' veths' receive work in threads
        /// pinned to the client's CPU (`PeerTopology.pinHostReceiveWork`), not on the LB's
        /// CPU. (Not latency: its LB stamp is taken in the servers' veth's receive, which
        /// would then wait for the client's CPU.)
        public var hostReceiveOnClientCPU = true
        /// Only these systems (by name) run; empty: all of them.
        public var systems: [String] = []
        public init() {}
    }

    public static let scenarioNames = ["mat", "nat", "new-flows", "connections", "latency", "bulk"]

    /// The systems' names, for `--systems`.
    public static let systemNames = ["generator", "xdp", "c-afxdp", "fulcrum", "fulcrum-offload", "fulcrum-mat",
                                     "fulcrum-mat-offload", "nftables", "haproxy", "direct", "ipvs"]

    public var options: Options
    public init(options: Options) { self.options = options }

    /// One system under test: how it goes on the LB and comes off again.
    struct System {
        var name: String
        var label: String
        var role: String
        var configuration: String
        /// Why it does not take part (not-applicable or unavailable), if it does not.
        var absent: (status: String, reason: String)?
        var setUp: () throws -> () -> Void = { {} }
    }

    /// The systems to run: those not chosen with `Options.systems` are reported as not selected.
    func selected(_ systems: [System]) -> [System] {
        guard !options.systems.isEmpty else { return systems }
        return systems.map { s in
            var s = s
            if s.absent == nil && !options.systems.contains(s.name) { s.absent = ("not-selected", "not in --systems") }
            return s
        }
    }

    final class Accumulator {
        var results: [BenchReport.SystemResult] = []

        func add(_ system: System, parameter: String, run: BenchReport.Run) {
            if let i = results.firstIndex(where: { $0.system == system.name && $0.parameter == parameter }) {
                results[i].runs.append(run)
            } else {
                var r = result(system, parameter: parameter, status: "ran")
                r.runs = [run]
                results.append(r)
            }
        }

        func absent(_ system: System, parameter: String) {
            guard !results.contains(where: { $0.system == system.name && $0.parameter == parameter }) else { return }
            var r = result(system, parameter: parameter, status: system.absent!.status)
            r.reason = system.absent!.reason
            results.append(r)
        }

        func result(_ s: System, parameter: String, status: String) -> BenchReport.SystemResult {
            BenchReport.SystemResult(system: s.name, label: s.label, role: s.role, status: status, configuration: s.configuration,
                                     parameter: parameter)
        }
    }

    public func run(scenarios: [String], command: String) throws -> BenchReport {
        let topology = try PeerTopology(root: options.root, clientCPU: options.clientCPU, lbCPU: options.lbCPU)
        defer { topology.down() }
        var report = BenchReport(command: command, started: ISO8601DateFormatter().string(from: Date()),
                                 machine: .current(clientCPU: options.clientCPU, lbCPU: options.lbCPU),
                                 quick: options.quick, runs: options.runs)
        let progress = Progress()
        for name in scenarios {
            var scenario: BenchReport.Scenario
            switch name {
            case "mat": scenario = try mat(topology, progress)
            case "nat": scenario = try nat(topology, progress, newFlows: false)
            case "new-flows": scenario = try nat(topology, progress, newFlows: true)
            case "connections": scenario = try tcp(topology, progress, latency: false)
            case "latency": scenario = try tcp(topology, progress, latency: true)
            case "bulk": scenario = try bulk(topology, progress)
            default: throw Testbed.Failure(description: "no scenario \(name)")
            }
            for i in scenario.results.indices { scenario.results[i].summarize() }
            report.scenarios.append(scenario)
        }
        progress.done()
        return report
    }

    /// Adds a scenario's measurements to the progress count, as it starts: runs × points
    /// × its systems that will run (selected, and present on this machine).
    func expect(_ progress: Progress, _ systems: [System], points: Int) {
        progress.total += options.runs * points * selected(systems).filter { $0.absent == nil }.count
    }

    /// A warm-up, then the measured offer: flows inserted and pages touched first.
    func measureUDP(_ t: PeerTopology, _ frame: [UInt8], flows: Int, newFlows: Bool = false) throws -> PeerTopology.Offered {
        _ = try t.offer(frame, flows: flows, newFlows: newFlows, seconds: min(0.5, options.seconds / 2))
        return try t.offer(frame, flows: flows, newFlows: newFlows, seconds: options.seconds)
    }

    static func mpps(_ n: UInt64, _ seconds: Double) -> Double { Double(n) / seconds / 1e6 }

    /// The pass that measures the LB's XDP programs' own cost (after the row's figure).
    var costSeconds: Double { min(0.5, options.seconds) }

    static let programCostColumn = BenchReport.Column(key: "lb_xdp_ns", title: "LB XDP ns/run")

    // MARK: - mat

    func mat(_ t: PeerTopology, _ progress: Progress) throws -> BenchReport.Scenario {
        var scenario = BenchReport.Scenario(
            name: "mat", title: "MAT (MAC rewrite, direct server return): 60-byte UDP forwarded, one worker",
            unit: "Mpps", higherIsBetter: true,
            topology: "client [c0] ── [eth-c] LB: frames to VIP \(PeerTopology.matVIP):9 go back out of eth-c to the node's MAC (the client's own veth, where an XDP sink counts them)")
        scenario.extraColumns = [Self.programCostColumn]
        let forwarder = options.root + "/.build/bench/xsk_forward"
        let lbCPU = options.lbCPU
        let systems = [
            System(name: "generator", label: "the generator alone", role: "reference",
                   configuration: "live frames from CPU \(options.clientCPU), dropped by an XDP sink on eth-c at once: what the generator can offer") {
                let links = try t.attachBench("bench_sink", to: ["eth-c"])
                return { for l in links { l.detach() } }
            },
            System(name: "xdp", label: "in-kernel XDP_TX, MAC rewrite", role: "ceiling",
                   configuration: "bench_reflect on eth-c: destination MAC = the node's, XDP_TX; no state") {
                let links = try t.attachBench("bench_reflect", to: ["eth-c"])
                return { for l in links { l.detach() } }
            },
            System(name: "c-afxdp", label: "plain C AF_XDP forwarder", role: "reference",
                   configuration: "Bench/reference/xsk_forward.c on eth-c queue 0, CPU \(lbCPU): MAC swap, no decision",
                   absent: access(forwarder, X_OK) == 0 ? nil : ("unavailable", "\(forwarder) not built (make bench builds it)")) {
                let child = try ForwardingBenchmark.startCForwarder(forwarder, ns: t.lb, interface: "eth-c", seconds: 3600, cpu: lbCPU)
                return {
                    // SIGTERM: it removes its XDP program (libxdp's) before it exits. If it
                    // does not within 5 s, it is killed and the program removed here.
                    child.signal(SIGTERM)
                    let deadline = monotonic() + 5
                    while child.isRunning && monotonic() < deadline { usleep(10_000) }
                    if child.isRunning {
                        child.signal(SIGKILL)
                        child.wait()
                        _ = try? ChildProcess.run(["/usr/sbin/ip", "-n", t.lb, "link", "set", "dev", "eth-c", "xdp", "off"])
                    }
                }
            },
            System(name: "fulcrum", label: "Fulcrum MAT, 1 worker", role: "fulcrum",
                   configuration: "one group, VIP \(PeerTopology.matVIP) udp/9, Maglev, one node; 1 worker on CPU \(lbCPU), flow table 1M") {
                let group = GroupSpec(name: "bench-mat", vip: PeerTopology.matVIP, proto: IPProtocol.udp, ports: [9], method: .mat,
                                      scheduler: .maglev,
                                      nodes: [NodeSpec(address: PeerTopology.client, weight: 1, mac: t.macs["c0"]!)])
                return try t.fulcrum([group], interfaces: ["eth-c"], flowTable: 1 << 20)
            },
            System(name: "fulcrum-offload", label: "Fulcrum MAT, offload on", role: "fulcrum",
                   configuration: "as Fulcrum MAT, with dataplane.offload: established (a flow's frames after its second go by XDP_TX); offload_entries: the power of two at or above four times the flows, from 65,536 to 1M") {
                let group = GroupSpec(name: "bench-mat", vip: PeerTopology.matVIP, proto: IPProtocol.udp, ports: [9], method: .mat,
                                      scheduler: .maglev,
                                      nodes: [NodeSpec(address: PeerTopology.client, weight: 1, mac: t.macs["c0"]!)])
                return try t.fulcrum([group], interfaces: ["eth-c"], flowTable: 1 << 20, offload: true)
            },
            System(name: "nftables", label: "nftables", role: "peer", configuration: "-",
                   absent: ("not-applicable", "nftables has no MAC-rewrite (direct server return) forwarding; it is measured in nat")),
            System(name: "haproxy", label: "HAProxy", role: "peer", configuration: "-",
                   absent: ("not-applicable", "a proxy terminates connections; it cannot forward with the client's packets untouched")),
        ]
        let frame = t.frame(to: PeerTopology.matVIP)
        let acc = Accumulator()
        expect(progress, systems, points: options.flows.count)
        for run in 1...options.runs {
            for flows in options.flows {
                for s in selected(systems) {
                    guard s.absent == nil else { acc.absent(s, parameter: "flows=\(flows)"); continue }
                    progress.say("mat: \(s.name), \(flows) flows, run \(run)/\(options.runs)")
                    t.offloadFlows = flows
                    let tearDown = try s.setUp()
                    defer { tearDown() }
                    let o = try measureUDP(t, frame, flows: flows)
                    var extra: [String: Double] = [:]
                    if let ns = try t.programCost(frame, flows: flows, seconds: costSeconds) { extra["lb_xdp_ns"] = ns }
                    acc.add(s, parameter: "flows=\(flows)", run: udpRun(o, extra: extra))
                }
            }
        }
        scenario.results = acc.results
        scenario.notes = [
            workersNote(),
            "the generator's ceiling is the generator-alone row (BPF_PROG_TEST_RUN live frames from one CPU, dropped on arrival); each row's offered column is what it offered during that row; nothing is forwarded beyond what is offered",
            "past 32,768 flows the generator varies the source address as well as the port (198.19.0.0/16)",
        ]
        return scenario
    }

    func workersNote() -> String {
        let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        return "workers: 1. This machine has \(cpus) CPUs: the generator takes CPU \(options.clientCPU) and the load balancer CPU \(options.lbCPU); a second worker needs a CPU (and a generator) of its own" + (cpus > 2 ? "; multi-worker rows are not implemented in this runner yet" : "")
    }

    func udpRun(_ o: PeerTopology.Offered, extra: [String: Double] = [:]) -> BenchReport.Run {
        BenchReport.Run(value: Self.mpps(o.delivered, o.seconds), offered: Self.mpps(o.offered, o.seconds),
                        delivered: Self.mpps(o.delivered, o.seconds),
                        dropped: Self.mpps(o.offered > o.delivered ? o.offered - o.delivered : 0, o.seconds), errors: nil,
                        seconds: o.seconds, extra: extra)
    }

    // MARK: - nat and new-flows

    func nat(_ t: PeerTopology, _ progress: Progress, newFlows: Bool) throws -> BenchReport.Scenario {
        let name = newFlows ? "new-flows" : "nat"
        var scenario = BenchReport.Scenario(
            name: name,
            title: newFlows ? "every frame a new flow, NAT both ways: round trips a second (each a new flow set up)"
                            : "NAT both ways: 60-byte UDP round trips a second (each two frames through the LB), one worker",
            unit: "M round trips/s", higherIsBetter: true,
            topology: "client [c0] ── [eth-c] LB [eth-n] ── [s0] servers: VIP \(PeerTopology.vip):9 to three nodes 198.18.2.11-13:9, whose XDP reflector answers each frame; the reply crosses the LB back to the client's XDP sink")
        scenario.extraColumns = [Self.programCostColumn]
        let lbCPU = options.lbCPU
        let table = newFlows ? options.newFlowsTable : 1 << 20
        let systems = [
            System(name: "xdp", label: "in-kernel XDP NAT, redirect", role: "ceiling",
                   configuration: "bench_nat on eth-c and eth-n: the same address and port rewrite with incremental checksums, node by a hash, bpf_redirect; stateless (no flow table)") {
                try t.configureNATCeiling()
                let links = try t.attachBench("bench_nat", to: ["eth-c", "eth-n"])
                return { for l in links { l.detach() } }
            },
            Self.nftables(t, rule: "ip daddr VIP udp dport 9 dnat to numgen inc mod 3 map {0: n1, 1: n2, 2: n3}"),
            System(name: "fulcrum", label: "Fulcrum NAT, 1 worker", role: "fulcrum",
                   configuration: "one group, VIP udp/9, Maglev, three nodes :9; 1 worker on CPU \(lbCPU), flow table \(table)") {
                try t.fulcrum(PeerTopology.natGroups(proto: IPProtocol.udp, port: 9, nodePort: 9),
                              interfaces: ["eth-c", "eth-n"], flowTable: table)
            },
            System(name: "fulcrum-offload", label: "Fulcrum NAT, offload on", role: "fulcrum",
                   configuration: "as Fulcrum NAT, with dataplane.offload: established (a flow's frames after its second, and its replies, go by bpf_redirect); offload_entries: the power of two at or above four times the flows, from 65,536 to 1M") {
                try t.fulcrum(PeerTopology.natGroups(proto: IPProtocol.udp, port: 9, nodePort: 9),
                              interfaces: ["eth-c", "eth-n"], flowTable: table, offload: true)
            },
            Self.ipvs,
            System(name: "c-afxdp", label: "plain C AF_XDP forwarder", role: "reference", configuration: "-",
                   absent: ("not-applicable", "it swaps MACs on one interface: no NAT and no second interface (its figure is in mat)")),
            System(name: "haproxy", label: "HAProxy", role: "peer", configuration: "-",
                   absent: ("not-applicable", "HAProxy proxies TCP and HTTP; it does not forward UDP datagrams")),
        ]
        let frame = t.frame(to: PeerTopology.vip)
        let acc = Accumulator()
        let flowCounts = newFlows ? [0] : options.flows
        expect(progress, systems, points: flowCounts.count)
        for run in 1...options.runs {
            for flows in flowCounts {
                let parameter = newFlows ? "new flows" : "flows=\(flows)"
                for s in selected(systems) {
                    guard s.absent == nil else { acc.absent(s, parameter: parameter); continue }
                    progress.say("\(name): \(s.name)\(newFlows ? "" : ", \(flows) flows"), run \(run)/\(options.runs)")
                    var extra: [String: Double] = [:]
                    t.offloadFlows = newFlows ? nil : flows
                    let tearDown = try s.setUp()
                    defer { tearDown() }
                    var o = try measureUDP(t, frame, flows: max(1, flows), newFlows: newFlows)
                    if newFlows, s.name == "fulcrum", let d = t.dataplane {
                        // Past capacity: a second measurement, with the table full from the
                        // first. Memory before and after it, and the fallbacks during it.
                        let before = (rss: ForwardingBenchmark.rssMiB() ?? 0, full: d.snapshot().global[.flowTableFull] ?? 0)
                        let more = try t.offer(frame, flows: 1, newFlows: true, seconds: options.seconds)
                        let after = (rss: ForwardingBenchmark.rssMiB() ?? 0, full: d.snapshot().global[.flowTableFull] ?? 0)
                        extra["rss_mib_table_full_start"] = before.rss
                        extra["rss_mib_table_full_end"] = after.rss
                        extra["fallbacks_while_full"] = Double(after.full - before.full)
                        o = PeerTopology.Offered(offered: o.offered + more.offered, delivered: o.delivered + more.delivered,
                                                 answered: o.answered + more.answered, seconds: o.seconds + more.seconds)
                    }
                    extra["answered_mpps"] = Self.mpps(o.answered, o.seconds)
                    if let ns = try t.programCost(frame, flows: max(1, flows), newFlows: newFlows, seconds: costSeconds) {
                        extra["lb_xdp_ns"] = ns
                    }
                    if s.name == "nftables", let c = t.conntrackCount { extra["conntrack_entries"] = c }
                    if s.name == "fulcrum", let snap = t.dataplane?.snapshot() {
                        extra["flow_table_entries"] = Double(snap.flows)
                        extra["flow_table_capacity"] = Double(table)
                        extra["flow_table_full_fallbacks"] = Double(snap.global[.flowTableFull] ?? 0)
                    }
                    acc.add(s, parameter: parameter, run: udpRun(o, extra: extra))
                }
            }
        }
        scenario.results = acc.results
        scenario.notes = [workersNote(),
                          "IPVS is not in this kernel (no ip_vs module), so the kernel peer is nftables DNAT, what users reach for without it",
                          "nftables' work runs in softirq on CPU \(lbCPU) (RPS on both LB veths), the CPU the Fulcrum worker has"]
        if newFlows {
            scenario.notes.append("every frame has a new source port and address (2^31 distinct); Fulcrum's flow table holds \(table) entries, so it is full within the first second: past that it forwards by consistent hash and counts flow_table_full_fallbacks. Fulcrum's runs are measured twice over, the second time with the table full from the start: rss_mib_table_full_start/end are the benchmark process's resident memory (it holds the data plane) around that second half, and fallbacks_while_full what it counted meanwhile")
        } else {
            scenario.notes.append("the generator's own ceiling is the offered column; the servers' reflector and the client's sink run in softirq on the CPU that sent to them")
        }
        return scenario
    }

    // MARK: - connections and latency

    func tcp(_ t: PeerTopology, _ progress: Progress, latency: Bool) throws -> BenchReport.Scenario {
        let name = latency ? "latency" : "connections"
        var scenario = BenchReport.Scenario(
            name: name,
            title: latency ? "HTTP request round trips on kept-alive connections at fixed offered rates (HDR histogram)"
                           : "TCP connections a second: connect, request, response, close (wrk, Connection: close)",
            unit: latency ? "ms" : "connections/s", higherIsBetter: !latency,
            topology: "client [c0] ── [eth-c] LB [eth-n] ── [s0] servers: wrk or the latency client on CPU \(options.clientCPU) to VIP \(PeerTopology.vip):80; three HTTP servers (HAProxy answering 200) on 198.18.2.11-13:8080, on CPU \(options.clientCPU)")
        scenario.extraColumns = latency
            ? [.init(key: "lb_cpu_busy_percent", title: "LB CPU %")]
            : [.init(key: "lb_cpu_busy_percent", title: "LB CPU %"),
               .init(key: "lb_cpu_percent_per_kconn", title: "LB CPU % per 1k conn/s")]
        let lbCPU = options.lbCPU
        // The servers are HAProxy too, and the load client wrk: without them no row can run.
        let missing = [("haproxy", Self.haveHAProxy), ("wrk", Self.haveWRK || latency)].filter { !$0.1 }.map(\.0)
        let servers = missing.isEmpty
            ? try t.haproxy(PeerTopology.serversConfig(), in: t.sv, name: "servers", listening: ":8080", cpu: options.clientCPU)
            : nil
        defer {
            servers?.signal(SIGKILL)
            servers?.wait()
        }
        if latency && missing.isEmpty {
            try t.startLatencyStamps()
        }
        let pinHosts = !latency && options.hostReceiveOnClientCPU
        if pinHosts { try t.pinHostReceiveWork() }
        defer { if pinHosts { t.restoreHostReceiveWork() } }
        defer { if latency { t.stopLatencyStamps() } }
        let systems = [
            System(name: "direct", label: "no load balancer (routed)", role: "reference",
                   configuration: "the client to node 198.18.2.11:8080 directly, routed by the LB's kernel (no balancing, no NAT)") {
                let links = try t.attachPass()
                return { for l in links { l.detach() } }
            },
            Self.nftables(t, rule: "ip daddr VIP tcp dport 80 dnat to numgen inc mod 3 map {0: n1, 1: n2, 2: n3} : 8080"),
            System(name: "haproxy", label: "HAProxy, TCP mode", role: "peer",
                   configuration: "haproxy \(Self.haproxyVersion()) mode tcp, nbthread 1, on CPU \(lbCPU) (taskset), balance roundrobin over the three nodes") {
                let links = try t.attachPass()
                let child = try t.haproxy(PeerTopology.haproxyConfig(), in: t.lb, name: "lb", listening: "198.18.1.20:80", cpu: lbCPU)
                return {
                    child.signal(SIGKILL)
                    child.wait()
                    for l in links { l.detach() }
                }
            },
            System(name: "fulcrum", label: "Fulcrum NAT, 1 worker", role: "fulcrum",
                   configuration: "one group, VIP tcp/80, Maglev, three nodes :8080; 1 worker on CPU \(lbCPU)") {
                try t.fulcrum(PeerTopology.natGroups(proto: IPProtocol.tcp, port: 80, nodePort: 8080),
                              interfaces: ["eth-c", "eth-n"], flowTable: 1 << 20)
            },
            System(name: "fulcrum-offload", label: "Fulcrum NAT, offload on", role: "fulcrum",
                   configuration: "as Fulcrum NAT, with dataplane.offload: established (the XDP program forwards a connection's frames after its handshake, up to its FIN)") {
                try t.fulcrum(PeerTopology.natGroups(proto: IPProtocol.tcp, port: 80, nodePort: 8080),
                              interfaces: ["eth-c", "eth-n"], flowTable: 1 << 20, offload: true)
            },
            Self.ipvs,
        ].map { s -> System in
            var s = s
            if !missing.isEmpty && s.absent == nil {
                s.absent = ("unavailable", "\(missing.joined(separator: " and ")) not installed (make setup installs it)")
            }
            return s
        }
        let acc = Accumulator()
        let points: [Double] = latency ? options.rates : [0]
        expect(progress, systems, points: points.count)
        for run in 1...options.runs {
            for rate in points {
                for s in selected(systems) {
                    let target = s.name == "direct" ? PeerTopology.nodes[0] : PeerTopology.vip
                    let port: UInt16 = s.name == "direct" ? 8080 : 80
                    if latency {
                        for p in ["p50", "p99", "p99.9", "max", "LB p50", "LB p99", "LB max"] where s.absent != nil {
                            acc.absent(s, parameter: "\(Int(rate))/s \(p)")
                        }
                    } else if s.absent != nil {
                        acc.absent(s, parameter: "c=\(options.wrkConnections)")
                    }
                    guard s.absent == nil else { continue }
                    progress.say("\(name): \(s.name)\(latency ? " at \(Int(rate))/s" : ""), run \(run)/\(options.runs)")
                    let tearDown = try s.setUp()
                    defer { tearDown() }
                    if options.lbReceiveOnLBCPU { try t.pinLBReceiveWork() }
                    if latency {
                        let before = Self.cpuTimes(options.lbCPU)
                        let r = try latencyRun(t, target: target, port: port, rate: rate)
                        let busy = Self.busyPercent(before, Self.cpuTimes(options.lbCPU))
                        for (p, v) in r.percentiles {
                            var extra = ["queued": Double(r.queued), "requests": Double(r.completed), "timed_through_lb": Double(r.timed)]
                            extra["lb_cpu_busy_percent"] = busy
                            acc.add(s, parameter: "\(Int(rate))/s \(p)", run: BenchReport.Run(
                                value: v, offered: rate, delivered: Double(r.completed) / r.seconds, dropped: nil,
                                errors: Double(r.errors), seconds: r.seconds, extra: extra))
                        }
                    } else {
                        acc.add(s, parameter: "c=\(options.wrkConnections)", run: try wrk(t, target: target, port: port))
                    }
                }
            }
        }
        scenario.results = acc.results
        let summarized = acc.results.map { r -> BenchReport.SystemResult in
            var r = r
            r.summarize()
            return r
        }
        if !latency, let direct = summarized.first(where: { $0.system == "direct" })?.median,
           let fastest = summarized.filter({ $0.system != "direct" && $0.status == "ran" }).max(by: { ($0.median ?? 0) < ($1.median ?? 0) }),
           let best = fastest.median, best > direct {
            scenario.notes.append("the direct route is not the fastest row (\(fastest.label) made \(Int(best))/s against its \(Int(direct))/s): the client and servers' CPU, not the LB, bounds this scenario")
        }
        if !latency {
            scenario.notes.append("LB CPU: the busy time of CPU \(lbCPU) (/proc/stat) over the middle of each run, whoever spent it (the Fulcrum worker, HAProxy, nftables' softirq forwarding, the LB veths' receive); LB CPU % per 1k conn/s is busy % / (connections/s / 1,000): what a connection costs the LB, which ranks the systems where the client bounds the rate")
            scenario.notes.append(pinHosts
                ? "the client's and servers' veths' receive (c0, s0) runs in threads pinned to CPU \(options.clientCPU), as their own NICs' would, not on the LB's CPU that sent the frames (as in bulk)"
                : "the client's and servers' veths' receive (c0, s0) runs on CPU \(lbCPU) for what the LB sends them, and counts as LB CPU (--no-host-receive-on-client-cpu)")
            scenario.notes += costNotes(acc.results, key: "lb_cpu_percent_per_kconn", what: "LB CPU per 1k connections/s", against: ["nftables", "haproxy"])
        }
        scenario.notes += [workersNote(),
                          "the client and the servers share CPU \(options.clientCPU); the direct row is a reference, not a bound: it is routed by the LB's kernel, which is work on CPU \(lbCPU) too",
                          "MAT is not measured here: its servers answer the client directly, so the LB sees only one direction"]
        if latency {
            scenario.notes.append("a round trip is timed from the request's write to the end of its response; requests that waited for a free connection (queued) include the wait")
            scenario.notes.append("LB CPU %: the busy time of CPU \(lbCPU) (/proc/stat) over the whole run, whoever spent it: what serving this rate costs the LB's CPU (the same figure on each percentile's row)")
            scenario.notes.append("LB p50/p99/max: the LB's own part, each request's one-way time from the client's veth (tc egress, bench_stamp) to a server's (XDP, bench_reply), both stamped with the kernel's clock, so the client's and servers' scheduling is not in it; the direct row is the same two veth hops through the LB's kernel routing; timed_through_lb counts the requests timed")
        }
        return scenario
    }

    /// nftables DNAT (PeerTopology.nftablesRules) with the kernel forwarding, xdp_pass on
    /// the LB's veths so that they take frames sent with XDP_TX.
    static func nftables(_ t: PeerTopology, rule: String) -> System {
        System(name: "nftables", label: "nftables DNAT, kernel forwarding", role: "peer",
               configuration: "\(rule); conntrack; ip_forward=1; RPS to CPU \(t.lbCPU)") {
            let links = try t.attachPass()
            try t.nftables(true)
            return {
                try? t.nftables(false)
                for l in links { l.detach() }
            }
        }
    }

    /// IPVS, the kernel's own load balancer, where the kernel has it. This runner does not
    /// drive ipvsadm yet, so it is reported either way rather than left out.
    static var ipvs: System {
        System(name: "ipvs", label: "IPVS", role: "peer", configuration: "-",
               absent: access("/proc/net/ip_vs", F_OK) == 0
                   ? ("not-applicable", "IPVS is in this kernel, but this runner does not drive ipvsadm yet")
                   : ("unavailable", "this kernel has no IPVS (no /proc/net/ip_vs, no ip_vs module)"))
    }

    static var haveHAProxy: Bool { access("/usr/sbin/haproxy", X_OK) == 0 }
    static var haveWRK: Bool { access("/usr/bin/wrk", X_OK) == 0 }

    static func haproxyVersion() -> String {
        guard let (_, out) = try? ChildProcess.run(["/usr/sbin/haproxy", "-v"]) else { return "?" }
        return out.split(separator: " ").dropFirst(2).first.map(String.init) ?? "?"
    }

    /// One wrk run, with the LB CPU's busy time sampled over its middle (as bulk does):
    /// where the client bounds the rate, the CPU a connection costs still ranks the LBs.
    func wrk(_ t: PeerTopology, target: IPAddress, port: UInt16) throws -> BenchReport.Run {
        let seconds = max(1, Int(options.seconds.rounded()))
        let child = try ChildProcess([
            "/usr/sbin/ip", "netns", "exec", t.cl, "timeout", "-k", "2", "\(seconds + 15)", "taskset", "-c", "\(options.clientCPU)",
            "wrk", "-t1", "-c\(options.wrkConnections)", "-d\(seconds)s", "-H", "Connection: close", "http://\(target):\(port)/",
        ], capture: true)
        let lbBusy = lbBusyPercent(of: Double(seconds))
        let out = child.readAll()
        let status = child.wait()
        guard status == 0 else { throw Testbed.Failure(description: "wrk exited \(status): \(out)") }
        var run = try Self.parseWRK(out, seconds: Double(seconds))
        if let busy = lbBusy {
            run.extra["lb_cpu_busy_percent"] = busy
            if run.value > 0 { run.extra["lb_cpu_percent_per_kconn"] = busy / (run.value / 1000) }
        }
        return run
    }

    /// wrk's summary: "Requests/sec: N", "Socket errors: connect a, read b, write c, timeout d",
    /// "Non-2xx or 3xx responses: n", "N requests in Xs".
    static func parseWRK(_ out: String, seconds: Double) throws -> BenchReport.Run {
        var rate: Double?
        var errors = 0.0
        var requests: Double?
        for line in out.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            if line.hasPrefix("Requests/sec:") { rate = Double(line.dropFirst("Requests/sec:".count).trimmingCharacters(in: .whitespaces)) }
            if line.hasPrefix("Socket errors:") {
                errors += line.split(whereSeparator: { !$0.isNumber }).compactMap { Double($0) }.reduce(0, +)
            }
            if line.hasPrefix("Non-2xx or 3xx responses:") { errors += Double(line.split(separator: " ").last ?? "") ?? 0 }
            if line.contains(" requests in ") { requests = Double(line.split(separator: " ").first ?? "") }
        }
        guard let rate else { throw Testbed.Failure(description: "wrk printed no Requests/sec: \(out)") }
        return BenchReport.Run(value: rate, offered: nil, delivered: requests, dropped: nil, errors: errors, seconds: seconds)
    }

    struct LatencyRun {
        var percentiles: [(String, Double)]
        var completed: Int
        var errors: Int
        var queued: Int
        var seconds: Double
        /// Requests whose way through the LB was timed (bench_lat_hist).
        var timed: UInt64
    }

    /// The next request number (requests are numbered across runs, so that a request of
    /// an earlier run can never be taken for one of this run).
    nonisolated(unsafe) static var nextRequestID = 0

    func latencyRun(_ t: PeerTopology, target: IPAddress, port: UInt16, rate: Double) throws -> LatencyRun {
        func ids(_ n: Double) -> Int {
            defer { Self.nextRequestID = (Self.nextRequestID + Int(n) + 1000) % 90_000_000 }
            return Self.nextRequestID
        }
        // A short warm-up (connections made, flows in the tables), then the measurement.
        _ = try Namespace.run(t.cl, cpu: options.clientCPU) {
            try LatencyClient(target: target, port: port, connections: 4, rate: rate, seconds: 0.2,
                              firstID: ids(rate * 0.2)).run()
        }
        let client = LatencyClient(target: target, port: port, connections: options.latencyConnections, rate: rate,
                                   seconds: options.latencySeconds, firstID: ids(rate * options.latencySeconds))
        try t.resetLatencyHistogram()
        let r = try Namespace.run(t.cl, cpu: options.clientCPU) { try client.run() }
        let h = r.histogram
        func ms(_ v: UInt64) -> Double { Double(v) / 1000 }
        // The LB's own part: each request's way from the client's veth to a server's.
        let oneWay = try t.latencyHistogram()
        var lb: [(String, Double)] = []
        for (name, p) in [("LB p50", 50.0), ("LB p99", 99.0), ("LB max", 100.0)] {
            if let us = PeerTopology.latencyPercentile(oneWay, p) { lb.append((name, us / 1000)) }
        }
        return LatencyRun(percentiles: [("p50", ms(h.valueAtPercentile(50))), ("p99", ms(h.valueAtPercentile(99))),
                                        ("p99.9", ms(h.valueAtPercentile(99.9))), ("max", ms(h.max))] + lb,
                          completed: r.completed, errors: r.errors, queued: r.queued, seconds: r.seconds,
                          timed: oneWay.reduce(0, +))
    }
}

