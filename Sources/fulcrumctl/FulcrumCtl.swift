import ArgumentParser
import AsyncHTTPClient
import FulcrumAPIModels
import FulcrumCore
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

@main
struct FulcrumCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrumctl",
        abstract: "Operate a running Fulcrum through its control API.",
        discussion: """
        The API's address and token come from --api and --token-file, else FULCRUM_API and \
        FULCRUM_TOKEN_FILE, else the file ~/.config/fulcrum/fulcrumctl.conf or \
        /etc/fulcrum/fulcrumctl.conf (lines `api = URL` and `token_file = PATH`). \
        URL is http://host:port, https://host:port or unix:/path/to/api.sock.
        """,
        subcommands: [Status.self, Groups.self, Nodes.self, NodeCommand.self, GroupCommand.self, ConfigCommand.self,
                      EventsCommand.self, Failover.self, Failback.self, Resume.self, Sync.self])
}

// MARK: - Connection

struct ClientOptions: ParsableArguments {
    @Option(help: "The API: http://host:port, https://host:port or unix:/path/api.sock.") var api: String?
    @Option(help: "A file holding the API token.") var tokenFile: String?
    @Flag(help: "Print the API's JSON instead of tables.") var json = false

    func client() throws -> APIClient {
        let file = ClientFile.load()
        let env = ProcessInfo.processInfo.environment
        guard let api = api ?? env["FULCRUM_API"] ?? file["api"] else {
            throw ValidationError("no API address: give --api URL, set FULCRUM_API, or put `api = URL` in ~/.config/fulcrum/fulcrumctl.conf")
        }
        guard let tokenPath = tokenFile ?? env["FULCRUM_TOKEN_FILE"] ?? file["token_file"] else {
            throw ValidationError("no token: give --token-file FILE, set FULCRUM_TOKEN_FILE, or put `token_file = PATH` in ~/.config/fulcrum/fulcrumctl.conf")
        }
        guard let data = FileManager.default.contents(atPath: tokenPath) else {
            throw ValidationError("cannot read the token file \(tokenPath)")
        }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return try APIClient(api: api, token: token)
    }
}

/// `key = value` lines; # starts a comment.
enum ClientFile {
    static func load() -> [String: String] {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "/root"
        for path in ["\(home)/.config/fulcrum/fulcrumctl.conf", "/etc/fulcrum/fulcrumctl.conf"] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            var out: [String: String] = [:]
            for line in text.split(separator: "\n") {
                let body = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                let parts = body.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if parts.count == 2 { out[parts[0]] = parts[1] }
            }
            return out
        }
        return [:]
    }
}

struct APIFailure: Error, CustomStringConvertible {
    var description: String
}

final class APIClient {
    let base: String
    let socketPath: String?
    let token: String
    let http = HTTPClient(eventLoopGroupProvider: .singleton)

    init(api: String, token: String) throws {
        self.token = token
        if api.hasPrefix("unix:") || api.hasPrefix("/") {
            var path = api.hasPrefix("unix:") ? String(api.dropFirst(5)) : api
            while path.hasPrefix("//") { path.removeFirst() }
            socketPath = path
            base = ""
        } else if api.hasPrefix("http://") || api.hasPrefix("https://") {
            socketPath = nil
            base = api.hasSuffix("/") ? String(api.dropLast()) : api
        } else {
            throw ValidationError("--api \(api): give http://host:port, https://host:port or unix:/path/api.sock")
        }
    }

    deinit { try? http.syncShutdown() }

    struct Reply {
        var status: Int
        var body: Data
    }

    func send(_ method: HTTPMethod, _ path: String, body: Data? = nil) async throws -> Reply {
        let url: String
        if let socketPath {
            guard let u = URL(httpURLWithSocketPath: socketPath, uri: path) else {
                throw APIFailure(description: "bad socket path \(socketPath)")
            }
            url = u.absoluteString
        } else {
            url = base + path
        }
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(30))
        } catch {
            throw APIFailure(description: "cannot reach the API at \(socketPath.map { "unix:\($0)" } ?? base): \(error). Is `fulcrum run` up, with an api: section that listens there?")
        }
        var buffer = try await response.body.collect(upTo: 64 << 20)
        let data = buffer.readData(length: buffer.readableBytes) ?? Data()
        return Reply(status: Int(response.status.code), body: data)
    }

    /// The reply's body when it is a success; otherwise the API's error, said plainly.
    func call(_ method: HTTPMethod, _ path: String, body: Data? = nil) async throws -> Data {
        let reply = try await send(method, path, body: body)
        guard (200..<300).contains(reply.status) else { throw Self.failure(reply) }
        return reply.body
    }

    static func failure(_ reply: Reply) -> APIFailure {
        guard let e = try? JSONDecoder().decode(ErrorModel.self, from: reply.body) else {
            return APIFailure(description: "HTTP \(reply.status): \(StatusText.printable(String(decoding: reply.body.prefix(500), as: UTF8.self)))")
        }
        var lines = ["error (HTTP \(reply.status)): \(e.error)"]
        for f in e.errors ?? [] {
            lines.append("  \(f.field): \(f.message)" + (f.value.map { " (value: \"\($0)\")" } ?? "") + (f.line.map { " [line \($0)]" } ?? ""))
        }
        if let v = e.version { lines.append("configuration \(v) is still in force") }
        switch reply.status {
        case 401: lines.append("check --token-file (or FULCRUM_TOKEN_FILE): it must hold api.token_file's token")
        case 403: lines.append("this is the read-only token; changes need the full-access token (api.token_file)")
        default: break
        }
        return APIFailure(description: lines.map(StatusText.printable).joined(separator: "\n"))
    }

    func get<T: Decodable>(_ type: T.Type, _ path: String) async throws -> (T, Data) {
        let data = try await call(.GET, path)
        return (try JSONDecoder().decode(T.self, from: data), data)
    }
}

/// Text from the daemon made safe for a terminal: control characters (ESC, NUL, CR, …)
/// are shown as `\u{1B}`, never sent raw, so a name or a message cannot move the cursor,
/// clear the screen or hide a line.
func say(_ text: String) { print(StatusText.printable(text)) }

func printJSON(_ data: Data) {
    if let object = try? JSONSerialization.jsonObject(with: data),
       let pretty = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) {
        print(String(decoding: pretty, as: UTF8.self))
    } else {
        print(String(decoding: data, as: UTF8.self))
    }
}

/// Runs a command body; an API failure is printed as it is and exits 1.
func perform(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let e as APIFailure {
        FileHandle.standardError.write(Data((e.description + "\n").utf8))
        throw ExitCode(1)
    }
}

// MARK: - Tables

func printResult(_ data: Data, json: Bool) throws {
    if json { printJSON(data); return }
    let r = try JSONDecoder().decode(ChangeResultModel.self, from: data)
    say(r.dryRun ? "dry run: would become configuration \(r.version) (\(r.changes.count) change(s)); nothing applied"
                   : "configuration \(r.version) applied (\(r.changes.count) change(s))")
    for c in r.changes {
        let what = [c.from.map { "from \($0)" }, c.to.map { "to \($0)" }].compactMap { $0 }.joined(separator: " ")
        say("  \(c.op.padding(toLength: 6, withPad: " ", startingAt: 0)) \(c.path)\(what.isEmpty ? "" : "  \(what)")")
    }
}

func escape(_ s: String) -> String {
    s.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? s
}

// MARK: - Commands

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The configuration in force, every group and node with live counters, the latest alerts.")
    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await perform {
            let (s, data) = try await options.client().get(StatusModel.self, "/v1/status")
            if options.json { printJSON(data); return }
            say(StatusText.render(s))
        }
    }
}

struct Groups: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The configured groups.")
    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await perform {
            let (doc, data) = try await options.client().get(ConfigDocument.self, "/v1/groups")
            if options.json { printJSON(data); return }
            say("configuration \(doc.version)")
            say(StatusText.table(["GROUP", "VIP", "PROTO", "PORTS", "METHOD", "SCHEDULER", "NODES", "SORRY"], doc.groups.map {
                [$0.name, $0.vip, $0.protocol, $0.ports.map(String.init).joined(separator: ","), $0.method, $0.scheduler ?? "wrr",
                 "\($0.nodes.count)", $0.sorry?.address ?? "-"]
            }))
        }
    }
}

struct Nodes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A group's nodes: state, weight and live counters.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The group.") var group: String

    func run() async throws {
        try await perform {
            let (s, _) = try await options.client().get(StatusModel.self, "/v1/status")
            guard let g = s.groups.first(where: { $0.name == group }) else {
                throw APIFailure(description: "there is no group \(group); `fulcrumctl groups` lists them")
            }
            if options.json {
                let e = JSONEncoder()
                e.outputFormatting = [.prettyPrinted, .sortedKeys]
                say(String(decoding: try e.encode(g.nodes), as: UTF8.self))
                return
            }
            say(StatusText.table(StatusText.nodeHeader, StatusText.nodeRows(g)))
        }
    }
}

struct ChangeOptions: ParsableArguments {
    @Flag(help: "Only show what would change.") var dryRun = false
    func query(_ extra: [String] = []) -> String {
        let items = (dryRun ? ["dry_run=true"] : []) + extra
        return items.isEmpty ? "" : "?" + items.joined(separator: "&")
    }
}

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Change one node of a group.",
        discussion: "NODE is the node's address, or address:port ([v6]:port) where one address serves several ports.",
        subcommands: [SetWeight.self, Drain.self, Enable.self, Disable.self, Add.self, Remove.self])

    static func patch(_ options: ClientOptions, _ change: ChangeOptions, group: String, node: String, _ body: NodePatchModel) async throws {
        try await perform {
            let data = try await options.client().call(.PATCH, "/v1/groups/\(escape(group))/nodes/\(escape(node))\(change.query())",
                                                       body: try JSONEncoder().encode(body))
            try printResult(data, json: options.json)
        }
    }

    struct SetWeight: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a node's weight (0 drains it).")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        @Argument var group: String
        @Argument var node: String
        @Argument var weight: Int
        func run() async throws { try await NodeCommand.patch(options, change, group: group, node: node, NodePatchModel(weight: weight)) }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Weight 0: no new flows; its flows stay until they end.")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        @Argument var group: String
        @Argument var node: String
        func run() async throws { try await NodeCommand.patch(options, change, group: group, node: node, NodePatchModel(weight: 0)) }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let a disabled node take flows again.")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        @Argument var group: String
        @Argument var node: String
        func run() async throws { try await NodeCommand.patch(options, change, group: group, node: node, NodePatchModel(enabled: true)) }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take a node out at once: no new flows, and its flows move.")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        @Argument var group: String
        @Argument var node: String
        func run() async throws { try await NodeCommand.patch(options, change, group: group, node: node, NodePatchModel(enabled: false)) }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a node to a group.")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        @Argument var group: String
        @Argument var address: String
        @Option(help: "NAT: the node's port.") var port: Int?
        @Option var weight: Int?
        @Option(help: "A static MAC (else resolved).") var mac: String?
        @Flag(help: "Add it disabled.") var disabled = false
        func run() async throws {
            try await perform {
                let node = NodeModel(address: address, port: port, weight: weight, mac: mac, enabled: disabled ? false : nil)
                let data = try await options.client().call(.POST, "/v1/groups/\(escape(group))/nodes\(change.query())",
                                                           body: try JSONEncoder().encode(node))
                try printResult(data, json: options.json)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a node; its flows move to the others.")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        @Argument var group: String
        @Argument var node: String
        func run() async throws {
            try await perform {
                let data = try await options.client().call(.DELETE, "/v1/groups/\(escape(group))/nodes/\(escape(node))\(change.query())")
                try printResult(data, json: options.json)
            }
        }
    }
}

struct GroupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group", abstract: "Add, replace or remove a group.",
        subcommands: [Add.self, Replace.self, Remove.self])

    static func read(_ file: String) throws -> Data {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ValidationError("cannot read \(file)")
        }
        return data
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add the group in FILE (JSON, or YAML: the fields of a group in the configuration file).")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        @Argument var file: String
        func run() async throws {
            try await perform {
                let data = try await options.client().call(.POST, "/v1/groups\(change.query())", body: try GroupCommand.read(file))
                try printResult(data, json: options.json)
            }
        }
    }

    struct Replace: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replace group NAME with the group in FILE.")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        @Argument var name: String
        @Argument var file: String
        func run() async throws {
            try await perform {
                let data = try await options.client().call(.PUT, "/v1/groups/\(escape(name))\(change.query())", body: try GroupCommand.read(file))
                try printResult(data, json: options.json)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a group: its VIP:ports stop being served.")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        @Argument var name: String
        func run() async throws {
            try await perform {
                let data = try await options.client().call(.DELETE, "/v1/groups/\(escape(name))\(change.query())")
                try printResult(data, json: options.json)
            }
        }
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "The whole load-balancing configuration.",
        discussion: "FILE holds `groups:` only (JSON as `config get` prints it, or YAML); node-local settings (dataplane, api, events) are the configuration file's.",
        subcommands: [Get.self, Apply.self, Diff.self, Reload.self])

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the configuration in force as JSON, with its version and hash.")
        @OptionGroup var options: ClientOptions
        func run() async throws {
            try await perform { printJSON(try await options.client().call(.GET, "/v1/config")) }
        }
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replace the configuration with FILE's groups.")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        @Option(help: "Refuse unless this version is in force (from `config get`).") var expectedVersion: Int?
        @Argument var file: String
        func run() async throws {
            try await perform {
                let query = change.query(expectedVersion.map { ["expected_version=\($0)"] } ?? [])
                let data = try await options.client().call(.PUT, "/v1/config\(query)", body: try GroupCommand.read(file))
                try printResult(data, json: options.json)
            }
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "What `config apply FILE` would change (a dry run).")
        @OptionGroup var options: ClientOptions
        @Argument var file: String
        func run() async throws {
            try await perform {
                let data = try await options.client().call(.PUT, "/v1/config?dry_run=true", body: try GroupCommand.read(file))
                try printResult(data, json: options.json)
            }
        }
    }

    struct Reload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Read the daemon's configuration file again (as SIGHUP does); its groups replace the configuration.")
        @OptionGroup var options: ClientOptions
        @OptionGroup var change: ChangeOptions
        func run() async throws {
            try await perform {
                let data = try await options.client().call(.POST, "/v1/config/reload\(change.query())")
                try printResult(data, json: options.json)
            }
        }
    }
}

/// The pair's operator commands, run on the LB they name in their help.
protocol ClusterCommand: AsyncParsableCommand {
    static var path: String { get }
    var options: ClientOptions { get }
    /// The query the command adds (`?force=true`).
    var query: String { get }
}

extension ClusterCommand {
    var query: String { "" }

    func run() async throws {
        try await perform {
            let data = try await options.client().call(.POST, Self.path + query)
            if options.json { printJSON(data); return }
            let r = try JSONDecoder().decode(ClusterCommandModel.self, from: data)
            // The daemon's sentence says what happened (a hand-over answers while this LB is
            // still active: it makes before it breaks); the role is in --json.
            say(r.result)
        }
    }
}

struct Failover: ClusterCommand {
    static let configuration = CommandConfiguration(
        abstract: "On the active LB: hand the service to the standby (refused, with the reason, if the peer is not a healthy standby).")
    static let path = "/v1/cluster/failover"
    @OptionGroup var options: ClientOptions
    @Flag(help: "Hand over even though the standby's flow sync is not ready (established connections may break).")
    var force = false
    var query: String { force ? "?force=true" : "" }
}

struct Failback: ClusterCommand {
    static let configuration = CommandConfiguration(
        abstract: "On the active slave: hand the service back to the master once it is a healthy standby.")
    static let path = "/v1/cluster/failback"
    @OptionGroup var options: ClientOptions
    @Flag(help: "Hand back even though the master's flow sync is not ready (established connections may break).")
    var force = false
    var query: String { force ? "?force=true" : "" }
}

struct Sync: ClusterCommand {
    static let configuration = CommandConfiguration(
        abstract: "On the active LB: push the configuration to the standby now (it is pushed on every change and when the two differ).")
    static let path = "/v1/cluster/sync"
    @OptionGroup var options: ClientOptions
}

struct Resume: ClusterCommand {
    static let configuration = CommandConfiguration(
        abstract: "After a dual active under both_stand_down: this LB takes the service again.")
    static let path = "/v1/cluster/resume"
    @OptionGroup var options: ClientOptions
}

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "The event log, oldest first.")
    @OptionGroup var options: ClientOptions
    @Option(help: "Only events after this sequence number.") var since = 0
    @Option(help: "info, notice, warning or error.") var severity = "info"
    @Flag(help: "Keep printing new events as they come (Ctrl-C ends).") var follow = false

    func run() async throws {
        try await perform {
            let client = try options.client()
            var next = since
            while true {
                let (page, _) = try await client.get(EventsModel.self, "/v1/events?since=\(next)&severity=\(escape(severity))")
                for e in page.events {
                    if options.json {
                        let enc = JSONEncoder()
                        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                        say(String(decoding: try enc.encode(e), as: UTF8.self))
                    } else {
                        say(StatusText.eventLine(e))
                    }
                }
                next = max(next, page.next)
                if !follow { break }
                fflush(nil)
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }
}
