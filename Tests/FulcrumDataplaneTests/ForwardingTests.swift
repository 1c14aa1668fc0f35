import Foundation
import FulcrumTestSupport
import Testing

extension OnTheTestbed {
    /// Real packets through a running `fulcrum` on a namespace testbed: a client, the LB
    /// (two interfaces), three MAT nodes beside the client and three NAT nodes behind the LB,
    /// all running real TCP/UDP servers that answer with their name and the payload.
    @Suite struct ForwardingTests {
        /// Weights in the testbed config are 3:2:1 for every group.
        static let weights = [3.0, 2.0, 1.0]

        func expectProportional(_ r: Testbed.ClientResult, _ names: [String], _ label: String,
                                sourceLocation: SourceLocation = #_sourceLocation) {
            let total = Double(r.ok)
            for (i, name) in names.enumerated() {
                let want = weights(i) * total
                let got = Double(r.perNode[name] ?? 0)
                #expect(abs(got - want) <= 0.10 * want, "\(label): \(name) got \(got), want \(want) ±10%",
                        sourceLocation: sourceLocation)
            }
        }

        func weights(_ i: Int) -> Double { Self.weights[i] / Self.weights.reduce(0, +) }

        @Test func matAndNATCarryTCPAndUDPForBothFamiliesByWeight() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let cases: [(String, String, Int, String, [String])] = [
                ("web-mat", "198.18.1.10", 80, "tcp", ["m1", "m2", "m3"]),
                ("web-mat", "198.18.1.10", 443, "tcp", ["m1", "m2", "m3"]),
                ("dns-mat", "198.18.1.10", 53, "udp", ["m1", "m2", "m3"]),
                ("web-nat", "198.18.1.20", 80, "tcp", ["n1", "n2", "n3"]),
                ("dns-nat", "198.18.1.20", 53, "udp", ["n1", "n2", "n3"]),
                ("web6-mat", "2001:2:1::10", 80, "tcp", ["m1", "m2", "m3"]),
                ("web6-nat", "2001:2:1::20", 80, "tcp", ["n1", "n2", "n3"]),
                ("dns6-mat", "2001:2:1::10", 53, "udp", ["m1", "m2", "m3"]),
                ("dns6-nat", "2001:2:1::20", 53, "udp", ["n1", "n2", "n3"]),
            ]
            for (group, vip, port, proto, nodes) in cases {
                let label = "\(group) \(vip) \(proto)/\(port)"
                let r = try bed.client(vip, port: port, proto: proto, count: 300)
                #expect(r.ok == 300 && r.failed == 0, "\(label): \(r.failed) failed: \(r.errors)")
                expectProportional(r, nodes, label)
            }
            // What the LB counted agrees with what the servers answered (the status file is
            // rewritten every 200 ms: wait until it has caught up with the last request).
            try? bed.waitFor("counters to settle", timeout: 5) { s in
                (s.group("dns6-nat")?.newFlows ?? 0) >= 290 && s.xdp["to_worker"] == s.counters["received"]
            }
            let s = try bed.status()
            for name in ["web-nat", "web6-nat", "web6-mat"] {
                let g = try #require(s.group(name))
                #expect(g.newFlows == 300, "\(name) new flows \(g.newFlows)")
            }
            #expect(try #require(s.group("web-mat")).newFlows == 600)
            for name in ["web-nat", "web6-mat"] {
                let g = try #require(s.group(name))
                #expect(g.nodes.map(\.newFlows) == [150, 100, 50], "\(name): the LB's per-node new flows")
            }
            #expect(s.counters["nat_replies", default: 0] > 0)
            #expect(s.xdp["to_worker"] == s.counters["received"], "every steered frame reached a worker")
            #expect(s.sockets["rx_dropped", default: 0] == 0 && s.sockets["rx_ring_full", default: 0] == 0)
            #expect(s.attachModes == ["eth-c": "native", "eth-n": "native", "eth-f": "native"])
            #expect(s.drops.isEmpty, "drops: \(s.drops)")
        }

        @Test func drainedNodeTakesNoNewFlowsWhileItsConnectionsFinish() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let held = try bed.hold("198.18.1.20", port: 80, count: 30)
            #expect(held.first.ok == 30)
            let onN1 = held.first.perNode["n1"] ?? 0
            #expect(onN1 > 0)
            // Weight 0 for n1 in web-nat (the first node with port 8080 and weight 3).
            let config = try bed.readConfig()
            let drained = config.replacingOccurrences(of: "      - address: \"198.18.2.11\"\n        port: 8080\n        weight: 3",
                                                      with: "      - address: \"198.18.2.11\"\n        port: 8080\n        weight: 0")
            #expect(drained != config)
            try bed.writeConfig(drained)
            bed.signalDaemon(SIGHUP)
            try bed.waitFor("reload", timeout: 10) { $0.version == 2 }
            let r = try bed.client("198.18.1.20", port: 80, count: 120)
            #expect(r.ok == 120 && r.perNode["n1"] == nil, "n1 got \(r.perNode["n1"] ?? 0) new flows")
            let second = try held.finish()
            #expect(second.ok == 30 && second.failed == 0, "\(second.errors)")
            #expect(second.perNode["n1"] == onN1)
        }

        @Test func reloadWithChangedGroupsKeepsOpenConnections() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let mat = try bed.hold("198.18.1.10", port: 80, count: 24)
            let nat = try bed.hold("198.18.1.20", port: 80, count: 24)
            #expect(mat.first.ok == 24 && nat.first.ok == 24)
            // Change the groups: equal weights, a new port on web-mat, and a group removed.
            var config = try bed.readConfig()
            config = config.replacingOccurrences(of: "weight: 3", with: "weight: 1")
                .replacingOccurrences(of: "weight: 2", with: "weight: 1")
                .replacingOccurrences(of: "ports: [80, 443]", with: "ports: [80, 443, 8443]")
            let dnsStart = try #require(config.range(of: "  - name: dns-mat"))
            let dnsEnd = try #require(config.range(of: "  - name: web-nat"))
            config.removeSubrange(dnsStart.lowerBound..<dnsEnd.lowerBound)
            try bed.writeConfig(config)
            bed.signalDaemon(SIGHUP)
            try bed.waitFor("reload", timeout: 10) { $0.version == 2 && $0.group("dns-mat") == nil }
            let matAfter = try mat.finish()
            let natAfter = try nat.finish()
            #expect(matAfter.ok == 24 && matAfter.perNode == mat.first.perNode, "\(matAfter.errors)")
            #expect(natAfter.ok == 24 && natAfter.perNode == nat.first.perNode, "\(natAfter.errors)")
            // The new configuration is what new flows see.
            let even = try bed.client("198.18.1.20", port: 80, count: 300)
            #expect(even.ok == 300)
            for n in ["n1", "n2", "n3"] {
                #expect(abs(Double(even.perNode[n] ?? 0) - 100) <= 10, "\(n): \(even.perNode[n] ?? 0) of 300 at equal weights")
            }
            // The added port is steered (no server listens on it, so the attempt times out).
            let before = try #require(try bed.status().group("web-mat")).newFlows
            #expect(try bed.client("198.18.1.10", port: 8443, count: 1).ok == 0)
            try bed.waitFor("8443 steered to web-mat", timeout: 5) { ($0.group("web-mat")?.newFlows ?? 0) > before }
        }

        @Test func badConfigOnReloadKeepsTheRunningOne() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let good = try bed.readConfig()
            try bed.writeConfig(good.replacingOccurrences(of: "scheduler: wrr", with: "scheduler: fastest"))
            bed.signalDaemon(SIGHUP)
            try bed.waitFor("the rejection in the log", timeout: 10) { _ in bed.daemonLog.contains("reload rejected") }
            #expect(bed.daemonLog.contains("lb.yaml:"), "the error names the file and line")
            #expect(bed.daemonLog.contains("scheduler: must be one of"))
            #expect(bed.daemonLog.contains("\"fastest\""))
            #expect(try bed.status().version == 1)
            let r = try bed.client("198.18.1.10", port: 80, count: 60)
            #expect(r.ok == 60)
            #expect(r.perNode == ["m1": 30, "m2": 20, "m3": 10], "still weighted 3:2:1 by the old config")
        }

        /// A host wired to the LB by a plain veth, with no bridge and no XDP program on its
        /// end, where a frame sent with XDP_TX would be dropped: it resolves the VIPs (the
        /// worker answers ARP and NS through its TX ring) and is served, NAT and MAT.
        @Test func aClientOnAPlainVethResolvesTheVIPsAndIsServed() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            #expect(try !bed.exec("flood", ["ip", "link", "show", "dev", "eth0"]).1.contains("xdp"))
            for vip in ["198.18.1.20", "2001:2:1::20"] {
                let r = try bed.client(vip, port: 80, count: 60, from: "flood")
                #expect(r.ok == 60 && r.failed == 0, "NAT \(vip): \(r.errors)")
            }
            // MAT: the node answers the host straight, routed by the LB's kernel.
            try bed.exec("lb", ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
            for vip in ["198.18.1.10", "2001:2:1::10"] {
                let r = try bed.client(vip, port: 80, count: 60, from: "flood")
                #expect(r.ok == 60 && r.failed == 0, "MAT \(vip): \(r.errors)")
            }
            let neighbors = try bed.exec("flood", ["ip", "neigh", "show"]).1
            let lbMAC = try bed.lbMAC("eth-f")
            #expect(neighbors.contains("198.18.1.20 dev eth0 lladdr \(lbMAC)"), "\(neighbors)")
            #expect(neighbors.contains("2001:2:1::20 dev eth0 lladdr \(lbMAC)"), "\(neighbors)")
            try bed.waitFor("the workers' answers counted", timeout: 5) { s in
                s.counters["arp_replies", default: 0] >= 2 && s.counters["neighbor_advertisements", default: 0] >= 2
                    && s.xdp["neighbor_requests_to_worker", default: 0] >= 4
            }
        }

        /// The daemon's events go to the file the configuration names, survive a restart,
        /// and show in status and in `fulcrum events`.
        @Test func theEventLogRecordsStartReloadsAndStopAcrossARestart() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            let file = bed.directory + "/events/events.jsonl"
            let good = try bed.readConfig() + "events:\n  file: \(file)\n"
            try bed.writeConfig(good)
            try bed.startDaemon()
            try bed.writeConfig(good.replacingOccurrences(of: "scheduler: wrr", with: "scheduler: fastest"))
            bed.signalDaemon(SIGHUP)
            try bed.waitFor("the rejection", timeout: 10) { $0.reloadsRejected == 1 }
            try bed.writeConfig(good.replacingOccurrences(of: "weight: 3", with: "weight: 4"))
            bed.signalDaemon(SIGHUP)
            try bed.waitFor("the reload", timeout: 10) { $0.version == 2 }
            #expect(bed.stopDaemon() == 0)
            let (_, text) = try Testbed.run(bed.fulcrum, ["events", "--file", file])
            let kinds = text.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true)[2] }
            #expect(kinds.first == "daemon.started" && kinds.last == "daemon.stopping", "\(text)")
            #expect(kinds.contains("node.mac.learned") && kinds.firstIndex(of: "config.rejected")! < kinds.firstIndex(of: "config.applied")!,
                    "\(text)")
            #expect(text.contains("scheduler: must be one of"), "the rejection says why: \(text)")
            let (_, warnings) = try Testbed.run(bed.fulcrum, ["events", "--file", file, "--severity", "warning", "--json"])
            #expect(warnings.split(separator: "\n").count == 1 && warnings.contains("\"kind\":\"config.rejected\""), "\(warnings)")
            // After a restart, the sequence goes on and the old events are still there.
            let before = text.split(separator: "\n").count
            try bed.startDaemon()
            try bed.waitFor("events in status", timeout: 5) { _ in
                (try? String(contentsOfFile: bed.statusPath, encoding: .utf8))?.contains("config.rejected") == true
            }
            let (_, table) = try bed.exec("lb", [bed.fulcrum, "status", "--status-file", bed.statusPath])
            #expect(table.contains("latest events:") && table.contains("daemon.started"), "\(table)")
            let all = EventLogReader.sequences(file)
            #expect(all.count > before && all == Array(1...UInt64(all.count)), "\(all)")
        }

        @Test func stopAndCrashBothLeaveNoProgramAttached() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            func attached() throws -> Bool {
                let (_, out) = try bed.exec("lb", ["ip", "link", "show", "dev", "eth-c"])
                return out.contains("prog/xdp")
            }
            try bed.startDaemon()
            #expect(try attached())
            #expect(bed.stopDaemon() == 0, "SIGTERM is a clean exit")
            #expect(try !attached())
            #expect(bed.daemonLog.contains("data plane stopped"))

            try bed.startDaemon()
            #expect(try attached())
            bed.killDaemon()  // SIGKILL: no cleanup code runs; the bpf_link dies with the fd
            #expect(try !attached())
            // With the program gone, the kernel answers for its own address again.
            let (ping, out) = try bed.exec("client", ["ping", "-c", "1", "-W", "2", "198.18.0.1"])
            #expect(ping == 0, "\(out)")
        }
    }
}

@Suite struct PrivilegeGate {
    @Test func privilegedTestsRunWhenRequired() {
        if Privileged.required {
            #expect(Privileged.available, "FULCRUM_REQUIRE_PRIVILEGED=1 but: \(Privileged.reason ?? "")")
        }
    }
}

/// Reads sequence numbers from an event log file without the FulcrumControl module (the
/// data-plane tests see the daemon from outside, as an operator would).
enum EventLogReader {
    static func sequences(_ file: String) -> [UInt64] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let range = line.range(of: "\"sequence\":") else { return nil }
            return UInt64(line[range.upperBound...].prefix { $0.isNumber })
        }
    }
}
