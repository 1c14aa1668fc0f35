import CFulcrumBPF
import FulcrumBPF
import FulcrumCore
import FulcrumDataplane
import FulcrumTestSupport
import Foundation
import Logging
import FulcrumSystem

/// The three namespaces of `Bench/testbed/peers-bench.sh` (client, load balancer,
/// servers), the benchmark's BPF programs in them, and how each system under test is put
/// on the load balancer and taken off again, so that every system runs on the same
/// topology and cores, one at a time.
final class PeerTopology: @unchecked Sendable {
    let prefix: String
    let script: String
    let root: String
    let clientCPU: Int
    let lbCPU: Int
    let macs: [String: MACAddress]
    let lbIfindex: (client: Int32, nodes: Int32)
    let object: BPFObject
    let counts: BPFMap
    let config: BPFMap
    let generate: Int32
    let clientIfindex: Int32
    var links: [XDPLink] = []
    /// The Fulcrum data plane while one is on the LB.
    var dataplane: Dataplane?
    /// The flows the next measurement offers, when known: what Fulcrum's offload table
    /// is sized for (else its flow table's size).
    var offloadFlows: Int?

    static let vip = IPAddress("198.18.1.20")!
    static let matVIP = IPAddress("198.18.1.10")!
    static let client = IPAddress("198.18.0.2")!
    static let nodes = ["198.18.2.11", "198.18.2.12", "198.18.2.13"].map { IPAddress($0)! }

    var cl: String { prefix + "-cl" }
    var lb: String { prefix + "-lb" }
    var sv: String { prefix + "-sv" }

    init(root: String, clientCPU: Int, lbCPU: Int) throws {
        self.root = root
        self.clientCPU = clientCPU
        self.lbCPU = lbCPU
        prefix = "flcpeer\(getpid())"
        script = root + "/Bench/testbed/peers-bench.sh"
        ForwardingBenchmark.removeLeftovers(script: script, prefix: "flcpeer")
        let (status, output) = try ChildProcess.run([script, "up", prefix, "\(lbCPU)", "\(clientCPU)"])
        guard status == 0 else {
            _ = try? ChildProcess.run([script, "down", prefix])
            throw Testbed.Failure(description: "peers-bench.sh up failed: \(output)")
        }
        let macs = ForwardingBenchmark.macs(in: output)
        self.macs = macs
        guard macs.count == 4 else {
            _ = try? ChildProcess.run([script, "down", prefix])
            throw Testbed.Failure(description: "no MACs from peers-bench.sh: \(output)")
        }
        let prefix = self.prefix
        do {
            object = try BPFObject(path: BPFObject.locate(named: "bench.bpf.o", sourceRoot: root))
            counts = try object.map("bench_counts")
            config = try object.map("bench_config")
            generate = try object.programFD("bench_generate")
            let object = self.object
            // The client counts what reaches it; the servers answer UDP to port 9.
            let sink = try Namespace.run(prefix + "-cl") { () -> (XDPLink, Int32) in
                (try XDPLink(programFD: try object.programFD("bench_sink"), interface: "c0", allowGenericFallback: false),
                 try InterfaceInfo.index(of: "c0"))
            }
            clientIfindex = sink.1
            links.append(sink.0)
            links.append(try Namespace.run(prefix + "-sv") {
                try XDPLink(programFD: try object.programFD("bench_reply"), interface: "s0", allowGenericFallback: false)
            })
            lbIfindex = try Namespace.run(prefix + "-lb") { (try InterfaceInfo.index(of: "eth-c"), try InterfaceInfo.index(of: "eth-n")) }
        } catch {
            _ = try? ChildProcess.run([script, "down", prefix])
            throw error
        }
        // The LB knows the client's and the nodes' MACs before anything is measured.
        for target in [Self.client] + Self.nodes {
            _ = try? ChildProcess.run(["/usr/sbin/ip", "netns", "exec", lb, "ping", "-c1", "-W1", "\(target)"])
        }
    }

    // MARK: - The LB's own latency (bench_stamp and bench_reply in bench.bpf.c)

    /// bench_stamp on the client's veth, egress (tc, clsact): the time each numbered
    /// request leaves the client. Removed with the client's namespace, or by
    /// `stopLatencyStamps`.
    func startLatencyStamps() throws {
        let fd = try object.programFD("bench_stamp")
        try Namespace.run(cl) {
            var hook = bpf_tc_hook()
            hook.sz = Self.tcHookSize
            hook.ifindex = try InterfaceInfo.index(of: "c0")
            hook.attach_point = BPF_TC_EGRESS
            let created = bpf_tc_hook_create(&hook)
            guard created == 0 || created == -EEXIST else { throw SystemError("clsact on c0", errno: -created) }
            var opts = bpf_tc_opts()
            opts.sz = MemoryLayout<bpf_tc_opts>.offset(of: \.priority)! + 4
            opts.prog_fd = fd
            let r = bpf_tc_attach(&hook, &opts)
            guard r == 0 else { throw SystemError("attach bench_stamp to c0 (tc egress)", errno: -r) }
        }
    }

    /// libbpf's options are sized up to their last field: what follows it must be zero,
    /// and Swift does not promise to zero a struct's tail padding.
    static let tcHookSize = MemoryLayout<bpf_tc_hook>.offset(of: \.parent)! + 4

    func stopLatencyStamps() {
        _ = try? Namespace.run(cl) {
            var hook = bpf_tc_hook()
            hook.sz = Self.tcHookSize
            hook.ifindex = try InterfaceInfo.index(of: "c0")
            hook.attach_point = bpf_tc_attach_point(rawValue: BPF_TC_INGRESS.rawValue | BPF_TC_EGRESS.rawValue)
            _ = bpf_tc_hook_destroy(&hook)
        }
    }

    /// bench_lat_hist's buckets: 1 µs each below 2,048 µs, then 32 µs each.
    static let latencyLinearBuckets = 2048
    static let latencyWideBucket = 32
    static let latencyBuckets = latencyLinearBuckets + 1024

    func resetLatencyHistogram() throws {
        let map = try object.map("bench_lat_hist")
        for i in 0..<Self.latencyBuckets { try map.update(UInt32(i), UInt64(0)) }
    }

    /// The one-way times recorded since the last reset, as a histogram: requests per
    /// bucket.
    func latencyHistogram() throws -> [UInt64] {
        let map = try object.map("bench_lat_hist")
        return (0..<Self.latencyBuckets).map { map.lookup(UInt32($0), as: UInt64.self) ?? 0 }
    }

    /// The `percentile` (0…100) of a histogram from `latencyHistogram`, in µs (a bucket's
    /// middle), nil when empty.
    static func latencyPercentile(_ buckets: [UInt64], _ percentile: Double) -> Double? {
        let total = buckets.reduce(0, +)
        guard total > 0 else { return nil }
        let rank = max(1, UInt64((Double(total) * percentile / 100).rounded(.up)))
        var seen: UInt64 = 0
        for (i, n) in buckets.enumerated() {
            seen += n
            if seen >= rank {
                return i < latencyLinearBuckets ? Double(i) + 0.5 : Double(latencyLinearBuckets + (i - latencyLinearBuckets) * latencyWideBucket + latencyWideBucket / 2)
            }
        }
        return nil
    }

    /// The LB's veths' receive work (NAPI: the XDP program, the copy into an AF_XDP
    /// socket, and for the kernel's rows GRO and forwarding) in a kernel thread of each,
    /// pinned to the LB's CPU, as a NIC queue's interrupt on the LB's core would run it.
    /// Without this, veth runs a frame's receive on the CPU that sent it, so the client's
    /// CPU carries the LB's receive work and bounds every row. A system's set-up attaches
    /// XDP programs, which makes new NAPI instances (new threads), so this is called
    /// after each.
    func pinLBReceiveWork() throws {
        try pinNAPIThreads([(lb, "eth-c"), (lb, "eth-n")], to: lbCPU)
    }

    /// The hosts' side of the same (bulk, connections): the receive work of the client's and the
    /// servers' veths (c0, s0: bench_sink and bench_reply, the copy veth makes of an skb
    /// before an XDP program sees it, and the way up to their TCP stacks) in threads
    /// pinned to the client's CPU, as the hosts' own NICs would run it, instead of on
    /// the LB's CPU, which sent the frames, and with GRO on, as a host's NIC has it (the
    /// LB's veths keep it off, so that every row forwards frames one by one). RPS, which
    /// the topology sets on c0 and s0 to the client's CPU, is cleared on them: the
    /// threads run there already, and RPS hashes every skb that carries no hash, as a
    /// fresh one from an AF_XDP socket does not (a forwarded one keeps its sender's),
    /// which charged that hash to Fulcrum's rows alone. Once per scenario: c0's and s0's
    /// XDP programs are attached with the topology, so their threads stay.
    func pinHostReceiveWork() throws {
        try pinNAPIThreads([(cl, "c0"), (sv, "s0")], to: clientCPU, clearRPS: true)
        for (namespace, dev) in [(cl, "c0"), (sv, "s0")] {
            let (status, output) = try ChildProcess.run(["/usr/sbin/ip", "netns", "exec", namespace, "ethtool", "-K", dev, "gro", "on"])
            guard status == 0 else { throw Testbed.Failure(description: "GRO on \(dev): \(output)") }
        }
    }

    /// Undoes `pinHostReceiveWork` (NAPI in softirq again, GRO off, RPS to the client's CPU), for
    /// whatever runs after bulk or connections on the same topology; what it could not undo is said.
    func restoreHostReceiveWork() {
        let mask = String(1 << clientCPU, radix: 16)
        for (namespace, dev) in [(cl, "c0"), (sv, "s0")] {
            let result = try? ChildProcess.run(["/usr/sbin/ip", "netns", "exec", namespace, "sh", "-c",
                                                "echo 0 > /sys/class/net/\(dev)/threaded && echo \(mask) > /sys/class/net/\(dev)/queues/rx-0/rps_cpus && ethtool -K \(dev) gro off"])
            if result?.0 != 0 { print("could not put \(dev)'s receive back in softirq with RPS: \(result?.1 ?? "not run")") }
        }
    }

    /// Threaded NAPI on each device, and its thread pinned to `cpu`. The threads are
    /// found by name (napi/DEVICE-…) in every namespace: the benchmark runs alone.
    private func pinNAPIThreads(_ devices: [(namespace: String, device: String)], to cpu: Int, clearRPS: Bool = false) throws {
        for (namespace, dev) in devices {
            let rps = clearRPS ? " && echo 0 > /sys/class/net/\(dev)/queues/rx-0/rps_cpus" : ""
            let (status, output) = try ChildProcess.run(["/usr/sbin/ip", "netns", "exec", namespace, "sh", "-c",
                                                         "echo 1 > /sys/class/net/\(dev)/threaded\(rps)"])
            guard status == 0 else { throw Testbed.Failure(description: "threaded NAPI on \(dev): \(output)") }
        }
        let names = devices.map(\.device)
        var pinned: Set<String> = []
        let procs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for pid in procs.compactMap(Int32.init) {
            guard let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
                  let dev = names.first(where: { comm.hasPrefix("napi/\($0)-") }) else { continue }
            if (try? ChildProcess.run(["/usr/bin/taskset", "-pc", "\(cpu)", "\(pid)"]))?.0 == 0 { pinned.insert(dev) }
        }
        guard pinned.count == names.count else {
            throw Testbed.Failure(description: "NAPI threads pinned only for \(pinned.sorted()) of \(names) (a veth has NAPI only with an XDP program)")
        }
    }

    func down() {
        for l in links { l.detach() }
        links.removeAll()
        _ = try? ChildProcess.run([script, "down", prefix])
    }

    // MARK: - Traffic

    var generated: UInt64 { counts.sumPerCPU(UInt32(0)) }
    var sunk: UInt64 { counts.sumPerCPU(UInt32(1)) }
    var answered: UInt64 { counts.sumPerCPU(UInt32(2)) }

    /// 60-byte UDP frames from the client to `vip`:9, through the LB's client side.
    func frame(to vip: IPAddress) -> [UInt8] {
        PacketBuilder.udpFrame(source: Self.client, destination: vip, sourcePort: 1024, destinationPort: 9,
                               payload: [UInt8](repeating: 0x5A, count: 18), zeroChecksum: true,
                               ethernetDestination: macs["eth-c"]!, ethernetSource: macs["c0"]!)
    }

    struct Offered {
        var offered: UInt64
        var delivered: UInt64
        var answered: UInt64
        var seconds: Double
    }

    /// Live frames out of the client for `seconds`: `flows` flows, or every frame a new one.
    func offer(_ frame: [UInt8], flows: Int, newFlows: Bool = false, seconds: Double) throws -> Offered {
        try Self.setTemplate(object, frame)
        try config.update(UInt32(0), UInt32(flows))
        try config.update(UInt32(1), UInt32(newFlows ? 1 : 0))
        let (g0, s0, a0) = (generated, sunk, answered)
        let program = generate, ifindex = clientIfindex
        let elapsed = try Namespace.run(cl, cpu: clientCPU) {
            try ForwardingBenchmark.transmit(frame, program: program, ifindex: ifindex, seconds: seconds)
        }
        usleep(100_000)  // the last frames in flight
        return Offered(offered: generated - g0, delivered: sunk - s0, answered: answered - a0, seconds: elapsed)
    }

    /// What the XDP programs on the LB's interfaces cost per run (the kernel's run-time
    /// statistics, `ProgramStatistics`), over a pass of its own: the statistics add two
    /// clock reads to every run of every program, so they are never on while a published
    /// figure is measured. Nil when no program is attached or nothing ran.
    func programCost(_ frame: [UInt8], flows: Int, newFlows: Bool = false, seconds: Double) throws -> Double? {
        let ids = try Namespace.run(lb) {
            try ["eth-c", "eth-n"].compactMap { try ProgramStatistics.attachedProgram(interface: $0) }
        }
        guard !ids.isEmpty, let stats = try? ProgramStatistics.enable() else { return nil }
        defer { stats.close() }
        func total() throws -> ProgramStatistics.Sample {
            try Set(ids).reduce(ProgramStatistics.Sample()) { $0 + (try ProgramStatistics.sample(program: $1)) }
        }
        let before = try total()
        _ = try offer(frame, flows: flows, newFlows: newFlows, seconds: seconds)
        return (try total() - before).perRun
    }

    // MARK: - Putting systems on the LB

    /// Attaches a program of the benchmark object to LB interfaces; returns the links.
    func attachBench(_ program: String, to interfaces: [String]) throws -> [XDPLink] {
        let object = self.object
        return try Namespace.run(lb) {
            try interfaces.map { try XDPLink(programFD: try object.programFD(program), interface: $0, allowGenericFallback: false) }
        }
    }

    /// xdp_pass on both LB interfaces: the kernel does the work (nftables, HAProxy), and
    /// veth still takes frames its peer sends with XDP_TX.
    func attachPass() throws -> [XDPLink] {
        let path = try BPFObject.locate(named: "xdp_pass.bpf.o", sourceRoot: root)
        return try Namespace.run(lb) {
            let object = try BPFObject(path: path)
            let links = try ["eth-c", "eth-n"].map {
                try XDPLink(programFD: try object.programFD("xdp_pass"), interface: $0, allowGenericFallback: false)
            }
            withExtendedLifetime(object) {}
            return links
        }
    }

    /// bench_nat's configuration: the VIP, the three nodes, ports, interfaces and MACs.
    func configureNATCeiling() throws {
        var bytes = [UInt8](repeating: 0, count: 60)
        func put32(_ v: UInt32, at o: Int) { withUnsafeBytes(of: v) { for i in 0..<4 { bytes[o + i] = $0[i] } } }
        func ip(_ a: IPAddress) -> UInt32 { UInt32(a.ipv4).bigEndian }
        put32(ip(Self.vip), at: 0)
        for (i, n) in Self.nodes.enumerated() { put32(ip(n), at: 4 + 4 * i) }
        withUnsafeBytes(of: UInt16(9).bigEndian) { bytes[16] = $0[0]; bytes[17] = $0[1] }
        withUnsafeBytes(of: UInt16(9).bigEndian) { bytes[18] = $0[0]; bytes[19] = $0[1] }
        put32(UInt32(bitPattern: lbIfindex.client), at: 20)
        put32(UInt32(bitPattern: lbIfindex.nodes), at: 24)
        for (name, offset) in [("c0", 28), ("eth-c", 36), ("eth-n", 44), ("s0", 52)] {
            let mac = macs[name]!.value
            for i in 0..<6 { bytes[offset + i] = UInt8(truncatingIfNeeded: mac >> (40 - 8 * UInt64(i))) }
        }
        var value: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                    UInt32, UInt32) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: bytes) }
        try object.map("bench_nat_config").update(UInt32(0), value)
    }

    static let nftablesRules = """
        table ip fulcrum_bench {
            chain prerouting {
                type nat hook prerouting priority dstnat; policy accept;
                ip daddr 198.18.1.20 udp dport 9 dnat to numgen inc mod 3 map { 0 : 198.18.2.11, 1 : 198.18.2.12, 2 : 198.18.2.13 }
                ip daddr 198.18.1.20 tcp dport 80 dnat to numgen inc mod 3 map { 0 : 198.18.2.11, 1 : 198.18.2.12, 2 : 198.18.2.13 } : 8080
                ip daddr 198.18.1.20 tcp dport 5201 dnat to numgen inc mod 3 map { 0 : 198.18.2.11, 1 : 198.18.2.12, 2 : 198.18.2.13 }
            }
        }
        """

    func nftables(_ on: Bool) throws {
        if on {
            let path = "/tmp/\(prefix)-nftables.conf"
            try (Self.nftablesRules + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            let (status, output) = try ChildProcess.run(["/usr/sbin/ip", "netns", "exec", lb, "nft", "-f", path])
            guard status == 0 else { throw Testbed.Failure(description: "nft -f: \(output)") }
        } else {
            _ = try ChildProcess.run(["/usr/sbin/ip", "netns", "exec", lb, "nft", "delete", "table", "ip", "fulcrum_bench"])
        }
    }

    /// nf_conntrack_count in the LB's namespace.
    var conntrackCount: Double? {
        guard let (status, out) = try? ChildProcess.run(["/usr/sbin/ip", "netns", "exec", lb, "sysctl", "-n",
                                                         "net.netfilter.nf_conntrack_count"]), status == 0 else { return nil }
        return Double(out.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// HAProxy as the LB in TCP mode: VIP:`port` to the three nodes' `nodePort`. `idle` is
    /// its client and server timeout (bulk's iperf3 control connection idles through a test).
    static func haproxyConfig(port: UInt16 = 80, nodePort: UInt16 = 8080, idle: String = "10s") -> String {
        """
        global
            nbthread 1
            maxconn 4096
        defaults
            mode tcp
            timeout connect 2s
            timeout client \(idle)
            timeout server \(idle)
        frontend vip
            bind 198.18.1.20:\(port)
            default_backend nodes
        backend nodes
            balance roundrobin
            server n1 198.18.2.11:\(nodePort)
            server n2 198.18.2.12:\(nodePort)
            server n3 198.18.2.13:\(nodePort)
        """
    }

    /// The real servers: HAProxy answering HTTP 200 on :8080 of the nodes' addresses, on
    /// the client side's CPU (it is load, not the system under test).
    static func serversConfig() -> String {
        """
        global
            nbthread 1
            maxconn 4096
        defaults
            mode http
            timeout client 10s
            timeout connect 2s
            timeout server 10s
            timeout http-keep-alive 10s
        frontend web
            bind :8080
            http-request return status 200 content-type text/plain string "fulcrum-bench"
        """
    }

    /// Starts HAProxy with `configuration` in namespace `ns`, on CPU `cpu` only; returns
    /// once it listens. (By taskset: HAProxy 2.6 with `nbthread 1` leaves its thread on
    /// every CPU despite a `cpu-map 1/1` line, so the servers ran on the LB's CPU too.)
    func haproxy(_ configuration: String, in ns: String, name: String, listening address: String, cpu: Int) throws -> ChildProcess {
        let path = "/tmp/\(prefix)-\(name).cfg"
        try (configuration + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let child = try ChildProcess(["/usr/sbin/ip", "netns", "exec", ns, "taskset", "-c", "\(cpu)", "haproxy", "-db", "-f", path],
                                     outputPath: "/tmp/\(prefix)-\(name).log")
        let deadline = monotonic() + 5
        while monotonic() < deadline {
            if let (_, out) = try? ChildProcess.run(["/usr/sbin/ip", "netns", "exec", ns, "ss", "-Htln"]),
               out.contains(address) { return child }
            guard child.isRunning else { break }
            usleep(20_000)
        }
        child.signal(SIGKILL)
        _ = child.wait()
        let log = (try? String(contentsOfFile: "/tmp/\(prefix)-\(name).log", encoding: .utf8)) ?? ""
        throw Testbed.Failure(description: "haproxy (\(name)) did not listen on \(address): \(log)")
    }

    /// A Fulcrum data plane in the LB's namespace: MAT one-armed on eth-c, or NAT from eth-c
    /// to the nodes on eth-n; one worker on the LB's CPU. Returns what takes it off again.
    /// `offload`: established flows forwarded by the XDP program (`dataplane.offload`);
    /// off unless a row asks, so that rows without it measure the worker's path.
    func fulcrum(_ groups: [GroupSpec], interfaces: [String], flowTable: Int, offload: Bool = false) throws -> () -> Void {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        // Entries for the flows offered, at most half full (a NAT flow takes two), from the
        // default 2^16 up to 2^20 (128 MiB), as an operator sizes dataplane.offload_entries:
        // a table far larger than its flows spreads them over more pages, which the
        // program pays for. (`offloadFlows` is for this set-up only.)
        let flows = offloadFlows ?? flowTable
        offloadFlows = nil
        var entries = 1 << 16
        while entries < min(4 * flows, 1 << 20) { entries <<= 1 }
        // Another size (a power of two), to see what the table's size costs the program.
        if let n = ProcessInfo.processInfo.environment["FULCRUM_BENCH_OFFLOAD_ENTRIES"].flatMap(Int.init), n > 0, n & (n - 1) == 0 {
            entries = n
        }
        var options = DataplaneOptions(interfaces: interfaces, queues: 1, cores: [lbCPU], flowTableSize: flowTable,
                                       offload: offload, offloadEntries: entries)
        // The worker's spin before sleeping (dataplane.idle_spin_us), to compare settings.
        if let spin = ProcessInfo.processInfo.environment["FULCRUM_BENCH_IDLE_SPIN_US"].flatMap(Int.init) {
            options.idleSpinMicroseconds = spin
        }
        let d = try Namespace.run(lb) { () -> Dataplane in
            let d = try Dataplane(options: options, groups: groups, routes: [], logger: logger)
            try d.start()
            d.refreshRouting()
            try d.setActive(true)
            return d
        }
        dataplane = d
        return {
            if ProcessInfo.processInfo.environment["FULCRUM_BENCH_DEBUG"] != nil {
                let snap = d.snapshot()
                FileHandle.standardError.write(Data("xdp \(snap.xdp.filter { $0.value > 0 }.map { "\($0.key.label)=\($0.value)" }.sorted()) workers \(snap.global.filter { $0.value > 0 }.map { "\($0.key.label)=\($0.value)" }.sorted()) sockets \(snap.sockets.filter { $0.value > 0 }.sorted { $0.key < $1.key }) offloaded flows \(snap.offloadedFlows)\n".utf8))
            }
            d.stop()
            self.dataplane = nil
        }
    }

    /// bench_generate's header template (bench.bpf.c): the frame's first 42 bytes.
    static func setTemplate(_ object: BPFObject, _ frame: [UInt8]) throws {
        var value = [UInt8](repeating: 0, count: 64)
        for i in 0..<min(42, frame.count) { value[i] = frame[i] }
        value[63] = 1
        let map = try object.map("bench_template")
        try value.withUnsafeBytes { v in
            _ = try SystemCall.libbpf("update map bench_template") {
                var key: UInt32 = 0
                return bpf_map_update_elem(map.fd, &key, v.baseAddress, UInt64(BPF_ANY))
            }
        }
    }

    /// bulk's MAT group: the MAT VIP's TCP port to the three nodes, whose one namespace
    /// has one MAC (s0's), out of eth-n (interface 1). The servers hold the VIP on lo and
    /// answer the client over the dsr link (Bench/testbed/peers-bench.sh).
    static func bulkMATGroup(port: UInt16, mac: MACAddress) -> GroupSpec {
        GroupSpec(name: "bench-bulk-mat", vip: matVIP, proto: IPProtocol.tcp, ports: [port], method: .mat, scheduler: .maglev,
                  nodes: nodes.map { NodeSpec(address: $0, weight: 1, mac: mac) }, interface: 1)
    }

    static func natGroups(proto: UInt8, port: UInt16, nodePort: UInt16) -> [GroupSpec] {
        [GroupSpec(name: "bench-nat", vip: vip, proto: proto, ports: [port], method: .nat, scheduler: .maglev,
                   nodes: nodes.map { NodeSpec(address: $0, port: nodePort, weight: 1) }, interface: 1)]
    }
}

func monotonic() -> Double { monotonicSeconds() }
