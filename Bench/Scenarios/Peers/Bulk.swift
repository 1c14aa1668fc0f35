import FulcrumCore
import FulcrumTestSupport
import Foundation

/// `fulcrum-bench bulk`: bulk TCP (iperf3, 4 parallel streams, 1500-byte MTU) from the
/// client through each system on the LB to the servers, the traffic a user moves most
/// bytes with. Gbit/s as iperf3's receiver counted them, and the LB CPU's busy time per
/// Gbit/s, read from /proc/stat for that CPU over the middle of each measurement.
extension PeerBenchmark {
    static let bulkPort: UInt16 = 5201
    static let bulkStreams = 4

    func bulk(_ t: PeerTopology, _ progress: Progress) throws -> BenchReport.Scenario {
        let lbCPU = options.lbCPU
        let seconds = max(1, Int(options.bulkSeconds.rounded()))
        let omit = options.quick ? 0 : 1
        let port = Self.bulkPort
        var scenario = BenchReport.Scenario(
            name: "bulk",
            title: "bulk TCP: iperf3, \(Self.bulkStreams) parallel streams, 1500-byte MTU, client to servers through the LB",
            unit: "Gbit/s", higherIsBetter: true,
            topology: "client [c0] ── [eth-c] LB [eth-n] ── [s0] servers: iperf3 -c on CPU \(options.clientCPU) to VIP \(PeerTopology.vip):\(port) (NAT, HAProxy) or \(PeerTopology.matVIP):\(port) (MAT); one iperf3 -s on CPU \(options.clientCPU) in the servers' namespace answers on all three nodes 198.18.2.11-13:\(port). MAT's servers answer from the VIP over a link of their own to the client (dsr-s ── dsr-c, 198.18.3.0/24), not through the LB")
        scenario.extraColumns = [
            .init(key: "lb_cpu_busy_percent", title: "LB CPU %"),
            .init(key: "lb_cpu_percent_per_gbps", title: "LB CPU % per Gbit/s"),
            .init(key: "lb_cpu_idle_percent", title: "LB CPU % before"),
            .init(key: "retransmits", title: "retransmits"),
        ]
        let missing = [("iperf3", Self.haveIPerf3), ("haproxy", Self.haveHAProxy)].filter { !$0.1 }.map(\.0)
        var systems = [
            System(name: "direct", label: "no load balancer (routed)", role: "reference",
                   configuration: "the client to node 198.18.2.11:\(port) directly, routed by the LB's kernel (no balancing, no NAT)") {
                let links = try t.attachPass()
                return { for l in links { l.detach() } }
            },
            Self.nftables(t, rule: "ip daddr VIP tcp dport \(port) dnat to numgen inc mod 3 map {0: n1, 1: n2, 2: n3}"),
            System(name: "haproxy", label: "HAProxy, TCP mode", role: "peer",
                   configuration: "haproxy \(Self.haproxyVersion()) mode tcp, nbthread 1, on CPU \(lbCPU) (taskset), balance roundrobin over the three nodes :\(port), client and server timeouts 2 min (iperf3's control connection idles through a test)") {
                let links = try t.attachPass()
                let child = try t.haproxy(PeerTopology.haproxyConfig(port: port, nodePort: port, idle: "2m"),
                                          in: t.lb, name: "lb-bulk", listening: "198.18.1.20:\(port)", cpu: lbCPU)
                return {
                    child.signal(SIGKILL)
                    child.wait()
                    for l in links { l.detach() }
                }
            },
            System(name: "fulcrum", label: "Fulcrum NAT, 1 worker", role: "fulcrum",
                   configuration: "one group, VIP tcp/\(port), Maglev, three nodes :\(port); 1 worker on CPU \(lbCPU)") {
                try t.fulcrum(PeerTopology.natGroups(proto: IPProtocol.tcp, port: port, nodePort: port),
                              interfaces: ["eth-c", "eth-n"], flowTable: 1 << 20)
            },
            System(name: "fulcrum-mat", label: "Fulcrum MAT, 1 worker", role: "fulcrum",
                   configuration: "one group, VIP \(PeerTopology.matVIP) tcp/\(port), MAT, Maglev, three nodes (one server namespace: the MAC of s0), out of eth-n; 1 worker on CPU \(lbCPU); the servers hold the VIP on lo and answer over dsr-s") {
                try t.fulcrum([PeerTopology.bulkMATGroup(port: port, mac: t.macs["s0"]!)],
                              interfaces: ["eth-c", "eth-n"], flowTable: 1 << 20)
            },
            System(name: "fulcrum-offload", label: "Fulcrum NAT, offload on", role: "fulcrum",
                   configuration: "as Fulcrum NAT, with dataplane.offload: established (the XDP program forwards each connection after its handshake)") {
                try t.fulcrum(PeerTopology.natGroups(proto: IPProtocol.tcp, port: port, nodePort: port),
                              interfaces: ["eth-c", "eth-n"], flowTable: 1 << 20, offload: true)
            },
            System(name: "fulcrum-mat-offload", label: "Fulcrum MAT, offload on", role: "fulcrum",
                   configuration: "as Fulcrum MAT, with dataplane.offload: established") {
                try t.fulcrum([PeerTopology.bulkMATGroup(port: port, mac: t.macs["s0"]!)],
                              interfaces: ["eth-c", "eth-n"], flowTable: 1 << 20, offload: true)
            },
            Self.ipvs,
        ]
        if !missing.isEmpty {
            for i in systems.indices where systems[i].absent == nil {
                // HAProxy alone missing takes only its own row out; iperf3 missing, every row.
                if missing.contains("iperf3") || systems[i].name == "haproxy" {
                    systems[i].absent = ("unavailable", "\(missing.joined(separator: " and ")) not installed (make setup installs it)")
                }
            }
        }
        let parameter = "streams=\(Self.bulkStreams)"
        let acc = Accumulator()
        var failures: [String] = []
        expect(progress, systems, points: 1)
        // Once for the scenario: no system's set-up touches the hosts' veths (unlike the
        // LB's, whose NAPI threads each set-up's XDP programs make anew).
        if options.hostReceiveOnClientCPU { try t.pinHostReceiveWork() }
        defer { if options.hostReceiveOnClientCPU { t.restoreHostReceiveWork() } }
        for run in 1...options.runs {
            for s in selected(systems) {
                guard s.absent == nil else { acc.absent(s, parameter: parameter); continue }
                progress.say("bulk: \(s.name), run \(run)/\(options.runs)")
                let target = s.name == "direct" ? PeerTopology.nodes[0] : s.name.hasPrefix("fulcrum-mat") ? PeerTopology.matVIP : PeerTopology.vip
                let tearDown = try s.setUp()
                defer { tearDown() }
                if options.lbReceiveOnLBCPU { try t.pinLBReceiveWork() }
                let r = try iperf3(t, target: target, port: port, seconds: seconds, omit: omit)
                if let error = r.error { failures.append("\(s.name), run \(run): \(error)") }
                acc.add(s, parameter: parameter, run: r.run)
            }
        }
        scenario.results = acc.results
        let receiveNote = (options.lbReceiveOnLBCPU
            ? "The LB's veths' receive (NAPI: their XDP programs, Fulcrum's copy into its socket, the kernel's forwarding) runs in threads pinned to CPU \(lbCPU), as a NIC's interrupts on the LB's core would."
            : "The LB's veths' receive (their XDP programs, Fulcrum's copy into its socket) runs on the CPU that sent the frame: the client's CPU \(options.clientCPU) for what the client sends.")
            + (options.hostReceiveOnClientCPU
                ? " The client's and servers' veths' receive (c0, s0) runs in threads pinned to CPU \(options.clientCPU), with GRO on and no RPS hash, as their own NICs' would."
                : " The client's and servers' veths' receive (c0's and s0's XDP programs, veth's copy of each skb for them, and the RPS hash of an skb without one, which is each of Fulcrum's) runs on CPU \(lbCPU) for what the LB sends them (--no-host-receive-on-client-cpu).")
        scenario.notes = [
            workersNote(),
            "iperf3 \(Self.iperf3Version()): `iperf3 -c TARGET -p \(port) -P \(Self.bulkStreams) -t \(seconds) -O \(omit) -J` in the client's namespace on CPU \(options.clientCPU); the value is end.sum_received.bits_per_second (what the server received, the first \(omit) s omitted as slow start), offered is end.sum_sent",
            "the servers: one `iperf3 -s -1` per run in the servers' namespace on CPU \(options.clientCPU), listening on every address: the LB spreads a test's control connection and its \(Self.bulkStreams) streams over the three nodes, and one server process must take them all (iperf3 joins streams to a test by its cookie)",
            "LB CPU: the busy time of CPU \(lbCPU) (user, nice, system, irq, softirq, steal in /proc/stat) over the middle of each measurement, whoever spent it: the Fulcrum worker, HAProxy, or nftables' softirq forwarding. \(receiveNote) Anything else scheduled there counts too. LB CPU % per Gbit/s is busy % / Gbit/s. LB CPU % before is the same CPU's busy time for \(options.quick ? "0.1" : "0.3") s just before the client starts, the system on the LB and no traffic: well above the idle system's own (Fulcrum's worker sleeps in poll when idle) means something else was running there, and the row's figures are not the system's alone",
            "1500-byte MTU on every veth; checksums finished by the senders (ethtool -K c0/s0 tx off, as a NIC would), so no TSO from the hosts, and GRO is off on the LB's veths (their default; on the hosts' it is on\(options.hostReceiveOnClientCPU ? "" : " only with the hosts' receive on their CPU")): every row, kernel or not, forwards frames of at most 1514 bytes one by one",
            "the client, the server and both their TCP stacks share CPU \(options.clientCPU): the direct row is what that CPU allows (routed by the LB's kernel at little cost to CPU \(lbCPU)); a row near it with CPU \(lbCPU) far from busy is bounded by the client, not by the system on the LB",
            "MAT: the LB sees only the client's direction (the data); the servers' ACKs return to the client over dsr-s ── dsr-c (source policy routing for the MAT VIP in the servers' namespace), so they cost the LB nothing",
        ]
        scenario.notes += costNotes(acc.results, key: "lb_cpu_percent_per_gbps", what: "LB CPU per Gbit/s", against: ["nftables"])
        scenario.notes += failures.map { "failed: \($0)" }
        return scenario
    }

    static var haveIPerf3: Bool { access("/usr/bin/iperf3", X_OK) == 0 }

    static func iperf3Version() -> String {
        guard let (_, out) = try? ChildProcess.run(["/usr/bin/iperf3", "--version"]) else { return "?" }
        return out.split(separator: " ").dropFirst().first.map(String.init) ?? "?"
    }

    struct BulkRun {
        var run: BenchReport.Run
        var error: String?
    }

    /// One measurement: a one-off iperf3 server in the servers' namespace, the client
    /// to `target`, the LB CPU sampled in between. Every process started here ends here:
    /// the client by itself or by `timeout`, the server after its one test or by SIGKILL.
    func iperf3(_ t: PeerTopology, target: IPAddress, port: UInt16, seconds: Int, omit: Int) throws -> BulkRun {
        let total = seconds + omit
        let log = "/tmp/\(t.prefix)-iperf3-server.log"
        // --rcv-timeout: a server whose client went silent gives up (and, being -1, exits).
        let server = try ChildProcess([
            "/usr/sbin/ip", "netns", "exec", t.sv, "taskset", "-c", "\(options.clientCPU)", "/usr/bin/iperf3", "-s", "-1",
            "-p", "\(port)", "--rcv-timeout", "10000",
        ], outputPath: log)
        defer {
            let deadline = monotonic() + 2
            while server.isRunning && monotonic() < deadline { usleep(20_000) }
            if server.isRunning {
                server.signal(SIGKILL)
                server.wait()
            }
            unlink(log)
        }
        var listening = false
        let deadline = monotonic() + 5
        while monotonic() < deadline && server.isRunning {
            if let (_, out) = try? ChildProcess.run(["/usr/sbin/ip", "netns", "exec", t.sv, "ss", "-Htln", "sport", "= :\(port)"]),
               !out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                listening = true
                break
            }
            usleep(20_000)
        }
        guard listening else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw Testbed.Failure(description: "iperf3 -s did not listen on :\(port): \(text)")
        }
        // The LB CPU before any traffic, with the system on the LB: what else runs there
        // (another process on the machine shows here, and in every row's busy time).
        let idleBefore = Self.cpuTimes(options.lbCPU)
        usleep(options.quick ? 100_000 : 300_000)
        let idleAfter = Self.cpuTimes(options.lbCPU)
        let client = try ChildProcess([
            "/usr/sbin/ip", "netns", "exec", t.cl, "timeout", "-k", "2", "\(total + 15)", "taskset", "-c", "\(options.clientCPU)",
            "/usr/bin/iperf3", "-c", "\(target)", "-p", "\(port)", "-P", "\(Self.bulkStreams)", "-t", "\(seconds)", "-O", "\(omit)",
            "-J", "--connect-timeout", "3000",
        ], capture: true)
        // The LB CPU over the middle of the measured seconds (after the omitted ones).
        let busy = lbBusyPercent(skipping: Double(omit), of: Double(total))
        let output = client.readAll()
        let status = client.wait()
        var r = Self.parseIPerf3(output, status: status, seconds: Double(seconds), lbBusyPercent: busy)
        r.run.extra["lb_cpu_idle_percent"] = Self.busyPercent(idleBefore, idleAfter)
        return r
    }

    /// iperf3's JSON: end.sum_received / end.sum_sent bits_per_second, sum_sent.retransmits;
    /// "error" when it failed (then the run counts 0 Gbit/s and one error).
    static func parseIPerf3(_ output: String, status: Int32, seconds: Double, lbBusyPercent: Double?) -> BulkRun {
        var error: String?
        var received = 0.0, sent = 0.0, retransmits: Double?
        if let start = output.firstIndex(of: "{"),
           let json = try? JSONSerialization.jsonObject(with: Data(output[start...].utf8)) as? [String: Any] {
            if let e = json["error"] as? String { error = "iperf3: \(e)" }
            let end = json["end"] as? [String: Any]
            let sumReceived = end?["sum_received"] as? [String: Any]
            let sumSent = end?["sum_sent"] as? [String: Any]
            received = (sumReceived?["bits_per_second"] as? Double) ?? 0
            sent = (sumSent?["bits_per_second"] as? Double) ?? 0
            retransmits = (sumSent?["retransmits"] as? Double)
        } else {
            error = "iperf3 printed no JSON (exit \(status)): \(output.prefix(300))"
        }
        if error == nil && status != 0 { error = "iperf3 exited \(status)" }
        if error == nil && received <= 0 { error = "iperf3 reported nothing received" }
        let gbps = error == nil ? received / 1e9 : 0
        var extra: [String: Double] = [:]
        if let lbBusyPercent {
            extra["lb_cpu_busy_percent"] = lbBusyPercent
            if gbps > 0 { extra["lb_cpu_percent_per_gbps"] = lbBusyPercent / gbps }
        }
        if let retransmits { extra["retransmits"] = retransmits }
        return BulkRun(run: BenchReport.Run(value: gbps, offered: sent / 1e9, delivered: gbps, dropped: nil,
                                            errors: error == nil ? 0 : 1, seconds: seconds, extra: extra),
                       error: error)
    }
}
