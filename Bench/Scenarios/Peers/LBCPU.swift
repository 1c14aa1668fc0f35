import FulcrumCore
import FulcrumTestSupport
import Foundation

/// The LB CPU's busy time, for the scenarios that report it (bulk, connections, latency):
/// read from /proc/stat for the LB's CPU, and set against each scenario's unit of work.
extension PeerBenchmark {
    /// Where every row is bounded by the client's CPU, the rates do not rank the
    /// systems, but the LB's CPU per unit of work still does: each Fulcrum row's median
    /// `key` (a run's extra) against each peer's in `against` (below 1: less of the LB's
    /// CPU for the same traffic).
    func costNotes(_ results: [BenchReport.SystemResult], key: String, what: String, against peers: [String]) -> [String] {
        func median(_ r: BenchReport.SystemResult) -> Double? {
            let v = r.runs.compactMap { $0.extra[key] }.sorted()
            return v.isEmpty ? nil : v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
        }
        return peers.flatMap { peer -> [String] in
            guard let reference = results.first(where: { $0.system == peer && $0.status == "ran" }), let cost = median(reference),
                  cost > 0 else { return [] }
            return results.filter { $0.role == "fulcrum" && $0.status == "ran" }.compactMap { r in
                median(r).map { "\(what), \(r.label) against \(reference.label): " + String(format: "%.1f against %.1f, %.2f×", $0, cost, $0 / cost) }
            }
        }
    }

    /// The LB CPU's busy % over the middle of a measurement that started just now and
    /// lasts `seconds`, its first `skip` seconds left out (a short inset at each end, so
    /// that only the traffic's steady part counts). Returns when that middle ends.
    func lbBusyPercent(skipping skip: Double = 0, of seconds: Double) -> Double? {
        let started = monotonic()
        let inset = min(0.3, (seconds - skip) * 0.2)
        sleepUntil(started + skip + inset)
        let before = Self.cpuTimes(options.lbCPU)
        sleepUntil(started + seconds - inset)
        return Self.busyPercent(before, Self.cpuTimes(options.lbCPU))
    }

    static func busyPercent(_ before: (busy: UInt64, total: UInt64)?, _ after: (busy: UInt64, total: UInt64)?) -> Double? {
        guard let before, let after, after.total > before.total else { return nil }
        return Double(after.busy - before.busy) / Double(after.total - before.total) * 100
    }

    func sleepUntil(_ time: Double) {
        let wait = time - monotonic()
        if wait > 0 { usleep(UInt32(wait * 1e6)) }
    }

    /// The busy and total jiffies of one CPU (its line of /proc/stat).
    static func cpuTimes(_ cpu: Int) -> (busy: UInt64, total: UInt64)? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu\(cpu) ") }) else { return nil }
        return cpuTimes(line: String(line))
    }

    /// "cpuN user nice system idle iowait irq softirq steal guest guest_nice": busy is all
    /// but idle and iowait (guest time is already in user).
    static func cpuTimes(line: String) -> (busy: UInt64, total: UInt64)? {
        let f = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard f.count >= 8 else { return nil }
        let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
        return (busy, busy + f[3] + f[4])
    }
}
