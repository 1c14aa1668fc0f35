import Foundation

/// What `fulcrum-bench` reports, in one schema for the table, `--json` and the charts
/// (Docs/BENCHMARKS.md, "The report's JSON", documents every field).
public struct BenchReport: Codable, Sendable {
    public var schema = "fulcrum-bench/1"
    public var command: String
    public var started: String
    public var machine: Machine
    public var quick: Bool
    public var runs: Int
    public var scenarios: [Scenario] = []

    public struct Machine: Codable, Sendable {
        public var cpus: Int
        public var cpuModel: String
        public var kernel: String
        /// Which CPU the generator and clients use, and which the load balancer under test.
        public var clientCPU: Int
        public var lbCPU: Int

        public static func current(clientCPU: Int, lbCPU: Int) -> Machine {
            var info = utsname()
            uname(&info)
            let kernel = withUnsafeBytes(of: &info.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let model = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
                .split(separator: "\n").first { $0.hasPrefix("model name") }
                .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" } ?? "unknown"
            return Machine(cpus: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), cpuModel: model, kernel: kernel,
                           clientCPU: clientCPU, lbCPU: lbCPU)
        }
    }

    public struct Scenario: Codable, Sendable {
        public var name: String
        public var title: String
        /// The unit of `value` in every result, e.g. "Mpps" or "connections/s" or "ms".
        public var unit: String
        /// Whether more is better (throughput) or less (latency).
        public var higherIsBetter: Bool
        public var topology: String
        public var notes: [String] = []
        public var results: [SystemResult] = []
        public var ratios: [Ratio] = []
        /// Figures of `runs[].extra` the table shows as columns (the median over the runs).
        public var extraColumns: [Column] = []
        /// The chart written for the scenario (relative to the output directory).
        public var chart: String?
    }

    public struct Column: Codable, Sendable {
        public var key: String
        public var title: String
    }

    public struct SystemResult: Codable, Sendable {
        /// Short name: fulcrum, xdp, c-afxdp, nftables, haproxy, direct.
        public var system: String
        public var label: String
        /// fulcrum, peer, ceiling (the in-kernel upper bound) or reference.
        public var role: String
        /// ran, not-applicable, or unavailable (a peer that could not run here; `reason` says why).
        public var status: String
        public var reason: String?
        /// How the system was set up for this run, as printed in the report.
        public var configuration: String
        /// The point on the scenario's axis: "flows=1000", "rate=1000/s".
        public var parameter: String
        public var runs: [Run] = []
        public var median: Double?
        public var min: Double?
        public var max: Double?

        public mutating func summarize() {
            let values = runs.map(\.value).sorted()
            guard !values.isEmpty else { return }
            median = values.count % 2 == 1 ? values[values.count / 2] : (values[values.count / 2 - 1] + values[values.count / 2]) / 2
            min = values.first
            max = values.last
        }
    }

    /// One measurement. `value` is the scenario's metric; the rest are what a reader
    /// checks it against: what was offered, what came through, what was lost.
    public struct Run: Codable, Sendable {
        public var value: Double
        public var offered: Double?
        public var delivered: Double?
        public var dropped: Double?
        public var errors: Double?
        public var seconds: Double
        /// Scenario-specific figures (latency percentiles, flow-table fallback, RSS …).
        public var extra: [String: Double] = [:]
    }

    public struct Ratio: Codable, Sendable {
        public var parameter: String
        /// The Fulcrum row: `fulcrum`, or another of role fulcrum (bulk's `fulcrum-mat`).
        public var system: String
        public var peer: String
        /// Fulcrum's median over the peer's (for latency: the peer's over Fulcrum's, so
        /// that above 1 is Fulcrum better in both).
        public var ratio: Double
        public var goal: String?
        public var met: Bool?
    }
}

extension BenchReport.Scenario {
    /// Fulcrum / peer for every parameter where both ran.
    mutating func computeRatios(goals: [String: String] = [:], goalHolds: (String, Double) -> Bool? = { _, _ in nil }) {
        ratios = []
        for f in results where f.role == "fulcrum" && f.status == "ran" {
            for p in results where p.role != "fulcrum" && p.status == "ran" && p.parameter == f.parameter {
                guard let fm = f.median, let pm = p.median, fm > 0, pm > 0 else { continue }
                let ratio = higherIsBetter ? fm / pm : pm / fm
                // The goals are Fulcrum's (NAT, or MAT in mat) row's; other Fulcrum rows are compared only.
                // In latency, the round trip's p99 has HAProxy's goal and the LB's own
                // p99 ("LB p99") nftables'.
                let lbOwn = name == "latency" && f.parameter.hasSuffix(" LB p99")
                let goal = f.system != "fulcrum" || (name == "latency" && !f.parameter.hasSuffix(" p99")) ? nil
                    : lbOwn ? BenchReport.goals["latency-lb"]?[p.system] : goals[p.system]
                // "Below" is strict: the same figure (the same histogram bucket) is not below.
                ratios.append(BenchReport.Ratio(parameter: f.parameter, system: f.system, peer: p.system, ratio: ratio, goal: goal,
                                                met: goal == nil ? nil : lbOwn ? ratio > 1 : goalHolds(p.system, ratio)))
            }
        }
    }
}

// MARK: - The human table

extension BenchReport {
    public func printTables() {
        print("fulcrum-bench: \(machine.cpus) CPUs (\(machine.cpuModel)), kernel \(machine.kernel); client side on CPU \(machine.clientCPU), load balancer on CPU \(machine.lbCPU); \(runs) run(s) per row, interleaved\(quick ? "; --quick" : "")")
        for s in scenarios {
            print("")
            print("== \(s.name): \(s.title)")
            print("   \(s.topology)")
            var table = [["system", "point", s.unit + " median", "min–max", "offered", "delivered", "dropped", "errors"]
                         + s.extraColumns.map(\.title) + ["config"]]
            for r in s.results {
                if r.status != "ran" {
                    table.append([r.label, r.parameter, r.status, "", "", "", "", ""] + s.extraColumns.map { _ in "" } + [r.reason ?? ""])
                    continue
                }
                func median(_ key: String) -> String {
                    let v = r.runs.compactMap { $0.extra[key] }.sorted()
                    guard !v.isEmpty else { return "-" }
                    return short(v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2)
                }
                func avg(_ k: KeyPath<Run, Double?>) -> String {
                    let v = r.runs.compactMap { $0[keyPath: k] }
                    return v.isEmpty ? "-" : short(v.reduce(0, +) / Double(v.count))
                }
                table.append([r.label, r.parameter, r.median.map(short) ?? "-",
                              "\(r.min.map(short) ?? "-")–\(r.max.map(short) ?? "-")", avg(\.offered), avg(\.delivered),
                              avg(\.dropped), avg(\.errors)] + s.extraColumns.map { median($0.key) } + [r.configuration])
            }
            printTable(table)
            if !s.ratios.isEmpty {
                var ratios = [["point", "Fulcrum / peer", "ratio", "goal"]]
                for r in s.ratios {
                    let who = r.system == "fulcrum" ? "" : (s.results.first { $0.system == r.system }?.label ?? r.system) + " "
                    ratios.append([r.parameter, who + "vs " + r.peer, short(r.ratio) + "x",
                                   r.goal.map { "\($0): \(r.met == true ? "met" : r.met == false ? "NOT met" : "?")" } ?? ""])
                }
                printTable(ratios)
            }
            for n in s.notes { print("   note: \(n)") }
            if let chart = s.chart { print("   chart: \(chart)") }
        }
    }
}

func short(_ v: Double) -> String {
    if v == 0 { return "0" }
    let a = abs(v)
    if a >= 100 { return String(Int(v.rounded())) }
    if a >= 10 { return String(format: "%.1f", v) }
    if a >= 0.01 { return String(format: "%.2f", v) }
    return String(format: "%.4f", v)
}

public func printTable(_ rows: [[String]]) {
    let widths = rows[0].indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
    for (i, row) in rows.enumerated() {
        print(row.enumerated().map { c, cell in
            c == 0 || c == row.count - 1 ? cell + String(repeating: " ", count: max(0, widths[c] - cell.count))
                : String(repeating: " ", count: widths[c] - cell.count) + cell
        }.joined(separator: "  "))
        if i == 0 { print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
    }
}

/// A progress line on standard error: rewritten in place on a terminal, a line each
/// otherwise (CI logs).
final class Progress: @unchecked Sendable {
    let tty = isatty(2) != 0
    var step = 0
    var total = 0

    func say(_ text: String) {
        step += 1
        let line = "[\(step)/\(total)] \(text)"
        if tty {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
        } else {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }

    func done() { if tty { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } }
}

// MARK: - Files

extension BenchReport {
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// report.json and one chart per scenario (`<name>.svg`) in `directory`; the ratios
    /// against the goals of Docs/BENCHMARKS.md are computed here.
    public mutating func write(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for i in scenarios.indices {
            scenarios[i].computeRatios(goals: Self.goals[scenarios[i].name] ?? [:]) { _, ratio in ratio >= 1 }
            let chart = scenarios[i].name + ".svg"
            try Chart.svg(scenarios[i], machine: machine).write(toFile: directory + "/" + chart, atomically: true, encoding: .utf8)
            scenarios[i].chart = directory + "/" + chart
        }
        try (json() + "\n").write(toFile: directory + "/report.json", atomically: true, encoding: .utf8)
    }

    /// The goals the issue set, by scenario and peer: Fulcrum's ratio must be ≥ 1.
    static let goals: [String: [String: String]] = [
        "mat": ["c-afxdp": "per worker ≥ the C forwarder"],
        "nat": ["nftables": "≥ nftables DNAT per core"],
        "connections": ["haproxy": "connections/s ≥ HAProxy's on the same cores"],
        "latency": ["haproxy": "p99 below HAProxy's at the same rate"],
        "latency-lb": ["nftables": "the LB's own p99 below nftables'"],
        "bulk": ["nftables": "bulk TCP through NAT ≥ 1.0× nftables"],
    ]
}
