import FulcrumCore
import FulcrumDataplane
import Foundation
import Yams

/// Reads a configuration file into a validated `FulcrumConfig`, or throws `ConfigErrors`
/// listing every problem with its file, line, field and value.
public enum ConfigLoader {
    /// Larger than any real configuration (100 groups of 100 nodes is about 1 MB).
    public static let maxFileBytes = 16 << 20

    public static func load(path: String) throws -> FulcrumConfig {
        try parse(read(path), file: path)
    }

    /// The file's text, or an error that says in a sentence why it cannot be had.
    static func read(_ path: String) throws -> String {
        func failure(_ message: String) -> ConfigErrors {
            ConfigErrors(errors: [ConfigError(file: path, line: nil, field: "(file)", value: nil, message: message)])
        }
        var info = stat()
        guard stat(path, &info) == 0 else {
            let e = errno
            throw failure(e == ENOENT ? "does not exist" : "cannot be read: \(String(cString: strerror(e)))")
        }
        if info.st_mode & S_IFMT == S_IFDIR { throw failure("is a directory; give the configuration file inside it") }
        guard info.st_mode & S_IFMT == S_IFREG else { throw failure("is not a regular file") }
        guard Int(info.st_size) <= maxFileBytes else {
            throw failure("is \(info.st_size) bytes; a configuration file is at most \(maxFileBytes)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw failure("cannot be read: \(String(cString: strerror(errno)))")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw failure("is not UTF-8 text") }
        return text
    }

    public static func parse(_ text: String, file: String) throws -> FulcrumConfig {
        let root = try compose(text, source: file)
        var reader = Reader(file: file)
        let config = reader.config(root)
        if !reader.errors.isEmpty { throw ConfigErrors(errors: reader.errors) }
        return config!
    }

    /// The load-balancing part alone, `{groups: [...]}`, as the API and the state file give
    /// it (JSON is YAML): every group read and cross-checked as in a file, with errors
    /// naming `source`.
    public static func parseBalancing(_ text: String, source: String, local: FulcrumConfig) throws -> [FulcrumConfig.Group] {
        var reader = Reader(file: source)
        let root = try compose(text, source: source)
        if let root { reader.enclosing.append(root) }
        let top = reader.mapping(root, "", allowed: ["groups"])
        var groups: [FulcrumConfig.Group] = []
        let interfaces = local.dataplane.interfaces.map(\.name)
        for (i, n) in reader.sequence(top["groups"], "groups").enumerated() {
            if let g = reader.group(n, "groups[\(i)]", interfaces: interfaces) { groups.append(g) }
        }
        if reader.errors.isEmpty { reader.crossCheck(groups, top["groups"], dataplane: local.dataplane) }
        if !reader.errors.isEmpty { throw ConfigErrors(errors: reader.errors) }
        return groups
    }

    /// One group, as `POST /v1/groups` gives it.
    public static func parseGroup(_ text: String, source: String, local: FulcrumConfig) throws -> FulcrumConfig.Group {
        var reader = Reader(file: source)
        let root = try compose(text, source: source)
        guard let root else { throw ConfigErrors(errors: [ConfigError(file: source, line: nil, field: "(body)", value: nil, message: "is empty; send a group as JSON")]) }
        let group = reader.group(root, "group", interfaces: local.dataplane.interfaces.map(\.name))
        if !reader.errors.isEmpty { throw ConfigErrors(errors: reader.errors) }
        return group!
    }

    /// One node of a group, as `POST /v1/groups/{group}/nodes` gives it.
    public static func parseNode(_ text: String, source: String, in group: FulcrumConfig.Group) throws -> FulcrumConfig.Node {
        var reader = Reader(file: source)
        let root = try compose(text, source: source)
        guard let root else { throw ConfigErrors(errors: [ConfigError(file: source, line: nil, field: "(body)", value: nil, message: "is empty; send a node as JSON")]) }
        let node = reader.endpoint(root, "node", method: group.method, multiPort: group.ports.count > 1, sorry: false)
        if case let .mapping(nm) = root, nm["health_check"] != nil {
            reader.fail(root, "node.health_check", "set a node's own check by changing its group (PUT /v1/groups/NAME)")
        }
        if let node, group.method == .nat, node.address.isIPv4 != group.vip.isIPv4 {
            reader.fail(root, "node.address", "must be of the VIP's address family for NAT", value: "\(node.address)")
        }
        if let node, node.address == group.vip {
            reader.fail(root, "node.address", "is the group's VIP; a node is a real server's own address", value: "\(node.address)")
        }
        if !reader.errors.isEmpty { throw ConfigErrors(errors: reader.errors) }
        return node!
    }

    /// A whole list of groups checked together (names, services, NAT replies, limits), as
    /// after a change made piece by piece.
    public static func check(_ groups: [FulcrumConfig.Group], source: String, local: FulcrumConfig) throws {
        var reader = Reader(file: source)
        reader.crossCheck(groups, nil, dataplane: local.dataplane)
        if !reader.errors.isEmpty { throw ConfigErrors(errors: reader.errors) }
    }

    static func compose(_ text: String, source: String) throws -> Node? {
        do {
            return try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ConfigErrors(errors: [yamlError(error, file: source)])
        }
    }

    /// The keys given twice in one mapping anywhere in `text` (JSON is YAML), as the error
    /// the loader would give; nil when there are none or the text does not parse (the
    /// caller's own parse reports that).
    public static func duplicateKeys(in text: String, source: String) -> ConfigError? {
        do {
            _ = try Yams.compose(yaml: text)
            return nil
        } catch let error as YamlError {
            if case .duplicatedKeysInMapping = error { return yamlError(error, file: source) }
            return nil
        } catch {
            return nil
        }
    }

    /// A YAML error with its line and the problem only: Yams' own description quotes
    /// the source (all of it, for duplicate keys).
    static func yamlError(_ error: YamlError, file: String) -> ConfigError {
        switch error {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _),
             let .composer(context, problem, mark, _):
            let around = context.map { "\($0.text) (line \($0.mark.line)): " } ?? ""
            return ConfigError(file: file, line: mark.line, field: "(syntax)", value: nil,
                               message: "not valid YAML: \(around)\(problem)")
        case let .duplicatedKeysInMapping(duplicates, context):
            return ConfigError(file: file, line: context.mark.line, field: duplicates.joined(separator: ", "),
                               value: nil, message: "is given twice in one mapping; give each key once")
        case let .reader(problem, _, _, _):
            return ConfigError(file: file, line: nil, field: "(syntax)", value: nil, message: "cannot be read as YAML: \(problem)")
        default:
            return ConfigError(file: file, line: nil, field: "(syntax)", value: nil, message: "not valid YAML")
        }
    }
}

/// Walks the YAML node tree, recording every error with its line.
struct Reader {
    let file: String
    var errors: [ConfigError] = []
    /// The mappings being read, innermost last: a missing key is reported at the line of
    /// the mapping that lacks it.
    var enclosing: [Node] = []
    /// Lines of the fields that host checks (`HostCheck`) may later find fault with.
    var lines: [String: Int] = [:]

    mutating func fail(_ node: Node?, _ field: String, _ message: String, value: String? = nil) {
        errors.append(ConfigError(file: file, line: node?.mark?.line ?? enclosing.last?.mark?.line, field: field,
                                  value: value ?? node?.scalar?.string, message: message))
    }

    /// The pairs of a mapping, reporting unknown keys.
    mutating func mapping(_ node: Node?, _ field: String, allowed: Set<String>) -> [String: Node] {
        guard let node, case let .mapping(m) = node else {
            fail(node, field, "must be a mapping (key: value lines)")
            return [:]
        }
        var out: [String: Node] = [:]
        for (k, v) in m {
            guard let key = k.string else { fail(k, field, "keys must be text"); continue }
            if !allowed.contains(key) {
                fail(k, field.isEmpty ? key : "\(field).\(key)", "unknown field; expected one of \(allowed.sorted().joined(separator: ", "))", value: key)
                continue
            }
            out[key] = v
        }
        return out
    }

    mutating func sequence(_ node: Node?, _ field: String) -> [Node] {
        guard let node, case let .sequence(s) = node else {
            fail(node, field, node == nil ? "is required" : "must be a list")
            return []
        }
        return Array(s)
    }

    mutating func string(_ node: Node?, _ field: String) -> String? {
        guard let node, let s = node.scalar?.string, !s.isEmpty else {
            fail(node, field, node == nil ? "is required" : "must be text")
            return nil
        }
        return s
    }

    /// A name the operator gives (`Identifier`).
    mutating func identifier(_ node: Node?, _ field: String) -> String? {
        guard let text = string(node, field) else { return nil }
        if let problem = Identifier.problem(text) {
            fail(node, field, problem)
            return nil
        }
        return text
    }

    mutating func int(_ node: Node?, _ field: String, in range: ClosedRange<Int>) -> Int? {
        guard let text = string(node, field) else { return nil }
        guard let v = Int(text), range.contains(v) else {
            fail(node, field, "must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return v
    }

    mutating func bool(_ node: Node?, _ field: String) -> Bool? {
        guard let text = string(node, field) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            fail(node, field, "must be true or false")
            return nil
        }
    }

    mutating func address(_ node: Node?, _ field: String) -> IPAddress? {
        guard let text = string(node, field) else { return nil }
        guard let a = IPAddress(text) else {
            fail(node, field, "is not an IPv4 or IPv6 address")
            return nil
        }
        return a
    }

    mutating func choice<T: RawRepresentable & CaseIterable>(_ node: Node?, _ field: String, _: T.Type) -> T?
        where T.RawValue == String {
        guard let text = string(node, field) else { return nil }
        guard let v = T(rawValue: text.lowercased()) else {
            fail(node, field, "must be one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
            return nil
        }
        return v
    }

    // MARK: - Sections

    mutating func config(_ root: Node?) -> FulcrumConfig? {
        if let root { enclosing.append(root) }
        let top = mapping(root, "", allowed: ["node", "dataplane", "routes", "groups", "events", "api", "state_file", "agent",
                                                   "cluster"])
        var name = "fulcrum"
        if let section = top["node"] {
            name = identifier(mapping(section, "node", allowed: ["name"])["name"], "node.name") ?? name
        }
        let dp = dataplane(top["dataplane"])
        let interfaceNames = Set(dp.interfaces.map(\.name))
        var routes: [FulcrumConfig.Route] = []
        if let r = top["routes"] {
            for (i, n) in sequence(r, "routes").enumerated() {
                if let route = route(n, "routes[\(i)]", interfaces: interfaceNames) { routes.append(route) }
            }
        }
        var groups: [FulcrumConfig.Group] = []
        for (i, n) in sequence(top["groups"], "groups").enumerated() {
            if let g = group(n, "groups[\(i)]", interfaces: dp.interfaces.map(\.name)) { groups.append(g) }
        }
        crossCheck(groups, top["groups"], dataplane: dp)
        var events = FulcrumConfig.Events()
        if let e = top["events"] {
            let em = mapping(e, "events", allowed: ["file", "max_bytes", "keep", "memory"])
            if let f = em["file"] {
                events.file = string(f, "events.file")
                if let path = events.file, !path.hasPrefix("/") {
                    fail(f, "events.file", "must be an absolute path")
                }
            }
            if let v = em["max_bytes"].flatMap({ int($0, "events.max_bytes", in: 4096...(1 << 30)) }) { events.maxBytes = v }
            if let v = em["keep"].flatMap({ int($0, "events.keep", in: 0...100) }) { events.keep = v }
            if let v = em["memory"].flatMap({ int($0, "events.memory", in: 10...1_000_000) }) { events.memory = v }
        }
        var config = FulcrumConfig(file: file, nodeName: name, dataplane: dp, routes: routes, groups: groups, lines: lines)
        config.events = events
        if let a = top["api"] { config.api = api(a) }
        if let a = top["agent"] { config.agent = agent(a) }
        if let c = top["cluster"] { config.cluster = cluster(c, nodeName: name) }
        if let f = top["state_file"], let path = string(f, "state_file") {
            if path.hasPrefix("/") { config.stateFile = path } else { fail(f, "state_file", "must be an absolute path") }
        }
        return config
    }

    mutating func absolutePath(_ node: Node?, _ field: String) -> String? {
        guard let path = string(node, field) else { return nil }
        guard path.hasPrefix("/") else {
            fail(node, field, "must be an absolute path")
            return nil
        }
        return path
    }

    mutating func agent(_ node: Node) -> FulcrumConfig.Agent? {
        enclosing.append(node)
        defer { enclosing.removeLast() }
        let m = mapping(node, "agent", allowed: ["port", "key_file", "silence", "smoothing", "floor", "hysteresis",
                                                "discovered_timeout", "discovered_expiry"])
        guard let key = absolutePath(m["key_file"], "agent.key_file") else { return nil }
        var a = FulcrumConfig.Agent(keyFile: key)
        if let v = m["port"].flatMap({ int($0, "agent.port", in: 1...65535) }) { a.port = UInt16(v) }
        if let v = m["silence"].flatMap({ int($0, "agent.silence", in: 1...100) }) { a.silence = v }
        if let v = m["smoothing"].flatMap({ fraction($0, "agent.smoothing", in: 0.01...1) }) { a.smoothing = v }
        if let v = m["floor"].flatMap({ fraction($0, "agent.floor", in: 0.01...1) }) { a.floor = v }
        if let v = m["hysteresis"].flatMap({ fraction($0, "agent.hysteresis", in: 0...0.5) }) { a.hysteresis = v }
        if let v = m["discovered_timeout"].flatMap({ seconds($0, "agent.discovered_timeout", in: 1...86400) }) { a.discoveredTimeout = v }
        if let v = m["discovered_expiry"].flatMap({ choice($0, "agent.discovered_expiry", FulcrumConfig.Agent.DiscoveredExpiry.self) }) {
            a.discoveredExpiry = v
        }
        return a
    }

    mutating func cluster(_ node: Node, nodeName: String) -> FulcrumConfig.Cluster? {
        enclosing.append(node)
        defer { enclosing.removeLast() }
        let m = mapping(node, "cluster", allowed: ["role", "peer", "port", "interconnects", "heartbeat", "np_targets", "failback",
                                                  "dual_active", "monitors", "floating_addresses", "flow_sync"])
        let role = choice(m["role"], "cluster.role", FulcrumConfig.Cluster.Role.self)
        let peer = identifier(m["peer"], "cluster.peer")
        if let peer, peer == nodeName { fail(m["peer"], "cluster.peer", "is this LB's own node.name; name the other LB") }
        var links: [FulcrumConfig.Cluster.Interconnect] = []
        let items = sequence(m["interconnects"], "cluster.interconnects")
        for (i, item) in items.enumerated() {
            let f = "cluster.interconnects[\(i)]"
            let im = mapping(item, f, allowed: ["local", "peer"])
            guard let local = address(im["local"], f + ".local"), let remote = address(im["peer"], f + ".peer") else { continue }
            if local.isIPv4 != remote.isIPv4 { fail(im["peer"], f + ".peer", "is not of the family of \(f).local (\(local))"); continue }
            if links.contains(where: { $0.local == local }) { fail(im["local"], f + ".local", "is the local end of another interconnect"); continue }
            links.append(.init(local: local, peer: remote))
        }
        if m["interconnects"] != nil && items.isEmpty {
            fail(m["interconnects"], "cluster.interconnects", "is empty: the pair needs at least one (two are better)")
        }
        if items.count > 8 { fail(m["interconnects"], "cluster.interconnects", "lists \(items.count); at most 8") }
        if m["heartbeat"] == nil { fail(node, "cluster.heartbeat", "is required (its key_file at least)") }
        let hb = m["heartbeat"].map { mapping($0, "cluster.heartbeat", allowed: ["interval", "timeout", "key_file"]) } ?? [:]
        let key = absolutePath(hb["key_file"], "cluster.heartbeat.key_file")
        guard let role, let peer, let key else { return nil }
        var c = FulcrumConfig.Cluster(role: role, peer: peer, interconnects: links, keyFile: key)
        if let v = m["port"].flatMap({ int($0, "cluster.port", in: 1...65535) }) { c.port = UInt16(v) }
        c.flowSyncPort = c.port == 65535 ? 65534 : c.port + 1
        if let fs = m["flow_sync"] {
            let fm = mapping(fs, "cluster.flow_sync", allowed: ["enabled", "port"])
            if let v = bool(fm["enabled"], "cluster.flow_sync.enabled") { c.flowSync = v }
            if let v = fm["port"].flatMap({ int($0, "cluster.flow_sync.port", in: 1...65535) }) {
                if UInt16(v) == c.port {
                    fail(fm["port"], "cluster.flow_sync.port", "is cluster.port (\(c.port)), which the heartbeats use; pick another")
                } else {
                    c.flowSyncPort = UInt16(v)
                }
            }
        }
        if let v = hb["interval"].flatMap({ seconds($0, "cluster.heartbeat.interval", in: 0.01...10) }) { c.interval = v }
        if let v = hb["timeout"].flatMap({ seconds($0, "cluster.heartbeat.timeout", in: 0.03...60) }) { c.timeout = v }
        if c.timeout < 2 * c.interval {
            fail(hb["timeout"] ?? hb["interval"], "cluster.heartbeat.timeout",
                 "must be at least twice the interval (\(c.interval) s), or one late heartbeat is a failover")
        }
        if let t = m["np_targets"] {
            for (i, item) in sequence(t, "cluster.np_targets").enumerated() {
                if let a = address(item, "cluster.np_targets[\(i)]") { c.npTargets.append(a) }
            }
        }
        if let v = m["failback"].flatMap({ choice($0, "cluster.failback", FulcrumConfig.Cluster.Failback.self) }) { c.failback = v }
        if let v = m["dual_active"].flatMap({ choice($0, "cluster.dual_active", FulcrumConfig.Cluster.DualActive.self) }) { c.dualActive = v }
        if let list = m["monitors"] {
            for (i, item) in sequence(list, "cluster.monitors").enumerated() {
                if let monitor = monitor(item, "cluster.monitors[\(i)]") { c.monitors.append(monitor) }
            }
        }
        if let list = m["floating_addresses"] {
            for (i, item) in sequence(list, "cluster.floating_addresses").enumerated() {
                let f = "cluster.floating_addresses[\(i)]"
                let fm = mapping(item, f, allowed: ["address", "interface"])
                guard let (a, length) = prefix(fm["address"], f + ".address"),
                      let iface = string(fm["interface"], f + ".interface") else { continue }
                if c.floatingAddresses.contains(where: { $0.address == a }) {
                    fail(fm["address"], f + ".address", "is listed twice"); continue
                }
                if links.contains(where: { $0.local == a || $0.peer == a }) || c.npTargets.contains(a) {
                    fail(fm["address"], f + ".address", "is an interconnect or np_target address; a floating address moves between the LBs")
                    continue
                }
                c.floatingAddresses.append(.init(address: a, prefixLength: length, interface: iface))
            }
        }
        return c
    }

    mutating func monitor(_ node: Node, _ f: String) -> FulcrumConfig.Cluster.Monitor? {
        let m = mapping(node, f, allowed: ["type", "interface", "address", "interval", "timeout", "retry", "action"])
        var monitor: FulcrumConfig.Cluster.Monitor
        var action = FulcrumConfig.Cluster.Monitor.Action.failover
        if m["action"] != nil, let text = string(m["action"], f + ".action") {
            if let a = FulcrumConfig.Cluster.Monitor.Action(rawValue: text) { action = a } else {
                fail(m["action"], f + ".action", "must be failover or alarm")
            }
        }
        switch string(m["type"], f + ".type") {
        case "link":
            for key in ["address", "interval", "timeout", "retry"] where m[key] != nil {
                fail(m[key], "\(f).\(key)", "is not a field of a link monitor (its kernel messages need no polling)")
            }
            guard let name = string(m["interface"], f + ".interface") else { return nil }
            return .init(kind: .link(name), action: action)
        case "ip":
            if m["interface"] != nil { fail(m["interface"], f + ".interface", "is not a field of an ip monitor") }
            guard let a = address(m["address"], f + ".address") else { return nil }
            monitor = .init(kind: .ip(a), action: action)
        case "dataplane":
            for key in ["interface", "address", "retry"] where m[key] != nil {
                fail(m[key], "\(f).\(key)", "is not a field of a dataplane monitor")
            }
            monitor = .init(kind: .dataplane, action: action, interval: FulcrumConfig.Cluster.Monitor.dataplaneDefaults.interval,
                            timeout: FulcrumConfig.Cluster.Monitor.dataplaneDefaults.timeout)
        case nil:
            return nil
        default:
            fail(m["type"], f + ".type", "must be one of link, ip, dataplane")
            return nil
        }
        if let v = m["interval"].flatMap({ seconds($0, f + ".interval", in: 0.05...3600) }) { monitor.interval = v }
        if let v = m["timeout"].flatMap({ seconds($0, f + ".timeout", in: 0.01...3600) }) { monitor.timeout = v }
        if let v = m["retry"].flatMap({ int($0, f + ".retry", in: 0...100) }) { monitor.retry = v }
        return monitor
    }

    mutating func fraction(_ node: Node?, _ field: String, in range: ClosedRange<Double>) -> Double? {
        guard let text = string(node, field) else { return nil }
        guard let v = Double(text), range.contains(v) else {
            fail(node, field, "must be a number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return v
    }

    mutating func api(_ node: Node) -> FulcrumConfig.API? {
        enclosing.append(node)
        defer { enclosing.removeLast() }
        let m = mapping(node, "api", allowed: ["listen", "unix_socket", "token_file", "readonly_token_file", "tls",
                                              "max_body_bytes", "max_connections", "request_timeout", "idle_timeout"])
        guard let token = absolutePath(m["token_file"], "api.token_file") else { return nil }
        var api = FulcrumConfig.API(tokenFile: token)
        if let l = m["listen"] {
            api.listen = []
            for (i, item) in sequence(l, "api.listen").enumerated() {
                guard let text = string(item, "api.listen[\(i)]") else { continue }
                if APIListenAddress(text) == nil {
                    fail(item, "api.listen[\(i)]", "must be address:port, e.g. 127.0.0.1:9180 or [::1]:9180")
                } else {
                    api.listen.append(text)
                }
            }
        }
        if let u = m["unix_socket"] { api.unixSocket = absolutePath(u, "api.unix_socket") }
        if let r = m["readonly_token_file"] { api.readonlyTokenFile = absolutePath(r, "api.readonly_token_file") }
        if let t = m["tls"] {
            let tm = mapping(t, "api.tls", allowed: ["certificate", "key"])
            api.tlsCertificate = absolutePath(tm["certificate"], "api.tls.certificate")
            api.tlsKey = absolutePath(tm["key"], "api.tls.key")
        }
        if let v = m["max_body_bytes"].flatMap({ int($0, "api.max_body_bytes", in: 1024...(64 << 20)) }) { api.maxBodyBytes = v }
        if let v = m["max_connections"].flatMap({ int($0, "api.max_connections", in: 1...65536) }) { api.maxConnections = v }
        if let v = m["request_timeout"].flatMap({ seconds($0, "api.request_timeout", in: 0.1...3600) }) { api.requestTimeout = v }
        if let v = m["idle_timeout"].flatMap({ seconds($0, "api.idle_timeout", in: 0.1...86400) }) { api.idleTimeout = v }
        if api.listen.isEmpty && api.unixSocket == nil {
            fail(m["listen"] ?? node, "api.listen", "is empty and there is no unix_socket: the API would not be reachable")
        }
        return api
    }

    mutating func dataplane(_ node: Node?) -> FulcrumConfig.Dataplane {
        if let node { enclosing.append(node) }
        defer { if node != nil { enclosing.removeLast() } }
        let m = mapping(node, "dataplane", allowed: ["interfaces", "cores", "flow_table_size", "max_node_slots",
                                                     "hugepages", "xdp_mode", "timeouts", "frames_per_socket", "ring_size",
                                                     "admission", "idle_spin_us", "offload", "offload_entries"])
        var dp = FulcrumConfig.Dataplane(interfaces: [])
        var seen = Set<String>()
        for (i, n) in sequence(m["interfaces"], "dataplane.interfaces").enumerated() {
            let field = "dataplane.interfaces[\(i)]"
            let im = mapping(n, field, allowed: ["name", "queues", "offload"])
            guard let name = string(im["name"], "\(field).name") else { continue }
            if !seen.insert(name).inserted { fail(im["name"], "\(field).name", "is listed twice") }
            let queues = im["queues"].flatMap { int($0, "\(field).queues", in: 1...64) } ?? 1
            let offload = im["offload"].flatMap { bool($0, "\(field).offload") } ?? true
            dp.interfaces.append(.init(name: name, queues: queues, offload: offload))
            lines["\(field).name"] = im["name"]?.mark?.line
        }
        if dp.interfaces.isEmpty { fail(m["interfaces"] ?? node, "dataplane.interfaces", "needs at least one interface") }
        if dp.interfaces.count > DataplaneLimits.interfaces {
            fail(m["interfaces"], "dataplane.interfaces", "lists \(dp.interfaces.count) interfaces; the data plane serves at most \(DataplaneLimits.interfaces)")
        }
        if Set(dp.interfaces.map(\.queues)).count > 1 {
            fail(m["interfaces"], "dataplane.interfaces", "every interface must have the same number of queues (one worker serves queue N of each)")
        }
        if let c = m["cores"] {
            let items = sequence(c, "dataplane.cores")
            dp.cores = items.enumerated().compactMap { int($0.element, "dataplane.cores[\($0.offset)]", in: 0...4095) }
            for (i, item) in items.enumerated() { lines["dataplane.cores[\(i)]"] = item.mark?.line }
            if dp.cores?.isEmpty == true {
                fail(c, "dataplane.cores", "must list at least one core, or be left out to use every CPU the process may run on", value: "[]")
                dp.cores = nil
            }
        }
        if let v = m["flow_table_size"].flatMap({ int($0, "dataplane.flow_table_size", in: 1024...(1 << 28)) }) { dp.flowTableSize = v }
        if let v = m["max_node_slots"].flatMap({ int($0, "dataplane.max_node_slots", in: 16...65536) }) { dp.maxNodeSlots = v }
        if let v = m["hugepages"].flatMap({ bool($0, "dataplane.hugepages") }) { dp.hugePages = v }
        if let v = m["xdp_mode"].flatMap({ choice($0, "dataplane.xdp_mode", FulcrumConfig.XDPAttachMode.self) }) { dp.xdpMode = v }
        if let v = m["frames_per_socket"].flatMap({ int($0, "dataplane.frames_per_socket", in: 512...262144) }) { dp.framesPerSocket = v }
        if let v = m["idle_spin_us"].flatMap({ int($0, "dataplane.idle_spin_us", in: 0...100_000) }) { dp.idleSpinMicroseconds = v }
        if let v = m["offload"].flatMap({ choice($0, "dataplane.offload", FulcrumConfig.OffloadMode.self) }) { dp.offload = v }
        if let v = m["offload_entries"].flatMap({ int($0, "dataplane.offload_entries", in: 16...(1 << 24)) }) {
            if v & (v - 1) != 0 { fail(m["offload_entries"], "dataplane.offload_entries", "must be a power of two") } else { dp.offloadEntries = v }
        }
        if let v = m["ring_size"].flatMap({ int($0, "dataplane.ring_size", in: 64...65536) }) {
            if v & (v - 1) != 0 { fail(m["ring_size"], "dataplane.ring_size", "must be a power of two") } else { dp.ringSize = v }
        }
        if dp.framesPerSocket < dp.ringSize {
            fail(m["frames_per_socket"] ?? node, "dataplane.frames_per_socket", "must be at least ring_size (\(dp.ringSize))",
                 value: "\(dp.framesPerSocket)")
        }
        if let a = m["admission"] {
            let am = mapping(a, "dataplane.admission", allowed: ["new_connections_per_second", "burst"])
            if let v = am["new_connections_per_second"].flatMap({ int($0, "dataplane.admission.new_connections_per_second", in: 0...100_000_000) }) {
                dp.admission.newConnectionsPerSecond = v
            }
            if let v = am["burst"].flatMap({ int($0, "dataplane.admission.burst", in: 1...10_000_000) }) {
                dp.admission.burst = v
            }
        }
        if dp.admission.burst > dp.ringSize {
            fail(m["admission"], "dataplane.admission.burst",
                 "must be at most ring_size (\(dp.ringSize)): a larger burst of openings can fill the ring and cost known flows their packets",
                 value: "\(dp.admission.burst)")
        }
        if let t = m["timeouts"] {
            let tm = mapping(t, "dataplane.timeouts", allowed: ["syn", "established", "closing", "udp", "other"])
            let s = FlowTimeouts.seconds
            func seconds(_ key: String) -> UInt64? {
                tm[key].flatMap { int($0, "dataplane.timeouts.\(key)", in: 1...86400) }.map { UInt64($0) * s }
            }
            if let v = seconds("syn") { dp.timeouts.synSent = v }
            if let v = seconds("established") { dp.timeouts.established = v }
            if let v = seconds("closing") { dp.timeouts.closing = v }
            if let v = seconds("udp") { dp.timeouts.udp = v }
            if let v = seconds("other") { dp.timeouts.datagram = v }
        }
        // The offload's scan carries the XDP program's stamps into the flow table; a pass
        // must end well inside the shortest timeout, or a busy offloaded flow could be
        // taken for idle. A worker looks at 4,096 entries a loop turn, and an idle one
        // (the program forwarding everything) turns every 10 ms.
        if dp.offload == .established {
            let t = dp.timeouts
            let shortest = [t.synSent, t.established, t.closing, t.udp, t.datagram].min() ?? 0
            let pass = UInt64(dp.offloadEntries / 4096) * 10_000_000
            if pass * 2 > shortest {
                fail(m["offload_entries"] ?? m["timeouts"] ?? node, "dataplane.offload_entries",
                     "a scan of \(dp.offloadEntries) entries can take \(Double(pass) / 1e9) s, more than half the shortest timeout (\(shortest / 1_000_000_000) s): lower offload_entries or raise dataplane.timeouts",
                     value: "\(dp.offloadEntries)")
            }
        }
        return dp
    }

    mutating func prefix(_ node: Node?, _ field: String) -> (IPAddress, Int)? {
        guard let text = string(node, field) else { return nil }
        let parts = text.split(separator: "/")
        guard parts.count == 2, let a = IPAddress(parts[0]), let length = Int(parts[1]),
              length >= 0, length <= (a.isIPv4 ? 32 : 128) else {
            fail(node, field, "must be an address/prefix-length, e.g. 198.18.0.0/24")
            return nil
        }
        return (a, length)
    }

    mutating func route(_ node: Node, _ field: String, interfaces: Set<String>) -> FulcrumConfig.Route? {
        enclosing.append(node)
        defer { enclosing.removeLast() }
        let m = mapping(node, field, allowed: ["prefix", "interface", "via"])
        let p = prefix(m["prefix"], "\(field).prefix")
        let iface = string(m["interface"], "\(field).interface")
        if let iface, !interfaces.contains(iface) {
            fail(m["interface"], "\(field).interface", "is not a data-plane interface (dataplane.interfaces)")
        }
        let via = m["via"].flatMap { address($0, "\(field).via") }
        if let p, let via, p.0.isIPv4 != via.isIPv4 {
            fail(m["via"], "\(field).via", "is not of the prefix's address family")
        }
        guard let p, let iface else { return nil }
        return FulcrumConfig.Route(prefix: p.0, prefixLength: p.1, interface: iface, via: via)
    }

    mutating func endpoint(_ node: Node, _ field: String, method: ForwardingMethod?, multiPort: Bool,
                           sorry: Bool) -> FulcrumConfig.Node? {
        enclosing.append(node)
        defer { enclosing.removeLast() }
        let m = mapping(node, field, allowed: sorry ? ["address", "port", "mac"] : ["address", "port", "weight", "mac", "enabled", "health_check"])
        let address = address(m["address"], "\(field).address")
        var port: UInt16 = 0
        if let p = m["port"] {
            if method == .mat {
                fail(p, "\(field).port", "applies only to method nat; a MAT node receives the client's port")
            } else if multiPort {
                fail(p, "\(field).port", "cannot be set in a group with several ports: replies could not be mapped back; leave it out to keep each port")
            } else if let v = int(p, "\(field).port", in: 1...65535) {
                port = UInt16(v)
            }
        }
        let weight = m["weight"].flatMap { int($0, "\(field).weight", in: 0...NodeLimits.maxWeight) } ?? 1
        let enabled = m["enabled"].flatMap { bool($0, "\(field).enabled") } ?? true
        var mac: MACAddress?
        if let macNode = m["mac"], let text = string(macNode, "\(field).mac") {
            mac = MACAddress(text)
            if mac == nil || mac!.isMulticast || mac == .zero {
                fail(macNode, "\(field).mac", "must be a unicast MAC like 02:00:00:00:00:11")
                mac = nil
            }
        }
        guard let address else { return nil }
        if !address.isHostUnicast {
            fail(m["address"], "\(field).address", "must be a host's unicast address (not unspecified, loopback, multicast or broadcast)")
        }
        return FulcrumConfig.Node(address: address, port: port, weight: weight, mac: mac, enabled: enabled)
    }

    mutating func group(_ node: Node, _ field: String, interfaces: [String]) -> FulcrumConfig.Group? {
        enclosing.append(node)
        defer { enclosing.removeLast() }
        let m = mapping(node, field, allowed: ["name", "vip", "protocol", "ports", "method", "scheduler", "interface",
                                               "nodes", "sorry", "health_check", "dynamic_weights", "accept_discovered_nodes"])
        let name = identifier(m["name"], "\(field).name")
        let vip = address(m["vip"], "\(field).vip")
        if let vip, !vip.isHostUnicast {
            fail(m["vip"], "\(field).vip", "must be a unicast address this LB can answer for (not unspecified, loopback, multicast or broadcast)")
        }
        let proto: UInt8? = {
            guard let text = string(m["protocol"], "\(field).protocol") else { return nil }
            switch text.lowercased() {
            case "tcp": return IPProtocol.tcp
            case "udp": return IPProtocol.udp
            default:
                fail(m["protocol"], "\(field).protocol", "must be tcp or udp")
                return nil
            }
        }()
        var ports: [UInt16] = []
        for (i, p) in sequence(m["ports"], "\(field).ports").enumerated() {
            guard let v = int(p, "\(field).ports[\(i)]", in: 1...65535) else { continue }
            if ports.contains(UInt16(v)) { fail(p, "\(field).ports[\(i)]", "is listed twice") }
            ports.append(UInt16(v))
        }
        if m["ports"] != nil && ports.isEmpty { fail(m["ports"], "\(field).ports", "needs at least one port") }
        let method = choice(m["method"], "\(field).method", ForwardingMethod.self)
        let scheduler = m["scheduler"].map { choice($0, "\(field).scheduler", SchedulerKind.self) } ?? .wrr
        var interface = interfaces.first ?? ""
        if let i = m["interface"], let text = string(i, "\(field).interface") {
            if interfaces.contains(text) { interface = text } else {
                fail(i, "\(field).interface", "is not a data-plane interface (dataplane.interfaces)")
            }
        }
        var nodes: [FulcrumConfig.Node] = []
        var nodeChecks: [FulcrumConfig.NodeCheckKey: FulcrumConfig.HealthCheck] = [:]
        for (i, n) in sequence(m["nodes"], "\(field).nodes").enumerated() {
            guard let node = endpoint(n, "\(field).nodes[\(i)]", method: method, multiPort: ports.count > 1, sorry: false)
            else { continue }
            if case let .mapping(nm) = n, let c = nm["health_check"] {
                if let check = healthCheck(c, "\(field).nodes[\(i)].health_check") {
                    nodeChecks[FulcrumConfig.NodeCheckKey(address: node.address, port: node.port)] = check
                }
            }
            if let vip, method == .nat, node.address.isIPv4 != vip.isIPv4 {
                fail(n, "\(field).nodes[\(i)].address", "must be of the VIP's address family for NAT", value: "\(node.address)")
            }
            if node.address == vip {
                fail(n, "\(field).nodes[\(i)].address", "is the group's VIP; a node is a real server's own address", value: "\(node.address)")
            }
            if nodes.contains(where: { $0.address == node.address && $0.port == node.port }) {
                fail(n, "\(field).nodes[\(i)]", "is listed twice in the group", value: "\(node.address)")
            }
            nodes.append(node)
        }
        if m["nodes"] != nil && nodes.isEmpty && m["sorry"] == nil {
            fail(m["nodes"], "\(field).nodes", "needs at least one node (or a sorry server)")
        }
        var sorry: FulcrumConfig.Node?
        if let s = m["sorry"] {
            sorry = endpoint(s, "\(field).sorry", method: method, multiPort: ports.count > 1, sorry: true)
        }
        let check = m["health_check"].flatMap { healthCheck($0, "\(field).health_check") }
        var dynamic = false
        if let d = m["dynamic_weights"], let text = string(d, "\(field).dynamic_weights") {
            if text == "cpu" { dynamic = true } else if text != "none" {
                fail(d, "\(field).dynamic_weights", "must be cpu (weights from the nodes' agents) or none")
            }
        }
        guard let name, let vip, let proto, let method, let scheduler else { return nil }
        var group = FulcrumConfig.Group(name: name, vip: vip, proto: proto, ports: ports, method: method, scheduler: scheduler,
                                        interface: interface, nodes: nodes, sorry: sorry, healthCheck: check, line: node.mark?.line)
        group.dynamicWeights = dynamic
        group.nodeHealthChecks = nodeChecks
        if let a = m["accept_discovered_nodes"].flatMap({ bool($0, "\(field).accept_discovered_nodes") }) {
            group.acceptDiscoveredNodes = a
            if a && group.nodes.isEmpty {
                fail(m["accept_discovered_nodes"], "\(field).accept_discovered_nodes",
                     "needs at least one configured node: a discovered node takes its port")
            }
        }
        return group
    }

    mutating func seconds(_ node: Node?, _ field: String, in range: ClosedRange<Double>) -> Double? {
        guard let text = string(node, field) else { return nil }
        guard let v = Double(text), range.contains(v) else {
            fail(node, field, "must be a number of seconds from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return v
    }

    mutating func healthCheck(_ node: Node, _ field: String) -> FulcrumConfig.HealthCheck? {
        enclosing.append(node)
        defer { enclosing.removeLast() }
        let m = mapping(node, field, allowed: ["type", "interval", "timeout", "rise", "fall", "port", "path", "host",
                                               "expect", "send", "expect_body"])
        guard let kind = choice(m["type"], "\(field).type", FulcrumConfig.HealthCheck.Kind.self) else { return nil }
        var c = FulcrumConfig.HealthCheck(kind: kind)
        if let v = m["interval"].flatMap({ seconds($0, "\(field).interval", in: 0.05...3600) }) { c.interval = v }
        if let v = m["timeout"].flatMap({ seconds($0, "\(field).timeout", in: 0.01...60) }) { c.timeout = v }
        if c.timeout > c.interval {
            fail(m["timeout"] ?? node, "\(field).timeout", "must be at most the interval (\(c.interval) s)", value: "\(c.timeout)")
        }
        if let v = m["rise"].flatMap({ int($0, "\(field).rise", in: 1...100) }) { c.rise = v }
        if let v = m["fall"].flatMap({ int($0, "\(field).fall", in: 1...100) }) { c.fall = v }
        if let v = m["port"].flatMap({ int($0, "\(field).port", in: 1...65535) }) { c.port = UInt16(v) }
        if let p = m["path"], let v = string(p, "\(field).path") {
            if kind != .http && kind != .https { fail(p, "\(field).path", "applies to types http and https only") }
            if !v.hasPrefix("/") || v.contains(" ") || v.contains("\r") || v.contains("\n") {
                fail(p, "\(field).path", "must start with / and hold no spaces or line breaks")
            } else {
                c.path = v
            }
        }
        if let h = m["host"], let v = string(h, "\(field).host") {
            if kind != .http && kind != .https { fail(h, "\(field).host", "applies to types http and https only") }
            if v.contains(" ") || v.contains("\r") || v.contains("\n") { fail(h, "\(field).host", "must be a host name") } else { c.host = v }
        }
        if let e = m["expect"] {
            switch kind {
            case .http, .https:
                let codes = sequence(e, "\(field).expect").enumerated().compactMap { int($0.element, "\(field).expect[\($0.offset)]", in: 100...599) }
                if !codes.isEmpty { c.expect = codes }
            case .udp:
                c.expectText = string(e, "\(field).expect")
            default:
                fail(e, "\(field).expect", "applies to types http, https (status codes) and udp (text the answer must contain) only")
            }
        }
        if let b = m["expect_body"], let v = string(b, "\(field).expect_body") {
            if kind != .http && kind != .https { fail(b, "\(field).expect_body", "applies to types http and https only") }
            c.expectText = v
        }
        if let s = m["send"], let v = string(s, "\(field).send") {
            if kind != .udp { fail(s, "\(field).send", "applies to type udp only") }
            c.send = v
        }
        return c
    }

    /// Checks across groups: unique names here; one group per VIP:port and NAT replies
    /// that can be told apart are FulcrumCore's rules (`BalancerSpec.endpoints()`), the
    /// same ones the data plane applies, reported at the offending group's line.
    mutating func crossCheck(_ groups: [FulcrumConfig.Group], _ node: Node?, dataplane: FulcrumConfig.Dataplane) {
        let groupNodes = node.map { sequence($0, "groups") } ?? []
        func at(_ i: Int) -> Node? { i < groupNodes.count ? groupNodes[i] : node }
        var names: [String: Int] = [:]
        for (i, g) in groups.enumerated() {
            if names[g.name] != nil { fail(at(i), "groups[\(i)].name", "is used by another group", value: g.name) }
            names[g.name] = i
        }
        let specs = groups.map {
            GroupSpec(name: $0.name, vip: $0.vip, proto: $0.proto, ports: $0.ports, method: $0.method,
                      scheduler: $0.scheduler,
                      nodes: $0.nodes, sorry: $0.sorry)
        }
        do {
            try DataplaneLimits.check(BalancerSpec(groups: specs, interfaceMACs: [.zero], maxNodeSlots: dataplane.maxNodeSlots))
        } catch let error as DataplaneLimits.Exceeded {
            if case .nodeSlots = error {
                fail(node, "dataplane.max_node_slots", "\(error)", value: "\(dataplane.maxNodeSlots)")
            } else {
                fail(node, "groups", "\(error)")
            }
        } catch let error as BalancerSpecError {
            switch error {
            case let .duplicateService(group, service, _):
                let i = groups.lastIndex { $0.name == group } ?? 0
                fail(at(i), "groups[\(i)].ports", "\(error)", value: "\(service.port)")
            case let .ambiguousNATReply(group, reply, _):
                let i = groups.lastIndex { $0.name == group } ?? 0
                fail(at(i), "groups[\(i)].nodes", "\(error)", value: "\(reply.address)")
            default:
                fail(node, "groups", "\(error)")
            }
        } catch {
            fail(node, "groups", "\(error)")
        }
    }
}
