import FulcrumControl
import FulcrumCore
import FulcrumDataplane
import FulcrumTestSupport
import Testing

@Suite struct ConfigTests {
    static let valid = """
    node:
      name: lb1
    dataplane:
      interfaces:
        - name: eth-c
          queues: 2
        - name: eth-n
          queues: 2
      flow_table_size: 65536
      timeouts:
        established: 600
    routes:
      - prefix: 198.18.0.0/24
        interface: eth-c
        via: 198.18.0.1
    groups:
      - name: web
        vip: 198.18.1.10
        protocol: tcp
        ports: [80, 443]
        method: mat
        scheduler: maglev
        interface: eth-c
        nodes:
          - address: 198.18.2.11
            weight: 100
            mac: 02:00:00:00:02:11
          - address: 198.18.2.12
            weight: 0
      - name: dns
        vip: 2001:2:1::53
        protocol: udp
        ports: [53]
        method: nat
        interface: eth-n
        nodes:
          - address: 2001:2:2::11
            port: 5353
        sorry:
          address: 2001:2:2::99
          port: 5353
    """

    @Test func fullExampleParses() throws {
        let c = try ConfigLoader.parse(Self.valid, file: "lb.yaml")
        #expect(c.nodeName == "lb1")
        #expect(c.dataplane.interfaces.map(\.name) == ["eth-c", "eth-n"])
        #expect(c.dataplane.interfaces[0].queues == 2)
        #expect(c.dataplane.flowTableSize == 65536)
        #expect(c.dataplane.timeouts.established == 600 * FlowTimeouts.seconds)
        #expect(c.groups.count == 2)
        let web = c.groupSpecs[0]
        #expect(web.ports == [80, 443] && web.method == .mat && web.scheduler == .maglev)
        #expect(web.nodes[0].mac == MACAddress("02:00:00:00:02:11") && web.nodes[1].weight == 0)
        let dns = c.groupSpecs[1]
        #expect(dns.interface == 1 && dns.nodes[0].port == 5353 && dns.sorry?.address == IPAddress("2001:2:2::99"))
        #expect(c.routeSpecs == [RouteSpec(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0,
                                           via: IPAddress("198.18.0.1")!)])
    }

    @Test func docsExampleIsValid() throws {
        let doc = try String(contentsOfFile: Privileged.repositoryRoot() + "/Docs/CONFIG.md", encoding: .utf8)
        let start = try #require(doc.range(of: "```yaml\n"))
        let end = try #require(doc.range(of: "```", range: start.upperBound..<doc.endIndex))
        let c = try ConfigLoader.parse(String(doc[start.upperBound..<end.lowerBound]), file: "Docs/CONFIG.md")
        #expect(!c.groups.isEmpty)
    }

    /// (what is changed, the replacement, expected line, field, value)
    /// (what is changed, the replacement, expected line, field, value)
    static let mistakes: [(String, String, Int, String, String?)] = [
        ("    vip: 198.18.1.10", "    vip: 198.18.1.300", 18, "groups[0].vip", "198.18.1.300"),
        ("    protocol: tcp", "    protocol: sctp", 19, "groups[0].protocol", "sctp"),
        ("    method: mat", "    method: dsr", 21, "groups[0].method", "dsr"),
        ("    scheduler: maglev", "    scheduler: random", 22, "groups[0].scheduler", "random"),
        ("        weight: 100", "        weight: -5", 26, "groups[0].nodes[0].weight", "-5"),
        ("        mac: 02:00:00:00:02:11", "        mac: 02:00:00:00:02", 27, "groups[0].nodes[0].mac", "02:00:00:00:02"),
        ("    ports: [80, 443]", "    ports: [80, 70000]", 20, "groups[0].ports[1]", "70000"),
        ("    interface: eth-c\n    nodes:", "    interface: eth9\n    nodes:", 23, "groups[0].interface", "eth9"),
        ("        weight: 100", "        weight: 100\n        port: 8080", 27, "groups[0].nodes[0].port", "8080"),
        ("    via: 198.18.0.1", "    via: 2001:2::1", 15, "routes[0].via", "2001:2::1"),
        ("  flow_table_size: 65536", "  flow_table_size: lots", 9, "dataplane.flow_table_size", "lots"),
        ("  - name: dns", "  - name: web", 30, "groups[1].name", "web"),
        ("      - address: 198.18.2.12", "      - adress: 198.18.2.12", 28, "groups[0].nodes[1].adress", "adress"),
        ("    ports: [53]", "    ports: [53, 54]", 38, "groups[1].nodes[0].port", "5353"),
    ]

    @Test(arguments: mistakes.indices)
    func mistakesNameLineFieldAndValue(index: Int) throws {
        let (old, new, line, field, value) = Self.mistakes[index]
        #expect(Self.valid.contains(old), "fixture drifted: \(old)")
        let text = Self.valid.replacingOccurrences(of: old, with: new)
        let error = try #require(throws: ConfigErrors.self) { try ConfigLoader.parse(text, file: "lb.yaml") }
        let match = error.errors.first { $0.field == field }
        #expect(match != nil, "no error for \(field) in:\n\(error)")
        #expect(match?.line == line, "\(error)")
        #expect(match?.file == "lb.yaml")
        if let value { #expect(match?.value == value, "\(error)") }
        #expect(match?.description.contains("lb.yaml:\(line): \(field):") == true)
    }

    @Test func duplicateServiceNamesBothGroups() throws {
        let text = Self.valid.replacingOccurrences(of: "    vip: 2001:2:1::53\n    protocol: udp\n    ports: [53]",
                                                   with: "    vip: 198.18.1.10\n    protocol: tcp\n    ports: [443]")
            .replacingOccurrences(of: "    method: nat\n    interface: eth-n\n    nodes:\n      - address: 2001:2:2::11\n        port: 5353\n    sorry:\n      address: 2001:2:2::99\n      port: 5353",
                                  with: "    method: mat\n    nodes:\n      - address: 198.18.2.13")
        let error = try #require(throws: ConfigErrors.self) { try ConfigLoader.parse(text, file: "lb.yaml") }
        #expect(error.description.contains("198.18.1.10 tcp/443 is already served by group web"), "\(error)")
    }

    @Test func yamlSyntaxErrorHasALine() throws {
        let error = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.parse("groups:\n  - name: [unclosed\n", file: "bad.yaml")
        }
        #expect(error.errors.first?.line != nil)
        #expect(error.description.hasPrefix("bad.yaml:"))
    }

    @Test func missingFileIsExplained() throws {
        let error = try #require(throws: ConfigErrors.self) { try ConfigLoader.load(path: "/nonexistent/fulcrum.yaml") }
        #expect(error.description.contains("/nonexistent/fulcrum.yaml"))
    }
}
