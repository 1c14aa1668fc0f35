import Foundation
import FulcrumTestSupport
import Testing

extension OnTheTestbed {
    /// The benchmark runner's smoke run, as CI runs it: `fulcrum-bench all --quick --json`.
    /// Speed is judged in Docs/BENCHMARKS.md, not here; this asserts what would make a
    /// report worthless: a scenario missing, a peer that did not run, a system through
    /// which no traffic passed, or a run past two minutes.
    @Suite struct BenchSmokeTests {
        @Test func everyScenarioRanAndCarriedTrafficThroughEverySystem() throws {
            let root = Privileged.repositoryRoot()
            let bench = root + "/.build/debug/fulcrum-bench"
            try #require(access(bench, X_OK) == 0, "build it first: swift build --build-tests")
            let output = NSTemporaryDirectory() + "fulcrum-bench-smoke-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: output) }
            let child = try ChildProcess([bench, "all", "--quick", "--json", "--root", root, "--output", output], capture: true)
            // Two minutes, or it is killed and the test fails.
            let watchdog = DispatchWorkItem { child.signal(SIGKILL) }
            DispatchQueue.global().asyncAfter(deadline: .now() + 120, execute: watchdog)
            let started = Date()
            let text = child.readAll()
            let status = child.wait()
            watchdog.cancel()
            let elapsed = Date().timeIntervalSince(started)
            print("fulcrum-bench all --quick --json: \(String(format: "%.1f", elapsed)) s, exit \(status)")
            try #require(status == 0, "fulcrum-bench failed (exit \(status)): \(text.suffix(2000))")
            #expect(elapsed < 120)

            // JSON on stdout, progress lines on stderr, which the pipe also carries: the
            // report is the last top-level object.
            let start = try #require(text.range(of: "{\n  \"command\"", options: .backwards), "no JSON report in: \(text.suffix(1000))")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(text[start.lowerBound...].utf8)) as? [String: Any])
            #expect(report["schema"] as? String == "fulcrum-bench/1")
            let scenarios = try #require(report["scenarios"] as? [[String: Any]])
            #expect(scenarios.compactMap { $0["name"] as? String } == ["mat", "nat", "new-flows", "connections", "latency", "bulk"])
            for s in scenarios {
                let name = s["name"] as? String ?? "?"
                let results = s["results"] as? [[String: Any]] ?? []
                let ran = results.filter { $0["status"] as? String == "ran" }
                // Every peer present on this machine: nothing "unavailable" but IPVS, which
                // this kernel does not have (the report says so).
                for r in results where r["system"] as? String != "ipvs" {
                    #expect(r["status"] as? String != "unavailable", "\(name): \(r["system"] ?? "?") unavailable: \(r["reason"] ?? "")")
                }
                let systems = Set(ran.compactMap { $0["system"] as? String })
                let expected: Set<String> = switch name {
                case "mat": ["generator", "xdp", "c-afxdp", "fulcrum", "fulcrum-offload"]
                case "nat", "new-flows": ["xdp", "nftables", "fulcrum", "fulcrum-offload"]
                case "bulk": ["direct", "nftables", "haproxy", "fulcrum", "fulcrum-mat", "fulcrum-offload", "fulcrum-mat-offload"]
                default: ["direct", "nftables", "haproxy", "fulcrum", "fulcrum-offload"]
                }
                #expect(systems == expected, "\(name): ran \(systems.sorted())")
                for r in ran {
                    let runs = r["runs"] as? [[String: Any]] ?? []
                    #expect(!runs.isEmpty)
                    for run in runs {
                        // Traffic went through: frames or round trips delivered, requests answered, bytes received.
                        let delivered = run["delivered"] as? Double ?? 0
                        let value = run["value"] as? Double ?? 0
                        #expect(delivered > 0 && value > 0, "\(name): \(r["system"] ?? "?") \(r["parameter"] ?? ""): \(run)")
                        if ["connections", "bulk", "latency"].contains(name) {
                            // The LB CPU was sampled. Under connections and bulk every system
                            // keeps CPU 1 busy; latency's light load may leave the tick-sampled
                            // busy time at 0 in a short run.
                            let busy = (run["extra"] as? [String: Any])?["lb_cpu_busy_percent"] as? Double ?? -1
                            let loaded = name != "latency"
                            #expect(busy <= 100 && (loaded ? busy > 0 : busy >= 0),
                                    "\(name): \(r["system"] ?? "?"): LB CPU \(busy < 0 ? "not sampled" : "\(busy)")")
                        }
                    }
                }
                let chart = s["chart"] as? String ?? ""
                #expect(FileManager.default.fileExists(atPath: chart), "\(name): no chart at \(chart)")
                if let svg = try? String(contentsOfFile: chart, encoding: .utf8) {
                    #expect(svg.hasPrefix("<svg") && svg.contains("fulcrum"))
                }
            }
            #expect(FileManager.default.fileExists(atPath: output + "/report.json"))
        }
    }
}
