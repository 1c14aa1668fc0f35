import Foundation
import FulcrumTestSupport

/// `fulcrum-bench failover`: the outage a client sees when the active LB of a pair dies
/// (SIGKILL), loses its link, or hands over on purpose (a planned switchover), Fulcrum (heartbeats 25 ms / 100 ms) beside keepalived
/// (VRRPv3 at its default advert interval and at a fast one), measured in one run on the
/// same pair testbed by Bench/testbed/failover-bench.sh.
public struct FailoverBenchmark {
    public struct Measurement: Decodable, Sendable {
        public var system: String
        public var fault: String
        public var outageMs: Double
        public var sent: Int
        public var answered: Int
        enum CodingKeys: String, CodingKey {
            case system, fault, sent, answered
            case outageMs = "outage_ms"
        }
    }

    public struct Row: Sendable {
        public var system: String
        public var fault: String
        public var runs: Int
        public var medianMs: Double
        public var worstMs: Double
        /// Requests unanswered over all runs (a planned switchover should lose none).
        public var lost: Int
        public var sent: Int
    }

    let root: String
    let runs: Int
    let keepalivedFast: Double

    public init(root: String, runs: Int, keepalivedFast: Double) {
        self.root = root
        self.runs = runs
        self.keepalivedFast = keepalivedFast
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public func run() throws -> [Row] {
        let (status, out) = try ChildProcess.run([root + "/Bench/testbed/failover-bench.sh", root, "\(runs)", "\(keepalivedFast)"])
        guard status == 0 else { throw Failure(description: "failover-bench.sh failed (\(status)):\n\(out.suffix(3000))") }
        let measurements = out.split(separator: "\n").compactMap { line -> Measurement? in
            guard line.hasPrefix("{") else { return nil }
            return try? JSONDecoder().decode(Measurement.self, from: Data(line.utf8))
        }
        var order: [String] = []
        var groups: [String: [Measurement]] = [:]
        for m in measurements {
            let key = m.system + "\t" + m.fault
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(m)
        }
        return order.map { key in
            let ms = groups[key]!.map(\.outageMs).sorted()
            let parts = key.split(separator: "\t").map(String.init)
            return Row(system: parts[0], fault: parts[1], runs: ms.count, medianMs: ms[ms.count / 2], worstMs: ms.last ?? 0,
                       lost: groups[key]!.reduce(0) { $0 + max(0, $1.sent - $1.answered) },
                       sent: groups[key]!.reduce(0) { $0 + $1.sent })
        }
    }
}
