import FulcrumBPF
import FulcrumCore
import FulcrumTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The control API under load, on a real `fulcrum run` (release build) pinned to one core:
/// requests a second for the status page's shell (a static response: the reference),
/// `/v1/status` and `/metrics`, with wrk on the other core; then the worker's forwarding
/// rate with and without a scraper asking for `/metrics` ten times a second (the ratio).
public struct APIBenchmark {
    public var seconds: Double
    public var groups: Int
    public var nodes: Int
    public var connections: Int
    public var root: String

    public init(seconds: Double = 5, groups: Int = 10, nodes: Int = 10, connections: Int = 8, root: String) {
        self.seconds = seconds
        self.groups = groups
        self.nodes = nodes
        self.connections = connections
        self.root = root
    }

    public struct Result {
        public var rates: [(path: String, requestsPerSecond: Double, p99ms: Double)]
        /// Mpps, three rounds each, taken in turn.
        public var forwardingAlone: [Double]
        public var forwardingScraped: [Double]
        public var scrapes: Int
    }

    func config(directory: String, generatorMAC: MACAddress) -> String {
        var out = """
        node:
          name: bench
        state_file: \(directory)/state.json
        api:
          listen: ["127.0.0.1:9180"]
          token_file: \(directory)/api.token
        dataplane:
          interfaces:
            - name: eth0
          cores: [1]
          flow_table_size: 65536
          hugepages: false
          admission:
            new_connections_per_second: 0
        groups:
          - name: forward
            vip: 198.18.1.10
            protocol: udp
            ports: [9]
            method: mat
            scheduler: maglev
            nodes:
              - address: 198.18.0.2
                mac: \(generatorMAC)

        """
        for g in 0..<groups {
            out += "  - name: g\(g)\n    vip: 198.18.\(100 + g / 250).\(1 + g % 250)\n    protocol: tcp\n    ports: [80]\n"
            out += "    method: mat\n    nodes:\n"
            for n in 0..<nodes {
                out += "      - address: 198.18.\(10 + n / 250).\(1 + n % 250)\n        mac: 02:00:00:00:00:\(String(format: "%02x", n % 256))\n"
            }
        }
        return out
    }

    public func run() throws -> Result {
        let pair = try ForwardingBenchmark.Pair(root: root)
        defer { pair.down() }
        let prefix = pair.prefix, gMAC = pair.generatorMAC, lbMAC = pair.lbMAC
        let directory = NSTemporaryDirectory() + prefix
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let token = (0..<4).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined()
        try token.write(toFile: directory + "/api.token", atomically: true, encoding: .utf8)
        try config(directory: directory, generatorMAC: gMAC).write(toFile: directory + "/lb.yaml", atomically: true, encoding: .utf8)

        let fulcrum = root + "/.build/release/fulcrum"
        let daemon = try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(prefix)-lb", "/usr/bin/taskset", "-c", "1", fulcrum, "run",
                                       "--config", directory + "/lb.yaml", "--bpf-object", try BPFObject.locate(sourceRoot: root),
                                       "--log-level", "warning"], outputPath: directory + "/lb.log")
        defer {
            daemon.signal(SIGTERM)
            _ = daemon.wait()
        }
        func curl(_ path: String) throws -> String {
            try ChildProcess.run(["/usr/sbin/ip", "netns", "exec", "\(prefix)-lb", "/usr/bin/curl", "-s", "--max-time", "5",
                                  "-H", "Authorization: Bearer \(token)", "http://127.0.0.1:9180\(path)"]).1
        }
        var up = false
        for _ in 0..<100 {
            if (try? curl("/v1/status"))?.contains("\"version\"") == true { up = true; break }
            usleep(100_000)
        }
        guard up else {
            throw Testbed.Failure(description: "the daemon's API did not come up: \((try? String(contentsOfFile: directory + "/lb.log", encoding: .utf8)) ?? "")")
        }

        var rates: [(String, Double, Double)] = []
        for path in ["/", "/v1/status", "/metrics"] {
            let (_, out) = try ChildProcess.run(["/usr/sbin/ip", "netns", "exec", "\(prefix)-lb", "/usr/bin/taskset", "-c", "0",
                                                 "/usr/bin/wrk", "-t1", "-c\(connections)", "-d\(Int(seconds))s", "--latency",
                                                 "-H", "Authorization: Bearer \(token)", "http://127.0.0.1:9180\(path)"])
            guard out.contains("Requests/sec") else { throw Testbed.Failure(description: "wrk \(path): \(out)") }
            if out.contains("Non-2xx") { throw Testbed.Failure(description: "wrk \(path) got errors: \(out)") }
            rates.append((path, Self.number(after: "Requests/sec:", in: out) ?? 0, Self.latency(p: "99%", in: out) ?? 0))
        }

        // Forwarding: the generator (CPU 0) through the worker (CPU 1), alone and scraped.
        let generator = try Namespace.run("\(prefix)-gen") { try ForwardingBenchmark.Generator(root: root, flows: 1024) }
        let frame = PacketBuilder.udpFrame(source: IPAddress("198.18.0.2")!, destination: IPAddress("198.18.1.10")!,
                                           sourcePort: 1024, destinationPort: 9, payload: [UInt8](repeating: 0x5A, count: 18),
                                           zeroChecksum: true, ethernetDestination: lbMAC, ethernetSource: gMAC)
        func forward() throws -> Double {
            let before = generator.sunk
            _ = try Namespace.run("\(prefix)-gen", cpu: 0) { try generator.run(frame: frame, seconds: self.seconds) }
            usleep(100_000)
            return Double(generator.sunk - before) / seconds / 1e6
        }
        _ = try forward()  // warm-up
        // Alone and scraped in turn, three times: the machine's drift hits both alike.
        var alone: [Double] = [], scraped: [Double] = []
        var scrapes = 0
        for round in 0..<3 {
            alone.append(try forward())
            let counter = directory + "/scrapes\(round)"
            let scraper = try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(prefix)-lb", "/usr/bin/taskset", "-c", "0", "/bin/sh", "-c",
                                            "n=0; while :; do curl -s -o /dev/null -H 'Authorization: Bearer \(token)' http://127.0.0.1:9180/metrics && n=$((n+1)); echo $n > \(counter); sleep 0.1; done"])
            scraped.append(try forward())
            scraper.signal(SIGKILL)
            _ = scraper.wait()
            scrapes += Int((try? String(contentsOfFile: counter, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
        }
        return Result(rates: rates, forwardingAlone: alone, forwardingScraped: scraped, scrapes: scrapes)
    }

    static func number(after label: String, in text: String) -> Double? {
        guard let line = text.split(separator: "\n").first(where: { $0.contains(label) }) else { return nil }
        return line.split(separator: " ").compactMap { Double($0) }.first
    }

    /// wrk --latency: "     99%    1.23ms".
    static func latency(p: String, in text: String) -> Double? {
        guard let line = text.split(separator: "\n").first(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix(p) }) else { return nil }
        guard let value = line.split(separator: " ").last else { return nil }
        let units: [(String, Double)] = [("us", 0.001), ("ms", 1), ("s", 1000)]
        for (u, scale) in units where value.hasSuffix(u) {
            return Double(value.dropLast(u.count)).map { $0 * scale }
        }
        return nil
    }
}
