import Foundation
import FulcrumAPIModels

/// A namespace testbed (Bench/testbed/testbed.sh) with a running `fulcrum` daemon in its
/// LB namespace. Everything it creates carries the prefix `flc<pid>x<n>` and is removed
/// by `tearDown()`, which tests call in a `defer`.
public final class Testbed: @unchecked Sendable {
    public let prefix: String
    public let directory: String
    public let root: String
    public var configPath: String { directory + "/lb.yaml" }
    public var statusPath: String { directory + "/status.json" }
    public var logPath: String { directory + "/lb.log" }
    private var daemon: ChildProcess?
    /// The pair's daemons, by LB number (1: lb, the master; 2: lb2, the slave).
    private var members: [Int: ChildProcess] = [:]
    nonisolated(unsafe) private static var counter = 0

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// `pair`: the testbed gets a second LB, lb2, and the pair's configurations
    /// (testbed.sh, PAIR=1); `environment` tunes them (PAIR_INTERVAL, PAIR_DUAL_ACTIVE, …).
    public init(root: String = Privileged.repositoryRoot(), pair: Bool = false, environment: [String: String] = [:]) throws {
        Testbed.counter += 1
        prefix = "flc\(getpid())x\(Testbed.counter)"
        directory = NSTemporaryDirectory() + prefix
        self.root = root
        Testbed.removeLeftovers(root: root)
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let settings = (pair ? ["PAIR=1"] : []) + environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let (status, output) = try Testbed.run("/usr/bin/env", settings + [root + "/Bench/testbed/testbed.sh", "up", prefix, directory])
        guard status == 0 else {
            tearDown()
            throw Failure(description: "testbed up failed:\n\(output)")
        }
    }

    /// Testbeds of test processes that died without tearing down (killed by a timeout).
    static func removeLeftovers(root: String) {
        guard let (_, list) = try? ChildProcess.run(["/usr/sbin/ip", "netns", "list"]) else { return }
        var stale = Set<String>()
        for line in list.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix("flc"), let x = name.firstIndex(of: "x"), let dash = name.firstIndex(of: "-"),
                  let pid = Int32(name[name.index(after: name.startIndex)..<x].dropFirst(2)) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 { stale.insert(String(name[..<dash])) }
        }
        for prefix in stale { _ = try? ChildProcess.run([root + "/Bench/testbed/testbed.sh", "down", prefix]) }
    }

    @discardableResult
    public static func run(_ executable: String, _ arguments: [String]) throws -> (Int32, String) {
        try ChildProcess.run([executable] + arguments)
    }

    /// Runs a command inside one of the testbed's namespaces.
    @discardableResult
    public func exec(_ host: String, _ arguments: [String]) throws -> (Int32, String) {
        try Testbed.run("/usr/sbin/ip", ["netns", "exec", "\(prefix)-\(host)"] + arguments)
    }

    public var fulcrum: String { root + "/.build/debug/fulcrum" }
    public var testpeer: String { root + "/.build/debug/fulcrum-testpeer" }

    /// Starts the daemon and waits (up to `timeout`) until every node's MAC is known.
    /// `openFiles`: start it under that soft:hard limit on open files (`prlimit`), as a
    /// service unit's default would.
    public func startDaemon(timeout: Double = 20, openFiles: (soft: Int, hard: Int)? = nil) throws {
        try? FileManager.default.removeItem(atPath: statusPath)  // never read a previous run's
        let limit = openFiles.map { ["/usr/bin/prlimit", "--nofile=\($0.soft):\($0.hard)"] } ?? []
        daemon = try ChildProcess(limit + ["/usr/sbin/ip", "netns", "exec", "\(prefix)-lb", fulcrum, "run", "--config", configPath,
                                           "--status-file", statusPath], outputPath: logPath)
        try waitFor("all node MACs resolved", timeout: timeout) { status in
            status.groups.allSatisfy { $0.nodes.allSatisfy { $0.mac != nil } }
        }
    }

    // MARK: The pair (PAIR=1)

    /// LB `n`'s namespace, files and API socket.
    public func pairHost(_ n: Int) -> String { n == 1 ? "lb" : "lb\(n)" }
    public func pairConfig(_ n: Int) -> String { directory + "/pair-lb\(n).yaml" }
    public func pairStatusPath(_ n: Int) -> String { directory + "/status-lb\(n).json" }
    public func pairLog(_ n: Int) -> String { (try? String(contentsOfFile: directory + "/lb\(n).log", encoding: .utf8)) ?? "" }
    public func pairEvents(_ n: Int) -> String { directory + "/lb\(n)-events.jsonl" }
    public func pairSocket(_ n: Int) -> String { directory + "/lb\(n)-api.sock" }

    /// Starts LB `n` of the pair (its status file is removed first, so a wait reads this run's).
    public func startPairMember(_ n: Int) throws {
        try? FileManager.default.removeItem(atPath: pairStatusPath(n))
        members[n] = try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(prefix)-\(pairHost(n))", fulcrum, "run",
                                       "--config", pairConfig(n), "--status-file", pairStatusPath(n)],
                                      outputPath: directory + "/lb\(n).log")
    }

    /// Starts LB `n` without its `cluster:` section: a standalone LB that answers for the
    /// VIPs whatever the other does (the probes' negative control: two LBs answering).
    public func startAlone(_ n: Int) throws {
        let lines = try String(contentsOfFile: pairConfig(n), encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        var out: [Substring] = []
        var inCluster = false
        for line in lines {
            if line.hasPrefix("cluster:") { inCluster = true } else if !line.hasPrefix(" ") { inCluster = false }
            if !inCluster { out.append(line) }
        }
        let path = directory + "/alone-lb\(n).yaml"
        try out.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        try? FileManager.default.removeItem(atPath: pairStatusPath(n))
        members[n] = try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(prefix)-\(pairHost(n))", fulcrum, "run",
                                       "--config", path, "--status-file", pairStatusPath(n)],
                                      outputPath: directory + "/lb\(n).log")
    }

    public func pairPID(_ n: Int) -> pid_t? { members[n]?.pid }

    /// A tool a test needs: absent, the test fails with what to install (CI installs
    /// them through `make setup`).
    public static func tool(_ name: String) throws -> String {
        let venv = Privileged.repositoryRoot() + "/.build/venv/bin"
        for dir in [Substring(venv)] + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw Failure(description: "\(name) is not installed; `make setup tools` installs it")
    }

    /// The status page of LB `n` of the pair as headless Chromium renders it, with `token`.
    public func pairStatusPage(_ n: Int, token: String) throws -> String {
        let browse = [try Self.tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                      "--user-data-dir=\(directory)/chromium-\(n)", "--virtual-time-budget=5000",
                      "--dump-dom", "http://127.0.0.1:9180/#token=\(token)"]
        return try exec(pairHost(n), browse).1
    }

    /// Signals LB `n`; SIGKILL and SIGTERM also wait for it to end.
    public func signalPairMember(_ n: Int, _ signal: Int32) {
        guard let m = members[n] else { return }
        m.signal(signal)
        if signal == SIGKILL || signal == SIGTERM {
            m.wait()
            members[n] = nil
        }
    }

    public func pairStatus(_ n: Int) throws -> StatusView { try status(path: pairStatusPath(n)) }

    /// Polls LB `n`'s status file until `condition` holds; fails with both logs if not.
    public func waitForPair(_ n: Int, _ what: String, timeout: Double, _ condition: (StatusView) -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let s = try? pairStatus(n), condition(s) { return }
            usleep(20_000)
        }
        throw Failure(description: "timed out waiting for lb\(n): \(what)\nlb1 log:\n\(pairLog(1).suffix(3000))\nlb2 log:\n\(pairLog(2).suffix(3000))")
    }

    /// The MAC the client's neighbour table holds for `address` (nil: none, or not resolved).
    public func clientNeighbor(_ address: String) throws -> String? { try neighbor(on: "client", address) }

    /// The MAC `host`'s neighbour table holds for `address` (nil: none, or not resolved).
    public func neighbor(on host: String, _ address: String) throws -> String? {
        let (_, out) = try exec(host, ["ip", "neigh", "show", address])
        let words = out.split(separator: " ")
        guard let i = words.firstIndex(of: "lladdr"), i + 1 < words.count else { return nil }
        return String(words[i + 1])
    }

    public func mac(of host: String, _ interface: String) throws -> String {
        try exec(host, ["cat", "/sys/class/net/\(interface)/address"]).1.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public func status(path: String? = nil) throws -> StatusView {
        let data = try Data(contentsOf: URL(fileURLWithPath: path ?? statusPath))
        return try JSONDecoder().decode(StatusView.self, from: data)
    }

    /// Polls the status file until `condition` holds; fails with the daemon log if not.
    public func waitFor(_ what: String, timeout: Double, statusPath path: String? = nil,
                        _ condition: (StatusView) -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let s = try? status(path: path), condition(s) { return }
            if let d = daemon, !d.isRunning { break }
            usleep(100_000)
        }
        throw Failure(description: "timed out waiting for \(what); daemon log:\n\(daemonLog)")
    }

    public var daemonLog: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    public func signalDaemon(_ signal: Int32) {
        // `ip netns exec` execs the daemon, so this pid is the daemon's.
        daemon?.signal(signal)
    }

    /// Sends SIGTERM and returns the exit status.
    public func stopDaemon() -> Int32? {
        guard let d = daemon else { return nil }
        d.signal(SIGTERM)
        daemon = nil
        return d.wait()
    }

    public func killDaemon() {
        guard let d = daemon else { return }
        d.signal(SIGKILL)
        d.wait()
        daemon = nil
    }

    public struct ClientResult: Decodable, Sendable {
        public var ok: Int
        public var failed: Int
        public var perNode: [String: Int]
        public var errors: [String]
    }

    /// `count` requests from the client to VIP:port, each on a new connection or source port.
    public func client(_ target: String, port: Int, proto: String = "tcp", count: Int = 300,
                       size: Int = 0, from host: String = "client") throws -> ClientResult {
        let (status, output) = try exec(host, [testpeer, "client", "--target", target, "--port", "\(port)",
                                                   "--proto", proto, "--count", "\(count)", "--size", "\(size)"])
        guard status == 0, let line = output.split(separator: "\n").last,
              let r = try? JSONDecoder().decode(ClientResult.self, from: Data(line.utf8)) else {
            throw Failure(description: "client failed (\(status)): \(output)")
        }
        return r
    }

    /// Connections held open across a change: `hold` opens them and does one exchange
    /// each; `finish` does a second exchange on each and closes them.
    public final class Held: @unchecked Sendable {
        let process: ChildProcess
        public let first: ClientResult

        init(process: ChildProcess) throws {
            self.process = process
            guard let line = process.readLine(),
                  let r = try? JSONDecoder().decode(ClientResult.self, from: Data(line.utf8)) else {
                throw Failure(description: "hold: no first result")
            }
            first = r
        }

        public func finish() throws -> ClientResult {
            process.write("go\n")
            guard let line = process.readLine(),
                  let r = try? JSONDecoder().decode(ClientResult.self, from: Data(line.utf8)) else {
                throw Failure(description: "hold: no second result")
            }
            process.wait()
            return r
        }
    }

    public func hold(_ target: String, port: Int, count: Int) throws -> Held {
        try Held(process: ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(prefix)-client", testpeer, "hold",
                                        "--target", target, "--port", "\(port)", "--count", "\(count)"],
                                       capture: true, stdinPipe: true))
    }

    // MARK: - Control API

    /// The API's Unix socket, reachable from the test's own namespace.
    public var apiSocket: String { directory + "/api.sock" }

    public func token(readOnly: Bool = false) throws -> String {
        try String(contentsOfFile: directory + (readOnly ? "/api-ro.token" : "/api.token"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public struct APIReply: Sendable {
        public var status: Int
        public var body: String
        public func decode<T: Decodable>(_ type: T.Type) throws -> T {
            try JSONDecoder().decode(T.self, from: Data(body.utf8))
        }
    }

    /// One request with curl over the Unix socket. `token`: nil sends none; the default
    /// is the full-access token.
    public func api(_ method: String, _ path: String, body: String? = nil, token: String?? = .none) throws -> APIReply {
        let bearer: String? = try token ?? self.token()
        var argv = ["/usr/bin/curl", "-sS", "--max-time", "20", "--unix-socket", apiSocket, "-X", method,
                    "-w", "\n%{http_code}"]
        if let bearer { argv += ["-H", "Authorization: Bearer \(bearer)"] }
        if let body {
            let file = directory + "/request-\(UUID().uuidString).json"
            try body.write(toFile: file, atomically: true, encoding: .utf8)
            argv += ["-H", "Content-Type: application/json", "--data-binary", "@" + file]
        }
        argv.append("http://fulcrum" + path)
        let (status, output) = try ChildProcess.run(argv)
        guard status == 0, let newline = output.lastIndex(of: "\n"), let code = Int(output[output.index(after: newline)...]) else {
            throw Failure(description: "curl \(method) \(path) failed (exit \(status)): \(output.prefix(500))")
        }
        return APIReply(status: code, body: String(output[..<newline]))
    }

    public var fulcrumctlPath: String { root + "/.build/debug/fulcrumctl" }

    /// `fulcrumctl` over the Unix socket with the full-access token; its exit status and
    /// its output (stdout and stderr).
    @discardableResult
    public func ctl(_ arguments: [String]) throws -> (Int32, String) {
        guard let sub = arguments.first else { return (2, "") }
        // Options go after the (sub)subcommand that declares them.
        let split = sub == "node" || sub == "group" || sub == "config" ? 2 : 1
        let head = Array(arguments.prefix(split)), tail = Array(arguments.dropFirst(split))
        return try ChildProcess.run([fulcrumctlPath] + head + ["--api", "unix:" + apiSocket, "--token-file", directory + "/api.token"] + tail)
    }

    public func writeConfig(_ text: String) throws {
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    public func readConfig() throws -> String { try String(contentsOfFile: configPath, encoding: .utf8) }

    // MARK: - Hardening and flood tests

    public var fulcrumBench: String { root + "/.build/debug/fulcrum-bench" }

    /// The daemon's process id (`ip netns exec` execs it).
    public var daemonPID: pid_t? { daemon?.pid }

    /// Resident memory of the daemon, in KiB, from /proc.
    public func daemonRSS() -> Int? {
        guard let pid = daemonPID,
              let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return Int(line.split(separator: " ").dropFirst().first ?? "")
    }

    /// The MAC of one of the LB's interfaces.
    public func lbMAC(_ interface: String) throws -> String {
        let (_, out) = try exec("lb", ["cat", "/sys/class/net/\(interface)/address"])
        return out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Frames the XDP program sent back out of one of the LB's veths (XDP_TX) that the
    /// veth lost, its peer's ring being full (`ethtool -S`: rx_queue_N_xdp_tx_errors).
    public func xdpTransmitErrors(_ interface: String) throws -> UInt64 {
        let (_, out) = try exec("lb", ["/usr/sbin/ethtool", "-S", interface])
        return out.split(separator: "\n").reduce(0) { sum, line in
            let parts = line.split(separator: ":")
            guard parts.count == 2, parts[0].hasSuffix("_xdp_tx_errors") else { return sum }
            return sum + (UInt64(parts[1].trimmingCharacters(in: .whitespaces)) ?? 0)
        }
    }

    /// `fulcrum check` in the LB's namespace, where the interfaces are.
    public func check(configPath: String) throws -> (Int32, String) {
        try exec("lb", [fulcrum, "check", "--config", configPath])
    }

    /// `fulcrum run` in the LB's namespace in the foreground, bounded by `timeout`
    /// seconds (exit 124 if it was still running): for runs that must be refused.
    public func runToCompletion(configPath: String, timeout: Int = 20) throws -> (Int32, String) {
        try Testbed.run("/usr/bin/timeout", ["\(timeout)", "/usr/sbin/ip", "netns", "exec", "\(prefix)-lb", fulcrum, "run",
                                             "--config", configPath])
    }

    /// A second daemon in the background, logging to its own file.
    public func startAnotherDaemon(configPath: String, log: String, status: String) throws -> ChildProcess {
        try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(prefix)-lb", fulcrum, "run", "--config", configPath,
                          "--status-file", status], outputPath: log)
    }

    /// Whether an XDP program is attached to one of the LB's interfaces.
    public func xdpAttached(_ interface: String) throws -> Bool {
        try exec("lb", ["ip", "link", "show", "dev", interface]).1.contains("prog/xdp")
    }

    /// Sends a raw frame out of the client's interface, `count` times.
    public func sendFrame(_ bytes: [UInt8], count: Int = 1) throws {
        let hex = bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        let (status, out) = try exec("client", [testpeer, "send-frame", "--interface", "eth0", "--hex", hex,
                                                "--count", "\(count)"])
        guard status == 0 else { throw Failure(description: "send-frame: \(out)") }
    }

    public struct ChatReport: Decodable, Sendable, CustomStringConvertible {
        /// Connections open when the loop started.
        public var ready: Int = 0
        public var opened: Int
        public var failedNew: Int
        public var broken: Int
        public var exchanges: Int
        /// The longest wait between two answers on a held connection, less the time the
        /// client spent opening new connections meanwhile (one thread does both).
        public var maxGapMs: Int
        /// The longest a new connection took to open and answer its first message.
        public var maxOpenMs: Int
        public var errors: [String]

        enum CodingKeys: String, CodingKey { case opened, failedNew, broken, exchanges, maxGapMs, maxOpenMs, errors }

        public var description: String {
            "opened \(opened), broken \(broken), failed new \(failedNew), \(exchanges) exchanges, longest gap \(maxGapMs) ms"
                + (opened > ready ? ", longest open \(maxOpenMs) ms" : "")
        }
    }

    /// Connections held from the client while something else happens; `finish()` waits
    /// for the report.
    public final class Chat: @unchecked Sendable {
        let process: ChildProcess
        /// Connections open when the loop started.
        public let ready: Int

        /// Waits for the chat's first connections before returning.
        init(_ process: ChildProcess) throws {
            self.process = process
            guard let line = process.readLine(), line.hasPrefix("{\"ready\":"),
                  let n = Int(line.dropFirst(9).dropLast()) else {
                throw Failure(description: "chat did not start")
            }
            ready = n
        }
        public func finish() throws -> ChatReport {
            let out = process.readAll()
            process.wait()
            guard let line = out.split(separator: "\n").last,
                  var r = try? JSONDecoder().decode(ChatReport.self, from: Data(line.utf8)) else {
                throw Failure(description: "chat: no report in \(out)")
            }
            r.ready = ready
            return r
        }
    }

    public func chat(_ target: String, port: Int, held: Int, seconds: Double, interval: Double = 0.1,
                     newEvery: Double = 0.5) throws -> Chat {
        try Chat(try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(prefix)-client", testpeer, "chat", "--target", target,
                               "--port", "\(port)", "--held", "\(held)", "--seconds", "\(seconds)",
                               "--interval", "\(interval)", "--new-every", "\(newEvery)"], capture: true))
    }

    /// A probe script run in the client's namespace in the background: it prints
    /// `{"ready": …}` once started, then one JSON line, its report, when it ends.
    public final class BackgroundProbe<Report: Decodable & Sendable>: @unchecked Sendable {
        let process: ChildProcess
        let name: String
        init(_ script: String, _ arguments: [String], in bed: Testbed) throws {
            name = script
            process = try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(bed.prefix)-client", "python3",
                                        bed.root + "/Bench/testbed/" + script] + arguments, capture: true)
            guard process.readLine()?.hasPrefix("{\"ready\"") == true else { throw Failure(description: "\(script) did not start") }
        }
        public func finish() throws -> Report {
            let out = process.readAll()
            process.wait()
            guard let line = out.split(separator: "\n").last,
                  let r = try? JSONDecoder().decode(Report.self, from: Data(line.utf8)) else {
                throw Failure(description: "\(name): no report in \(out)")
            }
            return r
        }
    }

    /// The client's view of a failover (failover-probe.py): a UDP request every `interval`.
    public struct UDPProbeReport: Decodable, Sendable, CustomStringConvertible {
        public var sent: Int
        public var answered: Int
        public var outageMs: Double
        enum CodingKeys: String, CodingKey { case sent, answered, outageMs = "outage_ms" }
        public var lost: Int { sent - answered }
        public var description: String { "\(answered) of \(sent) answered, longest run unanswered \(outageMs) ms" }
    }

    /// Who answers ARP for an address (arp-probe.py): each MAC that answered, and in how
    /// many rounds.
    public struct ARPProbeReport: Decodable, Sendable, CustomStringConvertible {
        public var requests: Int
        public var macs: [String: Int]
        public var rounds: [String: Int]
        /// Rounds in which more than one MAC answered.
        public var both: Int
        public var description: String { "\(requests) requests; answered by \(rounds) (rounds), \(both) rounds with two" }
    }

    public func arpProbe(_ target: String, seconds: Double, interval: Double = 0.05) throws -> BackgroundProbe<ARPProbeReport> {
        try BackgroundProbe("arp-probe.py", ["eth0", target, "\(seconds)", "\(interval)"], in: self)
    }

    public func udpProbe(_ target: String, port: Int, seconds: Double, interval: Double = 0.002) throws -> BackgroundProbe<UDPProbeReport> {
        try BackgroundProbe("failover-probe.py", [target, "\(port)", "\(seconds)", "\(interval)"], in: self)
    }

    public struct FloodResult: Decodable, Sendable {
        public var offered: UInt64
        public var seconds: Double
        public var rate: Double { Double(offered) / seconds }
    }

    /// A SYN flood from the testbed's flood host toward `target`:`port` (fulcrum-bench
    /// flood), in the foreground. `rate` 0: as fast as the generator goes. `offered`
    /// counts frames generated; what reached the LB is its XDP `received` counter.
    public func flood(_ target: String, port: Int, rate: Double, seconds: Double, cpu: Int? = nil) throws -> FloodResult {
        var argv = [fulcrumBench, "flood", "--interface", "eth0", "--destination-mac", try lbMAC("eth-f"),
                    "--target", target, "--port", "\(port)", "--rate", "\(rate)", "--seconds", "\(seconds)",
                    "--root", root]
        if let cpu { argv += ["--cpu", "\(cpu)"] }
        let (status, out) = try exec("flood", argv)
        guard status == 0, let line = out.split(separator: "\n").last,
              let r = try? JSONDecoder().decode(FloodResult.self, from: Data(line.utf8)) else {
            throw Failure(description: "flood failed (\(status)): \(out)")
        }
        return r
    }

    /// The status once the data plane's counters have stopped moving (two reads 300 ms
    /// apart agree): after a flood, the last frames are counted.
    public func settledStatus(timeout: Double = 10) throws -> StatusView {
        let deadline = Date().addingTimeInterval(timeout)
        var last = try status()
        while Date() < deadline {
            usleep(300_000)
            let next = try status()
            if next.xdp["received"] == last.xdp["received"] && next.counters["received"] == last.counters["received"] {
                return next
            }
            last = next
        }
        throw Failure(description: "the counters did not settle in \(timeout) s")
    }

    // MARK: - Health tests

    /// Kills every process in one of the testbed's hosts (its servers).
    public func stopServers(_ host: String) throws {
        let (_, pids) = try Testbed.run("/usr/sbin/ip", ["netns", "pids", "\(prefix)-\(host)"])
        for pid in pids.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
        for _ in 0..<50 where !(try Testbed.run("/usr/sbin/ip", ["netns", "pids", "\(prefix)-\(host)"]).1.isEmpty) {
            usleep(20_000)
        }
    }

    /// Starts a node's servers again, as testbed.sh does.
    @discardableResult
    public func startServers(_ host: String) throws -> ChildProcess {
        try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(prefix)-\(host)", testpeer, "serve", "--name", host,
                          "--tcp", "8080", "--udp", "5353", "--http", "8081",
                          "--http-status-file", directory + "/\(host).http-status"],
                         outputPath: directory + "/\(host)-again.log")
    }

    /// What the HTTP health check of a node is answered with.
    public func setHTTPStatus(_ host: String, _ status: Int?) throws {
        let path = directory + "/\(host).http-status"
        if let status { try "\(status)\n".write(toFile: path, atomically: true, encoding: .utf8) } else {
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    public func tearDown() {
        killDaemonIfRunning()
        for m in members.values where m.isRunning {
            m.signal(SIGKILL)
            m.wait()
        }
        members = [:]
        _ = try? Testbed.run(root + "/Bench/testbed/testbed.sh", ["down", prefix])
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func killDaemonIfRunning() {
        if let d = daemon, d.isRunning {
            d.signal(SIGTERM)
            d.wait()
        }
        daemon = nil
    }
}

/// The daemon's status file is the one `StatusModel`; these are the readings the tests use.
public typealias StatusView = StatusModel

extension StatusModel {
    public func group(_ name: String) -> GroupStatusModel? { groups.first { $0.name == name } }
    private var plane: DataplaneStatusModel {
        guard let dataplane else { preconditionFailure("the status file always carries the data plane") }
        return dataplane
    }
    public var counters: [String: UInt64] { plane.counters }
    public var xdp: [String: UInt64] { plane.xdp }
    public var sockets: [String: UInt64] { plane.sockets }
    public var attachModes: [String: String] { plane.attachModes }
    public var mapEntries: [String: Int] { plane.mapEntries }
    public var layoutGeneration: UInt64 { plane.layoutGeneration }
    public var routingVersion: UInt64 { plane.routingVersion }
    public var appliedRoutingVersion: UInt64 { plane.appliedRoutingVersion }
    public var routes: [DataplaneStatusModel.Route] { plane.routes }
    public var unroutedReplies: [DataplaneStatusModel.Unrouted] { plane.unroutedReplies }
}

extension NodeStatusModel {
    /// "up", "down: <why>", or the state as it is (pending, disabled, no_mac).
    public var health: String { state == "down" ? "down: \(healthDetail ?? "failed")" : state }
}
