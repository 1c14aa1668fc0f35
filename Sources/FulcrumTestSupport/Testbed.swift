import Foundation

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
    nonisolated(unsafe) private static var counter = 0

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public init(root: String = Privileged.repositoryRoot()) throws {
        Testbed.counter += 1
        prefix = "flc\(getpid())x\(Testbed.counter)"
        directory = NSTemporaryDirectory() + prefix
        self.root = root
        Testbed.removeLeftovers(root: root)
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (status, output) = try Testbed.run(root + "/Bench/testbed/testbed.sh", ["up", prefix, directory])
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
    public func startDaemon(timeout: Double = 20) throws {
        try? FileManager.default.removeItem(atPath: statusPath)  // never read a previous run's
        daemon = try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(prefix)-lb", fulcrum, "run", "--config", configPath,
                                   "--status-file", statusPath], outputPath: logPath)
        try waitFor("all node MACs resolved", timeout: timeout) { status in
            status.groups.allSatisfy { $0.nodes.allSatisfy { $0.mac != nil } }
        }
    }

    public func status() throws -> StatusView {
        let data = try Data(contentsOf: URL(fileURLWithPath: statusPath))
        return try JSONDecoder().decode(StatusView.self, from: data)
    }

    /// Polls the status file until `condition` holds; fails with the daemon log if not.
    public func waitFor(_ what: String, timeout: Double, _ condition: (StatusView) -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let s = try? status(), condition(s) { return }
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
    public func client(_ target: String, port: Int, proto: String = "tcp", count: Int = 300) throws -> ClientResult {
        let (status, output) = try exec("client", [testpeer, "client", "--target", target, "--port", "\(port)",
                                                   "--proto", proto, "--count", "\(count)"])
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

    public func writeConfig(_ text: String) throws {
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    public func readConfig() throws -> String { try String(contentsOfFile: configPath, encoding: .utf8) }

    public func tearDown() {
        killDaemonIfRunning()
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

/// The parts of the daemon's status file the tests read.
public struct StatusView: Decodable, Sendable {
    public struct Node: Decodable, Sendable {
        public var address: String
        public var weight: Int
        public var mac: String?
        public var activeFlows: Int
        public var packets: UInt64
        public var newFlows: UInt64
    }

    public struct Group: Decodable, Sendable {
        public var name: String
        public var packets: UInt64
        public var newFlows: UInt64
        public var nodes: [Node]
    }

    public var configGeneration: Int
    public var groups: [Group]
    public var counters: [String: UInt64]
    public var drops: [String: UInt64]
    public var xdp: [String: UInt64]
    public var sockets: [String: UInt64]
    public var attachModes: [String: String]

    public func group(_ name: String) -> Group? { groups.first { $0.name == name } }
}
