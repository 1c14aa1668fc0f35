import FulcrumConfiguration
import FulcrumAPIModels
import FulcrumBPF
import FulcrumControl
import FulcrumCore
import FulcrumDataplane
import FulcrumTestSupport
import Foundation
import Logging

/// How long a change takes to reach every worker, with 100 groups × 100 nodes configured:
/// one node's weight (a command to each worker) and a full replace of the configuration
/// (new tables built for each worker off its thread, then installed). Each is timed from
/// the call to the controller until every worker has applied it; the same change as a
/// dry run (parse and validate only) is the reference measured beside it.
public struct ControlBenchmark {
    public var groups: Int
    public var nodes: Int
    public var changes: Int
    public var replaces: Int
    public var queues: Int
    public var root: String

    public init(groups: Int = 100, nodes: Int = 100, changes: Int = 200, replaces: Int = 10, queues: Int = 1, root: String) {
        self.groups = groups
        self.nodes = nodes
        self.changes = changes
        self.replaces = replaces
        self.queues = queues
        self.root = root
    }

    public struct Row {
        public var name: String
        public var p50: Double
        public var p99: Double
        public var max: Double
        public var referenceP50: Double
        public var referenceP99: Double
    }

    /// The configuration: MAT groups on VIPs 198.18.100.1…, each with `nodes` nodes
    /// 198.18.10.x/198.18.11.x with static MACs (nothing to resolve).
    func yaml(directory: String, weightBump: Int = 0) -> String {
        var out = """
        node:
          name: bench
        state_file: \(directory)/state.json
        dataplane:
          interfaces:
            - name: eth0
              queues: \(queues)
          flow_table_size: 65536
          max_node_slots: \(max(4096, groups * (nodes + 1)))
          hugepages: false
        groups:

        """
        for g in 0..<groups {
            out += "  - name: g\(g)\n    vip: 198.18.\(100 + g / 250).\(1 + g % 250)\n    protocol: tcp\n    ports: [80]\n"
            out += "    method: mat\n    scheduler: maglev\n    nodes:\n"
            for n in 0..<nodes {
                out += "      - address: 198.18.\(10 + n / 250).\(1 + n % 250)\n        weight: \(1 + (n + weightBump) % 5)\n"
                out += "        mac: 02:00:00:00:\(String(format: "%02x", n / 256)):\(String(format: "%02x", n % 256))\n"
            }
        }
        return out
    }

    final class Outcome: @unchecked Sendable {
        var value: Result<[Row], Error>?
    }

    public func run() throws -> [Row] {
        let pair = try ForwardingBenchmark.Pair(root: root)
        defer { pair.down() }
        let prefix = pair.prefix
        let directory = NSTemporaryDirectory() + prefix
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/lb.yaml"
        try yaml(directory: directory).write(toFile: file, atomically: true, encoding: .utf8)
        let config = try ConfigLoader.load(path: file)
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let root = self.root
        let dataplane = try Namespace.run("\(prefix)-lb") { () -> Dataplane in
            let d = try Dataplane(options: config.dataplaneOptions(bpfObject: try BPFObject.locate(sourceRoot: root)),
                                  groups: config.groupSpecs, routes: [], logger: logger)
            try d.start()
            return d
        }
        defer { dataplane.stop() }
        let (committed, _, _) = try Controller.initialState(config)
        let controller = Controller(local: config, committed: committed,
                                    driver: DataplaneDriver(dataplane: dataplane, local: config), events: nil, logger: logger)
        let replacement = try ConfigLoader.parse(yaml(directory: directory, weightBump: 1), file: file).groups
        let document = String(decoding: BalancingConfig.canonical(replacement), as: UTF8.self)
        let original = String(decoding: BalancingConfig.canonical(config.groups), as: UTF8.self)
        let changes = self.changes, replaces = self.replaces, groups = self.groups, nodes = self.nodes
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Task {
            outcome.value = await Result { () async throws -> [Row] in
                /// Times a change two ways: until every worker has applied it (a thread
                /// watches the workers' command counters while the controller also saves
                /// it), and until the controller answers (applied and saved).
                func measure(_ mutation: Controller.Mutation) async throws -> (applied: Double, answered: Double) {
                    let before = dataplane.commandCounts.map(\.sent)
                    let start = DispatchTime.now().uptimeNanoseconds
                    let appliedAt = ManagedAtomicBox()
                    let watcher = Thread {
                        while true {
                            let counts = dataplane.commandCounts
                            if zip(counts, before).allSatisfy({ $0.sent > $1 && $0.applied >= $0.sent }) {
                                appliedAt.set(DispatchTime.now().uptimeNanoseconds)
                                return
                            }
                            if appliedAt.cancelled { return }
                            usleep(20)
                        }
                    }
                    watcher.start()
                    _ = try await controller.change(mutation, origin: "bench")
                    let answered = DispatchTime.now().uptimeNanoseconds
                    if dataplane.commandCounts.map(\.sent) == before {
                        // Nothing for the workers (the value was already so).
                        appliedAt.cancelled = true
                        appliedAt.set(answered)
                    }
                    while appliedAt.value == 0 { usleep(20) }
                    return (Double(appliedAt.value - start) / 1e6, Double(answered - start) / 1e6)
                }
                func time(_ body: () async throws -> Void) async rethrows -> Double {
                    let start = DispatchTime.now().uptimeNanoseconds
                    try await body()
                    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
                }
                var one: [Double] = [], oneSaved: [Double] = [], oneDry: [Double] = []
                for i in 0..<changes {
                    let mutation = Controller.Mutation.patchNode(group: "g\(i % groups)", node: "198.18.\(10 + (i % nodes) / 250).\(1 + (i % nodes) % 250)",
                                                                 NodePatchModel(weight: 10 + i))
                    oneDry.append(try await time { _ = try await controller.change(mutation, dryRun: true, origin: "bench") })
                    let m = try await measure(mutation)
                    one.append(m.applied)
                    oneSaved.append(m.answered)
                }
                var full: [Double] = [], fullSaved: [Double] = [], fullDry: [Double] = []
                for i in 0..<replaces {
                    let doc = i % 2 == 0 ? document : original
                    fullDry.append(try await time { _ = try await controller.change(.replace(doc), dryRun: true, origin: "bench") })
                    let m = try await measure(.replace(doc))
                    full.append(m.applied)
                    fullSaved.append(m.answered)
                }
                return [Self.row("one node's weight: applied by every worker", one, oneDry),
                        Self.row("one node's weight: answered (applied and saved)", oneSaved, oneDry),
                        Self.row("full replace: applied by every worker", full, fullDry),
                        Self.row("full replace: answered (applied and saved)", fullSaved, fullDry)]
            }
            done.signal()
        }
        done.wait()
        return try outcome.value!.get()
    }

    static func row(_ name: String, _ samples: [Double], _ reference: [Double]) -> Row {
        func pct(_ s: [Double], _ p: Double) -> Double {
            let sorted = s.sorted()
            return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
        }
        return Row(name: name, p50: pct(samples, 0.5), p99: pct(samples, 0.99), max: samples.max() ?? 0,
                   referenceP50: pct(reference, 0.5), referenceP99: pct(reference, 0.99))
    }
}

extension Result where Failure == Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

/// A time written by one thread and read by another.
final class ManagedAtomicBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: UInt64 = 0
    private var isCancelled = false
    var cancelled: Bool {
        get { lock.lock(); defer { lock.unlock() }; return isCancelled }
        set { lock.lock(); isCancelled = newValue; lock.unlock() }
    }
    func set(_ v: UInt64) { lock.lock(); stored = v; lock.unlock() }
    var value: UInt64 { lock.lock(); defer { lock.unlock() }; return stored }
}
