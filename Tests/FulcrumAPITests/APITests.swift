import FulcrumConfiguration
import FulcrumAPI
import FulcrumAPIModels
import FulcrumControl
import FulcrumCore
import FulcrumDataplane
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import Testing

/// The data plane as the control plane sees it, without one: records every layout it
/// is given and every switch thrown, and reports the last layout as its snapshot.
final class RecordingDataplane: DataplaneControl {
    let interfaces: [String]
    let layouts = Mutex<[[GroupSpec]]>([])
    let health = Mutex<[NodeIdentity: Bool]>([:])
    let active = Atomic<Bool>(false)

    init(interfaces: [String]) { self.interfaces = interfaces }

    var isActive: Bool { active.load(ordering: .relaxed) }
    var hasUnrouted: Bool { false }
    var weightsInForce: [NodeIdentity: Int] { [:] }

    func workerProgress() -> [UInt64] { [] }
    func keepAlive(until nanoseconds: UInt64) {}

    func snapshot() -> DataplaneSnapshot {
        let groups = (layouts.withLock { $0.last } ?? []).map { g in
            DataplaneSnapshot.Group(name: g.name, nodes: g.nodes.map {
                DataplaneSnapshot.Node(address: $0.address, port: $0.port, weight: $0.weight, mac: $0.mac)
            })
        }
        return DataplaneSnapshot(groups: groups, flowCapacity: 1024)
    }

    func mapEntryCounts() -> [String: Int] { [:] }
    func validate(groups: [GroupSpec], routes: [RouteSpec]) throws {}

    @discardableResult
    func configure(groups: [GroupSpec], routes: [RouteSpec]) throws -> UInt64 {
        layouts.withLock { $0.append(groups) }
        return UInt64(layouts.withLock { $0.count })
    }

    func setActive(_ active: Bool) throws { self.active.store(active, ordering: .relaxed) }
    func setHealth(_ node: NodeIdentity, up: Bool) { health.withLock { $0[node] = up } }
    func setAgentWeights(_ weights: [NodeIdentity: Int]) {}
    func setAdmission(perSecond: UInt64, burst: UInt64) throws {}
    @discardableResult
    func refreshRouting() -> Dataplane.RoutingRefresh { Dataplane.RoutingRefresh() }
    func stop() {}
}

/// The control API in process (Hummingbird's test client over the router): every route,
/// the tokens, the error shapes, against a runtime whose data plane is a recorder. No
/// socket, no root.
@Suite struct APITests {
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
    static let full = "full-access-token-0123456789"
    static let readOnly = "read-only-token-0123456789"

    struct Setup {
        let directory: String
        let runtime: Runtime
        let dataplane: RecordingDataplane
        let router: Router<BasicRequestContext>

        init(maxBody: Int = 1 << 20) throws {
            directory = NSTemporaryDirectory() + "fulcrum-api-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let file = directory + "/lb.yaml"
            try (APITests.yaml + "\nstate_file: \(directory)/state.json\n").write(toFile: file, atomically: true, encoding: .utf8)
            let config = try ConfigLoader.load(path: file)
            let (committed, _, _) = try Controller.initialState(config)
            dataplane = RecordingDataplane(interfaces: ["eth-c", "eth-n"])
            runtime = try Runtime.assemble(config: config, committed: committed, dataplane: dataplane,
                                           events: try EventLog(file: nil), logger: Logger(label: "test"))
            router = ControlAPI.makeRouter(api: APIHandlers(runtime: runtime, maxBody: maxBody),
                                           tokens: Tokens(full: Array(APITests.full.utf8), readOnly: Array(APITests.readOnly.utf8)),
                                           metrics: Metrics(runtime: runtime))
        }

        func test(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
            try await Application(router: router).test(.router, body)
        }
    }

    static func headers(_ token: String? = APITests.full, json: Bool = false) -> HTTPFields {
        var h = HTTPFields()
        if let token { h[.authorization] = "Bearer \(token)" }
        if json { h[.contentType] = "application/json" }
        return h
    }

    static func decode<T: Decodable>(_ type: T.Type, _ response: TestResponse) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(buffer: response.body))
    }

    static func body(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test func tokensDecideWhoMayReadAndChange() async throws {
        let s = try Setup()
        try await s.test { client in
            for token: String? in [nil, "wrong-token-0123456789", APITests.full + "x"] {
                try await client.execute(uri: "/v1/status", method: .get, headers: Self.headers(token)) { r in
                    #expect(r.status == .unauthorized)
                    #expect(r.headers[.wwwAuthenticate] == "Bearer realm=\"fulcrum\"")
                    let decoded = try Self.decode(ErrorModel.self, r)
                    #expect(decoded.error.contains("token"))
                }
            }
            var lower = HTTPFields()
            lower[.authorization] = "bearer \(APITests.full)"
            try await client.execute(uri: "/v1/status", method: .get, headers: lower) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/status", method: .get, headers: Self.headers(APITests.readOnly)) { #expect($0.status == .ok) }
            try await client.execute(uri: "/metrics", method: .get, headers: Self.headers(APITests.readOnly)) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/groups/web/nodes/198.18.0.11", method: .patch, headers: Self.headers(APITests.readOnly, json: true),
                                     body: Self.body(#"{"weight": 9}"#)) { r in
                #expect(r.status == .forbidden)
                let decoded = try Self.decode(ErrorModel.self, r)
                #expect(decoded.error.contains("read-only"))
            }
            // The page's shell holds no data and needs no token.
            try await client.execute(uri: "/", method: .get) { r in
                #expect(r.status == .ok && String(buffer: r.body).contains("<html"))
            }
        }
        #expect(s.runtime.committed.value.version == 1, "nothing the read-only token sent changed anything")
        #expect(s.dataplane.layouts.withLock { $0.isEmpty })
    }

    /// A standalone LB has no pair: the cluster commands say so (404); the read-only token
    /// may not give them (403); the status says standalone and has no cluster view.
    @Test func clusterCommandsOnAStandaloneLB() async throws {
        let s = try Setup()
        try await s.test { client in
            for command in ["failover", "failback", "resume"] {
                try await client.execute(uri: "/v1/cluster/\(command)", method: .post, headers: Self.headers(APITests.readOnly)) {
                    #expect($0.status == .forbidden)
                }
                try await client.execute(uri: "/v1/cluster/\(command)", method: .post, headers: Self.headers()) { r in
                    #expect(r.status == .notFound)
                    let decoded = try Self.decode(ErrorModel.self, r)
                    #expect(decoded.error.contains("standalone"))
                }
            }
            try await client.execute(uri: "/v1/status", method: .get, headers: Self.headers()) { r in
                let status = try Self.decode(StatusModel.self, r)
                #expect(status.role == "standalone" && status.cluster == nil)
            }
        }
    }

    @Test func everyReadRouteAnswersItsDocumentedType() async throws {
        let s = try Setup()
        try await s.test { client in
            try await client.execute(uri: "/v1/status", method: .get, headers: Self.headers()) { r in
                let status = try Self.decode(StatusModel.self, r)
                #expect(status.host == "lb1" && status.version == 1 && status.groups.map(\.name) == ["web", "app"])
                #expect(status.groups[1].nodes.map(\.address) == ["198.18.2.11", "198.18.2.12"])
            }
            try await client.execute(uri: "/v1/config", method: .get, headers: Self.headers()) { r in
                let decoded = try Self.decode(ConfigDocument.self, r)
                #expect(decoded.groups.count == 2)
            }
            try await client.execute(uri: "/v1/groups", method: .get, headers: Self.headers()) { r in
                let decoded = try Self.decode(ConfigDocument.self, r)
                #expect(decoded.version == 1)
            }
            try await client.execute(uri: "/v1/groups/web", method: .get, headers: Self.headers()) { r in
                let decoded = try Self.decode(GroupModel.self, r)
                #expect(decoded.nodes.map(\.weight) == [3, 2])
            }
            try await client.execute(uri: "/v1/groups/app/nodes", method: .get, headers: Self.headers()) { r in
                let decoded = try Self.decode([NodeModel].self, r)
                #expect(decoded.map(\.port) == [8080, 8080])
            }
            for node in ["198.18.2.11", "198.18.2.11:8080"] {
                try await client.execute(uri: "/v1/groups/app/nodes/\(node)", method: .get, headers: Self.headers()) { r in
                    #expect(r.status == .ok, "\(node)")
                    let decoded = try Self.decode(NodeModel.self, r)
                    #expect(decoded.address == "198.18.2.11")
                }
            }
            try await client.execute(uri: "/v1/groups/app/nodes/198.18.2.11:9999", method: .get, headers: Self.headers()) { r in
                #expect(r.status == .notFound)
            }
            try await client.execute(uri: "/v1/events", method: .get, headers: Self.headers()) { r in
                #expect(r.status == .ok)
                _ = try Self.decode(EventsModel.self, r)
            }
            try await client.execute(uri: "/v1/events?limit=0&severity=loud", method: .get, headers: Self.headers()) { r in
                #expect(r.status == .badRequest)
                let decoded = try Self.decode(ErrorModel.self, r)
                #expect(decoded.errors?.map(\.field).sorted() == ["limit", "severity"])
            }
            try await client.execute(uri: "/metrics", method: .get, headers: Self.headers()) { r in
                let text = String(buffer: r.body)
                #expect(text.contains("fulcrum_config_version 1") && text.contains("fulcrum_node_weight{group=\"app\",node=\"198.18.2.11:8080\"} 1"),
                        "\(text.prefix(400))")
            }
            // HEAD: the GET's status and headers, no body.
            try await client.execute(uri: "/v1/status", method: .head, headers: Self.headers()) { r in
                #expect(r.status == .ok && r.body.readableBytes == 0)
            }
            // Percent-encoded path parameters are decoded.
            try await client.execute(uri: "/v1/groups/w%65b", method: .get, headers: Self.headers()) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/groups/nope", method: .get, headers: Self.headers()) { r in
                let decoded = try Self.decode(ErrorModel.self, r)
                #expect(r.status == .notFound && decoded.error == "there is no group nope")
            }
        }
    }

    @Test func changesGoThroughTheControllerToTheDataplane() async throws {
        let s = try Setup()
        try await s.test { client in
            try await client.execute(uri: "/v1/groups/web/nodes/198.18.0.11", method: .patch, headers: Self.headers(json: true),
                                     body: Self.body(#"{"weight": 9}"#)) { r in
                #expect(r.status == .ok)
                let result = try Self.decode(ChangeResultModel.self, r)
                #expect(result.version == 2 && result.changes.map(\.path) == ["groups/web/nodes/198.18.0.11/weight"])
            }
            try await client.execute(uri: "/v1/groups/web/nodes?dry_run=true", method: .post, headers: Self.headers(json: true),
                                     body: Self.body(#"{"address": "198.18.0.13"}"#)) { r in
                let decoded = try Self.decode(ChangeResultModel.self, r)
                #expect(r.status == .ok && decoded.dryRun)
            }
            try await client.execute(uri: "/v1/groups/web/nodes", method: .post, headers: Self.headers(json: true),
                                     body: Self.body(#"{"address": "198.18.0.13", "weight": 4}"#)) { #expect($0.status == .created) }
            try await client.execute(uri: "/v1/groups/web/nodes/198.18.0.12", method: .delete, headers: Self.headers()) {
                #expect($0.status == .ok)
            }
            let group = #"{"name": "dns", "vip": "198.18.1.30", "protocol": "udp", "ports": [53], "method": "mat", "nodes": [{"address": "198.18.0.11"}]}"#
            try await client.execute(uri: "/v1/groups", method: .post, headers: Self.headers(json: true), body: Self.body(group)) {
                #expect($0.status == .created)
            }
            try await client.execute(uri: "/v1/groups/dns", method: .put, headers: Self.headers(json: true),
                                     body: Self.body(group.replacingOccurrences(of: "[53]", with: "[53, 5353]"))) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/groups/dns?expected_version=2", method: .delete, headers: Self.headers()) { r in
                #expect(r.status == .conflict, "version 6 is in force, not 2")
            }
            try await client.execute(uri: "/v1/groups/dns", method: .delete, headers: Self.headers()) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/config/reload", method: .post, headers: Self.headers()) { r in
                let decoded = try Self.decode(ChangeResultModel.self, r)
                #expect(r.status == .ok && decoded.version == 8)
            }
        }
        // What the data plane was told, in order: the dry run told it nothing.
        let layouts = s.dataplane.layouts.withLock { $0 }
        #expect(layouts.count == 7)
        #expect(layouts[0].first { $0.name == "web" }?.nodes.map(\.weight) == [9, 2])
        #expect(layouts[2].first { $0.name == "web" }?.nodes.map(\.address.description) == ["198.18.0.11", "198.18.0.13"])
        #expect(layouts[4].first { $0.name == "dns" }?.ports == [53, 5353])
        #expect(layouts[6].map(\.name) == ["web", "app"], "the file again")
        #expect(s.runtime.committed.value.version == 8)
        let kinds = s.runtime.events.events().map(\.kind)
        #expect(kinds.filter { $0 == "config.applied" }.count == 7)
    }

    @Test func refusalsNameTheFieldAndChangeNothing() async throws {
        let s = try Setup(maxBody: 2048)
        let cases: [(HTTPRequest.Method, String, String, HTTPResponse.Status, String)] = [
            (.patch, "/v1/groups/web/nodes/198.18.0.11", #"{"weight": 1, "weight": 2000000}"#, .unprocessableContent, "weight"),
            (.patch, "/v1/groups/web/nodes/198.18.0.11", #"{"weight": "five"}"#, .unprocessableContent, "weight"),
            (.patch, "/v1/groups/web/nodes/198.18.0.11", #"{"colour": "blue"}"#, .unprocessableContent, "colour"),
            (.patch, "/v1/groups/web/nodes/198.18.0.11", #"{"weight": "#, .badRequest, "(syntax)"),
            (.post, "/v1/groups", #"{"name": "a b", "vip": "198.18.1.30", "protocol": "tcp", "ports": [81], "method": "mat", "nodes": [{"address": "198.18.0.11"}]}"#,
             .unprocessableContent, "group.name"),
            (.post, "/v1/groups", #"{"name": "web", "vip": "198.18.1.30", "protocol": "tcp", "ports": [81], "method": "mat", "nodes": [{"address": "198.18.0.11"}]}"#,
             .conflict, ""),
            (.post, "/v1/groups/web/nodes", #"{"address": "198.18.0.300"}"#, .unprocessableContent, "node.address"),
            (.post, "/v1/groups/web/nodes", #"{"address": "198.18.0.14", "port": "80"}"#, .unprocessableContent, "port"),
            (.put, "/v1/config", String(repeating: " ", count: 4096), .contentTooLarge, "(body)"),
            (.put, "/v1/config?dry_run=maybe", #"{"groups": []}"#, .badRequest, "dry_run"),
        ]
        try await s.test { client in
            for (method, uri, text, status, field) in cases {
                try await client.execute(uri: uri, method: method, headers: Self.headers(json: true), body: Self.body(text)) { r in
                    #expect(r.status == status, "\(method) \(uri) \(text.prefix(40)): \(r.status) \(String(buffer: r.body).prefix(300))")
                    let e = try Self.decode(ErrorModel.self, r)
                    if !field.isEmpty { #expect(e.errors?.contains { $0.field == field } == true, "\(uri): \(e)") }
                    #expect(e.version == 1, "the error says which version is in force")
                }
            }
        }
        #expect(s.runtime.committed.value.version == 1)
        #expect(s.dataplane.layouts.withLock { $0.isEmpty }, "the data plane was told nothing")
    }
}
