import FulcrumAPIModels
import FulcrumConfiguration
import FulcrumCore
import FulcrumDataplane
import Foundation
import Logging
import Synchronization

/// What forwards: the data plane in `fulcrum run`, a recorder in tests. The controller
/// is its one caller: nothing else writes to the data plane.
public protocol ForwardingDriver: Sendable {
    /// Throws what `apply` would, and changes nothing.
    func validate(_ groups: [FulcrumConfig.Group], routes: [FulcrumConfig.Route]) throws
    /// Applies all of it or none of it.
    func apply(_ groups: [FulcrumConfig.Group], routes: [FulcrumConfig.Route]) throws
    /// A node's health, by identity (it holds across reloads).
    func setHealth(_ node: NodeIdentity, up: Bool)
    /// The weights dynamic weighting puts in force, by identity.
    func setAgentWeights(_ weights: [NodeIdentity: Int])
    /// The new-connection budget of the XDP program.
    func setAdmission(perSecond: UInt64, burst: UInt64) throws
    /// Whether this LB answers for its VIPs (the XDP program's active flag).
    func setActive(_ active: Bool) throws
}

/// The data plane as the controller drives it: groups on the interfaces it runs on.
public struct DataplaneDriver: ForwardingDriver {
    let dataplane: any DataplaneControl
    let local: FulcrumConfig

    public init(dataplane: any DataplaneControl, local: FulcrumConfig) {
        self.dataplane = dataplane
        self.local = local
    }

    func specs(_ groups: [FulcrumConfig.Group], _ routes: [FulcrumConfig.Route]) throws -> ([GroupSpec], [RouteSpec]) {
        var config = local
        config.groups = groups
        config.routes = routes
        let running = dataplane.interfaces
        return (try config.groupSpecs(on: running), try config.routeSpecs(on: running))
    }

    public func validate(_ groups: [FulcrumConfig.Group], routes: [FulcrumConfig.Route]) throws {
        let (g, r) = try specs(groups, routes)
        try dataplane.validate(groups: g, routes: r)
    }

    public func apply(_ groups: [FulcrumConfig.Group], routes: [FulcrumConfig.Route]) throws {
        let (g, r) = try specs(groups, routes)
        try dataplane.configure(groups: g, routes: r)
    }

    public func setHealth(_ node: NodeIdentity, up: Bool) { dataplane.setHealth(node, up: up) }
    public func setAgentWeights(_ weights: [NodeIdentity: Int]) { dataplane.setAgentWeights(weights) }
    public func setAdmission(perSecond: UInt64, burst: UInt64) throws { try dataplane.setAdmission(perSecond: perSecond, burst: burst) }
    public func setActive(_ active: Bool) throws { try dataplane.setActive(active) }
}

/// A change refused: why, in a sentence and field by field; the version still in force.
public struct ChangeError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable {
        /// The request or the configuration it would make is invalid (422; 400 when the
        /// body is not JSON at all).
        case invalid
        case notFound
        /// The name is taken, or `expected_version` is not the version in force.
        case conflict
        /// Valid, but the data plane or the disk refused it (500).
        case failed
    }

    public var kind: Kind
    public var message: String
    public var errors: [ConfigError] = []
    public var version: Int

    public var description: String {
        ([message] + errors.map(\.description)).joined(separator: "\n")
    }
}

/// The one owner of the running load-balancing configuration. Every change (a file
/// reload, an API call; later health, agents and the peer) comes here, is validated,
/// diffed, applied to the data plane and persisted, then committed with the next version;
/// or it is refused with field-level errors and nothing changes. Changes are serial (an
/// actor), so versions strictly increase and the state is always some serial order of
/// the changes made.
public actor Controller {
    public struct Committed: Sendable {
        public var version: Int
        public var hash: String
        public var groups: [FulcrumConfig.Group]
        /// The hash of the configuration file's groups this state began from.
        public var sourceHash: String
    }

    public enum Mutation: Sendable {
        /// A whole `{groups: [...]}` document (JSON or YAML).
        case replace(String)
        case addGroup(String)
        case replaceGroup(name: String, String)
        case removeGroup(name: String)
        case addNode(group: String, String)
        /// A node an agent announced (`accept_discovered_nodes`), with the defaults of a
        /// node given by its address alone.
        case addDiscoveredNode(group: String, NodeSpec)
        /// `node`: an address, or address:port ([v6]:port) where one address has several ports.
        case removeNode(group: String, node: String)
        case patchNode(group: String, node: String, NodePatchModel)
        /// Read the configuration file again; its groups become the configuration.
        case reloadFile
        /// The pair's active pushed its configuration (`ConfigSync`): its groups document,
        /// taken whole with the active's version, so both LBs show one version and hash.
        case adopt(version: Int, String)
    }

    /// The node-local settings; of them, only `routes:` follow a reload of the file.
    public internal(set) var local: FulcrumConfig
    let driver: any ForwardingDriver
    let events: EventLog?
    let logger: Logger
    public private(set) var committed: Committed
    /// Changes refused since start (status: `reloadsRejected`).
    public nonisolated let rejected = Atomic<Int>(0)
    let onCommit: @Sendable (Committed) -> Void
    /// Where the changes' errors say they come from.
    public static let body = "request body"
    /// What the threads and services tell the controller, in arrival order (`run`).
    let inputs: AsyncStream<Input>
    /// Nodes found down, and groups left with none live.
    var liveness = GroupLiveness()
    /// The agents' weights last put in force.
    var agentWeights: [NodeIdentity: Int] = [:]

    public init(local: FulcrumConfig, committed: Committed, driver: any ForwardingDriver, events: EventLog?,
                logger: Logger, inputs: AsyncStream<Input> = AsyncStream { $0.finish() },
                onCommit: @escaping @Sendable (Committed) -> Void = { _ in }) {
        self.local = local
        self.committed = committed
        self.driver = driver
        self.events = events
        self.logger = logger
        self.inputs = inputs
        self.onCommit = onCommit
    }

    /// The configuration to start with: the state file's, unless the configuration file's
    /// groups changed since the state began from them (then the file's, at the next
    /// version). `note` says which won, for the log and events. The caller persists it
    /// (`persist`) once it holds the interfaces, so a daemon refused at start writes nothing.
    public static func initialState(_ config: FulcrumConfig) throws -> (Committed, note: String, fromStateFile: Bool) {
        let fileHash = BalancingConfig.hash(config.groups)
        let saved = try StateFile.read(config.stateFile)
        var fileGroups = config.groups
        for i in fileGroups.indices { fileGroups[i].line = nil }
        var committed = Committed(version: 1, hash: fileHash, groups: fileGroups, sourceHash: fileHash)
        var note = "configuration 1 from \(config.file)"
        var fromStateFile = false
        if let saved {
            if saved.sourceHash == fileHash {
                let groups = try ConfigLoader.parseBalancing(saved.groupsDocument, source: config.stateFile, local: config)
                committed = Committed(version: saved.version, hash: BalancingConfig.hash(groups), groups: groups,
                                      sourceHash: fileHash)
                note = "configuration \(saved.version) from \(config.stateFile) (changes made through the API)"
                fromStateFile = true
            } else {
                committed.version = saved.version + 1
                note = "configuration \(committed.version) from \(config.file): its groups changed since \(config.stateFile) was written, so the file wins"
            }
        }
        return (committed, note, fromStateFile)
    }

    /// Every committed version has its `config.applied` event. A daemon that died between
    /// committing a change (the state file) and recording it left none; nor has a version
    /// made at start from an edited configuration file. Either is recorded here, at start,
    /// with what is known of it.
    public static func recordMissingApplied(_ c: Committed, fromStateFile recovered: Bool, events: EventLog, note: String) {
        guard c.version > 1 else { return }
        let latest = events.events().last { $0.kind == "config.applied" }.flatMap { $0.fields["version"].flatMap(Int.init) }
        guard latest.map({ $0 < c.version }) ?? true else { return }
        events.record(.notice, "config.applied",
                      recovered
                          ? "configuration \(c.version) applied (recorded at start: the daemon stopped after committing it, before its event was written)"
                          : "configuration \(c.version) applied at start: \(note)",
                      ["version": "\(c.version)", "hash": c.hash, "origin": recovered ? "recovered" : "start"])
    }

    public static func persist(_ c: Committed, to path: String) throws {
        try StateFile.write(version: c.version, hash: c.hash, sourceHash: c.sourceHash,
                            canonicalGroups: BalancingConfig.canonical(c.groups), to: path)
    }

    /// Each group's canonical text, kept between changes.
    let texts = CanonicalCache()

    public var document: ConfigDocument {
        ConfigDocument(version: committed.version, hash: committed.hash, groups: BalancingConfig.model(committed.groups).groups)
    }

    /// Validates, applies, persists and commits a change; with `dryRun`, only says what
    /// it would do. `expectedVersion`: refuse unless that version is in force.
    public func change(_ mutation: Mutation, dryRun: Bool = false, expectedVersion: Int? = nil,
                       origin: String) throws(ChangeError) -> ChangeResultModel {
        do {
            return try attempt(mutation, dryRun: dryRun, expectedVersion: expectedVersion, origin: origin)
        } catch {
            if !dryRun {
                rejected.add(1, ordering: .relaxed)
                let first = error.errors.first.map(\.description) ?? error.message
                let more = error.errors.count > 1 ? " (and \(error.errors.count - 1) more)" : ""
                logger.warning("\(origin == "SIGHUP" ? "reload" : "change") rejected; configuration \(committed.version) kept\n\(error)")
                events?.record(.warning, "config.rejected",
                               "\(origin): change rejected, configuration \(committed.version) kept: \(first)\(more)",
                               ["version": "\(committed.version)", "origin": origin, "errors": "\(max(1, error.errors.count))"])
            }
            throw error
        }
    }

    func attempt(_ mutation: Mutation, dryRun: Bool, expectedVersion: Int?, origin: String) throws(ChangeError) -> ChangeResultModel {
        let version = committed.version
        if let expectedVersion, expectedVersion != version {
            throw ChangeError(kind: .conflict, message: "configuration \(version) is in force, not \(expectedVersion); read it again and retry",
                              version: version)
        }
        var sourceHash = committed.sourceHash
        var routes = local.routes
        var next: [FulcrumConfig.Group]
        do {
            if case .reloadFile = mutation {
                let file = try ConfigLoader.load(path: local.file)
                next = file.groups
                routes = file.routes
                sourceHash = BalancingConfig.hash(file.groups)
            } else {
                next = try candidate(mutation)
                try ConfigLoader.check(next, source: Self.body, local: local)
            }
            // A dry run asks the data plane; a change is checked by the data plane as it is
            // applied (all or nothing), so its tables are built once.
            if dryRun { try driver.validate(next, routes: routes) }
        } catch let e as ChangeError {
            throw e
        } catch let e as ConfigErrors {
            throw ChangeError(kind: .invalid, message: "the change is invalid", errors: e.errors, version: version)
        } catch {
            throw ChangeError(kind: .invalid, message: "the data plane refuses the change: \(error)", version: version)
        }
        // Lines locate a file's errors; once it is read they mean nothing, and committed
        // groups compare by content alone.
        for i in next.indices { next[i].line = nil }
        var changes = BalancingConfig.diff(committed.groups, next)
        if routes != local.routes { changes.append(ChangeModel(op: "change", path: "routes", to: "\(routes.count) route(s) from \(local.file)")) }
        let canonical = BalancingConfig.canonical(next, cache: texts)
        let hash = BalancingConfig.hash(canonical)
        if dryRun {
            return ChangeResultModel(dryRun: true, version: version + 1, hash: hash, changes: changes)
        }
        if case let .adopt(pushed, _) = mutation, pushed == version, hash == committed.hash {
            return ChangeResultModel(dryRun: false, version: version, hash: hash, changes: [])  // a push already taken
        }
        let previous = committed
        var nextVersion = version + 1
        if case let .adopt(pushed, _) = mutation { nextVersion = pushed }
        let proposed = Committed(version: nextVersion, hash: hash, groups: next, sourceHash: sourceHash)
        do {
            try driver.apply(next, routes: routes)
        } catch let e as ConfigErrors {
            throw ChangeError(kind: .invalid, message: "the change is invalid", errors: e.errors, version: version)
        } catch let e as BalancerSpecError {
            throw ChangeError(kind: .invalid, message: "the data plane refuses the change: \(e)", version: version)
        } catch let e as DataplaneLimits.Exceeded {
            throw ChangeError(kind: .invalid, message: "the data plane refuses the change: \(e)", version: version)
        } catch {
            throw ChangeError(kind: .failed, message: "the data plane refused the change and keeps configuration \(version): \(error)",
                              version: version)
        }
        do {
            try StateFile.write(version: proposed.version, hash: hash, sourceHash: sourceHash, canonicalGroups: canonical,
                                to: local.stateFile)
        } catch {
            // Not on disk, so not committed: put the data plane back.
            try? driver.apply(previous.groups, routes: local.routes)
            throw ChangeError(kind: .failed, message: "cannot save the change, configuration \(version) kept: \(error)", version: version)
        }
        committed = proposed
        texts.keep(next)
        local.routes = routes
        logger.info("configuration applied", metadata: ["version": "\(proposed.version)", "origin": "\(origin)",
                                                         "changes": "\(changes.count)"])
        let summary = changes.prefix(3).map { "\($0.op) \($0.path)" + ($0.to.map { " → \($0)" } ?? "") }.joined(separator: "; ")
            + (changes.count > 3 ? "; and \(changes.count - 3) more" : "")
        events?.record(.notice, "config.applied",
                       "configuration \(proposed.version) applied by \(origin)" + (changes.isEmpty ? " (no change)" : ": \(summary)"),
                       ["version": "\(proposed.version)", "hash": proposed.hash, "origin": origin, "changes": "\(changes.count)"])
        onCommit(proposed)
        return ChangeResultModel(dryRun: false, version: proposed.version, hash: hash, changes: changes)
    }

    /// The groups a mutation would leave, before the checks across them.
    func candidate(_ mutation: Mutation) throws -> [FulcrumConfig.Group] {
        var groups = committed.groups
        let version = committed.version
        func index(of name: String) throws -> Int {
            guard let i = groups.firstIndex(where: { $0.name == name }) else {
                throw ChangeError(kind: .notFound, message: "there is no group \(name)", version: version)
            }
            return i
        }
        switch mutation {
        case let .replace(text), let .adopt(_, text):
            return try ConfigLoader.parseBalancing(text, source: Self.body, local: local)
        case let .addGroup(text):
            let g = try ConfigLoader.parseGroup(text, source: Self.body, local: local)
            if groups.contains(where: { $0.name == g.name }) {
                throw ChangeError(kind: .conflict, message: "a group named \(g.name) exists; change it with PUT /v1/groups/\(g.name)",
                                  version: version)
            }
            groups.append(g)
        case let .replaceGroup(name, text):
            let i = try index(of: name)
            let g = try ConfigLoader.parseGroup(text, source: Self.body, local: local)
            guard g.name == name else {
                throw ChangeError(kind: .invalid, message: "the body names group \(g.name), the path \(name)",
                                  errors: [ConfigError(file: Self.body, line: nil, field: "group.name", value: g.name,
                                                       message: "must be the group's name in the path (\(name)); to rename, add the new group and remove the old")],
                                  version: version)
            }
            groups[i] = g
        case let .removeGroup(name):
            groups.remove(at: try index(of: name))
        case let .addNode(group, text):
            let g = try index(of: group)
            let node = try ConfigLoader.parseNode(text, source: Self.body, in: groups[g])
            if groups[g].nodes.contains(where: { $0.address == node.address && $0.port == node.port }) {
                throw ChangeError(kind: .conflict, message: "\(group) already has node \(NodeLabel(address: node.address, port: node.port))",
                                  version: version)
            }
            groups[g].nodes.append(node)
        case let .addDiscoveredNode(group, node):
            let g = try index(of: group)
            if groups[g].nodes.contains(where: { $0.address == node.address && $0.port == node.port }) {
                throw ChangeError(kind: .conflict, message: "\(group) already has node \(NodeLabel(address: node.address, port: node.port))",
                                  version: version)
            }
            groups[g].nodes.append(node)
        case let .removeNode(group, ref):
            let g = try index(of: group)
            groups[g].nodes.remove(at: try nodeIndex(ref, in: groups[g]))
            if groups[g].nodes.isEmpty && groups[g].sorry == nil {
                throw ChangeError(kind: .invalid, message: "\(group) would have no node and no sorry server; remove the group instead",
                                  errors: [ConfigError(file: Self.body, line: nil, field: "groups.\(group).nodes", value: ref,
                                                       message: "is the group's last node")],
                                  version: version)
            }
        case let .patchNode(group, ref, patch):
            let g = try index(of: group)
            let n = try nodeIndex(ref, in: groups[g])
            if let w = patch.weight {
                guard (0...NodeLimits.maxWeight).contains(w) else {
                    throw ChangeError(kind: .invalid, message: "the change is invalid",
                                      errors: [ConfigError(file: Self.body, line: nil, field: "weight", value: "\(w)",
                                                           message: "must be a whole number from 0 to \(NodeLimits.maxWeight)")],
                                      version: version)
                }
                groups[g].nodes[n].weight = w
            }
            if let e = patch.enabled { groups[g].nodes[n].enabled = e }
        case .reloadFile:
            break
        }
        return groups
    }

    /// A node by address, or address:port where one address has several ports.
    func nodeIndex(_ ref: String, in group: FulcrumConfig.Group) throws -> Int {
        let version = committed.version
        guard let label = NodeLabel(ref) else {
            throw ChangeError(kind: .invalid, message: "\(ref) is not a node address (address, or address:port)",
                              errors: [ConfigError(file: "request path", line: nil, field: "node", value: ref,
                                                   message: "must be an IPv4 or IPv6 address, or address:port")],
                              version: version)
        }
        let matches = group.nodes.indices.filter { label.names(address: group.nodes[$0].address, port: group.nodes[$0].port) }
        guard !matches.isEmpty else {
            throw ChangeError(kind: .notFound, message: "\(group.name) has no node \(ref)", version: version)
        }
        guard matches.count == 1 else {
            throw ChangeError(kind: .conflict, message: "\(group.name) has \(matches.count) nodes at \(label.address); give address:port",
                              version: version)
        }
        return matches[0]
    }
}
