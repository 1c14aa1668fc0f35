import Foundation
import FulcrumTestSupport
import Testing

extension OnTheTestbed {
    /// Health checks against the testbed's real servers: a node whose server stops is
    /// taken out of scheduling, one that recovers comes back, and a group with no live
    /// node sends new flows to its sorry server.
    @Suite struct HealthTests {
        static let webNAT = "  - name: web-nat\n    vip: \"198.18.1.20\"\n    protocol: tcp\n    ports: [80]\n    method: nat\n    scheduler: wrr\n    interface: eth-n\n"
        static let dnsNAT = "  - name: dns-nat\n    vip: \"198.18.1.20\"\n    protocol: udp\n    ports: [53]\n    method: nat\n    scheduler: wrr\n    interface: eth-n\n"

        /// The testbed's config with health checks on web-nat (and, if given, dns-nat).
        static func config(_ bed: Testbed, web: String, dns: String? = nil) throws -> String {
            var text = try bed.readConfig()
            #expect(text.contains(webNAT) && text.contains(dnsNAT), "fixture drifted")
            text = text.replacingOccurrences(of: webNAT, with: webNAT + "    health_check:\n" + web)
            if let dns { text = text.replacingOccurrences(of: dnsNAT, with: dnsNAT + "    health_check:\n" + dns) }
            return text + "events:\n  file: \(bed.directory)/events.jsonl\n"
        }

        static let tcpCheck = "      type: tcp\n      interval: 0.5\n      timeout: 0.25\n      rise: 2\n      fall: 2\n"

        func health(_ s: StatusView, _ group: String, _ address: String) -> String? {
            s.group(group)?.nodes.first { $0.address == address }?.health
        }

        @Test func aNodeWhoseServerStopsIsTakenOutAndComesBack() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.writeConfig(try Self.config(bed, web: Self.tcpCheck))
            try bed.startDaemon()
            try bed.waitFor("every node up", timeout: 5) { s in s.group("web-nat")!.nodes.allSatisfy { $0.health == "up" } }
            let stopped = Date()
            try bed.stopServers("n1")
            try bed.waitFor("n1 down", timeout: 5) { self.health($0, "web-nat", "198.18.2.11")?.hasPrefix("down") == true }
            let detection = Date().timeIntervalSince(stopped)
            print("detected in \(Int(detection * 1000)) ms; fall × interval + timeout = 1250 ms")
            // fall × interval + timeout, plus the status file's 0.2 s and polling.
            #expect(detection < 1.25 + 0.5, "detected after \(detection) s")
            #expect(health(try bed.status(), "web-nat", "198.18.2.11") == "down: refused")
            let after = try bed.client("198.18.1.20", port: 80, count: 60)
            #expect(after.ok == 60 && after.perNode["n1"] == nil, "no new connection fails or reaches n1: \(after.perNode) \(after.errors)")
            // A reload renumbers nothing that matters: n1 stays down.
            try bed.writeConfig(try bed.readConfig().replacingOccurrences(of: "weight: 2", with: "weight: 3"))
            bed.signalDaemon(SIGHUP)
            try bed.waitFor("the reload", timeout: 10) { $0.version == 2 }
            #expect(try bed.client("198.18.1.20", port: 80, count: 30).perNode["n1"] == nil, "n1 came back with the reload")
            let restarted = Date()
            try bed.startServers("n1")
            try bed.waitFor("n1 up", timeout: 5) { self.health($0, "web-nat", "198.18.2.11") == "up" }
            let recovery = Date().timeIntervalSince(restarted)
            print("back in \(Int(recovery * 1000)) ms; rise × interval = 1000 ms")
            #expect(recovery < 1.0 + 0.75, "back after \(recovery) s")
            #expect((try bed.client("198.18.1.20", port: 80, count: 60).perNode["n1"] ?? 0) > 0)
            let events = try String(contentsOfFile: bed.directory + "/events.jsonl", encoding: .utf8)
            #expect(events.contains("\"kind\":\"node.down\"") && events.contains("\"reason\":\"refused\"") && events.contains("\"kind\":\"node.up\""))
        }

        @Test func anHTTP503AndASilentUDPServerCountAsDown() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            let http = "      type: http\n      port: 8081\n      path: /health\n      expect: [200]\n      interval: 0.5\n      timeout: 0.25\n      rise: 2\n      fall: 2\n"
            let udp = "      type: udp\n      interval: 0.5\n      timeout: 0.25\n      rise: 2\n      fall: 2\n"
            try bed.writeConfig(try Self.config(bed, web: http, dns: udp))
            try bed.startDaemon()
            try bed.waitFor("every node up", timeout: 5) { s in
                s.group("web-nat")!.nodes.allSatisfy { $0.health == "up" } && s.group("dns-nat")!.nodes.allSatisfy { $0.health == "up" }
            }
            try bed.setHTTPStatus("n2", 503)
            try bed.waitFor("n2 down by HTTP", timeout: 5) { self.health($0, "web-nat", "198.18.2.12") == "down: status 503" }
            let web = try bed.client("198.18.1.20", port: 80, count: 60)
            #expect(web.ok == 60 && web.perNode["n2"] == nil, "\(web.perNode)")
            try bed.setHTTPStatus("n2", nil)
            try bed.waitFor("n2 up", timeout: 5) { self.health($0, "web-nat", "198.18.2.12") == "up" }
            try bed.stopServers("n3")
            try bed.waitFor("n3 down by UDP", timeout: 5) { self.health($0, "dns-nat", "198.18.2.13")?.hasPrefix("down") == true }
            let dns = try bed.client("198.18.1.20", port: 53, proto: "udp", count: 60)
            #expect(dns.ok == 60 && dns.perNode["n3"] == nil, "\(dns.perNode) \(dns.errors)")
        }

        /// ICMP echo, IPv4 and IPv6: a node whose interface goes down stops answering.
        @Test func anICMPCheckFindsANodeWhoseInterfaceIsDown() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            let icmp = "      type: icmp\n      interval: 0.5\n      timeout: 0.25\n      rise: 2\n      fall: 2\n"
            var text = try Self.config(bed, web: icmp)
            let web6 = "  - name: web6-nat\n    vip: \"2001:2:1::20\"\n    protocol: tcp\n    ports: [80]\n    method: nat\n    scheduler: wrr\n    interface: eth-n\n"
            #expect(text.contains(web6), "fixture drifted")
            text = text.replacingOccurrences(of: web6, with: web6 + "    health_check:\n" + icmp)
            try bed.writeConfig(text)
            try bed.startDaemon()
            try bed.waitFor("every node up", timeout: 5) { s in
                s.group("web-nat")!.nodes.allSatisfy { $0.health == "up" } && s.group("web6-nat")!.nodes.allSatisfy { $0.health == "up" }
            }
            try bed.exec("n3", ["ip", "link", "set", "dev", "eth0", "down"])
            try bed.waitFor("n3 down, both families", timeout: 5) { s in
                self.health(s, "web-nat", "198.18.2.13") == "down: timeout" && self.health(s, "web6-nat", "2001:2:2::13") == "down: timeout"
            }
            #expect(self.health(try bed.status(), "web-nat", "198.18.2.11") == "up")
            let r = try bed.client("198.18.1.20", port: 80, count: 30)
            #expect(r.ok == 30 && r.perNode["n3"] == nil, "\(r.perNode)")
            try bed.exec("n3", ["ip", "link", "set", "dev", "eth0", "up"])
            // (Its global IPv6 address went with the link, as Linux does without keep_addr_on_down.)
            try bed.exec("n3", ["ip", "-6", "addr", "add", "2001:2:2::13/64", "dev", "eth0", "nodad"])
            try bed.exec("n3", ["ip", "route", "replace", "default", "via", "198.18.2.1"])
            try bed.exec("n3", ["ip", "-6", "route", "replace", "default", "via", "2001:2:2::1"])
            try bed.waitFor("n3 up again", timeout: 10) { s in
                self.health(s, "web-nat", "198.18.2.13") == "up" && self.health(s, "web6-nat", "2001:2:2::13") == "up"
            }
        }

        @Test func aGroupWithNoLiveNodeSendsNewFlowsToItsSorryServer() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.writeConfig(try Self.config(bed, web: Self.tcpCheck))
            try bed.startDaemon()
            try bed.waitFor("every node up", timeout: 5) { s in s.group("web-nat")!.nodes.allSatisfy { $0.health == "up" } }
            for n in ["n1", "n2", "n3"] { try bed.stopServers(n) }
            try bed.waitFor("every node down", timeout: 5) { s in
                s.group("web-nat")!.nodes.allSatisfy { $0.health.hasPrefix("down") == true }
            }
            let sorry = try bed.client("198.18.1.20", port: 80, count: 30)
            #expect(sorry.ok == 30 && sorry.perNode == ["sorry": 30], "\(sorry.perNode) \(sorry.errors)")
            try bed.startServers("n2")
            try bed.waitFor("n2 up", timeout: 5) { self.health($0, "web-nat", "198.18.2.12") == "up" }
            let back = try bed.client("198.18.1.20", port: 80, count: 30)
            #expect(back.ok == 30 && back.perNode == ["n2": 30], "\(back.perNode)")
            let events = try String(contentsOfFile: bed.directory + "/events.jsonl", encoding: .utf8)
            #expect(events.contains("\"kind\":\"group.no_live_node\"") && events.contains("\"kind\":\"group.back\""), "\(events)")
        }

        /// HTTPS checks (a real TLS server, openssl s_server, on each NAT node) with a body
        /// that must contain a text, and a UDP check whose answer must contain one.
        @Test func httpsAndTextExpectations() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            let key = bed.directory + "/tls.key", cert = bed.directory + "/tls.crt"
            let (made, out) = try ChildProcess.run(["/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                                                    "-subj", "/CN=node", "-keyout", key, "-out", cert])
            #expect(made == 0, "\(out)")
            func tlsServer(_ node: String) throws -> ChildProcess {
                try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(bed.prefix)-\(node)", "/usr/bin/openssl", "s_server", "-quiet",
                                  "-accept", "8443", "-www", "-cert", cert, "-key", key], outputPath: bed.directory + "/tls-\(node).log")
            }
            var servers = try ["n1", "n2", "n3"].map(tlsServer)
            defer { for s in servers where s.isRunning { s.signal(SIGKILL); s.wait() } }
            let https = "      type: https\n      port: 8443\n      path: /\n      expect: [200]\n      expect_body: s_server\n"
                + "      interval: 0.5\n      timeout: 0.4\n      rise: 2\n      fall: 2\n"
            // dns-nat: the nodes echo the datagram with their name; n2's answer is "n2 …".
            let udp = "      type: udp\n      send: ping\n      expect: n\n      interval: 0.5\n      timeout: 0.25\n      rise: 2\n      fall: 2\n"
            let first = try Self.config(bed, web: https, dns: udp)
            let second = try Self.config(bed, web: https.replacingOccurrences(of: "s_server", with: "no-such-text"), dns: udp)
            try bed.writeConfig(first)
            try bed.startDaemon()
            try bed.waitFor("every node up over HTTPS and UDP", timeout: 10) { s in
                s.group("web-nat")!.nodes.allSatisfy { $0.health == "up" } && s.group("dns-nat")!.nodes.allSatisfy { $0.health == "up" }
            }
            let stopped = Date()
            servers[0].signal(SIGKILL)
            servers[0].wait()
            try bed.waitFor("n1 down over HTTPS", timeout: 5) { self.health($0, "web-nat", "198.18.2.11")?.hasPrefix("down") == true }
            let detection = Date().timeIntervalSince(stopped)
            print("HTTPS: n1 down after \(Int(detection * 1000)) ms (\(health(try bed.status(), "web-nat", "198.18.2.11") ?? "")); bound 1400 ms")
            #expect(detection < 1.4 + 0.5)
            let r = try bed.client("198.18.1.20", port: 80, count: 60)
            #expect(r.ok == 60 && r.perNode["n1"] == nil, "\(r.perNode)")
            servers[0] = try tlsServer("n1")
            try bed.waitFor("n1 back over HTTPS", timeout: 5) { self.health($0, "web-nat", "198.18.2.11") == "up" }
            // A body without the text: down, and the reason says so.
            try bed.writeConfig(second)
            bed.signalDaemon(SIGHUP)
            try bed.waitFor("every node down for its body", timeout: 5) { s in
                s.group("web-nat")!.nodes.allSatisfy { $0.health.contains("body lacks") == true }
            }
        }
    }
}
