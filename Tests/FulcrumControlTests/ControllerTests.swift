import FulcrumConfiguration
import FulcrumAPIModels
import FulcrumControl
import FulcrumCore
import Foundation
import Logging
import Synchronization
import Testing

/// Records what the controller told the data plane; can be told to refuse.
final class RecordingDriver: ForwardingDriver {
    let applied = Mutex<[[FulcrumConfig.Group]]>([])
    let refuse = Atomic<Bool>(false)

    struct Refused: Error {}

    func validate(_ groups: [FulcrumConfig.Group], routes: [FulcrumConfig.Route]) throws {}

    func apply(_ groups: [FulcrumConfig.Group], routes: [FulcrumConfig.Route]) throws {
        if refuse.load(ordering: .relaxed) { throw Refused() }
        applied.withLock { $0.append(groups) }
    }

    var count: Int { applied.withLock { $0.count } }

    let health = Mutex<[(NodeIdentity, Bool)]>([])
    let weights = Mutex<[[NodeIdentity: Int]]>([])
    let admission = Mutex<[(UInt64, UInt64)]>([])

    func setHealth(_ node: NodeIdentity, up: Bool) { health.withLock { $0.append((node, up)) } }
    func setAgentWeights(_ weights: [NodeIdentity: Int]) { self.weights.withLock { $0.append(weights) } }
    func setAdmission(perSecond: UInt64, burst: UInt64) throws { admission.withLock { $0.append((perSecond, burst)) } }
    let activity = Mutex<[Bool]>([])
    func setActive(_ active: Bool) throws { activity.withLock { $0.append(active) } }
}

@Suite struct ControllerTests {
    static let yaml = """
    node:
      name: lb1
    dataplane:
      interfaces:
        - name: eth-c
        - name: eth-n
    groups:
      - name: web
        vip: 198.18.1.10
        protocol: tcp
        ports: [80]
        method: mat
        interface: eth-c
        nodes:
          - address: 198.18.0.11
            weight: 3
          - address: 198.18.0.12
            weight: 2
          - address: 198.18.0.13
      - name: app
        vip: 198.18.1.20
        protocol: tcp
        ports: [80]
        method: nat
        interface: eth-n
        nodes:
          - address: 198.18.2.11
            port: 8080
          - address: 198.18.2.12
            port: 8080
    """

    /// A directory with the configuration file; the state file beside it.
    struct Setup {
        let directory: String
        let config: FulcrumConfig
        let driver = RecordingDriver()
        var statePath: String { config.stateFile }

        init(yaml: String = ControllerTests.yaml) throws {
            directory = NSTemporaryDirectory() + "fulcrum-controller-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let file = directory + "/lb.yaml"
            try (yaml + "\nstate_file: \(directory)/state.json\n").write(toFile: file, atomically: true, encoding: .utf8)
            config = try ConfigLoader.load(path: file)
        }

        func controller() throws -> Controller {
            let (committed, _, _) = try Controller.initialState(config)
            try Controller.persist(committed, to: config.stateFile)
            return Controller(local: config, committed: committed, driver: driver, events: nil, logger: Logger(label: "test"))
        }

        func saved() throws -> StateFile { try #require(try StateFile.read(statePath)) }
    }

    @Test func aChangeIsAppliedPersistedAndVersioned() async throws {
        let s = try Setup()
        let c = try s.controller()
        let before = await c.committed
        #expect(before.version == 1 && before.hash.hasPrefix("sha256:"))

        let dry = try await c.change(.patchNode(group: "web", node: "198.18.0.12", NodePatchModel(weight: 0)), dryRun: true, origin: "test")
        #expect(dry.dryRun && dry.version == 2)
        #expect(dry.changes == [ChangeModel(op: "change", path: "groups/web/nodes/198.18.0.12/weight", from: "2", to: "0")])
        #expect(await c.committed.version == 1, "a dry run commits nothing")
        #expect(s.driver.count == 0, "a dry run touches no data plane")

        let r = try await c.change(.patchNode(group: "web", node: "198.18.0.12", NodePatchModel(weight: 0)), origin: "test")
        #expect(!r.dryRun && r.version == 2 && r.hash == dry.hash)
        #expect(s.driver.applied.withLock { $0.last?[0].nodes[1].weight } == 0)
        let saved = try s.saved()
        #expect(saved.version == 2 && saved.hash == r.hash && saved.groups[0].nodes[1].weight == 0)

        let added = try await c.change(.addNode(group: "app", #"{"address": "198.18.2.13", "port": 8080, "weight": 5}"#), origin: "test")
        #expect(added.version == 3 && added.changes.map(\.op) == ["add"])
        let removed = try await c.change(.removeGroup(name: "web"), origin: "test")
        #expect(removed.version == 4 && removed.changes == [ChangeModel(op: "remove", path: "groups/web", from: removed.changes.first?.from)])
        #expect(await c.committed.groups.map(\.name) == ["app"])
        #expect(try s.saved().version == 4)
    }

    /// Each invalid change is refused with the field and value named, and nothing moves:
    /// not the version, not the data plane, not the state file.
    @Test(arguments: [
        (Controller.Mutation.addNode(group: "web", #"{"address": "198.18.0.300"}"#), "node.address", "198.18.0.300"),
        (.addGroup(#"{"name": "web2", "vip": "198.18.1.10", "protocol": "tcp", "ports": [80], "method": "mat", "nodes": [{"address": "198.18.0.21"}]}"#),
         "groups[2].ports", "80"),
        (.addGroup(#"{"name": "x", "vip": "198.18.1.30", "protocol": "tcp", "ports": [80], "method": "mat", "scheduler": "fastest", "nodes": [{"address": "198.18.0.21"}]}"#),
         "group.scheduler", "fastest"),
        (.patchNode(group: "web", node: "198.18.0.11", NodePatchModel(weight: 1_000_001)), "weight", "1000001"),
        (.addGroup(#"{"name": "app2", "vip": "198.18.1.21", "protocol": "tcp", "ports": [80], "method": "nat", "interface": "eth-n", "nodes": [{"address": "198.18.2.11", "port": 8080}]}"#),
         "groups[2].nodes", "198.18.2.11"),
        (.addNode(group: "web", #"{"address": "198.18.0.21", "colour": "blue"}"#), "node.colour", "colour"),
        (.addNode(group: "web", #"{"address": "198.18.0.21", "#), "(syntax)", nil),
        (.addNode(group: "web", #"{"address": "198.18.1.10"}"#), "node.address", "198.18.1.10"),
        (.addNode(group: "app", #"{"address": "2001:2:2::11", "port": 8080}"#), "node.address", "2001:2:2::11"),
        (.addNode(group: "web", #"{"address": "198.18.0.21", "weight": -1}"#), "node.weight", "-1"),
        (.replace(#"{"groups": [], "dataplane": {}}"#), "dataplane", "dataplane"),
        (.addGroup(#"{"name": "y", "vip": "198.18.1.40", "protocol": "sctp", "ports": [80], "method": "mat", "nodes": [{"address": "198.18.0.21"}]}"#),
         "group.protocol", "sctp"),
        (.replaceGroup(name: "web", #"{"name": "other", "vip": "198.18.1.10", "protocol": "tcp", "ports": [80], "method": "mat", "nodes": [{"address": "198.18.0.21"}]}"#),
         "group.name", "other"),
    ] as [(Controller.Mutation, String, String?)])
    func invalidChangesAreRefusedAndChangeNothing(mutation: Controller.Mutation, field: String, value: String?) async throws {
        let s = try Setup()
        let c = try s.controller()
        let before = try s.saved()
        do {
            _ = try await c.change(mutation, origin: "test")
            Issue.record("accepted: \(mutation)")
        } catch {
            #expect(error.kind == .invalid, "\(error)")
            #expect(error.version == 1)
            let match = error.errors.first { $0.field == field }
            #expect(match != nil, "no error for \(field): \(error)")
            if let value { #expect(match?.value == value, "\(error)") }
        }
        #expect(await c.committed.version == 1)
        #expect(c.rejected.load(ordering: .relaxed) == 1)
        #expect(s.driver.count == 0)
        #expect(try s.saved() == before)
    }

    @Test func notFoundAndConflictsAreTheirOwnKinds() async throws {
        let s = try Setup()
        let c = try s.controller()
        await #expect(throws: ChangeError.self) { try await c.change(.removeGroup(name: "nope"), origin: "t") }
        for (mutation, kind) in [(Controller.Mutation.removeGroup(name: "nope"), ChangeError.Kind.notFound),
                                 (.removeNode(group: "web", node: "198.18.0.99"), .notFound),
                                 (.addNode(group: "web", #"{"address": "198.18.0.11"}"#), .conflict)] {
            do { _ = try await c.change(mutation, origin: "t") } catch { #expect(error.kind == kind, "\(mutation)") }
        }
        do {
            _ = try await c.change(.removeGroup(name: "web"), expectedVersion: 7, origin: "t")
        } catch { #expect(error.kind == .conflict && error.message.contains("configuration 1 is in force")) }
        #expect(await c.committed.version == 1)
    }

    /// 50 changes from 5 concurrent clients: versions strictly increase, and replaying the
    /// changes in version order from the start gives exactly the final state.
    @Test func concurrentChangesAreSerial() async throws {
        let s = try Setup()
        let c = try s.controller()
        let initial = await c.committed.groups
        let nodes = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
        let results = try await withThrowingTaskGroup(of: [(Int, String, Int)].self) { group in
            for client in 0..<5 {
                group.addTask {
                    var out: [(Int, String, Int)] = []
                    for i in 0..<10 {
                        let node = nodes[(client + i) % 3]
                        let weight = client * 100 + i
                        let r = try await c.change(.patchNode(group: "web", node: node, NodePatchModel(weight: weight)), origin: "client\(client)")
                        out.append((r.version, node, weight))
                    }
                    return out
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let versions = results.map(\.0).sorted()
        #expect(versions == Array(2...51), "every change got its own version")
        var replay = initial
        for (_, node, weight) in results.sorted(by: { $0.0 < $1.0 }) {
            let i = replay[0].nodes.firstIndex { "\($0.address)" == node }!
            replay[0].nodes[i].weight = weight
        }
        let final = await c.committed
        #expect(final.version == 51)
        #expect(BalancingConfig.hash(replay) == final.hash)
        #expect(try s.saved().hash == final.hash)
        #expect(s.driver.count == 50)
    }

    @Test func aRefusedApplyOrSaveCommitsNothing() async throws {
        let s = try Setup()
        let c = try s.controller()
        s.driver.refuse.store(true, ordering: .relaxed)
        do {
            _ = try await c.change(.patchNode(group: "web", node: "198.18.0.11", NodePatchModel(weight: 9)), origin: "t")
            Issue.record("accepted")
        } catch {
            #expect(error.kind == .failed && error.version == 1)
        }
        #expect(await c.committed.version == 1)
        #expect(try s.saved().version == 1)
    }

    /// At start: the state wins while the file's groups are those it began from; an edited
    /// file wins, at the next version.
    @Test func theStateFileWinsUntilTheFileChanges() async throws {
        let s = try Setup()
        let c = try s.controller()
        _ = try await c.change(.patchNode(group: "web", node: "198.18.0.11", NodePatchModel(weight: 7)), origin: "t")
        _ = try await c.change(.patchNode(group: "web", node: "198.18.0.13", NodePatchModel(enabled: false)), origin: "t")

        let (restarted, note, _) = try Controller.initialState(s.config)
        #expect(restarted.version == 3 && note.contains("state.json"))
        #expect(restarted.groups[0].nodes[0].weight == 7 && restarted.groups[0].nodes[2].enabled == false)

        let edited = try ConfigLoader.parse(Self.yaml.replacingOccurrences(of: "weight: 2", with: "weight: 4")
            + "\nstate_file: \(s.statePath)\n", file: s.config.file)
        let (fromFile, why, _) = try Controller.initialState(edited)
        #expect(fromFile.version == 4 && why.contains("the file wins"))
        #expect(fromFile.groups[0].nodes[0].weight == 3 && fromFile.groups[0].nodes[1].weight == 4)
    }

    @Test func reloadingTheFileReplacesTheGroups() async throws {
        let s = try Setup()
        let c = try s.controller()
        _ = try await c.change(.patchNode(group: "web", node: "198.18.0.11", NodePatchModel(weight: 7)), origin: "t")
        try (Self.yaml.replacingOccurrences(of: "weight: 2", with: "weight: 4") + "\nstate_file: \(s.statePath)\n")
            .write(toFile: s.config.file, atomically: true, encoding: .utf8)
        let r = try await c.change(.reloadFile, origin: "SIGHUP")
        #expect(r.version == 3)
        let groups = await c.committed.groups
        #expect(groups[0].nodes.map(\.weight) == [3, 4, 1])
        #expect(try Controller.initialState(try ConfigLoader.load(path: s.config.file)).0.version == 3,
                "the reloaded file is the state's source now")
    }

    @Test func aNodesOwnCheckReplacesItsGroupsAndReadsBack() throws {
        let yaml = Self.yaml.replacingOccurrences(of: "      - address: 198.18.2.12\n        port: 8080",
                                                  with: "      - address: 198.18.2.12\n        port: 8080\n        health_check: {type: http, port: 8081, path: /ready, expect_body: ok}")
            .replacingOccurrences(of: "    interface: eth-n\n", with: "    interface: eth-n\n    health_check: {type: tcp}\n")
        let s = try Setup(yaml: yaml)
        let app = try #require(s.config.groups.first { $0.name == "app" })
        #expect(app.check(for: app.nodes[0])?.kind == .tcp, "the group's")
        let own = try #require(app.check(for: app.nodes[1]))
        #expect(own.kind == .http && own.port == 8081 && own.path == "/ready" && own.expectText == "ok", "\(own)")
        let doc = String(decoding: BalancingConfig.canonical(s.config.groups), as: UTF8.self)
        let back = try ConfigLoader.parseBalancing(doc, source: "doc", local: s.config)
        #expect(BalancingConfig.hash(back) == BalancingConfig.hash(s.config.groups))
        #expect(back[1].nodeHealthChecks == app.nodeHealthChecks)
    }

    @Test func theCanonicalDocumentReadsBackToTheSameGroups() throws {
        let s = try Setup()
        let doc = String(decoding: BalancingConfig.canonical(s.config.groups), as: UTF8.self)
        let back = try ConfigLoader.parseBalancing(doc, source: "doc", local: s.config)
        #expect(BalancingConfig.hash(back) == BalancingConfig.hash(s.config.groups))
        #expect(back.map(\.nodes) == s.config.groups.map(\.nodes))
    }
}

/// Every input the daemon's threads give the controller, through its one stream, handled
/// in order; what reached the data plane (the recorder) and the event log.
@Suite struct ControllerInputTests {
    static let web = (a: NodeIdentity(group: "web", address: IPAddress("198.18.0.11")!, port: 0),
                      b: NodeIdentity(group: "web", address: IPAddress("198.18.0.12")!, port: 0),
                      c: NodeIdentity(group: "web", address: IPAddress("198.18.0.13")!, port: 0))

    /// Feeds `inputs` through the controller's stream and waits until it has handled them all.
    func run(_ s: ControllerTests.Setup, _ inputs: [Controller.Input], events: EventLog) async throws -> Controller {
        let (committed, _, _) = try Controller.initialState(s.config)
        try Controller.persist(committed, to: s.config.stateFile)
        let (stream, continuation) = AsyncStream.makeStream(of: Controller.Input.self)
        let controller = Controller(local: s.config, committed: committed, driver: s.driver, events: events,
                                    logger: Logger(label: "test"), inputs: stream)
        for i in inputs { continuation.yield(i) }
        continuation.finish()
        await controller.run()
        return controller
    }

    func kinds(_ events: EventLog) -> [String] { events.events().map(\.kind) }

    @Test func healthReachesTheDataplaneAndAGroupWithNoLiveNodeIsAnAlert() async throws {
        let s = try ControllerTests.Setup()
        let events = try EventLog(file: nil)
        let w = Self.web
        _ = try await run(s, [
            .health(.init(node: w.a, up: false, reason: "refused")),
            .health(.init(node: w.b, up: false, reason: "timeout")),
            .health(.init(node: w.c, up: false, reason: "status 503")),
            .health(.init(node: w.b, up: true, reason: nil)),
        ], events: events)
        #expect(s.driver.health.withLock { $0.map { "\($0.0.address) \($0.1)" } }
                == ["198.18.0.11 false", "198.18.0.12 false", "198.18.0.13 false", "198.18.0.12 true"])
        #expect(kinds(events) == ["node.down", "node.down", "node.down", "group.no_live_node", "node.up", "group.back"])
        let alert = try #require(events.events().first { $0.kind == "group.no_live_node" })
        #expect(alert.message == "web: no node is up; new flows go to nowhere (no sorry server)")
        #expect(events.events().first?.fields["reason"] == "refused")
    }

    @Test func aLocalFaultIsAnAlarmAndNoNodeChanges() async throws {
        let s = try ControllerTests.Setup()
        let events = try EventLog(file: nil)
        _ = try await run(s, [.localFault(.init(reason: "socket: Too many open files", checks: 1)), .localFault(nil)], events: events)
        #expect(kinds(events) == ["lb.local_fault", "lb.local_fault.cleared"])
        #expect(s.driver.health.withLock { $0.isEmpty } && s.driver.count == 0)
    }

    @Test func agentWeightsApplyOnlyWhenTheyChange() async throws {
        let s = try ControllerTests.Setup()
        let w = Self.web
        _ = try await run(s, [.agentWeights([w.a: 300]), .agentWeights([w.a: 300]), .agentWeights([w.a: 150]), .agentWeights([w.a: 150])],
                          events: try EventLog(file: nil))
        #expect(s.driver.weights.withLock { $0 } == [[w.a: 300], [w.a: 150]])
    }

    @Test func discoveredNodesAreChangesLikeAnyOther() async throws {
        let s = try ControllerTests.Setup()
        let events = try EventLog(file: nil)
        let node = IPAddress("198.18.0.14")!
        let controller = try await run(s, [
            .discovered(.add(group: "web", address: node, port: 0)),
            .discovered(.add(group: "web", address: node, port: 0)),       // again: a conflict, refused
            .discovered(.disable(group: "web", address: node, port: 0)),
            .discovered(.remove(group: "web", address: node, port: 0)),
        ], events: events)
        let applied = events.events().filter { $0.kind == "config.applied" }
        #expect(applied.map { $0.fields["origin"] } == ["discovery", "discovery", "discovery"])
        #expect(applied.map { $0.fields["version"] } == ["2", "3", "4"])
        #expect(kinds(events).filter { $0 == "config.rejected" }.count == 1)
        let added = s.driver.applied.withLock { $0[0] }.first { $0.name == "web" }!
        #expect(added.nodes.last?.address == node && added.nodes.last?.weight == 1)
        let disabled = s.driver.applied.withLock { $0[1] }.first { $0.name == "web" }!
        #expect(disabled.nodes.last?.enabled == false)
        #expect(await controller.committed.groups.first { $0.name == "web" }?.nodes.contains { $0.address == node } == false)
    }

    @Test func sighupReloadsTheFileAndAppliesANewAdmissionBudget() async throws {
        let s = try ControllerTests.Setup()
        let events = try EventLog(file: nil)
        var text = try String(contentsOfFile: s.config.file, encoding: .utf8)
        #expect(text.contains("      - address: 198.18.0.13\n") && text.contains("    - name: eth-n\n"), "fixture drifted")
        text = text.replacingOccurrences(of: "      - address: 198.18.0.13\n", with: "")
            .replacingOccurrences(of: "    - name: eth-n\n", with: "    - name: eth-n\n  admission:\n    new_connections_per_second: 5000\n    burst: 64\n")
        try text.write(toFile: s.config.file, atomically: true, encoding: .utf8)
        let controller = try await run(s, [.reload], events: events)
        #expect(await controller.committed.version == 2)
        #expect(await controller.committed.groups.first { $0.name == "web" }?.nodes.count == 2)
        #expect(s.driver.admission.withLock { $0.map { "\($0.0)/\($0.1)" } } == ["5000/64"])
        #expect(events.events().last { $0.kind == "config.applied" }?.fields["origin"] == "SIGHUP")
    }
}
