import FulcrumConfiguration
import Crypto
import FulcrumAPIModels
import FulcrumControl
import Foundation
import FulcrumCore
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// The control API (Docs/openapi.yaml): HTTP+JSON under /v1, `/metrics`, and the status
/// page at `/`, on every `api.listen` address and the optional Unix socket.
public enum ControlAPI {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// One Hummingbird application per listening address, all with the same router.
    public static func services(runtime: Runtime, metrics: Metrics, logger: Logger) throws -> [any Service] {
        guard let config = runtime.local.api else { return [] }
        let tokens = try Tokens(config)
        let router = makeRouter(api: APIHandlers(runtime: runtime, maxBody: config.maxBodyBytes), tokens: tokens,
                                metrics: metrics)
        let responder = router.buildResponder()
        // One governor for every listener: the cap is on what the API holds of the daemon.
        let governor = metrics.connections(ConnectionGovernor.Limits(maxConnections: config.maxConnections,
                                                                    requestTimeout: config.requestTimeout,
                                                                    idleTimeout: config.idleTimeout))
        let http1 = HTTPServerBuilder.http1(configuration: .init(additionalChannelHandlers: [governor.handler()]))
        var server = http1
        if let certificate = config.tlsCertificate, let key = config.tlsKey {
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
                let tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain,
                                                                   privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
                server = try .tls(http1, tlsConfiguration: tls)
            } catch {
                throw Failure(description: "api.tls: cannot use \(certificate) and \(key): \(error)")
            }
        }
        var services: [any Service] = []
        for text in config.listen {
            guard let a = APIListenAddress(text) else { throw Failure(description: "api.listen: \(text) is not address:port") }
            services.append(Application(responder: responder, server: server,
                                        configuration: .init(address: .hostname(a.host, port: a.port), serverName: "fulcrum"),
                                        logger: logger))
        }
        if let path = config.unixSocket {
            // A socket left by a process that died: nothing listens on it any more.
            unlink(path)
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            services.append(Application(responder: responder, server: http1,
                                        configuration: .init(address: .unixDomainSocket(path: path), serverName: "fulcrum"),
                                        onServerRunning: { _ in chmod(path, 0o600) }, logger: logger))
        }
        return services
    }

    /// The router: every path behind the token middleware but the page's shell.
    public static func makeRouter(api: APIHandlers, tokens: Tokens, metrics: Metrics) -> Router<BasicRequestContext> {
        // HEAD answers as GET would, without the body, on every GET route.
        let router = Router(context: BasicRequestContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: TokenMiddleware(tokens: tokens))
        router.add(middleware: RequestCounter(metrics: metrics))
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                     body: .init(byteBuffer: ByteBuffer(string: StatusPage.html)))
        }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: metrics.scrape())))
        }
        router.get("/v1/status") { _, _ in api.json(api.runtime.statusModel()) }
        router.get("/v1/events") { request, _ in api.events(request) }
        router.get("/v1/config") { _, _ in api.json(await api.runtime.controller.document) }
        router.put("/v1/config") { request, _ in
            await api.mutate(request, schema: BalancingConfigModel.self) { .replace($0) }
        }
        router.post("/v1/config/reload") { request, _ in
            await api.mutate(request, body: false) { _ in .reloadFile }
        }
        router.post("/v1/cluster/failover") { request, _ in
            await api.cluster(.failover(force: request.uri.queryParameters["force"] == "true"), asked: "failover")
        }
        router.post("/v1/cluster/failback") { request, _ in
            await api.cluster(.failover(force: request.uri.queryParameters["force"] == "true"), asked: "failback")
        }
        router.post("/v1/cluster/resume") { _, _ in await api.cluster(.resume, asked: "resume") }
        router.post("/v1/cluster/sync") { _, _ in await api.sync() }
        router.get("/v1/groups") { _, _ in api.json(await api.runtime.controller.document) }
        router.post("/v1/groups") { request, _ in
            await api.mutate(request, created: true, schema: GroupModel.self) { .addGroup($0) }
        }
        router.get("/v1/groups/:group") { _, context in
            await api.group(api.path(context, "group")) { api.json(BalancingConfig.model($0)) }
        }
        router.put("/v1/groups/:group") { request, context in
            let name = api.path(context, "group")
            return await api.mutate(request, schema: GroupModel.self) { .replaceGroup(name: name, $0) }
        }
        router.delete("/v1/groups/:group") { request, context in
            let name = api.path(context, "group")
            return await api.mutate(request, body: false) { _ in .removeGroup(name: name) }
        }
        router.get("/v1/groups/:group/nodes") { _, context in
            await api.group(api.path(context, "group")) { g in
                api.json(g.nodes.map { BalancingConfig.model($0, sorry: false) })
            }
        }
        router.post("/v1/groups/:group/nodes") { request, context in
            let name = api.path(context, "group")
            return await api.mutate(request, created: true, schema: NodeModel.self) { .addNode(group: name, $0) }
        }
        router.get("/v1/groups/:group/nodes/:node") { _, context in
            let node = api.path(context, "node")
            return await api.group(api.path(context, "group")) { g in
                guard let n = g.nodes.first(where: { api.matches($0, node) }) else {
                    return api.error(.notFound, ErrorModel(error: "\(g.name) has no node \(node)"))
                }
                return api.json(BalancingConfig.model(n, sorry: false))
            }
        }
        router.patch("/v1/groups/:group/nodes/:node") { request, context in
            let name = api.path(context, "group")
            let node = api.path(context, "node")
            return await api.patchNode(request, group: name, node: node)
        }
        router.delete("/v1/groups/:group/nodes/:node") { request, context in
            let name = api.path(context, "group")
            let node = api.path(context, "node")
            return await api.mutate(request, body: false) { _ in .removeNode(group: name, node: node) }
        }
        return router
    }
}

/// The bearer tokens, read from their files at start. Only their SHA-256 digests are
/// kept, and a presented token is compared digest to digest in constant time.
public struct Tokens: Sendable {
    public enum Access: Sendable { case full, readOnly }
    let full: [UInt8]
    let readOnly: [UInt8]?

    public init(full: [UInt8], readOnly: [UInt8]?) {
        self.full = Self.digest(full)
        self.readOnly = readOnly.map(Self.digest)
    }

    init(_ config: FulcrumConfig.API) throws {
        // A token file's bytes, as the agent's key file: a byte changed anywhere is another token.
        func read(_ path: String, _ field: String) throws -> [UInt8] {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ControlAPI.Failure(description: "\(field): cannot read \(path): \(String(cString: strerror(errno)))")
            }
            let token = SharedKey.bytes(fromFile: Array(data))
            if let problem = SharedKey.problem(token, file: path) { throw ControlAPI.Failure(description: "\(field): \(problem)") }
            return token
        }
        let full = try read(config.tokenFile, "api.token_file")
        let ro = try config.readonlyTokenFile.map { try read($0, "api.readonly_token_file") }
        if let ro, ro == full {
            throw ControlAPI.Failure(description: "api.readonly_token_file holds the full-access token; give it a token of its own")
        }
        self.init(full: full, readOnly: ro)
    }

    static func digest(_ token: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: token)) }

    static func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }

    /// The token of an `Authorization` header: the scheme is case-insensitive (RFC 9110
    /// §11.1), one or more spaces follow it.
    public static func bearer(_ authorization: String) -> [UInt8]? {
        let bytes = Array(authorization.utf8)
        let scheme = Array("bearer".utf8)
        guard bytes.count > scheme.count, bytes[scheme.count] == 0x20,
              zip(bytes, scheme).allSatisfy({ $0 | 0x20 == $1 }) else { return nil }
        let token = bytes.dropFirst(scheme.count).drop { $0 == 0x20 }
        return token.isEmpty ? nil : Array(token)
    }

    public func access(_ presented: [UInt8]) -> Access? {
        let d = Self.digest(presented)
        // Both compared every time: how long it takes says nothing about which matched.
        let isFull = Self.same(d, full)
        let isReadOnly = readOnly.map { Self.same(d, $0) } ?? false
        return isFull ? .full : isReadOnly ? .readOnly : nil
    }
}

/// 401 without a valid token, 403 for a read-only token on anything but GET and HEAD.
/// The status page's shell (`GET /`) holds no data and needs none: it asks for a token.
struct TokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let tokens: Tokens

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.method == .get && request.uri.path == "/" { return try await next(request, context) }
        guard let header = request.headers[.authorization], let token = Tokens.bearer(header),
              let access = tokens.access(token) else {
            return APIHandlers.errorResponse(.unauthorized,
                                             ErrorModel(error: "a valid token is required: send Authorization: Bearer <token> (api.token_file or api.readonly_token_file)"),
                                             headers: [.wwwAuthenticate: "Bearer realm=\"fulcrum\""])
        }
        if access == .readOnly && request.method != .get && request.method != .head {
            return APIHandlers.errorResponse(.forbidden, ErrorModel(error: "the read-only token may only read; use the full-access token to change anything"))
        }
        return try await next(request, context)
    }
}

/// The handlers: small functions from a request to a typed response.
public struct APIHandlers: Sendable {
    let runtime: Runtime
    let maxBody: Int

    public init(runtime: Runtime, maxBody: Int) {
        self.runtime = runtime
        self.maxBody = maxBody
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// `POST /v1/cluster/sync`: push the configuration to the standby now, and say how it went.
    func sync() async -> Response {
        guard let cluster = runtime.cluster else {
            return error(.notFound, ErrorModel(error: "this LB is standalone (no cluster section): there is no peer to sync with"))
        }
        let result = await withCheckedContinuation { (done: CheckedContinuation<Result<String, ClusterService.CommandRefusal>, Never>) in
            cluster.sync.requestPush { done.resume(returning: $0) }
        }
        switch result {
        case let .success(text): return json(ClusterCommandModel(result: text, role: "\(cluster.role)"))
        case let .failure(why): return error(.conflict, ErrorModel(error: why.description))
        }
    }

    /// In a pair, the configuration is changed on the active LB and pushed to the standby:
    /// a change on the standby would be overwritten, so it is refused, naming the active.
    func refusalOnStandby() -> Response? {
        guard let cluster = runtime.cluster, let config = runtime.local.cluster, cluster.role != .active else { return nil }
        let status = cluster.status.withLock { $0 }
        guard status.peer.role == "active" else { return nil }  // no active to send it to: this LB takes it
        return error(.conflict, ErrorModel(error: "this LB is \(cluster.role) in the pair: change the configuration on the active LB, \(config.peer); it pushes it here",
                                           version: runtime.committed.value.version))
    }

    /// An operator's command to the pair: answered once the cluster thread has taken it.
    func cluster(_ command: ClusterService.Command, asked: String) async -> Response {
        guard let cluster = runtime.cluster, let config = runtime.local.cluster else {
            return error(.notFound, ErrorModel(error: "this LB is standalone (no cluster section): there is no pair to \(asked)"))
        }
        if asked == "failback" && config.role == .master {
            return error(.conflict, ErrorModel(error: "failback moves the service back to the master, and this LB is the master; run it on \(config.peer)"))
        }
        let result = await withCheckedContinuation { (done: CheckedContinuation<Result<String, ClusterService.CommandRefusal>, Never>) in
            cluster.perform(command) { done.resume(returning: $0) }
        }
        switch result {
        case let .success(text): return json(ClusterCommandModel(result: text, role: "\(cluster.role)"))
        case let .failure(why): return error(.conflict, ErrorModel(error: why.description))
        }
    }

    func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        Self.json(value, status: status)
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    func error(_ status: HTTPResponse.Status, _ model: ErrorModel) -> Response { Self.errorResponse(status, model) }

    static func errorResponse(_ status: HTTPResponse.Status, _ model: ErrorModel, headers: HTTPFields = [:]) -> Response {
        json(model, status: status, headers: headers)
    }

    func matches(_ n: FulcrumConfig.Node, _ ref: String) -> Bool {
        NodeLabel(ref)?.names(address: n.address, port: n.port) ?? false
    }

    func group(_ name: String, _ body: (FulcrumConfig.Group) -> Response) async -> Response {
        let groups = runtime.committed.value.groups
        guard let g = groups.first(where: { $0.name == name }) else {
            return error(.notFound, ErrorModel(error: "there is no group \(name)"))
        }
        return body(g)
    }

    func events(_ request: Request) -> Response {
        let q = request.uri.queryParameters
        var problems: [ErrorModel.FieldError] = []
        let since = q.get("since").map { Int($0) } ?? 0
        let limit = q.get("limit").map { Int($0) } ?? 1000
        let severity = q.get("severity").map { Event.Severity(rawValue: $0) } ?? .info
        if since == nil || since! < 0 { problems.append(.init(field: "since", value: q.get("since"), message: "must be a whole number ≥ 0")) }
        if limit == nil || !(1...10000).contains(limit!) { problems.append(.init(field: "limit", value: q.get("limit"), message: "must be a whole number from 1 to 10000")) }
        if severity == nil { problems.append(.init(field: "severity", value: q.get("severity"), message: "must be one of info, notice, warning, error")) }
        guard problems.isEmpty, let since, let limit, let severity else {
            return error(.badRequest, ErrorModel(error: "invalid query", errors: problems))
        }
        let all = runtime.events.events(after: UInt64(since)).filter { $0.severity >= severity }
        let page = all.prefix(limit)
        let next = page.last.map { Int($0.sequence) } ?? max(since, Int(runtime.events.lastSequence))
        return json(EventsModel(events: page.map(EventModels.model), next: next))
    }

    /// Reads the body, runs the change through the controller, maps its verdict to HTTP.
    func mutate(_ request: Request, body: Bool = true, created: Bool = false, schema: (any Decodable.Type)? = nil,
                _ make: (String) -> Controller.Mutation) async -> Response {
        let version = runtime.committed.value.version
        let q = request.uri.queryParameters
        var problems: [ErrorModel.FieldError] = []
        var dryRun = false
        if let d = q.get("dry_run") {
            switch d.lowercased() {
            case "true", "1": dryRun = true
            case "false", "0": dryRun = false
            default: problems.append(.init(field: "dry_run", value: d, message: "must be true or false"))
            }
        }
        var expected: Int?
        if let e = q.get("expected_version") {
            expected = Int(e)
            if expected == nil { problems.append(.init(field: "expected_version", value: e, message: "must be a whole number")) }
        }
        if !problems.isEmpty { return error(.badRequest, ErrorModel(error: "invalid query", errors: problems, version: version)) }
        if !dryRun, let refusal = refusalOnStandby() { return refusal }
        var text = ""
        if body {
            switch await read(request) {
            case let .success(t): text = t
            case let .failure(response): return response
            }
            if let schema, let refusal = Self.strict(schema, text, version: version) { return refusal }
        }
        do {
            let result = try await runtime.controller.change(make(text), dryRun: dryRun, expectedVersion: expected,
                                                              origin: "api")
            return json(result, status: created && !dryRun ? .created : .ok)
        } catch {
            return Self.response(for: error)
        }
    }

    /// JSON of the documented types, exactly: a string where a number belongs, or a
    /// number where text belongs, is refused here (the configuration reader, which also
    /// reads YAML, would take "8080" for 8080). The reader then checks the values.
    static func strict(_ type: any Decodable.Type, _ text: String, version: Int) -> Response? {
        do {
            _ = try JSONDecoder().decode(type, from: Data(text.utf8))
            return nil
        } catch let DecodingError.dataCorrupted(context) where context.codingPath.isEmpty {
            return errorResponse(.badRequest, ErrorModel(error: "the body is not JSON",
                                                         errors: [.init(field: "(syntax)", value: nil, message: "send a JSON object (Docs/openapi.yaml)")],
                                                         version: version))
        } catch let e as DecodingError {
            let (path, message): ([any CodingKey], String)
            switch e {
            case let .typeMismatch(t, c): (path, message) = (c.codingPath, "must be \(describe(t))")
            case let .valueNotFound(t, c): (path, message) = (c.codingPath, "must be \(describe(t)), not null")
            case let .keyNotFound(k, c): (path, message) = (c.codingPath + [k], "is required")
            case let .dataCorrupted(c): (path, message) = (c.codingPath, c.debugDescription)
            @unknown default: (path, message) = ([], "\(e)")
            }
            let field = path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
                .trimmingCharacters(in: CharacterSet(charactersIn: "."))
            return errorResponse(.unprocessableContent, ErrorModel(error: "the body does not match the API's types",
                                                                   errors: [.init(field: field.isEmpty ? "(body)" : field, value: nil, message: message)],
                                                                   version: version))
        } catch {
            return errorResponse(.badRequest, ErrorModel(error: "the body cannot be read: \(error)", version: version))
        }
    }

    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type: "a whole number"
        case is Double.Type: "a number"
        case is Bool.Type: "true or false"
        case is String.Type: "text"
        default: "a \(type)".replacingOccurrences(of: "Model", with: "").lowercased()
        }
    }

    enum Body {
        case success(String)
        case failure(Response)
    }

    func read(_ request: Request) async -> Body {
        let version = runtime.committed.value.version
        do {
            let buffer = try await request.body.collect(upTo: maxBody)
            return .success(String(buffer: buffer))
        } catch is NIOTooManyBytesError {
            return .failure(self.error(.contentTooLarge, ErrorModel(
                error: "the body is larger than api.max_body_bytes (\(maxBody) bytes)",
                errors: [.init(field: "(body)", value: nil, message: "is over \(maxBody) bytes")], version: version)))
        } catch {
            // The body could not be read as HTTP frames it (a malformed chunk, a cut connection).
            return .failure(self.error(.badRequest, ErrorModel(
                error: "the body cannot be read: \(error)",
                errors: [.init(field: "(body)", value: nil, message: "is not a well-formed HTTP body")], version: version)))
        }
    }

    /// A path parameter, percent-decoded (`fulcrumctl` and any client encode what they send).
    func path(_ context: BasicRequestContext, _ name: String) -> String {
        let raw = context.parameters.get(name) ?? ""
        return raw.removingPercentEncoding ?? raw
    }

    static func response(for error: ChangeError) -> Response {
        let fields = error.errors.map { ErrorModel.FieldError(field: $0.field, value: $0.value, message: $0.message, line: $0.line) }
        let model = ErrorModel(error: error.message, errors: fields.isEmpty ? nil : fields, version: error.version)
        switch error.kind {
        case .invalid:
            let syntax = error.errors.contains { $0.field == "(syntax)" || $0.field == "(body)" }
            return errorResponse(syntax ? .badRequest : .unprocessableContent, model)
        case .notFound: return errorResponse(.notFound, model)
        case .conflict: return errorResponse(.conflict, model)
        case .failed: return errorResponse(.internalServerError, model)
        }
    }

    /// `{"weight": N, "enabled": B}`, either or both; anything else is named and refused.
    func patchNode(_ request: Request, group: String, node: String) async -> Response {
        let version = runtime.committed.value.version
        if let refusal = refusalOnStandby() { return refusal }
        let text: String
        switch await read(request) {
        case let .success(t): text = t
        case let .failure(response): return response
        }
        let fields: [String: JSONScalar]
        do {
            fields = try JSONDecoder().decode([String: JSONScalar].self, from: Data(text.utf8))
        } catch DecodingError.dataCorrupted {
            return error(.badRequest, ErrorModel(error: "the body is not JSON",
                                                 errors: [.init(field: "(syntax)", value: nil, message: "send {\"weight\": N} and/or {\"enabled\": true|false}")],
                                                 version: version))
        } catch {
            return self.error(.unprocessableContent, ErrorModel(error: "the body must be a JSON object",
                                                           errors: [.init(field: "(body)", value: nil, message: "must be an object with weight and/or enabled")],
                                                           version: version))
        }
        // JSONDecoder keeps the first of two equal keys; every other route refuses them.
        if let twice = ConfigLoader.duplicateKeys(in: text, source: Controller.body) {
            return error(.unprocessableContent, ErrorModel(error: "the change is invalid",
                                                           errors: [.init(field: twice.field, value: nil, message: twice.message)],
                                                           version: version))
        }
        var patch = NodePatchModel()
        var problems: [ErrorModel.FieldError] = []
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            switch (key, value) {
            case let ("weight", .int(w)): patch.weight = w
            case ("weight", _):
                problems.append(.init(field: "weight", value: "\(value)", message: "must be a whole number from 0 to \(NodeLimits.maxWeight)"))
            case let ("enabled", .bool(b)): patch.enabled = b
            case ("enabled", _):
                problems.append(.init(field: "enabled", value: "\(value)", message: "must be true or false"))
            default:
                problems.append(.init(field: key, value: nil, message: "unknown field; expected enabled, weight"))
            }
        }
        if patch.weight == nil && patch.enabled == nil && problems.isEmpty {
            problems.append(.init(field: "(body)", value: nil, message: "names nothing to change; give weight and/or enabled"))
        }
        if !problems.isEmpty {
            return error(.unprocessableContent, ErrorModel(error: "the change is invalid", errors: problems, version: version))
        }
        return await mutate(request, body: false) { _ in .patchNode(group: group, node: node, patch) }
    }
}

/// A JSON value as the patch reads it: true and 1 are told apart.
enum JSONScalar: Decodable, CustomStringConvertible {
    case bool(Bool)
    case int(Int)
    case other(String)

    var description: String {
        switch self {
        case let .bool(b): "\(b)"
        case let .int(i): "\(i)"
        case let .other(s): s
        }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .other("\(d)") }
        else if let s = try? c.decode(String.self) { self = .other("\"\(s)\"") }
        else if c.decodeNil() { self = .other("null") }
        else { self = .other("(a list or an object)") }
    }
}

/// `fulcrum_api_requests_total{method, status}`: what the API answered (past the token check).
struct RequestCounter<Context: RequestContext>: RouterMiddleware {
    let metrics: Metrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        metrics.countRequest(method: request.method.rawValue, status: Int(response.status.code))
        return response
    }
}
