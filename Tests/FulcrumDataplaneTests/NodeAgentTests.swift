import Crypto
import FulcrumAPIModels
import FulcrumCore
import FulcrumTestSupport
import Foundation
import Testing

extension OnTheTestbed {
    /// The node agents on the testbed: real `fulcrum-agent`s on the NAT nodes reporting
    /// the CPU time of their own cgroup, a real busy loop in one of them, and the LB's
    /// weights following; then bad agent traffic of every kind.
    @Suite struct NodeAgentTests {
        static let cgroupRoot = "/sys/fs/cgroup/cpuacct"
        static let key = "agent-key-for-the-testbed-0123456789"

        /// web-nat with dynamic weights, and the LB listening for agents (silence: 3
        /// intervals of 0.2 s).
        /// `key`: the key file's bytes (the testbed's text key unless given).
        func prepare(_ bed: Testbed, key: [UInt8] = Array(NodeAgentTests.key.utf8)) throws {
            try Data(key).write(to: URL(fileURLWithPath: bed.directory + "/agent.key"))
            var config = try bed.readConfig()
            let group = "  - name: web-nat\n"
            let start = try #require(config.range(of: group))
            let scheduler = try #require(config.range(of: "    scheduler: wrr\n", range: start.upperBound..<config.endIndex))
            config.insert(contentsOf: "    dynamic_weights: cpu\n", at: scheduler.upperBound)
            config += "agent:\n  key_file: \(bed.directory)/agent.key\n  silence: 3\n"
            try bed.writeConfig(config)
        }

        /// The cpuacct hierarchy, bind-mounted outside /sys: `ip netns exec` mounts a sysfs
        /// of the namespace's own, without /sys/fs/cgroup, but leaves the rest of the file
        /// system as it is. (Not in the testbed's directory, which teardown removes whole.)
        func mountPoint(_ bed: Testbed) -> String { "/tmp/\(bed.prefix)-cpuacct" }

        func cgroup(_ bed: Testbed, _ node: String) -> String { "\(mountPoint(bed))/\(bed.prefix)-\(node)" }

        func makeCgroups(_ bed: Testbed) throws -> [String] {
            guard FileManager.default.fileExists(atPath: Self.cgroupRoot) else {
                throw Testbed.Failure(description: "no cgroup v1 cpuacct hierarchy at \(Self.cgroupRoot)")
            }
            try FileManager.default.createDirectory(atPath: mountPoint(bed), withIntermediateDirectories: true)
            let (status, out) = try ChildProcess.run(["/bin/mount", "--bind", Self.cgroupRoot, mountPoint(bed)])
            guard status == 0 else { throw Testbed.Failure(description: "mount --bind \(Self.cgroupRoot): \(out)") }
            return try ["n1", "n2", "n3"].map { n in
                let path = cgroup(bed, n)
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
                return path
            }
        }

        func removeCgroups(_ bed: Testbed, _ paths: [String]) {
            for p in paths {
                if let tasks = try? String(contentsOfFile: p + "/tasks", encoding: .utf8) {
                    for t in tasks.split(separator: "\n") { if let pid = Int32(t) { kill(pid, SIGKILL) } }
                }
            }
            usleep(200_000)
            for p in paths { rmdir(p) }
            if (try? ChildProcess.run(["/bin/umount", mountPoint(bed)]))?.0 == 0 { rmdir(mountPoint(bed)) }
        }

        func agent(_ bed: Testbed, _ node: String) throws -> ChildProcess {
            try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(bed.prefix)-\(node)", bed.root + "/.build/debug/fulcrum-agent",
                              "--lb", "198.18.2.1", "--interface", "eth0", "--key-file", bed.directory + "/agent.key",
                              "--interval", "0.2", "--cgroup", cgroup(bed, node)],
                             outputPath: bed.directory + "/agent-\(node).log")
        }

        func node(_ bed: Testbed, _ address: String) throws -> NodeStatusModel? {
            try bed.api("GET", "/v1/status").decode(StatusModel.self).groups.first { $0.name == "web-nat" }?
                .nodes.first { $0.address == address }
        }

        func waitFor(_ what: String, timeout: Double, _ condition: () throws -> Bool) throws {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if try condition() { return }
                usleep(100_000)
            }
            throw Testbed.Failure(description: "timed out waiting for \(what)")
        }

        @Test func aLoadedNodeGetsFewerNewFlowsUntilItsAgentFallsSilent() throws {
            let bed = try Testbed()
            var cgroups: [String] = []
            defer {
                removeCgroups(bed, cgroups)
                bed.tearDown()
            }
            try prepare(bed)
            try bed.startDaemon()
            cgroups = try makeCgroups(bed)
            let agents = try ["n1", "n2", "n3"].map { try agent(bed, $0) }
            defer { for a in agents where a.isRunning { a.signal(SIGTERM); a.wait() } }
            try waitFor("all three agents reporting", timeout: 10) {
                try ["198.18.2.11", "198.18.2.12", "198.18.2.13"].allSatisfy { try node(bed, $0)?.load != nil }
            }
            let idle = try bed.client("198.18.1.20", port: 80, count: 300)
            #expect(idle.ok == 300)
            print("idle: \(idle.perNode)")

            // A bounded busy loop in n1's cgroup: n1's agent sees its CPU busy.
            let busy = try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(bed.prefix)-n1", "/bin/sh", "-c",
                                         "echo $$ > \(cgroup(bed, "n1"))/tasks && exec timeout 30 sh -c 'while :; do :; done'"])
            defer { busy.signal(SIGKILL); busy.wait() }
            // Below 90 of 300 (beside 200 and 100): about 69 of 300 flows, where it had 150.
            // Not "below 100": 300 flows are whole round-robin slots, and at 99 (a load of
            // 0.67 on its way up) n1 still gets 75, exactly half. The busy loop drives the
            // load towards 1, so the weight keeps falling past 90.
            try waitFor("n1's weight to fall", timeout: 10) { (try node(bed, "198.18.2.11")?.effectiveWeight ?? 300) < 90 }
            let n1 = try #require(try node(bed, "198.18.2.11"))
            let loaded = try bed.client("198.18.1.20", port: 80, count: 300)
            print("n1 under load: load \(n1.load ?? -1), weight \(n1.effectiveWeight ?? -1); split \(loaded.perNode)")
            #expect(loaded.ok == 300)
            #expect((loaded.perNode["n1"] ?? 0) * 2 < (idle.perNode["n1"] ?? 0), "n1's share fell: \(idle.perNode) → \(loaded.perNode)")
            let metrics = try bed.api("GET", "/metrics").body
            #expect(metrics.contains("fulcrum_node_agent_load{group=\"web-nat\",node=\"198.18.2.11:8080\"}"))

            // Its agent stops: after 3 silent intervals its static weight applies again.
            agents[0].signal(SIGTERM)
            agents[0].wait()
            let stopped = Date()
            try waitFor("n1's static weight", timeout: 5) { try node(bed, "198.18.2.11")?.effectiveWeight == 300 }
            print("static weight back \(Int(Date().timeIntervalSince(stopped) * 1000)) ms after its agent stopped (silence 3 × 0.2 s)")
            let back = try bed.client("198.18.1.20", port: 80, count: 300)
            #expect(back.ok == 300 && abs((back.perNode["n1"] ?? 0) - 150) <= 15, "n1 at weight 3 of 6 again: \(back.perNode)")
            let (_, events) = try bed.ctl(["events"])
            #expect(events.contains("node.agent.silent") && events.contains("node 198.18.2.11: no report for 3 intervals"))
        }

        /// A report for `address`, signed with `key`.
        func report(_ address: String, epoch: UInt64, sequence: UInt64, load: UInt16 = 100, key: String = NodeAgentTests.key) -> String {
            let r = AgentReport(intervalMilliseconds: 200, epoch: epoch, sequence: sequence, load: load, address: IPAddress(address)!)
            var bytes = r.encodeSigned()
            bytes += HMAC<SHA256>.authenticationCode(for: bytes, using: SymmetricKey(data: Array(key.utf8)))
            return bytes.map { String(format: "%02x", $0) }.joined()
        }

        func send(_ bed: Testbed, from host: String, hex: [String] = [], random: Int? = nil, count: Int = 1) throws {
            var argv = [bed.testpeer, "datagrams", "--target", host == "client" ? "198.18.0.1" : "198.18.2.1", "--port", "65002",
                        "--count", "\(count)"]
            for h in hex { argv += ["--hex", h] }
            if let random { argv += ["--random-bytes", "\(random)"] }
            let (status, out) = try bed.exec(host, argv)
            #expect(status == 0, "\(out)")
        }

        func outcomes(_ bed: Testbed) throws -> [String: Double] {
            var out: [String: Double] = [:]
            for line in try bed.api("GET", "/metrics").body.split(separator: "\n") where line.hasPrefix("fulcrum_agent_reports_total{") {
                guard let open = line.range(of: "outcome=\""), let close = line[open.upperBound...].firstIndex(of: "\"") else { continue }
                out[String(line[open.upperBound..<close])] = Double(line.split(separator: " ").last ?? "")
            }
            return out
        }

        @Test func badAgentTrafficIsCountedByReasonAndChangesNothing() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try prepare(bed)
            try bed.startDaemon()
            let valid = report("198.18.2.13", epoch: 1000, sequence: 5)
            try send(bed, from: "n3", hex: [valid])                                         // accepted
            try send(bed, from: "n3", hex: [valid])                                         // replayed
            try send(bed, from: "n3", hex: [report("198.18.2.13", epoch: 999, sequence: 9)])   // old epoch
            try send(bed, from: "n3", hex: [report("198.18.2.13", epoch: 1000, sequence: 6, key: "another-key-0123456789")]) // bad MAC
            try send(bed, from: "n3", hex: [String(valid.dropLast(2))])                     // truncated
            try send(bed, from: "n3", hex: [valid + "00"])                                  // oversize
            try send(bed, from: "client", hex: [report("198.18.2.13", epoch: 1001, sequence: 1)])  // not from the node
            try send(bed, from: "client", hex: [report("198.18.0.2", epoch: 1, sequence: 1)])      // not a node
            try bed.waitFor("the LB to read them", timeout: 5) { _ in
                (try? self.outcomes(bed))?["unknown_node"] == 1
            }
            let counted = try outcomes(bed)
            for (outcome, n) in [("accepted", 1.0), ("replayed", 1), ("old_epoch", 1), ("bad_mac", 1), ("truncated", 1),
                                 ("oversize", 1), ("source_mismatch", 1), ("unknown_node", 1)] {
                #expect(counted[outcome] == n, "\(outcome): \(counted)")
            }
            let (_, events) = try bed.ctl(["events"])
            #expect(events.contains("node 198.18.2.13: its agent reports (load 10.0%)"), "the one good report counted: \(events.suffix(600))")

            // A flood of 100,000 random datagrams while a client connects: counted, ignored.
            let rssBefore = try #require(bed.daemonRSS())
            let flood = try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(bed.prefix)-client", bed.testpeer, "datagrams",
                                          "--target", "198.18.0.1", "--port", "65002", "--count", "100000", "--random-bytes", "80"],
                                         capture: true)
            let during = try bed.client("198.18.1.20", port: 80, count: 200)
            let floodOut = flood.readAll()
            #expect(flood.wait() == 0, "\(floodOut)")
            #expect(during.ok == 200, "forwarding goes on: \(during.errors)")
            // Every datagram is read and counted, or dropped by the kernel at a full socket
            // queue and counted as that.
            try bed.waitFor("the flood counted", timeout: 10) { _ in
                let c = (try? self.outcomes(bed)) ?? [:]
                return (c["garbage"] ?? 0) + (c["bad_mac"] ?? 0) + (c["queue_full"] ?? 0) >= 99_000
            }
            let after = try outcomes(bed)
            let rssAfter = try #require(bed.daemonRSS())
            print("agent flood: \(floodOut.trimmingCharacters(in: .whitespacesAndNewlines)); counted \(after); RSS \(rssBefore) → \(rssAfter) KiB")
            #expect(after["accepted"] == 1, "no random datagram passed")
            #expect(rssAfter - rssBefore < 4096, "RSS grew from \(rssBefore) to \(rssAfter) KiB")
        }

        /// `fulcrum-agent --configure-mat` on a MAT node stripped of the testbed's own
        /// set-up: MAT traffic works through it over IPv4 and IPv6, and after it exits the
        /// node's nftables rule set and addresses are exactly what they were.
        @Test func configureMatServesTheVIPsAndLeavesNoTrace() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            try bed.exec("m3", ["nft", "delete", "table", "ip", "fulcrum_mat"])
            try bed.exec("m3", ["ip", "-6", "addr", "del", "2001:2:1::10/128", "dev", "lo"])
            func snapshot() throws -> String {
                try bed.exec("m3", ["nft", "list", "ruleset"]).1 + "\n---\n" + bed.exec("m3", ["ip", "addr"]).1
            }
            let before = try snapshot()
            let without = try bed.client("198.18.1.10", port: 80, count: 6)
            #expect(without.ok == 5 && without.perNode["m3"] == nil, "m3 does not accept the VIP yet: \(without.perNode)")

            for round in 1...2 {
                let agent = try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(bed.prefix)-m3", bed.root + "/.build/debug/fulcrum-agent",
                                              "--lb", "198.18.0.1", "--interface", "eth0", "--key-file", bed.directory + "/api.token",
                                              "--configure-mat", "--vip", "198.18.1.10", "--vip", "2001:2:1::10"],
                                             outputPath: bed.directory + "/mat-agent.log")
                try bed.waitFor("the agent's MAT set-up", timeout: 5) { _ in
                    let log = (try? String(contentsOfFile: bed.directory + "/mat-agent.log", encoding: .utf8)) ?? ""
                    return log.contains("MAT: IPv6 VIP on lo")
                }
                let v4 = try bed.client("198.18.1.10", port: 80, count: 60)
                let v6 = try bed.client("2001:2:1::10", port: 80, count: 60)
                #expect(v4.ok == 60 && v4.perNode["m3"] == 10, "round \(round), IPv4 through m3: \(v4.perNode) \(v4.errors)")
                #expect(v6.ok == 60 && v6.perNode["m3"] == 10, "round \(round), IPv6 through m3: \(v6.perNode) \(v6.errors)")
                agent.signal(SIGTERM)
                #expect(agent.wait() == 0)
                #expect(try snapshot() == before, "round \(round): the node's rule set and addresses are as they were")
            }
            let log = try String(contentsOfFile: bed.directory + "/mat-agent.log", encoding: .utf8)
            #expect(log.contains("MAT: removed what was installed"))
        }

        /// An agent that announces itself on the back segment joins a group that accepts
        /// discovered nodes, with no configuration edit, and leaves when it falls silent.
        @Test func anAnnouncedNodeJoinsAndLeaves() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try Self.key.write(toFile: bed.directory + "/agent.key", atomically: true, encoding: .utf8)
            var config = try bed.readConfig()
            let start = try #require(config.range(of: "  - name: web-nat\n"))
            let scheduler = try #require(config.range(of: "    scheduler: wrr\n", range: start.upperBound..<config.endIndex))
            config.insert(contentsOf: "    accept_discovered_nodes: true\n", at: scheduler.upperBound)
            config += "agent:\n  key_file: \(bed.directory)/agent.key\n  discovered_timeout: 2\n"
            try bed.writeConfig(config)
            try bed.startDaemon()
            // s1 (198.18.2.99, serving TCP 8080 as "sorry") announces itself.
            let agent = try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(bed.prefix)-s1", bed.root + "/.build/debug/fulcrum-agent",
                                          "--announce", "--interface", "eth0", "--key-file", bed.directory + "/agent.key",
                                          "--interval", "0.2"], outputPath: bed.directory + "/s1-agent.log")
            defer { if agent.isRunning { agent.signal(SIGKILL); agent.wait() } }
            try waitFor("s1 discovered into web-nat", timeout: 10) { try node(bed, "198.18.2.99") != nil }
            try bed.waitFor("s1's MAC", timeout: 5) { s in s.group("web-nat")!.nodes.allSatisfy { $0.mac != nil } }
            let joined = try bed.client("198.18.1.20", port: 80, count: 140)
            #expect(joined.ok == 140 && (joined.perNode["sorry"] ?? 0) > 0, "the discovered node takes new flows: \(joined.perNode)")
            #expect(!(try bed.readConfig()).contains("198.18.2.99\"\n        port: 8080\n        weight"), "no edit of the file")
            agent.signal(SIGTERM)
            agent.wait()
            try waitFor("s1 removed", timeout: 6) { try node(bed, "198.18.2.99") == nil }
            let left = try bed.client("198.18.1.20", port: 80, count: 60)
            #expect(left.ok == 60 && left.perNode["sorry"] == nil, "\(left.perNode)")
            let (_, events) = try bed.ctl(["events"])
            #expect(events.contains("node.discovered") && events.contains("node.discovered.gone"), "\(events.suffix(800))")
        }
    }
}
