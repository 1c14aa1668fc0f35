import Crypto
import FulcrumAPIModels
import FulcrumCore
import Foundation

/// The load-balancing configuration (groups, nodes, schedulers, checks, sorry servers) as
/// the API shows it, the state file keeps it and its hash is taken: the file's field names,
/// one canonical JSON text. Reading goes the other way through `ConfigLoader`, so a
/// document is validated by the same code whether it came from the file or the API.
public enum BalancingConfig {
    public static func model(_ groups: [FulcrumConfig.Group]) -> BalancingConfigModel {
        BalancingConfigModel(groups: groups.map(model))
    }

    public static func model(_ g: FulcrumConfig.Group) -> GroupModel {
        var m = GroupModel(name: g.name, vip: "\(g.vip)", protocol: g.proto == IPProtocol.tcp ? "tcp" : "udp",
                           ports: g.ports.map(Int.init), method: g.method.rawValue, scheduler: g.scheduler.rawValue,
                           interface: g.interface, nodes: g.nodes.map { model($0, sorry: false) },
                           sorry: g.sorry.map { model($0, sorry: true) })
        for (i, n) in g.nodes.enumerated() {
            if let c = g.nodeHealthChecks[FulcrumConfig.NodeCheckKey(address: n.address, port: n.port)] { m.nodes[i].healthCheck = model(c) }
        }
        m.healthCheck = g.healthCheck.map(model)
        if g.dynamicWeights { m.dynamicWeights = "cpu" }
        if g.acceptDiscoveredNodes { m.acceptDiscoveredNodes = true }
        return m
    }

    public static func model(_ c: FulcrumConfig.HealthCheck) -> HealthCheckModel {
        var h = HealthCheckModel(type: c.kind.rawValue)
        h.interval = c.interval
        h.timeout = c.timeout
        h.rise = c.rise
        h.fall = c.fall
        h.port = c.port.map(Int.init)
        if c.kind == .http || c.kind == .https {
            h.path = c.path
            h.host = c.host
            h.expect = c.expect
            h.expectBody = c.expectText
        }
        if c.kind == .udp {
            h.send = c.send
            h.expectText = c.expectText
        }
        return h
    }

    public static func model(_ n: FulcrumConfig.Node, sorry: Bool) -> NodeModel {
        NodeModel(address: "\(n.address)", port: n.port == 0 ? nil : Int(n.port), weight: sorry ? nil : n.weight,
                  mac: n.mac.map { "\($0)" }, enabled: sorry ? nil : n.enabled)
    }

    public static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// The canonical text: sorted keys, no spaces. Equal configurations have equal texts.
    /// (`{"groups":[` the groups' own canonical texts `]}`, which is what JSONEncoder
    /// writes for the whole document, so a cache may keep each group's.)
    public static func canonical(_ groups: [FulcrumConfig.Group], cache: CanonicalCache? = nil) -> Data {
        var out = Data("{\"groups\":[".utf8)
        for (i, g) in groups.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(cache?.text(g) ?? text(g))
        }
        out.append(contentsOf: Array("]}".utf8))
        return out
    }

    static func text(_ g: FulcrumConfig.Group) -> Data { (try? encoder.encode(model(g))) ?? Data() }

    /// `sha256:` and the hex digest of the canonical text.
    public static func hash(_ groups: [FulcrumConfig.Group], cache: CanonicalCache? = nil) -> String {
        hash(canonical(groups, cache: cache))
    }

    public static func hash(_ canonical: Data) -> String {
        "sha256:" + SHA256.hash(data: canonical).map { String(format: "%02x", $0) }.joined()
    }

    /// What differs from `old` to `new`, group by group and node by node, in `new`'s order.
    public static func diff(_ old: [FulcrumConfig.Group], _ new: [FulcrumConfig.Group]) -> [ChangeModel] {
        var out: [ChangeModel] = []
        let before = Dictionary(old.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let after = Set(new.map(\.name))
        for g in old where !after.contains(g.name) {
            out.append(ChangeModel(op: "remove", path: "groups/\(g.name)", from: describe(g)))
        }
        for g in new {
            guard let o = before[g.name] else {
                out.append(ChangeModel(op: "add", path: "groups/\(g.name)", to: describe(g)))
                continue
            }
            if o == g { continue }
            var a = o, b = g
            a.nodes = []; b.nodes = []; a.line = nil; b.line = nil
            if a != b {
                out.append(ChangeModel(op: "change", path: "groups/\(g.name)", from: describe(o), to: describe(g)))
            }
            func key(_ n: FulcrumConfig.Node) -> String { "\(n.address)" + (n.port == 0 ? "" : ":\(n.port)") }
            let oldNodes = Dictionary(o.nodes.map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
            let newKeys = Set(g.nodes.map(key))
            for n in o.nodes where !newKeys.contains(key(n)) {
                out.append(ChangeModel(op: "remove", path: "groups/\(g.name)/nodes/\(key(n))", from: "weight \(n.weight)"))
            }
            for n in g.nodes {
                let path = "groups/\(g.name)/nodes/\(key(n))"
                guard let p = oldNodes[key(n)] else {
                    out.append(ChangeModel(op: "add", path: path, to: "weight \(n.weight)" + (n.enabled ? "" : ", disabled")))
                    continue
                }
                if p.weight != n.weight { out.append(ChangeModel(op: "change", path: path + "/weight", from: "\(p.weight)", to: "\(n.weight)")) }
                if p.enabled != n.enabled { out.append(ChangeModel(op: "change", path: path + "/enabled", from: "\(p.enabled)", to: "\(n.enabled)")) }
                if p.mac != n.mac {
                    out.append(ChangeModel(op: "change", path: path + "/mac", from: p.mac.map { "\($0)" } ?? "(resolved)",
                                           to: n.mac.map { "\($0)" } ?? "(resolved)"))
                }
            }
        }
        return out
    }

    static func describe(_ g: FulcrumConfig.Group) -> String {
        let proto = g.proto == IPProtocol.tcp ? "tcp" : "udp"
        let sorry = g.sorry.map { ", sorry \($0.address)" } ?? ""
        let check = g.healthCheck.map { ", \($0.kind.rawValue) check" } ?? ""
        return "\(g.vip) \(proto) \(g.ports.map(String.init).joined(separator: ",")) \(g.method.rawValue) "
            + "\(g.scheduler.rawValue) on \(g.interface), \(g.nodes.count) nodes\(sorry)\(check)"
    }
}

/// Each group's canonical text, kept while the group is unchanged: a change to one node of
/// a large configuration encodes one group, not all of them. One owner (the controller).
public final class CanonicalCache {
    var texts: [String: (group: FulcrumConfig.Group, text: Data)] = [:]

    public init() {}

    func text(_ g: FulcrumConfig.Group) -> Data {
        if let hit = texts[g.name], hit.group == g { return hit.text }
        let t = BalancingConfig.text(g)
        texts[g.name] = (g, t)
        return t
    }

    /// Forgets groups no longer configured.
    public func keep(_ groups: [FulcrumConfig.Group]) {
        let names = Set(groups.map(\.name))
        texts = texts.filter { names.contains($0.key) }
    }
}

/// `api.listen`'s host:port (IPv6 in brackets).
public struct APIListenAddress: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init?(_ text: String) {
        let host: Substring, port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
            guard IPAddress(host).map({ !$0.isIPv4 }) == true else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            guard IPAddress(host)?.isIPv4 == true else { return nil }
        }
        guard let p = Int(port), (1...65535).contains(p) else { return nil }
        self.host = String(host)
        self.port = p
    }
}
