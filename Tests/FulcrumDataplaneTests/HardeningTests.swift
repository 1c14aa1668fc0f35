import Foundation
import FulcrumCore
import FulcrumTestSupport
import Testing

extension OnTheTestbed {
    /// What a hostile tester found, each on the namespace testbed with a running daemon:
    /// double starts, configurations `check` let through and `run` choked on, bad reloads
    /// under traffic, forged NAT replies, frames for other MACs and VLANs, the egress MTU,
    /// fragments. (The flood and overload cases are in FloodTests.)
    @Suite struct HardeningTests {
        @Test func aSecondDaemonOnTheSameInterfacesIsRefusedAndTheFirstKeepsServing() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let first = try #require(bed.daemonPID)
            // A state file of its own: the interfaces are what it is refused for.
            let own = bed.directory + "/second.yaml"
            try bed.readConfig().replacingOccurrences(of: "state_file: \(bed.directory)/state.json", with: "state_file: \(bed.directory)/second.json")
                .write(toFile: own, atomically: true, encoding: .utf8)
            let (status, out) = try bed.runToCompletion(configPath: own)
            #expect(status == 1, "exit \(status): \(out)")
            #expect(out.contains("is already served by another fulcrum (pid \(first))"), "\(out)")
            #expect(!out.contains("double free") && !out.contains("Fatal error"), "\(out)")
            #expect(try bed.client("198.18.1.10", port: 80, count: 30).ok == 30, "the first daemon still serves MAT")
            #expect(try bed.client("198.18.1.20", port: 80, count: 30).ok == 30, "and NAT")
            #expect(try bed.xdpAttached("eth-c"))
        }

        @Test func twoDaemonsStartedAtOnceEndWithExactlyOneServing() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            let a = try bed.startAnotherDaemon(configPath: bed.configPath, log: bed.directory + "/a.log",
                                               status: bed.directory + "/a.json")
            let b = try bed.startAnotherDaemon(configPath: bed.configPath, log: bed.directory + "/b.log",
                                               status: bed.directory + "/b.json")
            defer {
                for d in [a, b] where d.isRunning {
                    d.signal(SIGTERM)
                    d.wait()
                }
            }
            let deadline = Date().addingTimeInterval(20)
            while a.isRunning && b.isRunning && Date() < deadline { usleep(50_000) }
            let (loser, winner, loserLog, winnerStatus) = a.isRunning ? (b, a, "/b.log", "/a.json") : (a, b, "/a.log", "/b.json")
            #expect(!loser.isRunning && winner.isRunning, "one of the two must have stopped")
            #expect(loser.wait() == 1)
            let log = (try? String(contentsOfFile: bed.directory + loserLog, encoding: .utf8)) ?? ""
            #expect(log.contains("in use by another fulcrum (pid \(winner.pid))") || log.contains("is already served by another fulcrum (pid \(winner.pid))"),
                    "\(log)")
            try bed.waitFor("the winner's node MACs", timeout: 20, statusPath: bed.directory + winnerStatus) { s in
                s.groups.allSatisfy { $0.nodes.allSatisfy { $0.mac != nil } }
            }
            #expect(try bed.client("198.18.1.10", port: 80, count: 30).ok == 30)
        }

        /// (what is changed in the testbed's lb.yaml, into what, the field the error names)
        static let refusals: [(String, String, String)] = [
            ("  flow_table_size: 65536", "  flow_table_size: 65536\n  cores: []", "dataplane.cores"),
            ("  flow_table_size: 65536", "  flow_table_size: 65536\n  cores: [4000]", "dataplane.cores[0]"),
            ("    - name: eth-c\n      queues: 1\n    - name: eth-n\n      queues: 1\n    - name: eth-f\n      queues: 1",
             "    - name: eth-c\n      queues: 2\n    - name: eth-n\n      queues: 2\n    - name: eth-f\n      queues: 2",
             "dataplane.interfaces[0].queues"),
            ("    - name: eth-f\n      queues: 1", "    - name: eth-f\n      queues: 1\n    - name: eth-x\n      queues: 1",
             "dataplane.interfaces[3].name"),
            ("    ports: [80, 443]", "    ports: [\((1...4200).map(String.init).joined(separator: ", "))]", "groups"),
            ("    vip: \"198.18.1.10\"", "    vip: \"0.0.0.0\"", "groups[0].vip"),
            ("      - address: \"198.18.0.11\"", "      - address: \"198.18.1.10\"", "groups[0].nodes[0].address"),
            ("  flow_table_size: 65536", "  flow_table_size: 65536\n  admission:\n    burst: 5000", "dataplane.admission.burst"),
        ]

        /// `fulcrum check` refuses exactly what `fulcrum run` would: each bad file is refused
        /// by both, naming the same field, and run leaves nothing attached.
        @Test func checkAndRunRefuseTheSameConfigurations() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            let good = try bed.readConfig()
            let bad = bed.directory + "/bad.yaml"
            for (old, new, field) in Self.refusals {
                let range = try #require(good.range(of: old), "fixture drifted: \(old)")
                try good.replacingCharacters(in: range, with: new).write(toFile: bad, atomically: true, encoding: .utf8)
                let (checkStatus, checkOut) = try bed.check(configPath: bad)
                #expect(checkStatus == 2 && checkOut.contains("\(field):") && checkOut.contains("bad.yaml"),
                        "check, \(field): exit \(checkStatus): \(checkOut.prefix(600))")
                let (runStatus, runOut) = try bed.runToCompletion(configPath: bad)
                #expect(runStatus == 2 && runOut.contains("\(field):"), "run, \(field): exit \(runStatus): \(runOut.prefix(600))")
                #expect(checkOut.utf8.count < 4000 && runOut.utf8.count < 4000, "an error never echoes the file")
                #expect(try !bed.xdpAttached("eth-c"), "\(field): nothing attached")
            }
            let (status, out) = try bed.check(configPath: bed.configPath)
            #expect(status == 0, "the testbed's own file passes: \(out)")
        }

        /// Each bad reload under held MAT and NAT connections is refused whole: the daemon
        /// keeps serving, its generation, groups and BPF maps stay exactly as they were, and
        /// the next good reload (which also reorders the interfaces) applies.
        @Test func badReloadsUnderTrafficChangeNothing() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let mat = try bed.hold("198.18.1.10", port: 80, count: 20)
            let nat = try bed.hold("198.18.1.20", port: 80, count: 20)
            #expect(mat.first.ok == 20 && nat.first.ok == 20)
            try bed.waitFor("the map sizes", timeout: 5) { !$0.mapEntries.isEmpty }
            let before = try bed.status()
            let good = try bed.readConfig()
            let ports = (1...4200).map(String.init).joined(separator: ", ")
            let bad: [(String, String, String)] = [
                ("4,200 ports overflow the services map", "    ports: [80, 443]", "    ports: [\(ports)]"),
                ("a new interface used by a route", "    - name: eth-f\n      queues: 1\n",
                 "    - name: eth-f\n      queues: 1\n    - name: eth-x\n      queues: 1\n"),
                ("an unknown scheduler", "    scheduler: wrr", "    scheduler: fastest"),
                ("web-nat moved onto web-mat's VIP and port", "    vip: \"198.18.1.20\"\n    protocol: tcp",
                 "    vip: \"198.18.1.10\"\n    protocol: tcp"),
            ]
            for (i, (what, old, new)) in bad.enumerated() {
                var text = good.replacingOccurrences(of: old, with: new)
                if what.contains("route") {
                    #expect(!text.contains("routes:"), "the testbed's config has no routes: of its own")
                    text = text.replacingOccurrences(
                        of: "\ngroups:\n",
                        with: "\nroutes:\n  - prefix: 198.18.9.0/24\n    interface: eth-x\n    via: 198.18.9.1\ngroups:\n")
                    #expect(text.contains("interface: eth-x"), "fixture drifted: the route")
                }
                #expect(text != good, "fixture drifted: \(what)")
                try bed.writeConfig(text)
                bed.signalDaemon(SIGHUP)
                try bed.waitFor("\(what) rejected", timeout: 10) { $0.reloadsRejected == i + 1 }
                let s = try bed.status()
                #expect(s.version == 1 && s.layoutGeneration == before.layoutGeneration, "\(what)")
                #expect(s.groups.map(\.name) == before.groups.map(\.name), "\(what): status lists the running groups")
                #expect(s.mapEntries == before.mapEntries, "\(what): maps \(s.mapEntries), were \(before.mapEntries)")
                #expect(try bed.client("198.18.1.20", port: 80, count: 10).ok == 10, "\(what): still serving")
            }
            #expect(bed.daemonLog.contains("is not an interface of the running data plane"))
            // A good reload: the interfaces listed in another order and n1 drained.
            let reordered = good.replacingOccurrences(
                of: "    - name: eth-c\n      queues: 1\n    - name: eth-n\n      queues: 1\n",
                with: "    - name: eth-n\n      queues: 1\n    - name: eth-c\n      queues: 1\n")
                .replacingOccurrences(of: "      - address: \"198.18.2.11\"\n        port: 8080\n        weight: 3",
                                      with: "      - address: \"198.18.2.11\"\n        port: 8080\n        weight: 0")
            #expect(reordered != good)
            try bed.writeConfig(reordered)
            bed.signalDaemon(SIGHUP)
            try bed.waitFor("the good reload", timeout: 10) { $0.version == 2 }
            let matAfter = try mat.finish()
            let natAfter = try nat.finish()
            #expect(matAfter.ok == 20 && matAfter.perNode == mat.first.perNode, "\(matAfter.errors)")
            #expect(natAfter.ok == 20 && natAfter.perNode == nat.first.perNode, "\(natAfter.errors)")
            let fresh = try bed.client("198.18.1.20", port: 80, count: 60)
            #expect(fresh.ok == 60 && fresh.perNode["n1"] == nil, "n1 drained: \(fresh.perNode)")
            #expect(try bed.client("198.18.1.10", port: 80, count: 30).ok == 30)
        }

        func frame(_ bed: Testbed, _ build: (MACAddress, MACAddress) -> [UInt8]) throws -> [UInt8] {
            let lb = try #require(MACAddress(try bed.lbMAC("eth-c")))
            let client = try #require(MACAddress(try bed.exec("client", ["cat", "/sys/class/net/eth0/address"]).1
                .trimmingCharacters(in: .whitespacesAndNewlines)))
            return build(lb, client)
        }

        @Test func natRepliesForgedFromTheClientSideAreDropped() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            // A frame from the client's segment claiming to be n1's reply (web-nat: 8080).
            let forged = try frame(bed) { lb, client in
                PacketBuilder.tcpFrame(source: IPAddress("198.18.2.11")!, destination: IPAddress("198.18.0.2")!,
                                       sourcePort: 8080, destinationPort: 40000, flags: TCPFlags.ack, payload: Array("x".utf8),
                                       ethernetDestination: lb, ethernetSource: client)
            }
            try bed.sendFrame(forged, count: 5)
            try bed.waitFor("the forged replies counted", timeout: 5) { $0.drops["nat_reply_from_wrong_side"] == 5 }
            #expect(try bed.status().counters["nat_replies", default: 0] == 0, "none was translated")
            // Real replies, from the node side, still are.
            #expect(try bed.client("198.18.1.20", port: 80, count: 30).ok == 30)
            try bed.waitFor("real replies translated", timeout: 5) { $0.counters["nat_replies", default: 0] > 0 }
        }

        @Test func framesForOtherMACsAndVLANTaggedFramesAreNotForwarded() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let before = try bed.status()
            let otherHost = try frame(bed) { _, client in
                PacketBuilder.tcpFrame(source: IPAddress("198.18.0.2")!, destination: IPAddress("198.18.1.10")!, sourcePort: 40000,
                                       destinationPort: 80, flags: TCPFlags.syn, ethernetDestination: MACAddress("02:00:00:00:00:99")!,
                                       ethernetSource: client)
            }
            let broadcast = try frame(bed) { _, client in
                PacketBuilder.udpFrame(source: IPAddress("198.18.0.2")!, destination: IPAddress("198.18.1.10")!, sourcePort: 40000,
                                       destinationPort: 53, ethernetDestination: .broadcast, ethernetSource: client)
            }
            let tagged = try frame(bed) { lb, client in
                PacketBuilder.tcpFrame(source: IPAddress("198.18.0.2")!, destination: IPAddress("198.18.1.10")!, sourcePort: 40001,
                                       destinationPort: 80, flags: TCPFlags.syn, vlan: 7, ethernetDestination: lb, ethernetSource: client)
            }
            try bed.sendFrame(otherHost, count: 4)
            try bed.sendFrame(broadcast, count: 3)
            try bed.sendFrame(tagged, count: 5)
            try bed.waitFor("the frames counted", timeout: 5) { s in
                s.xdp["vlan_tagged_passed"] == 5
                    && s.xdp["other_destination_mac", default: 0] >= before.xdp["other_destination_mac", default: 0] + 7
            }
            let after = try bed.status()
            #expect(after.counters["received"] == before.counters["received"], "no worker saw any of them")
            #expect(after.group("web-mat")?.newFlows == before.group("web-mat")?.newFlows)
        }

        @Test func aDatagramOverTheEgressMTUIsDroppedAndCounted() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            // The node side's MTU is smaller than the client side's.
            try bed.exec("lb", ["ip", "link", "set", "dev", "eth-n", "mtu", "1400"])
            try bed.startDaemon()
            // 1,450 bytes of UDP payload: a 1,478-byte IP packet, fine on the client's segment.
            let big = try bed.client("198.18.1.20", port: 53, proto: "udp", count: 1, size: 1450)
            #expect(big.ok == 0)
            try bed.waitFor("the drop counted", timeout: 5) { $0.drops["exceeds_egress_mtu"] == 1 }
            #expect(try bed.client("198.18.1.20", port: 53, proto: "udp", count: 20, size: 1300).ok == 20)
        }

        /// A 3,000-byte UDP datagram is fragmented by the client and the reply by the node:
        /// through MAT (the reply goes straight back) and NAT (the reply's fragments come back
        /// through the LB), IPv4 and IPv6, every one answered byte-exact.
        @Test func fragmentedDatagramsAreAnsweredThroughMATAndNAT() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            for vip in ["198.18.1.10", "198.18.1.20", "2001:2:1::10", "2001:2:1::20"] {
                let r = try bed.client(vip, port: 53, proto: "udp", count: 30, size: 3000)
                #expect(r.ok == 30 && r.failed == 0, "\(vip): \(r.errors)")
            }
            try bed.waitFor("fragments counted", timeout: 5) { s in
                s.counters["fragments", default: 0] >= 4 * 30 * 3 && s.xdp["fragments_to_worker", default: 0] > 0
            }
            let s = try bed.status()
            #expect(s.drops["fragment_before_first"] == nil && s.drops["not_for_service"] == nil, "\(s.drops)")
        }
    }
}
