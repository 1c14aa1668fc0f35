#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import BenchScenarios
import FulcrumCore

@main
struct FulcrumBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrum-bench",
        abstract: "Fulcrum's benchmark runner. Figures are printed beside a reference measured in the same run.",
        discussion: """
            Against the peers (each builds and removes its own namespaces, 198.18.0.0/15 only; needs root):
              mat, nat, new-flows, connections, latency, bulk, and all of them in one run: `all`.
            Fulcrum's own costs: core (no I/O), forward, control, api, checks.
            """,
        subcommands: [All.self, MAT.self, NAT.self, NewFlows.self, Connections.self, Latency.self, Bulk.self,
                      Core.self, Forward.self, Control.self, API.self, Checks.self, Flood.self, Failover.self, Sync.self])
}

/// What every scenario against the peers takes.
struct PeerOptions: ParsableArguments {
    @Flag(help: "Each scenario briefly: one run, short measurements, one point each (the CI smoke run).") var quick = false
    @Flag(help: "Print the report as JSON (schema fulcrum-bench/1, Docs/BENCHMARKS.md) instead of the table.") var json = false
    @Option(help: "Runs per system and point, interleaved with the other systems' (default 3; 1 with --quick).") var runs: Int?
    @Option(help: "Seconds per measurement (default 2, and 5 for latency and bulk; 0.5 with --quick, 1 for bulk; wrk and iperf3 take whole seconds).") var seconds: Double?
    @Option(parsing: .upToNextOption, help: "Flow counts for mat and nat, 1…1,000,000 (default 1000 1000000; 1000 with --quick).")
    var flows: [Int] = []
    @Option(parsing: .upToNextOption, help: "Offered request rates for latency, per second (default 1000 5000; 1000 with --quick).")
    var rates: [Double] = []
    @Option(help: "Fulcrum's flow table in new-flows (entries).") var newFlowsTable = 65536
    @Option(help: "CPU for the generator, clients and servers.") var clientCPU = 0
    @Option(help: "CPU for the load balancer under test (the Fulcrum worker, HAProxy, nftables' softirq).") var lbCPU = 1
    @Option(help: "Where report.json and the charts go.") var output = ".build/bench-results"
    @Option(help: "The repository root (scripts, BPF objects, the C forwarder).") var root = "."
    @Option(parsing: .upToNextOption, help: "Only these systems, by the names the report uses (e.g. xdp fulcrum-offload); the rest are reported as not selected.")
    var systems: [String] = []
    @Flag(inversion: .prefixedNo, help: "bulk, connections, latency: the LB's veths' receive work (NAPI) in threads on the LB's CPU, as a NIC's interrupt on the LB's core; --no-lb-receive-on-lb-cpu leaves it on the sending CPU, as veth does.")
    var lbReceiveOnLbCpu = true
    @Flag(inversion: .prefixedNo, help: "bulk, connections: the client's and servers' veths' receive work (NAPI) in threads on the client's CPU, as the hosts' own NICs; --no-host-receive-on-client-cpu leaves it on the CPU that sent the frame (the LB's, for what the LB forwards), as veth does.")
    var hostReceiveOnClientCpu = true

    func validate() throws {
        guard flows.allSatisfy({ $0 >= 1 && $0 <= 1_000_000 }) else { throw ValidationError("--flows: each in 1…1000000") }
        guard rates.allSatisfy({ $0 > 0 && $0 <= 100_000 }) else { throw ValidationError("--rates: each in (0, 100000]") }
        guard (runs ?? 1) >= 1 && (runs ?? 1) <= 20, (seconds ?? 1) > 0 && (seconds ?? 1) <= 60 else {
            throw ValidationError("--runs in 1…20, --seconds in (0, 60]")
        }
        guard newFlowsTable >= 1024 else { throw ValidationError("--new-flows-table: at least 1024") }
        if let unknown = systems.first(where: { !PeerBenchmark.systemNames.contains($0) }) {
            throw ValidationError("--systems: no system \(unknown) (\(PeerBenchmark.systemNames.joined(separator: ", ")))")
        }
        guard getuid() == 0 else { throw ValidationError("needs root: it creates network namespaces and attaches XDP programs") }
    }

    func run(_ scenarios: [String]) throws {
        var o = PeerBenchmark.Options()
        o.quick = quick
        o.runs = runs ?? (quick ? 1 : 3)
        o.seconds = seconds ?? (quick ? 0.5 : 2)
        o.latencySeconds = seconds ?? (quick ? 0.5 : 5)
        o.bulkSeconds = seconds ?? (quick ? 1 : 5)
        o.flows = flows.isEmpty ? (quick ? [1000] : [1000, 1_000_000]) : flows
        o.rates = rates.isEmpty ? (quick ? [1000] : [1000, 5000]) : rates
        o.newFlowsTable = newFlowsTable
        o.clientCPU = clientCPU
        o.lbCPU = lbCPU
        o.root = root
        o.systems = systems
        o.lbReceiveOnLBCPU = lbReceiveOnLbCpu
        o.hostReceiveOnClientCPU = hostReceiveOnClientCpu
        let command = (["fulcrum-bench"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        var report = try PeerBenchmark(options: o).run(scenarios: scenarios, command: command)
        try report.write(to: output)
        if json {
            print(try report.json())
        } else {
            report.printTables()
            print("")
            print("report: \(output)/report.json")
        }
    }
}

struct All: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Every scenario against the peers: mat, nat, new-flows, connections, latency, bulk (about 7 minutes here; --quick: about 30 s).")
    @OptionGroup var options: PeerOptions
    func run() throws { try options.run(PeerBenchmark.scenarioNames) }
}

struct MAT: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mat", abstract: "MAT forwarding of 60-byte UDP: Fulcrum, the in-kernel XDP_TX ceiling, the plain C AF_XDP forwarder.")
    @OptionGroup var options: PeerOptions
    func run() throws { try options.run(["mat"]) }
}

struct NAT: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nat", abstract: "NAT both ways (replies through the LB): Fulcrum, an in-kernel XDP NAT, nftables DNAT.")
    @OptionGroup var options: PeerOptions
    func run() throws { try options.run(["nat"]) }
}

struct NewFlows: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new-flows", abstract: "Every frame a new flow, past the flow table's capacity: Fulcrum, XDP NAT, nftables DNAT.")
    @OptionGroup var options: PeerOptions
    func run() throws { try options.run(["new-flows"]) }
}

struct Connections: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "TCP connections a second through the VIP (wrk, Connection: close): Fulcrum NAT, nftables DNAT, HAProxy, direct.")
    @OptionGroup var options: PeerOptions
    func run() throws { try options.run(["connections"]) }
}

struct Latency: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Request round-trip percentiles at fixed offered rates: Fulcrum NAT, nftables DNAT, HAProxy, direct.")
    @OptionGroup var options: PeerOptions
    func run() throws { try options.run(["latency"]) }
}

struct Bulk: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bulk TCP (iperf3, 4 streams, 1500-byte MTU) through the LB: Fulcrum NAT and MAT, nftables DNAT, HAProxy, direct; Gbit/s and the LB CPU per Gbit/s.",
        discussion: "Needs iperf3 (make setup installs it). --seconds is the measured time per run (default 5), after 1 s omitted as slow start.")
    @OptionGroup var options: PeerOptions
    func run() throws { try options.run(["bulk"]) }
}

struct Core: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "FulcrumCore per-packet cost (no I/O), allocation count, Maglev build time.")

    @Option(help: "Frames per measured pass.") var frames = 1_000_000
    @Option(help: "Flow counts to spread the frames over.") var flows: [Int] = [1000, 100_000]
    @Option(help: "Measured rounds; each round runs every path over each window of the frames in turn.") var rounds = 7
    @Option(help: "Timed windows per pass over the frames; each path reports its best window and its median.") var windows = 16
    @Option(help: "Flow table capacity (entries).") var flowTable = 1 << 20
    @Flag(inversion: .prefixedNo, help: "Back the flow table with transparent huge pages.") var hugePages = true
    @Flag(help: "Skip the malloc counter (for valgrind --tool=callgrind instruction counts).") var noMallocCheck = false
    @Option(help: "Run only the paths whose name contains this (repeatable), e.g. mat, nat, reply.") var only: [String] = []

    func validate() throws {
        guard frames >= 64, rounds > 0, windows > 0, flowTable > 0, flows.allSatisfy({ $0 > 0 && $0 <= frames }) else {
            throw ValidationError("frames must be at least 64, rounds, windows and flow-table positive, and each flow count in 1…frames")
        }
    }

    func run() throws {
        var bench = CoreBenchmark(frames: frames, flowCounts: flows, rounds: rounds, flowTableCapacity: flowTable,
                                  hugePages: hugePages)
        bench.checkAllocations = !noMallocCheck
        bench.windows = windows
        bench.only = only
        let rows = try bench.run()
        print("FulcrumCore per-packet path: \(frames) frames of 60 bytes in batches of 64, timed in \(windows) windows;")
        print("\(rounds) rounds run every path over each window in turn. best = best window, median = median window")
        print("reference = copy the frames into UMEM-like buffers only (what DMA does); net = best - reference best")
        print("flow table \(flowTable) entries, huge pages \(hugePages ? "on" : "off")")
        let header = ["path", "flows", "best ns", "median ns", "reference ns", "net ns", "ratio", "mallocs"]
        var table = [header]
        for r in rows {
            table.append([r.name, "\(r.flows)", fmt(r.nsPerPacket), fmt(r.medianNs), fmt(r.referenceNs),
                          fmt(r.nsPerPacket - r.referenceNs), fmt(r.nsPerPacket / r.referenceNs) + "x", "\(r.allocations)"])
        }
        printTable(table)
        print("")
        print("Maglev table build (M = 65537, weighted), 9 builds")
        var maglev = [["nodes", "median ms", "best ms"]]
        for n in [100, 1000] {
            let build = CoreBenchmark.maglevBuild(nodes: n)
            maglev.append(["\(n)", fmt(build.median), fmt(build.best)])
        }
        printTable(maglev)
        let steadyAllocations = rows.reduce(0) { $0 + $1.allocations }
        print("")
        print("allocations in steady-state loops: \(steadyAllocations)")
        if steadyAllocations != 0 && !noMallocCheck { throw ExitCode(1) }
    }
}

struct Forward: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "One worker forwarding 60-byte UDP frames on veth (MAT and NAT), beside the in-kernel XDP_TX reference.",
        discussion: "Needs root: it creates two network namespaces (198.18.0.0/24 only) and removes them on exit.")

    @Option(help: "Seconds per measurement.") var seconds: Double = 3
    @Option(help: "Distinct flows (UDP source ports) in the generated traffic.") var flows = 1024
    @Option(help: "CPU for the generator.") var generatorCPU = 0
    @Option(help: "CPU for the worker.") var workerCPU = 1
    @Option(help: "The repository root (for scripts and BPF objects).") var root = "."
    @Option(parsing: .upToNextOption, help: "Instead of the rows: what a frame costs the worker when frames come this many at a time (e.g. 1 4 16 64), with a --gap µs sleep after each burst, MAT with no idle spin (FULCRUM_BENCH_IDLE_SPIN_US sets one).")
    var bursts: [Int] = []
    @Option(help: "With --bursts: the sleep after each burst, µs.") var gap = 200

    func validate() throws {
        guard seconds > 0 && seconds <= 60, flows >= 1 && flows <= 65535 else {
            throw ValidationError("seconds must be in (0, 60] and flows in 1…65535")
        }
        guard bursts.allSatisfy({ $0 >= 1 && $0 <= 256 }), gap >= 0 && gap <= 100_000 else {
            throw ValidationError("--bursts: each in 1…256; --gap in 0…100000 µs")
        }
    }

    func run() throws {
        if !bursts.isEmpty { return try runBursts() }
        let rows = try ForwardingBenchmark(seconds: seconds, flows: flows, generatorCPU: generatorCPU,
                                           workerCPU: workerCPU, root: root).run()
        print("Forwarding on veth, 60-byte UDP frames over \(flows) flows, \(seconds) s per row")
        print("generator: BPF_PROG_TEST_RUN live frames on CPU \(generatorCPU); worker on CPU \(workerCPU)")
        let reference = rows[0].forwardedMpps
        // The yardstick for one worker: the plain C forwarder, when it was built.
        let c = rows.first { $0.name.hasPrefix("plain C") }?.forwardedMpps
        var table = [["path", "offered Mpps", "forwarded Mpps", "vs XDP_TX", "vs C", "socket drops", "mallocs/packet",
                      "RSS MiB"]]
        for r in rows {
            table.append([r.name, fmt(r.offeredMpps), fmt(r.forwardedMpps), fmt(r.forwardedMpps / reference) + "x",
                          c.map { fmt(r.forwardedMpps / $0) + "x" } ?? "-",
                          "\(r.socketDrops)", r.mallocsPerPacket.map { $0 == 0 ? "0" : String($0) } ?? "-",
                          r.rssMiB.map { fmt($0) } ?? "-"])
        }
        printTable(table)
        if rows.dropFirst().contains(where: { ($0.mallocsPerPacket ?? 0) > 0 }) { throw ExitCode(1) }
    }

    func runBursts() throws {
        // The worker's spin, as the peer scenarios take it (dataplane.idle_spin_us; none by default).
        let spin = getenv("FULCRUM_BENCH_IDLE_SPIN_US").flatMap { Int(String(cString: $0)) } ?? 0
        let rows = try ForwardingBenchmark(seconds: seconds, flows: flows, generatorCPU: generatorCPU, workerCPU: workerCPU,
                                           root: root).runBursts(bursts, gapMicroseconds: gap, idleSpinMicroseconds: spin)
        print("The worker's cost per frame by burst size: 60-byte UDP frames of one flow through Fulcrum MAT (1 worker, offload off, \(spin == 0 ? "no idle spin" : "idle spin \(spin) µs (FULCRUM_BENCH_IDLE_SPIN_US)")), a \(gap) µs sleep after each burst, \(seconds) s per row")
        print("worker µs/frame: the worker thread's own CPU time (schedstat) per frame forwarded, its kernel work in sendto included; runs/burst: the times it was put on its CPU per burst (a wake-up each)")
        var table = [["burst", "bursts/s", "forwarded frames/s", "worker µs/frame", "runs/burst"]]
        for r in rows {
            table.append(["\(r.burst)", String(format: "%.0f", r.burstsPerSecond), String(format: "%.0f", r.forwardedPerSecond),
                          String(format: "%.2f", r.workerNanosecondsPerFrame / 1000), String(format: "%.2f", r.runsPerBurst)])
        }
        printTable(table)
    }
}

struct Control: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "How long a change takes to reach every worker with 100 groups × 100 nodes: one node's weight, and a full replace.",
        discussion: "Needs root: a data plane on a veth in a namespace of its own (198.18.0.0/24), removed on exit. Each change is timed until every worker has applied it; the reference is the same change as a dry run (parse and validate only).")

    @Option var groups = 100
    @Option var nodes = 100
    @Option(help: "One-node changes measured.") var changes = 200
    @Option(help: "Full replaces measured.") var replaces = 10
    @Option(help: "Workers (queues); veth has one queue.") var queues = 1
    @Option(help: "The repository root (for scripts and BPF objects).") var root = "."

    func run() throws {
        let rows = try ControlBenchmark(groups: groups, nodes: nodes, changes: changes, replaces: replaces, queues: queues,
                                        root: root).run()
        print("Changes through the controller with \(groups) groups × \(nodes) nodes, \(queues) worker(s); ms, until every worker applied it")
        var table = [["change", "p50 ms", "p99 ms", "max ms", "dry run p50", "dry run p99", "p99 / dry run p99"]]
        for r in rows {
            table.append([r.name, fmt(r.p50), fmt(r.p99), fmt(r.max), fmt(r.referenceP50), fmt(r.referenceP99),
                          fmt(r.p99 / r.referenceP99) + "x"])
        }
        printTable(table)
    }
}

struct API: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "The control API under wrk (status page shell as the reference, /v1/status, /metrics), and forwarding with and without a scraper.",
        discussion: "Needs root, wrk and a release build of fulcrum (make release): the daemon runs on CPU 1 in a namespace of its own (198.18.0.0/24), wrk and the generator on CPU 0.")

    @Option var seconds: Double = 5
    @Option var groups = 10
    @Option var nodes = 10
    @Option(help: "wrk connections.") var connections = 8
    @Option(help: "The repository root (for scripts, BPF objects and the release build).") var root = "."

    func run() throws {
        let r = try APIBenchmark(seconds: seconds, groups: groups, nodes: nodes, connections: connections, root: root).run()
        print("Control API on one core (the daemon pinned to CPU 1), wrk -t1 -c\(connections) for \(Int(seconds)) s; \(groups + 1) groups, \(groups * nodes + 1) nodes")
        let reference = r.rates[0].requestsPerSecond
        var table = [["path", "requests/s", "p99 ms", "vs static page"]]
        for (path, rate, p99) in r.rates {
            table.append([path + (path == "/" ? " (static, reference)" : ""), fmt(rate), fmt(p99), fmt(rate / reference) + "x"])
        }
        printTable(table)
        print("")
        print("Forwarding, one worker sharing CPU 1 with the API, 60-byte UDP, \(Int(seconds)) s per run, alone and with /metrics scraped 10/s (\(r.scrapes) scrapes in all), in turn:")
        var forwarding = [["round", "alone Mpps", "scraped Mpps", "ratio"]]
        for (i, (a, b)) in zip(r.forwardingAlone, r.forwardingScraped).enumerated() {
            forwarding.append(["\(i + 1)", fmt(a), fmt(b), fmt(b / a) + "x"])
        }
        let total = r.forwardingScraped.reduce(0, +) / r.forwardingAlone.reduce(0, +)
        forwarding.append(["all", fmt(r.forwardingAlone.reduce(0, +) / 3), fmt(r.forwardingScraped.reduce(0, +) / 3), fmt(total) + "x"])
        printTable(forwarding)
    }
}

struct Checks: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The health checker with 1,000 nodes checked every second: its CPU, and how fast it finds 100 of them down.",
        discussion: "Needs root and a release build of fulcrum-testpeer: a namespace with 1,000 addresses of 198.18.64.0/22 on its loopback, one listener, nftables dropping the SYNs of 100 of them.")

    @Option var nodes = 1000
    @Option(help: "Seconds of steady checking measured for CPU.") var seconds: Double = 10
    @Option(help: "The repository root (for the test peer).") var root = "."

    func run() throws {
        let r = try CheckerBenchmark(nodes: nodes, seconds: seconds, root: root).run()
        print("Health checks: \(nodes) nodes, TCP, interval 1 s, timeout 0.5 s, rise 2, fall 2; \(r.upAtStart) up after start")
        print("checker CPU over \(fmt(r.wallSeconds)) s: \(fmt(r.cpuShare * 100))% of one core (\(Int(r.checksPerSecond)) checks a second)")
        func pct(_ p: Double) -> Double {
            r.detection.isEmpty ? .nan : r.detection[min(r.detection.count - 1, Int((Double(r.detection.count) * p).rounded(.up)) - 1)]
        }
        var table = [["nodes stopped", "found down", "median s", "p99 s", "max s", "bound s (fall × interval + timeout)", "p99 / bound"]]
        table.append(["100", "\(r.detection.count)", fmt(pct(0.5)), fmt(pct(0.99)), fmt(r.detection.last ?? .nan), fmt(r.bound),
                      fmt(pct(0.99) / r.bound) + "x"])
        printTable(table)
    }
}

struct Failover: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The client's outage when the active LB of a pair is killed, loses its link or hands over on purpose: Fulcrum beside keepalived (VRRPv3), one run.",
        discussion: "Needs root and keepalived. A UDP request to the VIP every 2 ms; the outage is the longest run unanswered, lost the requests never answered. Fulcrum: heartbeats 25 ms / 100 ms, planned = fulcrumctl failover; keepalived: advert_int 1 (its default) and --keepalived-fast, planned = SIGTERM (it sends priority 0).")

    @Option(help: "Kills, link cuts and planned switchovers per system.") var runs = 10
    @Option(help: "keepalived's fast advert_int, seconds.") var keepalivedFast = 0.1
    @Option(help: "The repository root.") var root = "."

    func run() throws {
        let rows = try FailoverBenchmark(root: root, runs: runs, keepalivedFast: keepalivedFast).run()
        print("Failover: the outage a client sees (UDP request every 2 ms), \(runs) faults of each kind per system")
        var table = [["system", "fault", "runs", "median ms", "worst ms", "lost / sent", "median / Fulcrum's"]]
        for r in rows {
            let ours = rows.first { $0.system == "fulcrum" && $0.fault == r.fault }?.medianMs ?? .nan
            table.append([r.system, r.fault, "\(r.runs)", fmt(r.medianMs), fmt(r.worstMs), "\(r.lost) / \(r.sent)",
                          ours > 0 ? fmt(r.medianMs / ours) + "x" : "—"])
        }
        printTable(table)
    }
}

struct Sync: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The flow sync: records a second and lag (the real sync services on the loopback), a worker's export and a standby's import per flow, the bulk transfer of a million flows.",
        discussion: "Needs no root. The per-packet cost the sync adds to a worker is a row of `fulcrum-bench core` (flow sync on beside off). --peers adds, as root, held connections across a SIGKILL of the active in four conditions, Fulcrum beside nftables + keepalived + conntrackd (Bench/testbed/flowsync-bench.sh).")

    @Option(help: "Flows in the active's table (the bulk transfer's size).") var flows = 1_000_000
    @Option(help: "Offered records a second, in turn; then as fast as it goes.") var rates: [Int] = [100_000, 300_000, 1_000_000]
    @Option(help: "Seconds per offered rate.") var seconds = 2.0
    @Flag(help: "Also the held-connection survival against conntrackd on the pair testbed (root).") var peers = false
    @Option(help: "Held connections per measurement, with --peers.") var held = 200
    @Option(help: "The repository root (for the testbed), with --peers.") var root = "."

    func run() throws {
        let r = try SyncPathBenchmark(flows: flows, rates: rates, seconds: seconds).run()
        print("Flow sync: \(flows) established flows under wrr (8 nodes, weights 1-3)")
        print("worker bulk export: \(fmt(r.exportNsPerFlow)) ns a flow; \(r.exceptions) records (exceptions), \(r.saved) flows needed none")
        print("standby import: \(fmt(r.importNsPerRecord)) ns a record")
        var table = [["offered records/s", "delivered records/s", "lag p50 ms", "lag p99 ms", "datagrams resent"]]
        for row in r.rates {
            table.append([row.offered == 0 ? "max" : "\(row.offered)", "\(Int(row.delivered))",
                          row.lagP50Ms.map(fmt) ?? "-", row.lagP99Ms.map(fmt) ?? "-", "\(row.resent)"])
        }
        printTable(table)
        print("bulk transfer of \(flows) flows (\(r.exceptions) records), its slowest stage: \(fmt(r.bulkSeconds)) s")
        guard peers else { return }
        guard getuid() == 0 else { print("against conntrackd: skipped, needs root (namespaces)"); return }
        let result = try FlowSyncBenchmark(held: held).run(root: root)
        print("\nHeld connections across a SIGKILL of the active (\(held) each): Fulcrum (wrr, flow sync) beside")
        print("nftables DNAT + keepalived (VRRPv3, advert 0.1 s) + conntrackd FTFW, same pair testbed, one run")
        var rows = [["condition", "system", "survived", "broken", "outage ms", "≥ 99.9 %"]]
        for row in result.rows {
            rows.append([row.condition, row.system, "\(row.survived) / \(row.held)", "\(row.broken)",
                         row.maxGapMs.map(String.init) ?? "-", row.meetsTarget ? "yes" : "no"])
        }
        printTable(rows)
        for note in result.notes { print(note) }
    }
}

struct Flood: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A SYN flood (every frame a new connection) out of an interface of this namespace, for flood tests.",
        discussion: "Run it inside a test namespace (ip netns exec); it sends only to the target given, from 198.19.0.0/16, and stops after --seconds. Prints JSON: frames offered and seconds.")

    @Option(help: "Interface to send from (its veth peer must run an XDP program).") var interface: String
    @Option(help: "Destination MAC (the LB's).") var destinationMAC: String
    @Option(help: "Target address (a VIP in 198.18.0.0/15).") var target: String
    @Option var port: UInt16 = 80
    @Option(help: "Frames a second; 0 = as fast as the generator goes.") var rate: Double = 30_000
    @Option var seconds: Double = 10
    @Option(help: "CPU to pin the generator to.") var cpu: Int?
    @Option(help: "The repository root (for the BPF object).") var root = "."

    func validate() throws {
        guard let address = IPAddress(target), address.isIPv4, address.ipv4 >> 17 == 0xC612 >> 1 else {
            throw ValidationError("--target must be an IPv4 address in 198.18.0.0/15")
        }
        guard MACAddress(destinationMAC) != nil else { throw ValidationError("--destination-mac: not a MAC address") }
        guard seconds > 0 && seconds <= 300, rate >= 0 else { throw ValidationError("seconds in (0, 300], rate ≥ 0") }
    }

    func run() throws {
        let result = try SYNFlood(interface: interface, destinationMAC: MACAddress(destinationMAC)!, target: IPAddress(target)!,
                                  port: port, rate: rate, seconds: seconds, cpu: cpu, root: root).run()
        print("{\"offered\":\(result.offered),\"seconds\":\(result.seconds)}")
    }
}

func fmt(_ v: Double) -> String {
    let scaled = (v * 100).rounded() / 100
    return String(scaled)
}
