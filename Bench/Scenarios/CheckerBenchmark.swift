import FulcrumConfiguration
import FulcrumControl
import FulcrumCore
import FulcrumTestSupport
import Foundation
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// The health checker with 1,000 nodes checked every second (TCP, timeout 0.5 s, fall 2,
/// rise 2): the CPU it uses, and how long it takes to find 100 of them down after their
/// port starts dropping SYNs, beside the bound fall × interval + timeout. The nodes are
/// 1,000 addresses of 198.18.64.0/22 on the loopback of a namespace of its own, all
/// served by one listener; nftables (a table of its own in that namespace) drops the SYNs.
public struct CheckerBenchmark {
    public var nodes: Int
    public var seconds: Double
    public var root: String

    public init(nodes: Int = 1000, seconds: Double = 10, root: String) {
        self.nodes = nodes
        self.seconds = seconds
        self.root = root
    }

    public struct Result {
        public var cpuShare: Double
        public var wallSeconds: Double
        public var checksPerSecond: Double
        public var detection: [Double]
        public var bound: Double
        public var upAtStart: Int
    }

    final class Transitions: @unchecked Sendable {
        let lock = NSLock()
        var down: [IPAddress: Double] = [:]
        var up = Set<IPAddress>()
        func record(_ c: HealthChecker.Change) {
            lock.lock()
            defer { lock.unlock() }
            if c.up { up.insert(c.node.address) } else if down[c.node.address] == nil { down[c.node.address] = Self.now() }
        }
        static func now() -> Double { monotonicSeconds() }
    }

    func address(_ i: Int) -> String { "198.18.\(64 + i / 250).\(1 + i % 250)" }

    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }

    public func run() throws -> Result {
        let ns = "flcbench\(getpid())-chk"
        func sh(_ command: String) throws {
            let (status, out) = try ChildProcess.run(["/bin/sh", "-c", command])
            guard status == 0 else { throw Testbed.Failure(description: "\(command): \(out)") }
        }
        _ = try? ChildProcess.run(["/usr/sbin/ip", "netns", "del", ns])
        try sh("ip netns add \(ns) && ip -n \(ns) link set lo up")
        defer { _ = try? ChildProcess.run(["/bin/sh", "-c", "ip netns pids \(ns) | xargs -r kill -9; ip netns del \(ns)"]) }
        let batch = (0..<nodes).map { "address add \(address($0))/32 dev lo" }.joined(separator: "\n")
        let file = NSTemporaryDirectory() + "\(ns).ip"
        try batch.write(toFile: file, atomically: true, encoding: .utf8)
        try sh("ip -n \(ns) -batch \(file)")
        let server = try ChildProcess(["/usr/sbin/ip", "netns", "exec", ns, root + "/.build/release/fulcrum-testpeer", "serve",
                                       "--name", "x", "--tcp", "8080"], outputPath: "/dev/null")
        defer { server.signal(SIGKILL); server.wait() }
        usleep(300_000)

        var yaml = "dataplane:\n  interfaces:\n    - name: d0\ngroups:\n"
        for g in 0..<(nodes + 99) / 100 {
            yaml += "  - name: g\(g)\n    vip: 198.18.1.\(1 + g)\n    protocol: tcp\n    ports: [8080]\n    method: mat\n"
            yaml += "    health_check: {type: tcp, interval: 1, timeout: 0.5, rise: 2, fall: 2}\n    nodes:\n"
            for i in (g * 100)..<min(nodes, g * 100 + 100) { yaml += "      - address: \(address(i))\n" }
        }
        let config = try ConfigLoader.parse(yaml, file: "bench")
        let transitions = Transitions()
        let checker = try Namespace.run(ns) { () -> HealthChecker in
            let c = try HealthChecker(groups: config.groups) { transitions.record($0) }
            c.start()  // its thread is created here, inside the namespace
            return c
        }
        defer { checker.stop() }
        // Wait for every node to be up (rise 2: two good checks).
        let start = Transitions.now()
        while checker.states.values.filter(\.up).count < nodes && Transitions.now() - start < 10 { usleep(100_000) }
        let upAtStart = checker.states.values.filter(\.up).count
        usleep(1_000_000)
        // CPU over a steady window.
        let cpu0 = Self.cpuSeconds(), wall0 = Transitions.now()
        usleep(UInt32(seconds * 1e6))
        let cpu = Self.cpuSeconds() - cpu0, wall = Transitions.now() - wall0

        // 100 nodes stop answering SYNs.
        let victims = (0..<min(100, nodes)).map { $0 * max(1, nodes / 100) }
        let set = victims.map(address).joined(separator: ", ")
        let rules = NSTemporaryDirectory() + "\(ns).nft"
        try "table ip flcbench {\n  chain input {\n    type filter hook input priority 0;\n    ip daddr { \(set) } tcp dport 8080 drop\n  }\n}\n"
            .write(toFile: rules, atomically: true, encoding: .utf8)
        try sh("ip netns exec \(ns) nft -f \(rules)")
        let stopped = Transitions.now()
        let deadline = stopped + 10
        while Transitions.now() < deadline {
            let found = transitions.lock.withLock { victims.allSatisfy { transitions.down[IPAddress(address($0))!] != nil } }
            if found { break }
            usleep(50_000)
        }
        let detection = transitions.lock.withLock { victims.compactMap { transitions.down[IPAddress(address($0))!].map { $0 - stopped } } }
        return Result(cpuShare: cpu / wall, wallSeconds: wall, checksPerSecond: Double(nodes), detection: detection.sorted(),
                      bound: 2 * 1 + 0.5, upAtStart: upAtStart)
    }
}
