import Foundation
import FulcrumTestSupport
import Testing

extension OnTheTestbed {
    /// Established flows forwarded by the XDP program itself (`dataplane.offload:
    /// established`, the default), with real TCP connections on the testbed: 10 MB each
    /// way, checked byte for byte by both ends (Bench/testbed/bulk-transfer.py), through
    /// MAT and NAT groups of both families on port 9000.
    @Suite struct OffloadLiveTests {
        static let port = 9000
        static let size = 10_000_000
        static let targets = [("bulk-mat", "198.18.1.10"), ("bulk-nat", "198.18.1.20"),
                              ("bulk6-mat", "2001:2:1::10"), ("bulk6-nat", "2001:2:1::20")]

        /// The four groups, in the testbed's own form (weights 3:2:1).
        static func groups() -> String {
            func group(_ name: String, _ vip: String, _ method: String, _ interface: String, _ nodes: [String]) -> String {
                var out = "  - name: \(name)\n    vip: \"\(vip)\"\n    protocol: tcp\n    ports: [\(port)]\n    method: \(method)\n"
                    + "    scheduler: wrr\n    interface: \(interface)\n    nodes:\n"
                for (i, n) in nodes.enumerated() {
                    out += "      - address: \"\(n)\"\n" + (method == "nat" ? "        port: \(port)\n" : "") + "        weight: \(3 - i)\n"
                }
                return out
            }
            return group("bulk-mat", "198.18.1.10", "mat", "eth-c", ["198.18.0.11", "198.18.0.12", "198.18.0.13"])
                + group("bulk-nat", "198.18.1.20", "nat", "eth-n", ["198.18.2.11", "198.18.2.12", "198.18.2.13"])
                + group("bulk6-mat", "2001:2:1::10", "mat", "eth-c", ["2001:2::11", "2001:2::12", "2001:2::13"])
                + group("bulk6-nat", "2001:2:1::20", "nat", "eth-n", ["2001:2:2::11", "2001:2:2::12", "2001:2:2::13"])
        }

        static let nodes = ["m1", "m2", "m3", "n1", "n2", "n3"]

        /// A testbed whose daemon also serves the bulk groups, with a bulk server on every
        /// node and an nftables counter of what each node receives on the port.
        static func bed() throws -> (Testbed, [ChildProcess]) {
            let bed = try Testbed()
            try bed.writeConfig(try bed.readConfig() + groups())
            var servers: [ChildProcess] = []
            for n in nodes {
                if n.hasPrefix("m") {  // MAT nodes take the IPv4 VIP by an nftables redirect, per port
                    _ = try bed.exec(n, ["nft", "add rule ip fulcrum_mat prerouting ip daddr 198.18.1.10 tcp dport \(port) redirect"])
                }
                _ = try bed.exec(n, ["nft", "add table inet bulkcount { chain input { type filter hook input priority 0; tcp dport \(port) counter; }; }"])
                servers.append(try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(bed.prefix)-\(n)", "python3", script(bed),
                                                 "serve", "\(port)"]))
            }
            try bed.startDaemon()
            return (bed, servers)
        }

        static func script(_ bed: Testbed) -> String { Privileged.repositoryRoot() + "/Bench/testbed/bulk-transfer.py" }

        struct Transfer: Decodable {
            var ok: Bool
            var node: String?
            var sent: Int
            var received: Int
            var seconds: Double
            var error: String?
        }

        static func send(_ bed: Testbed, _ target: String, size: Int = size, rate: Int? = nil, seed: Int = 7) throws -> ChildProcess {
            try ChildProcess(["/usr/sbin/ip", "netns", "exec", "\(bed.prefix)-client", "python3", script(bed), "send", target,
                              "\(port)", "\(size)", "--seed", "\(seed)"] + (rate.map { ["--rate", "\($0)"] } ?? []),
                             capture: true)
        }

        static func result(_ p: ChildProcess) throws -> Transfer {
            let line = try #require(p.readLine(), "no result from bulk-transfer.py")
            p.wait()
            return try JSONDecoder().decode(Transfer.self, from: Data(line.utf8))
        }

        /// Waits until every node's bulk server answers (it starts with the testbed).
        static func waitForServers(_ bed: Testbed) throws {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                if try result(send(bed, "198.18.1.20", size: 1000)).ok { return }
                usleep(100_000)
            }
            throw Testbed.Failure(description: "bulk servers did not answer")
        }

        /// What the nodes' kernels received on the port, in packets (nftables counters).
        static func nodePackets(_ bed: Testbed) throws -> Int {
            var total = 0
            for n in nodes {
                let (_, out) = try bed.exec(n, ["nft", "list table inet bulkcount"])
                if let r = out.range(of: #"packets (\d+)"#, options: .regularExpression) {
                    total += Int(out[r].split(separator: " ")[1]) ?? 0
                }
            }
            return total
        }

        @Test func transfersAreByteExactFINsEndTheirEntriesAndCountersEqualTheTraffic() throws {
            let (bed, servers) = try Self.bed()
            defer { servers.forEach { $0.signal(SIGKILL) }; bed.tearDown() }
            try Self.waitForServers(bed)
            let before = try bed.status()
            let offloadedBefore = before.dataplane?.offload?.frames ?? 0
            for (group, vip) in Self.targets {
                let r = try Self.result(Self.send(bed, vip))
                #expect(r.ok && r.sent == Self.size && r.received == Self.size, "\(group) \(vip): \(r.error ?? "")")
            }
            // Every transfer closed with FIN: the entries are gone, and the counts are in.
            try bed.waitFor("offloaded flows withdrawn", timeout: 5) { ($0.dataplane?.offload?.flows ?? -1) == 0 }
            let lbPackets = { (s: StatusView) -> Int in
                Self.targets.reduce(0) { $0 + Int(s.group($1.0)?.packets ?? 0) }
            }
            let atNodes = try Self.nodePackets(bed)
            try? bed.waitFor("the LB's counts of the bulk groups to settle", timeout: 5) { lbPackets($0) == atNodes }
            let s = try bed.status()
            #expect(lbPackets(s) == atNodes, "the LB counted \(lbPackets(s)) packets to the nodes; they received \(atNodes)")
            let o = try #require(s.dataplane?.offload)
            // 4 × 10 MB to the nodes is about 28,000 full frames: nearly all go through XDP.
            #expect(o.frames - offloadedBefore > 20_000, "offloaded frames \(o.frames - offloadedBefore)")
            #expect((s.dataplane?.xdp["offloaded"] ?? 0) >= o.frames)
            #expect(s.drops.isEmpty, "drops: \(s.drops)")
            // What an operator sees: fulcrumctl status and the metrics.
            let (rc, text) = try bed.ctl(["status"])
            #expect(rc == 0 && text.contains("offload: 0 flows in XDP"), "\(text.prefix(400))")
            let metrics = try bed.api("GET", "/metrics")
            #expect(metrics.body.contains("fulcrum_offloaded_flows 0"), "no fulcrum_offloaded_flows gauge")
        }

        @Test func aReloadKeepsOffloadedFlowsAndADisabledNodesFlowMoves() throws {
            let (bed, servers) = try Self.bed()
            defer { servers.forEach { $0.signal(SIGKILL) }; bed.tearDown() }
            try Self.waitForServers(bed)
            // Two paced transfers (about 4 s each), held across a reload that changes the
            // layout: weights, and a new group ahead of theirs, so that every node slot of
            // theirs is renumbered.
            let mat = try Self.send(bed, "198.18.1.10", size: 8_000_000, rate: 2_000_000, seed: 1)
            let nat = try Self.send(bed, "2001:2:1::20", size: 8_000_000, rate: 2_000_000, seed: 2)
            try bed.waitFor("both transfers offloaded", timeout: 5) { ($0.dataplane?.offload?.flows ?? 0) >= 2 }
            let withdrawnBefore = try bed.status().counters["offload_withdrawn", default: 0]
            let config = try bed.readConfig()
            let ahead = "  - name: ahead\n    vip: \"198.18.1.30\"\n    protocol: tcp\n    ports: [\(Self.port)]\n    method: mat\n"
                + "    interface: eth-c\n    nodes:\n      - address: \"198.18.0.11\"\n"
            let changed = config.replacingOccurrences(of: "        weight: 2\n", with: "        weight: 1\n")
                .replacingOccurrences(of: "  - name: bulk-mat\n", with: ahead + "  - name: bulk-mat\n")
            #expect(changed.contains("name: ahead"))
            try bed.writeConfig(changed)
            bed.signalDaemon(SIGHUP)
            try bed.waitFor("reload", timeout: 10) { $0.version == 2 }
            for (name, p) in [("MAT v4", mat), ("NAT v6", nat)] {
                let r = try Self.result(p)
                #expect(r.ok && r.received == 8_000_000, "\(name) across the reload: \(r.error ?? "")")
            }
            // Their entries stayed in the program's hands through the reload: each was
            // withdrawn once, at its flow's close (the MAT flow's one entry at the client's
            // FIN, the NAT flow's two). Withdrawn at the reload and offered again, each
            // would count twice.
            let withdrawn = try bed.settledStatus().counters["offload_withdrawn", default: 0] - withdrawnBefore
            #expect(withdrawn == 3, "offload entries withdrawn from the reload to the transfers' end: \(withdrawn)")

            // A paced NAT transfer; its node is disabled mid-way. Its entries must go with
            // the change: the next segment is moved to another node, which resets the
            // connection. (Were the entry kept, the program would carry the transfer to the
            // end on the disabled node.)
            // (Earlier connections may still be held, closing: the node is the one whose
            // count rises.)
            let baseline = try #require(try bed.status().group("bulk-nat")).nodes.map(\.activeFlows)
            let moving = try Self.send(bed, "198.18.1.20", size: 8_000_000, rate: 2_000_000, seed: 3)
            var node = -1
            try bed.waitFor("the NAT transfer offloaded", timeout: 5) { s in
                guard (s.dataplane?.offload?.flows ?? 0) >= 1, let g = s.group("bulk-nat") else { return false }
                node = g.nodes.indices.first { g.nodes[$0].activeFlows > baseline[$0] } ?? -1
                return node >= 0
            }
            let address = "198.18.2.1\(node + 1)"
            let now = try bed.readConfig()
            let marker = "      - address: \"\(address)\"\n        port: \(Self.port)\n"
            let disabled = now.replacingOccurrences(of: marker, with: marker + "        enabled: false\n")
            #expect(disabled != now)
            try bed.writeConfig(disabled)
            bed.signalDaemon(SIGHUP)
            try bed.waitFor("reload", timeout: 5) { $0.version == 3 }
            let r = try Self.result(moving)
            #expect(!r.ok && r.seconds < 6, "the transfer went on to its disabled node: \(r)")
            try bed.waitFor("the moved flow counted", timeout: 5) { ($0.dataplane?.counters["flows_moved"] ?? 0) >= 1 }
        }
    }
}
