import FulcrumConfiguration
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
        let web = try c.groupSpecs[0]
        #expect(web.ports == [80, 443] && web.method == .mat && web.scheduler == .maglev)
        #expect(web.nodes[0].mac == MACAddress("02:00:00:00:02:11") && web.nodes[1].weight == 0)
        let dns = try c.groupSpecs[1]
        #expect(dns.interface == 1 && dns.nodes[0].port == 5353 && dns.sorry?.address == IPAddress("2001:2:2::99"))
        #expect(try c.routeSpecs == [RouteSpec(prefix: IPAddress("198.18.0.0")!, prefixLength: 24, interface: 0,
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
        // Refusals the hostile test found `fulcrum check` let through.
        ("  flow_table_size: 65536", "  flow_table_size: 65536\n  cores: []", 10, "dataplane.cores", nil),
        // The offload: its mode, its size, and a scan pass that could outlast half a timeout.
        ("  flow_table_size: 65536", "  flow_table_size: 65536\n  offload: all", 10, "dataplane.offload", "all"),
        ("  flow_table_size: 65536", "  flow_table_size: 65536\n  offload_entries: 1000", 10, "dataplane.offload_entries", "1000"),
        // (4 M entries: up to 10 s a pass; the shortest timeout here is closing's 10 s.)
        ("  flow_table_size: 65536", "  flow_table_size: 65536\n  offload_entries: 4194304", 10, "dataplane.offload_entries",
         "4194304"),
        ("    vip: 198.18.1.10", "    vip: 0.0.0.0", 18, "groups[0].vip", nil),
        ("    vip: 198.18.1.10", "    vip: 224.0.0.5", 18, "groups[0].vip", nil),
        ("    vip: 198.18.1.10", "    vip: 255.255.255.255", 18, "groups[0].vip", nil),
        ("    vip: 198.18.1.10", "    vip: 127.0.0.1", 18, "groups[0].vip", nil),
        ("    vip: 2001:2:1::53", "    vip: ff02::1", 31, "groups[1].vip", nil),
        ("    vip: 2001:2:1::53", "    vip: \"::\"", 31, "groups[1].vip", nil),
        ("      - address: 198.18.2.12", "      - address: 198.18.1.10", 28, "groups[0].nodes[1].address", nil),
        ("      - address: 198.18.2.12", "      - address: 224.1.1.1", 28, "groups[0].nodes[1].address", nil),
        // A missing required key is reported at the line of the mapping that lacks it.
        ("    nodes:\n      - address: 2001:2:2::11\n        port: 5353\n", "", 30, "groups[1].nodes", nil),
        ("    vip: 198.18.1.10\n", "", 17, "groups[0].vip", nil),
        // Names: bounded, of letters, digits, '.', '_' and '-' (a long one is shown cut).
        ("  - name: web\n", "  - name: \"web mat\"\n", 17, "groups[0].name", "web mat"),
        ("  - name: web\n", "  - name: a/b\n", 17, "groups[0].name", "a/b"),
        ("  - name: web\n", "  - name: \(String(repeating: "w", count: 100_000))\n", 17, "groups[0].name",
         String(repeating: "w", count: 80) + "… (100000 bytes)"),
        ("  name: lb1", "  name: \"lb 1\"", 2, "node.name", "lb 1"),
        // Duplicate keys: the line of the first.
        ("    protocol: tcp", "    protocol: tcp\n    protocol: udp", 19, "protocol", nil),
    ]

    static let cluster = """

    cluster:
      role: master
      peer: lbb
      port: 65010
      interconnects:
        - { local: 198.18.9.1, peer: 198.18.9.2 }
        - { local: 198.18.0.10, peer: 198.18.0.11 }
      heartbeat: { interval: 0.05, timeout: 0.15, key_file: /etc/fulcrum/cluster.key }
      np_targets: [198.18.0.2]
      failback: manual
      dual_active: both_stand_down
      monitors:
        - { type: link, interface: eth-c }
        - { type: ip, address: 198.18.0.2, interval: 1, timeout: 3, retry: 0 }
        - { type: dataplane, timeout: 2, action: alarm }
    """

    @Test func theClusterSectionParsesAsTheIssueWritesIt() throws {
        let c = try #require(try ConfigLoader.parse(Self.valid + Self.cluster, file: "lb.yaml").cluster)
        #expect(c.role == .master && c.peer == "lbb" && c.port == 65010)
        #expect(c.interconnects.map { "\($0.local)>\($0.peer)" } == ["198.18.9.1>198.18.9.2", "198.18.0.10>198.18.0.11"])
        #expect(c.interval == 0.05 && c.timeout == 0.15 && c.keyFile == "/etc/fulcrum/cluster.key")
        #expect(c.npTargets == [IPAddress("198.18.0.2")!] && c.failback == .manual && c.dualActive == .bothStandDown)
        #expect(c.monitors.map(\.kind) == [.link("eth-c"), .ip(IPAddress("198.18.0.2")!), .dataplane])
        #expect(c.monitors[1].interval == 1 && c.monitors[1].timeout == 3 && c.monitors[1].retry == 0 && c.monitors[1].action == .failover)
        #expect(c.monitors[2].timeout == 2 && c.monitors[2].interval == 0.1 && c.monitors[2].action == .alarm)
        #expect(try ConfigLoader.parse(Self.valid, file: "lb.yaml").cluster == nil, "no section: standalone")
    }

    /// (what is changed, the replacement, field, value)
    static let clusterMistakes: [(String, String, String, String?)] = [
        ("  role: master", "  role: primary", "cluster.role", "primary"),
        ("  peer: lbb", "  peer: lb1", "cluster.peer", "lb1"),
        ("peer: 198.18.9.2 }", "peer: 2001:2::2 }", "cluster.interconnects[0].peer", "2001:2::2"),
        ("timeout: 0.15,", "timeout: 0.06,", "cluster.heartbeat.timeout", "0.06"),
        ("key_file: /etc/fulcrum/cluster.key", "key_file: cluster.key", "cluster.heartbeat.key_file", "cluster.key"),
        ("  np_targets: [198.18.0.2]", "  np_targets: [198.18.0.300]", "cluster.np_targets[0]", "198.18.0.300"),
        ("  dual_active: both_stand_down", "  dual_active: both_stay", "cluster.dual_active", "both_stay"),
        ("  failback: manual", "  failback: sometimes", "cluster.failback", "sometimes"),
        ("  port: 65010", "  port: 0", "cluster.port", "0"),
        ("{ type: dataplane, timeout: 2, action: alarm }", "{ type: dataplane, timeout: 2, action: reboot }",
         "cluster.monitors[2].action", "reboot"),
        ("{ type: dataplane, timeout: 2, action: alarm }", "{ type: dataplane, retry: 2 }", "cluster.monitors[2].retry", "2"),
        ("{ type: link, interface: eth-c }", "{ type: disk, interface: eth-c }", "cluster.monitors[0].type", "disk"),
    ]

    @Test(arguments: clusterMistakes.indices)
    func clusterMistakesNameTheField(index: Int) throws {
        let (old, new, field, value) = Self.clusterMistakes[index]
        #expect(Self.cluster.contains(old), "fixture drifted: \(old)")
        let text = Self.valid + Self.cluster.replacingOccurrences(of: old, with: new)
        let error = try #require(throws: ConfigErrors.self) { try ConfigLoader.parse(text, file: "lb.yaml") }
        let match = error.errors.first { $0.field == field }
        #expect(match != nil, "no error for \(field) in:\n\(error)")
        if let value { #expect(match?.value == value, "\(error)") }
        #expect(match?.line != nil && match?.file == "lb.yaml", "\(error)")
    }

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

    @Test func capacitiesOfTheDataplaneAreCheckedBeforeRunning() throws {
        // One group with 4,200 ports (and the dns group's one): more services than the BPF map holds.
        let ports = (1...4200).map(String.init).joined(separator: ", ")
        let many = Self.valid.replacingOccurrences(of: "    ports: [80, 443]", with: "    ports: [\(ports)]")
        let error = try #require(throws: ConfigErrors.self) { try ConfigLoader.parse(many, file: "lb.yaml") }
        #expect(error.description.contains("4201 VIP:port services") && error.description.contains("at most 4096"),
                "\(error)")
        // More node slots than max_node_slots.
        let nodes = (1...20).map { "      - address: 198.18.3.\($0)" }.joined(separator: "\n")
        let slots = Self.valid.replacingOccurrences(of: "  flow_table_size: 65536", with: "  flow_table_size: 65536\n  max_node_slots: 16")
            .replacingOccurrences(of: "      - address: 198.18.2.12\n        weight: 0", with: nodes)
        let slotError = try #require(throws: ConfigErrors.self) { try ConfigLoader.parse(slots, file: "lb.yaml") }
        #expect(slotError.errors.contains { $0.field == "dataplane.max_node_slots" }, "\(slotError)")
    }

    @Test func anErrorNeverEchoesTheFile() throws {
        let huge = String(repeating: "x", count: 5 << 20)
        let scalar = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.parse(Self.valid.replacingOccurrences(of: "    method: mat", with: "    method: \(huge)"), file: "lb.yaml")
        }
        #expect(scalar.description.utf8.count < 2000, "\(scalar.description.utf8.count) bytes of error")
        let duplicate = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.parse("node:\n  name: \(huge)\nnode:\n  name: b\n", file: "lb.yaml")
        }
        #expect(duplicate.description.utf8.count < 2000, "\(duplicate.description.utf8.count) bytes of error")
        #expect(duplicate.errors.first?.line == 1 && duplicate.errors.first?.field == "node", "\(duplicate)")
        let syntax = try #require(throws: ConfigErrors.self) { try ConfigLoader.parse("groups: [\(huge)", file: "lb.yaml") }
        #expect(syntax.description.utf8.count < 2000, "\(syntax.description.utf8.count) bytes of error")
    }

    @Test func aDirectoryGetsASentence() throws {
        let error = try #require(throws: ConfigErrors.self) { try ConfigLoader.load(path: "/tmp") }
        #expect(error.description == "/tmp: (file): is a directory; give the configuration file inside it")
    }

    @Test func reloadNumbersInterfacesAsTheRunningDataplaneDoes() throws {
        // The running data plane has eth-c, eth-n; the file now lists them the other way round.
        let swapped = Self.valid.replacingOccurrences(of: "    - name: eth-c\n      queues: 2\n    - name: eth-n\n      queues: 2",
                                                      with: "    - name: eth-n\n      queues: 2\n    - name: eth-c\n      queues: 2")
        #expect(swapped != Self.valid)
        let c = try ConfigLoader.parse(swapped, file: "lb.yaml")
        let groups = try c.groupSpecs(on: ["eth-c", "eth-n"])
        #expect(groups.map(\.interface) == [0, 1], "by name, not by the file's order")
        #expect(try c.routeSpecs(on: ["eth-c", "eth-n"]).map(\.interface) == [0])
        // A group on an interface the running data plane lacks is refused by name.
        let error = try #require(throws: ConfigErrors.self) { try c.groupSpecs(on: ["eth-c"]) }
        #expect(error.errors.first?.field == "groups[1].interface" && error.errors.first?.value == "eth-n", "\(error)")
        let routeError = try #require(throws: ConfigErrors.self) { try c.routeSpecs(on: ["eth-n"]) }
        #expect(routeError.errors.first?.field == "routes[0].interface", "\(routeError)")
    }

    @Test func hostChecksFindWhatRunWouldRefuse() throws {
        let local = Self.valid.replacingOccurrences(of: "name: eth-c", with: "name: lo")
            .replacingOccurrences(of: "interface: eth-c", with: "interface: lo")
            .replacingOccurrences(of: "  flow_table_size: 65536", with: "  flow_table_size: 65536\n  cores: [0, 4000]")
        let c = try ConfigLoader.parse(local, file: "lb.yaml")
        let problems = HostCheck.problems(c, allowedCPUs: [0, 1])
        let fields = Set(problems.map(\.field))
        #expect(fields.contains("dataplane.interfaces[0].queues"), "lo has one queue, two are asked for: \(problems)")
        #expect(fields.contains("dataplane.interfaces[1].name"), "no eth-n here: \(problems)")
        #expect(fields.contains("dataplane.cores[1]") && !fields.contains("dataplane.cores[0]"), "\(problems)")
        #expect(problems.allSatisfy { $0.line != nil }, "\(problems)")
    }

    @Test func missingFileIsExplained() throws {
        let error = try #require(throws: ConfigErrors.self) { try ConfigLoader.load(path: "/nonexistent/fulcrum.yaml") }
        #expect(error.description.contains("/nonexistent/fulcrum.yaml"))
    }
}
