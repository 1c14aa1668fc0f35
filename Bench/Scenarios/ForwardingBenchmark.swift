import CFulcrumBPF
import Foundation
import FulcrumBPF
import FulcrumCore
import FulcrumDataplane
import FulcrumTestSupport
import Logging
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// One worker forwarding 60-byte UDP frames on a veth pair, beside the in-kernel XDP_TX
/// ceiling measured in the same run (Bench/testbed/forward-bench.sh draws the topology).
public struct ForwardingBenchmark {
    public var seconds: Double
    public var flows: Int
    public var generatorCPU: Int
    public var workerCPU: Int
    public var root: String

    public init(seconds: Double = 3, flows: Int = 1024, generatorCPU: Int = 0, workerCPU: Int = 1, root: String) {
        self.seconds = seconds
        self.flows = flows
        self.generatorCPU = generatorCPU
        self.workerCPU = workerCPU
        self.root = root
    }

    public struct Row {
        public var name: String
        public var offeredMpps: Double
        public var forwardedMpps: Double
        public var socketDrops: UInt64
        public var mallocsPerPacket: Double?
        public var rssMiB: Double?
    }

    /// One burst size's figures (`runBursts`).
    public struct BurstRow {
        public var burst: Int
        /// Bursts offered a second, and frames forwarded back to the generator a second.
        public var burstsPerSecond: Double
        public var forwardedPerSecond: Double
        /// The worker thread's CPU time (its schedstat: on-CPU nanoseconds, the kernel's
        /// work inside its syscalls included) per frame forwarded.
        public var workerNanosecondsPerFrame: Double
        /// The times the worker thread was put on its CPU (schedstat's timeslices: each
        /// wake-up from poll, and any preemption) per burst.
        public var runsPerBurst: Double
    }

    /// The generator: live frames out of g0, and the sink counting what comes back.
    final class Generator: @unchecked Sendable {
        let object: BPFObject
        let generate: Int32
        let counts: BPFMap
        var sink: XDPLink?
        let ifindex: Int32

        init(root: String, flows: Int) throws {
            object = try BPFObject(path: BPFObject.locate(named: "bench.bpf.o", sourceRoot: root))
            generate = try object.programFD("bench_generate")
            counts = try object.map("bench_counts")
            try object.map("bench_config").update(UInt32(0), UInt32(flows))
            ifindex = try InterfaceInfo.index(of: "g0")
            sink = try XDPLink(programFD: try object.programFD("bench_sink"), interface: "g0", allowGenericFallback: false)
        }

        var generated: UInt64 { counts.sumPerCPU(UInt32(0)) }
        var sunk: UInt64 { counts.sumPerCPU(UInt32(1)) }

        /// Transmits `frame` for `seconds`; returns frames offered and the mallocs made by
        /// the whole process meanwhile (the window holds only this loop and the worker).
        func run(frame: [UInt8], seconds: Double) throws -> (offered: UInt64, mallocs: Int) {
            let start = generated
            var result: Result<Double, Error> = .success(0)
            let mallocs = AllocationCounter.count {
                result = Result { try ForwardingBenchmark.transmit(frame, program: generate, ifindex: ifindex, seconds: seconds) }
            }
            _ = try result.get()
            return (generated - start, mallocs)
        }
    }

    /// Bursts of `burst` copies of `frame`, with a `gap` µs sleep after each, for `seconds`, sent on an
    /// AF_PACKET socket out of `ifindex` one after the other (a few µs apart, as the
    /// segments of a TCP window arrive); returns the bursts sent. Not BPF_PROG_TEST_RUN
    /// live frames: there a call of more than one frame cost about 26 ms here, which
    /// would pace every burst size but one to some 37 a second.
    static func transmitBursts(_ frame: [UInt8], ifindex: Int32, burst: Int, gap: Int, seconds: Double) throws -> Int {
        let socket = try PacketSocket()
        let deadline = monotonic() + seconds
        var bursts = 0
        try frame.withUnsafeBytes { bytes in
            while monotonic() < deadline {
                for _ in 0..<burst { _ = try socket.send(bytes, ifindex: ifindex) }
                bursts += 1
                usleep(UInt32(gap))
            }
        }
        return bursts
    }

    /// Runs the generator program over `frame` with BPF_PROG_TEST_RUN live frames out of
    /// `ifindex` for `seconds`, from the calling thread; returns the seconds it took.
    /// 200,000 frames a call: each call sets up the kernel's page pool for its frames, and
    /// at 50,000 that set-up halved what the generator could offer.
    static func transmit(_ frame: [UInt8], program: Int32, ifindex: Int32, seconds: Double) throws -> Double {
        let start = monotonic()
        let deadline = start + seconds
        var failure: Int32 = 0
        frame.withUnsafeBytes { bytes in
            while monotonic() < deadline {
                let r = fulcrum_prog_run_live_frames(program, bytes.baseAddress, UInt32(bytes.count), UInt32(ifindex), 200_000, 64)
                if r < 0 { failure = r; break }
            }
        }
        if failure < 0 { throw SystemError("live frames", errno: -failure) }
        return monotonic() - start
    }

    /// The gen/lb veth pair of `forward-bench.sh`, up for the life of the value: its
    /// namespaces' prefix and the two ends' MACs. `down()` removes it.
    struct Pair {
        let prefix: String
        let script: String
        let generatorMAC: MACAddress
        let lbMAC: MACAddress

        init(root: String) throws {
            prefix = "flcbench\(getpid())"
            script = root + "/Bench/testbed/forward-bench.sh"
            ForwardingBenchmark.removeLeftovers(script: script)
            let (status, output) = try ChildProcess.run([script, "up", prefix])
            guard status == 0 else {
                _ = try? ChildProcess.run([script, "down", prefix])
                throw Testbed.Failure(description: "forward-bench.sh up failed: \(output)")
            }
            let macs = ForwardingBenchmark.macs(in: output)
            guard let g = macs["g0"], let lb = macs["eth0"] else {
                _ = try? ChildProcess.run([script, "down", prefix])
                throw Testbed.Failure(description: "no MACs from forward-bench.sh: \(output)")
            }
            generatorMAC = g
            lbMAC = lb
        }

        func down() { _ = try? ChildProcess.run([script, "down", prefix]) }
    }

    /// "IFNAME MAC" lines, as the topology scripts print them.
    static func macs(in output: String) -> [String: MACAddress] {
        var macs: [String: MACAddress] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let mac = MACAddress(parts[1]) { macs[String(parts[0])] = mac }
        }
        return macs
    }

    /// Namespaces `<prefix><pid>-*` of earlier runs whose process is gone (a crash skips
    /// `defer`), removed with `script down`.
    static func removeLeftovers(script: String, prefix: String = "flcbench") {
        guard let (_, list) = try? ChildProcess.run(["/usr/sbin/ip", "netns", "list"]) else { return }
        var prefixes = Set<String>()
        for line in list.split(separator: "\n") {
            let name = line.split(separator: " ").first.map(String.init) ?? ""
            guard name.hasPrefix(prefix), let dash = name.lastIndex(of: "-") else { continue }
            let candidate = String(name[..<dash])
            if let pid = Int32(candidate.dropFirst(prefix.count)), kill(pid, 0) != 0 { prefixes.insert(candidate) }
        }
        for p in prefixes { _ = try? ChildProcess.run([script, "down", p]) }
    }

    /// The plain C forwarder (Bench/reference/xsk_forward.c) on `interface` of namespace
    /// `ns`, once it says "ready" (libbpf and libxdp log to stderr, which shares the pipe).
    /// The queue may still be bound for a moment after the system before it exited (the
    /// kernel releases an AF_XDP socket's queue after its process is gone): a start
    /// refused as busy is tried again, for up to 5 s.
    static func startCForwarder(_ path: String, ns: String, interface: String, seconds: Double, cpu: Int) throws -> ChildProcess {
        let deadline = monotonicSeconds() + 5
        while true {
            let child = try ChildProcess(["/usr/sbin/ip", "netns", "exec", ns, path, interface, "\(seconds)", "\(cpu)"],
                                         capture: true)
            var said: [String] = []  // what it printed before "ready" (libbpf's reasons)
            var line = child.readLine()
            while let l = line, l != "ready" {
                said.append(l)
                line = child.readLine()
            }
            if line == "ready" { return child }
            child.signal(SIGKILL)
            let status = child.wait()
            let reason = (said.suffix(10) + [child.readAll()]).joined(separator: "\n")
            guard reason.contains("Device or resource busy"), monotonicSeconds() < deadline else {
                throw Testbed.Failure(description: "xsk_forward did not start (exit \(status)): \(reason)")
            }
            usleep(100_000)
        }
    }

    static func rssMiB() -> Double? {
        guard let f = fopen("/proc/self/status", "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, 256, f) != nil {
            let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if s.hasPrefix("VmRSS:") {
                let kb = s.split(separator: " ").compactMap { Double($0) }.first ?? 0
                return kb / 1024
            }
        }
        return nil
    }

    public func run() throws -> [Row] {
        try AllocationCounter.selfTest()
        let pair = try Pair(root: root)
        defer { pair.down() }
        let prefix = pair.prefix
        let flows = self.flows
        let root = self.root
        let generator = try Namespace.run("\(prefix)-gen") { try Generator(root: root, flows: flows) }
        func frame(to vip: IPAddress) -> [UInt8] { Self.frame(to: vip, pair: pair) }
        func offer(_ f: [UInt8]) throws -> (offered: UInt64, returned: UInt64, mallocs: Int) {
            let before = generator.sunk
            let run = try Namespace.run("\(prefix)-gen", cpu: generatorCPU) { try generator.run(frame: f, seconds: self.seconds) }
            // Let the last frames in flight arrive.
            usleep(100_000)
            return (run.offered, generator.sunk - before, run.mallocs)
        }
        var rows: [Row] = []

        // Reference: the kernel bouncing frames with XDP_TX, no AF_XDP, no Swift.
        let vip = IPAddress("198.18.1.10")!
        let reflect = try Namespace.run("\(prefix)-lb") { () -> XDPLink in
            let object = try BPFObject(path: BPFObject.locate(named: "bench.bpf.o", sourceRoot: root))
            let link = try XDPLink(programFD: try object.programFD("bench_reflect"), interface: "eth0", allowGenericFallback: false)
            withExtendedLifetime(object) {}
            return link
        }
        let ref = try offer(frame(to: vip))
        reflect.detach()
        rows.append(Row(name: "in-kernel XDP_TX reflect (reference)", offeredMpps: Double(ref.offered) / seconds / 1e6,
                        forwardedMpps: Double(ref.returned) / seconds / 1e6, socketDrops: 0))

        // Reference: a plain C AF_XDP forwarder (Bench/reference/xsk_forward.c) on the
        // same veth, the same queue and core, swapping MACs. The yardstick for one worker.
        let forwarder = root + "/.build/bench/xsk_forward"
        if access(forwarder, X_OK) == 0 {
            let seconds = self.seconds
            let child = try Self.startCForwarder(forwarder, ns: "\(prefix)-lb", interface: "eth0", seconds: seconds * 2 + 2,
                                                 cpu: workerCPU)
            _ = try offer(frame(to: vip))  // warm-up, as for the workers below
            let result = try offer(frame(to: vip))
            let output = child.readAll()
            _ = child.wait()
            // "forwarded N dropped M": the drops cover the warm-up too, as the worker rows' do not.
            guard let summary = output.split(separator: "\n").last(where: { $0.hasPrefix("forwarded ") }) else {
                throw Testbed.Failure(description: "xsk_forward: \(output)")
            }
            let dropped = summary.split(separator: " ").last.flatMap { UInt64($0) } ?? 0
            rows.append(Row(name: "plain C AF_XDP forwarder, MAC swap (reference)",
                            offeredMpps: Double(result.offered) / seconds / 1e6,
                            forwardedMpps: Double(result.returned) / seconds / 1e6, socketDrops: dropped))
        } else {
            print("forward: \(forwarder) not built (make bench builds it); C reference row skipped")
        }

        // (method, reflect only): the second reference is the same worker, rings and kicks
        // deciding nothing, so the gap to it is what Fulcrum's decision costs.
        for (method, reflect) in [(ForwardingMethod.mat, true), (.mat, false), (.nat, false)] {
            let target = method == .mat ? vip : IPAddress("198.18.1.20")!
            // The worker's own path: with offload on, the program would forward the flows
            // after their second frame and the worker would see none of them.
            var options = DataplaneOptions(interfaces: ["eth0"], queues: 1, cores: [workerCPU], offload: false)
            options.reflectOnly = reflect
            let dataplane = try Self.startDataplane(method, vip: target, pair: pair, options: options)
            defer { dataplane.stop() }
            _ = try offer(frame(to: target))  // warm-up: flows inserted, pages touched
            let before = dataplane.snapshot()
            let result = try offer(frame(to: target))
            let mallocs = result.mallocs
            let after = dataplane.snapshot()
            let transmitted = (after.global[.transmitted] ?? 0) - (before.global[.transmitted] ?? 0)
            let drops = (after.sockets["rx_dropped"] ?? 0) + (after.sockets["rx_ring_full"] ?? 0)
                - (before.sockets["rx_dropped"] ?? 0) - (before.sockets["rx_ring_full"] ?? 0)
                + (after.drops[.transmitRingFull] ?? 0) - (before.drops[.transmitRingFull] ?? 0)
            rows.append(Row(name: reflect ? "AF_XDP worker, MAC swap only (reference)" : "fulcrum \(method.rawValue.uppercased()), 1 worker",
                            offeredMpps: Double(result.offered) / seconds / 1e6,
                            forwardedMpps: Double(result.returned) / seconds / 1e6, socketDrops: drops,
                            mallocsPerPacket: transmitted > 0 ? Double(mallocs) / Double(transmitted) : nil,
                            rssMiB: Self.rssMiB()))
        }
        withExtendedLifetime(generator) {}
        return rows
    }

    /// What a frame costs the worker when frames come a few at a time, as ACK-clocked
    /// TCP brings them (issue 21): bursts of each size in `bursts` (one flow), with a
    /// `gapMicroseconds` sleep after each, through Fulcrum MAT (one worker, offload off), by default with no idle spin, so
    /// that every burst pays the whole round: a wake-up from poll, the RX ring, the decision
    /// and rewrite, the TX ring and the `sendto` kick (in which copy mode builds and sends
    /// an skb per frame, and veth runs the generator's receive of it). Measured on the
    /// worker thread itself (its schedstat), not on its CPU, so that other work there
    /// does not count.
    /// `idleSpinMicroseconds`: the worker's `dataplane.idle_spin_us` (0 unless asked), to
    /// see what a spin costs the worker and saves it at each burst size and gap.
    public func runBursts(_ bursts: [Int], gapMicroseconds: Int, idleSpinMicroseconds: Int = 0) throws -> [BurstRow] {
        let pair = try Pair(root: root)
        defer { pair.down() }
        let prefix = pair.prefix
        let flows = self.flows, root = self.root, seconds = self.seconds
        let generator = try Namespace.run("\(prefix)-gen") { try Generator(root: root, flows: flows) }
        let vip = IPAddress("198.18.1.10")!
        let frame = Self.frame(to: vip, pair: pair)
        let options = DataplaneOptions(interfaces: ["eth0"], queues: 1, cores: [workerCPU], idleSpinMicroseconds: idleSpinMicroseconds,
                                       offload: false)
        let dataplane = try Self.startDataplane(.mat, vip: vip, pair: pair, options: options)
        defer { dataplane.stop() }
        // The worker names its thread once it runs, which may be after `start` returns.
        var found: Int32?
        for _ in 0..<100 where found == nil {
            found = Self.thread(named: "fulcrum-q0")
            if found == nil { usleep(10_000) }
        }
        guard let worker = found else { throw Testbed.Failure(description: "no worker thread fulcrum-q0 after 1 s") }
        func offer(_ burst: Int, seconds: Double) throws -> (bursts: Int, forwarded: UInt64, runtime: UInt64, runs: UInt64) {
            let sunk = generator.sunk
            let before = try Self.schedstat(worker)
            let bursts = try Namespace.run("\(prefix)-gen", cpu: generatorCPU) {
                try Self.transmitBursts(frame, ifindex: generator.ifindex, burst: burst, gap: gapMicroseconds, seconds: seconds)
            }
            usleep(100_000)  // the last frames in flight
            let after = try Self.schedstat(worker)
            return (bursts, generator.sunk - sunk, after.runtime - before.runtime, after.runs - before.runs)
        }
        var rows: [BurstRow] = []
        for burst in bursts {
            _ = try offer(burst, seconds: min(0.5, seconds))  // warm-up: the flows inserted
            let r = try offer(burst, seconds: seconds)
            rows.append(BurstRow(burst: burst, burstsPerSecond: Double(r.bursts) / seconds,
                                 forwardedPerSecond: Double(r.forwarded) / seconds,
                                 workerNanosecondsPerFrame: r.forwarded > 0 ? Double(r.runtime) / Double(r.forwarded) : 0,
                                 runsPerBurst: r.bursts > 0 ? Double(r.runs) / Double(r.bursts) : 0))
        }
        withExtendedLifetime(generator) {}
        return rows
    }

    /// The generator's 60-byte UDP frame to `vip`:9, from 198.18.0.2:1024.
    static func frame(to vip: IPAddress, pair: Pair) -> [UInt8] {
        PacketBuilder.udpFrame(source: IPAddress("198.18.0.2")!, destination: vip, sourcePort: 1024, destinationPort: 9,
                               payload: [UInt8](repeating: 0x5A, count: 18), zeroChecksum: true,
                               ethernetDestination: pair.lbMAC, ethernetSource: pair.generatorMAC)
    }

    /// A Fulcrum data plane on the LB's end, active, with one UDP group: `vip`:9 to the
    /// generator (port 9 for NAT), by `method`.
    static func startDataplane(_ method: ForwardingMethod, vip: IPAddress, pair: Pair, options: DataplaneOptions) throws -> Dataplane {
        let group = GroupSpec(name: "bench-\(method.rawValue)", vip: vip, proto: IPProtocol.udp, ports: [9],
                              method: method, scheduler: .maglev,
                              nodes: [NodeSpec(address: IPAddress("198.18.0.2")!, port: method == .nat ? 9 : 0,
                                               weight: 1, mac: pair.generatorMAC)])
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        return try Namespace.run("\(pair.prefix)-lb") { () -> Dataplane in
            let d = try Dataplane(options: options, groups: [group], routes: [], logger: logger)
            try d.start()
            try d.setActive(true)  // it starts passive
            return d
        }
    }

    /// This process' thread of that name (its comm), by thread id.
    static func thread(named name: String) -> Int32? {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.compactMap(Int32.init).first { tid in
            (try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == name
        }
    }

    /// A thread's /proc schedstat: nanoseconds on a CPU, and how many times it was put on one.
    static func schedstat(_ tid: Int32) throws -> (runtime: UInt64, runs: UInt64) {
        let text = try String(contentsOfFile: "/proc/self/task/\(tid)/schedstat", encoding: .utf8)
        let f = text.split(separator: " ").compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        guard f.count == 3 else { throw Testbed.Failure(description: "schedstat of \(tid): \(text)") }
        return (f[0], f[2])
    }
}
