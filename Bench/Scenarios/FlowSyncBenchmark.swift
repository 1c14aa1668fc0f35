import Foundation
import FulcrumTestSupport

/// `fulcrum-bench sync`, its side-by-side part: held TCP connections across a SIGKILL of the
/// active LB of a pair, Fulcrum's flow sync (wrr on the MAT VIP: a standby without the
/// active's flows would choose anew) beside nftables DNAT (random choice) + keepalived
/// (VRRPv3, advert 0.1 s) + conntrackd (FTFW on the same interconnect), in four conditions:
/// idle old connections, connections opened just before the kill, a high new-connection
/// rate, 2 % loss on the sync link. Measured in one run on the same pair testbed by
/// Bench/testbed/flowsync-bench.sh.
public struct FlowSyncBenchmark {
    /// One measurement, as the script prints it.
    public struct Row: Decodable, Sendable {
        public var system: String
        public var condition: String
        /// Connections open when the fault came.
        public var held: Int
        public var survived: Int
        /// Reset, timed out or answered by another server after the fault.
        public var broken: Int
        /// The longest any held connection waited for an answer: the outage it saw.
        public var maxGapMs: Int?
        enum CodingKeys: String, CodingKey {
            case system, condition, held, survived, broken
            case maxGapMs = "max_gap_ms"
        }

        /// Survived, in percent of held (the target: ≥ 99.9 in every condition).
        public var survivalPercent: Double { held == 0 ? 0 : 100 * Double(survived) / Double(held) }
        public var meetsTarget: Bool { held > 0 && survivalPercent >= 99.9 }
    }

    public struct Result: Sendable {
        public var rows: [Row]
        /// What the script said beside the rows (stderr): each system's sync state before
        /// the fault, the commit time, the new-connection rate reached, the losses made.
        public var notes: [String]
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Held connections per measurement, and client processes opening new connections in
    /// the rate condition (FLOWSYNC_HELD, FLOWSYNC_RATE_PROCS of the script).
    let held: Int
    let rateProcesses: Int

    public init(held: Int = 200, rateProcesses: Int = 4) {
        self.held = held
        self.rateProcesses = rateProcesses
    }

    /// Runs the script (root, keepalived and conntrackd needed) and returns its rows in the
    /// order measured: fulcrum's four conditions, then conntrackd's.
    public func peerRows(root: String) throws -> [Row] {
        try run(root: root).rows
    }

    public func run(root: String) throws -> Result {
        let (status, out) = try ChildProcess.run(["/usr/bin/env", "FLOWSYNC_HELD=\(held)", "FLOWSYNC_RATE_PROCS=\(rateProcesses)",
                                                  root + "/Bench/testbed/flowsync-bench.sh", root])
        guard status == 0 else { throw Failure(description: "flowsync-bench.sh failed (\(status)):\n\(out.suffix(3000))") }
        var rows: [Row] = []
        var notes: [String] = []
        for line in out.split(separator: "\n") {
            if line.hasPrefix("{"), let row = try? JSONDecoder().decode(Row.self, from: Data(line.utf8)) {
                rows.append(row)
            } else if line.hasPrefix("flowsync-bench:") {
                notes.append(String(line.dropFirst("flowsync-bench:".count).drop { $0 == " " }))
            }
        }
        guard !rows.isEmpty else { throw Failure(description: "flowsync-bench.sh printed no row:\n\(out.suffix(3000))") }
        return Result(rows: rows, notes: notes)
    }
}
