import FulcrumConfiguration
import Crypto
@testable import FulcrumControl
import FulcrumCore
import FulcrumTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The agents' listener with a manual clock: reports handed to it as the socket would,
/// its 200 ms tick called by hand, time moved by hand. Agent silence and discovery expiry
/// without a sleep, a namespace or root.
@Suite struct AgentServiceTests {
    static let key = Array("agent-key-for-the-unit-tests-0123".utf8)

    /// What the listener handed on.
    final class Recorder: Sendable {
        let weights = Mutex<[[NodeIdentity: Int]]>([])
        let discoveries = Mutex<[DiscoveryDecision]>([])
    }

    struct Setup {
        let directory: String
        let service: AgentService
        let clock = ManualClock()
        let events: EventLog
        let recorder = Recorder()
        var discovered: [DiscoveryDecision] { recorder.discoveries.withLock { $0 } }

        init() throws {
            directory = NSTemporaryDirectory() + "fulcrum-agents-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data(AgentServiceTests.key).write(to: URL(fileURLWithPath: directory + "/agent.key"))
            let yaml = """
            dataplane:
              interfaces:
                - name: eth-c
                - name: eth-n
            state_file: \(directory)/state.json
            agent:
              key_file: \(directory)/agent.key
              port: \(Int.random(in: 40000...60000))
              silence: 3
              discovered_timeout: 2
            groups:
              - name: web
                vip: 198.18.1.20
                protocol: tcp
                ports: [80]
                method: nat
                interface: eth-n
                dynamic_weights: cpu
                nodes:
                  - address: 198.18.2.11
                    port: 8080
                    weight: 2
              - name: pool
                vip: 198.18.1.30
                protocol: tcp
                ports: [80]
                method: nat
                interface: eth-n
                accept_discovered_nodes: true
                nodes:
                  - address: 198.18.2.12
                    port: 8080
            """
            try yaml.write(toFile: directory + "/lb.yaml", atomically: true, encoding: .utf8)
            let config = try ConfigLoader.load(path: directory + "/lb.yaml")
            events = try EventLog(file: nil)
            let recorder = self.recorder
            service = try AgentService(config: config.agent!, groups: config.groups, events: events, logger: Logger(label: "test"),
                                       clock: clock, onWeights: { w in recorder.weights.withLock { $0.append(w) } },
                                       onDiscovery: { d in recorder.discoveries.withLock { $0.append(d) } })
            service.adopt(config.groups.filter { $0.dynamicWeights || $0.acceptDiscoveredNodes })
        }

        /// A signed report from `address`, handed over as the socket would.
        func report(_ address: String, sequence: UInt64, load: UInt16) {
            let r = AgentReport(intervalMilliseconds: 200, epoch: SystemClockTestEpoch.start, sequence: sequence, load: load,
                                address: IPAddress(address)!)
            var bytes = r.encodeSigned()
            bytes += HMAC<SHA256>.authenticationCode(for: bytes, using: SymmetricKey(data: AgentServiceTests.key))
            bytes.withUnsafeBytes { service.handle($0, size: $0.count, from: IPAddress(address)) }
        }

        func tick(after seconds: Double) {
            clock.advance(seconds: seconds)
            service.tick(clock.nanoseconds())
        }

        var weightInForce: Int? { recorder.weights.withLock { $0.last?[NodeIdentity(group: "web", address: IPAddress("198.18.2.11")!, port: 8080)] } }
    }

    @Test func aSilentAgentsNodeFallsBackToItsStaticWeightAfterSilenceIntervals() throws {
        let s = try Setup()
        s.report("198.18.2.11", sequence: 1, load: 800)
        s.tick(after: 0.2)
        let loaded = try #require(s.weightInForce)
        #expect(loaded < 200, "an 80% load lowers the weight below static × 100: \(loaded)")
        // Silence: 3 intervals of 0.2 s. Just short of it, the load still counts.
        s.tick(after: 0.35)
        #expect(s.weightInForce == loaded)
        #expect(!s.events.events().contains { $0.kind == "node.agent.silent" })
        s.tick(after: 0.1)
        #expect(s.weightInForce == 200, "silent for 0.65 s: static weight 2 × 100")
        let silent = try #require(s.events.events().last { $0.kind == "node.agent.silent" })
        #expect(silent.message == "node 198.18.2.11: no report for 3 intervals; its static weight applies again")
        // It reports again: its load counts again.
        s.report("198.18.2.11", sequence: 2, load: 800)
        s.tick(after: 0.2)
        #expect((s.weightInForce ?? 200) < 200)
    }

    @Test func aDiscoveredNodeJoinsAfterTwoReportsAndLeavesAfterItsTimeout() throws {
        let s = try Setup()
        s.report("198.18.2.50", sequence: 1, load: 100)
        #expect(s.discovered.isEmpty, "one report is not yet an agent")
        s.tick(after: 0.5)
        s.report("198.18.2.50", sequence: 2, load: 100)
        let added = s.discovered
        guard case let .add(group, address, port) = try #require(added.first), added.count == 1 else {
            Issue.record("expected one add: \(added)")
            return
        }
        #expect(group == "pool" && address == IPAddress("198.18.2.50") && port == 8080, "on the port of the group's first node")
        // discovered_timeout: 2 s from its last report.
        s.tick(after: 1.9)
        #expect(s.discovered.count == 1)
        s.tick(after: 0.2)
        let all = s.discovered
        guard all.count == 2, case let .remove(g, a, p) = all[1] else {
            Issue.record("expected a remove: \(all)")
            return
        }
        #expect(g == "pool" && a == IPAddress("198.18.2.50") && p == 8080)
        let kinds = s.events.events().map(\.kind)
        #expect(kinds.contains("node.discovered") && kinds.last == "node.discovered.gone", "\(kinds)")
    }
}

/// An agent's epoch a second before the test process started (the LB refuses epochs far ahead).
enum SystemClockTestEpoch {
    static let start = UInt64(Date().timeIntervalSince1970 * 1000) - 1000
}
