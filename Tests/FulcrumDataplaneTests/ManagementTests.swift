import FulcrumAPIModels
import FulcrumTestSupport
import Foundation
import Synchronization
import Testing

extension OnTheTestbed {
    /// The management plane on the namespace testbed: the control API with its tokens,
    /// fulcrumctl under traffic, bad and concurrent changes, a daemon killed mid-change,
    /// /metrics through promtool, the status page in headless Chromium, and the API
    /// against its OpenAPI document with schemathesis.
    @Suite struct ManagementTests {
        /// Where artefacts a person may want to look at are kept (not removed with the testbed).
        static let artefacts: String = {
            let path = Privileged.repositoryRoot() + "/.build/test-output"
            try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            return path
        }()

        func version(_ bed: Testbed) throws -> Int {
            try bed.api("GET", "/v1/config").decode(ConfigDocument.self).version
        }

        /// A tool a test needs: absent, the test fails with what to install (CI installs
        /// them through `make setup`).
        func tool(_ name: String) throws -> String { try Testbed.tool(name) }

        @Test func tokensListenersAndRefusals() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let full = try bed.token(), readOnly = try bed.token(readOnly: true)

            // Authentication.
            #expect(try bed.api("GET", "/v1/status", token: .some(nil)).status == 401)
            #expect(try bed.api("GET", "/v1/status", token: "not-the-token-at-all").status == 401)
            #expect(try bed.api("GET", "/v1/status", token: full + "x").status == 401, "a trailing byte")
            #expect(try bed.api("GET", "/v1/status", token: String(full.dropLast())).status == 401, "a missing byte")
            #expect(try bed.api("GET", "/metrics", token: .some(nil)).status == 401)
            #expect(try bed.api("GET", "/v1/status", token: readOnly).status == 200)
            let denied = try bed.api("PATCH", "/v1/groups/web-mat/nodes/198.18.0.11", body: #"{"weight": 9}"#, token: readOnly)
            #expect(denied.status == 403 && denied.body.contains("read-only"))
            #expect(try bed.api("DELETE", "/v1/groups/web-mat", token: readOnly).status == 403)
            #expect(try version(bed) == 1, "nothing the read-only token sent changed anything")

            // Listeners: 127.0.0.1:9180 in the LB's namespace and the socket; nothing on
            // the LB's other addresses.
            let (loopback, code) = try bed.exec("lb", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                                                       "http://127.0.0.1:9180/v1/status"])
            #expect(loopback == 0 && code == "401")
            for address in ["198.18.0.1", "198.18.2.1"] {
                let (status, _) = try bed.exec("lb", ["curl", "-s", "--max-time", "5", "http://\(address):9180/v1/status"])
                #expect(status == 7, "\(address):9180 must refuse connections (curl exit \(status))")
            }

            // A dozen invalid changes: each a 4xx naming the field (and value), and the
            // version does not move.
            let big = String(repeating: " ", count: 2 << 20)
            let bad: [(String, String, String?, Int, String, String?)] = [
                ("POST", "/v1/groups/web-mat/nodes", #"{"address": "198.18.0.300"}"#, 422, "node.address", "198.18.0.300"),
                ("POST", "/v1/groups", #"{"name": "web-mat-b", "vip": "198.18.1.10", "protocol": "tcp", "ports": [80], "method": "mat", "nodes": [{"address": "198.18.0.11"}]}"#,
                 422, "groups[8].ports", "80"),
                ("POST", "/v1/groups", #"{"name": "x", "vip": "198.18.1.30", "protocol": "tcp", "ports": [80], "method": "mat", "scheduler": "fastest", "nodes": [{"address": "198.18.0.11"}]}"#,
                 422, "group.scheduler", "fastest"),
                ("PATCH", "/v1/groups/web-mat/nodes/198.18.0.11", #"{"weight": 1000001}"#, 422, "weight", "1000001"),
                ("PATCH", "/v1/groups/web-mat/nodes/198.18.0.11", #"{"weight": "five"}"#, 422, "weight", "\"five\""),
                ("POST", "/v1/groups", #"{"name": "web-nat-b", "vip": "198.18.1.21", "protocol": "tcp", "ports": [80], "method": "nat", "interface": "eth-n", "nodes": [{"address": "198.18.2.11", "port": 8080}]}"#,
                 422, "groups[8].nodes", "198.18.2.11"),
                ("POST", "/v1/groups/web-mat/nodes", #"{"address": "198.18.0.14", "colour": "blue"}"#, 422, "node.colour", "colour"),
                ("POST", "/v1/groups/web-mat/nodes", #"{"address": "#, 400, "(syntax)", nil),
                ("PUT", "/v1/config", big, 413, "(body)", nil),
                ("POST", "/v1/groups/web-mat/nodes", #"{"address": "198.18.1.10"}"#, 422, "node.address", "198.18.1.10"),
                ("POST", "/v1/groups/web-nat/nodes", #"{"address": "2001:2:2::14", "port": 8080}"#, 422, "node.address", "2001:2:2::14"),
                ("POST", "/v1/groups", #"{"name": "y", "vip": "198.18.1.30", "protocol": "tcp", "ports": ["80"], "method": "mat", "nodes": []}"#,
                 422, "ports[0]", nil),
                ("PUT", "/v1/config?dry_run=maybe", #"{"groups": []}"#, 400, "dry_run", "maybe"),
            ]
            for (method, path, body, status, field, value) in bad {
                let r = try bed.api(method, path, body: body)
                let e = try? r.decode(ErrorModel.self)
                let match = e?.errors?.first { $0.field == field }
                #expect(r.status == status, "\(method) \(path): HTTP \(r.status), wanted \(status): \(r.body.prefix(300))")
                #expect(match != nil, "\(method) \(path): no error for \(field): \(r.body.prefix(400))")
                if let value { #expect(match?.value == value, "\(method) \(path): \(r.body.prefix(400))") }
                #expect(e?.version == 1 || status == 400, "the error says which version is in force")
            }
            #expect(try version(bed) == 1, "no invalid change moved the version")
            #expect(try bed.status().version == 1)

            // 50 concurrent changes from 5 clients: versions strictly increase and the final
            // state is the changes replayed in version order.
            let initial = try bed.api("GET", "/v1/config").decode(ConfigDocument.self)
            let nodes = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
            let results = Mutex<[(version: Int, node: String, weight: Int)]>([])
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 5) { client in
                for i in 0..<10 {
                    let node = nodes[(client + i) % 3]
                    let weight = client * 100 + i
                    do {
                        let r = try bed.api("PATCH", "/v1/groups/web-mat/nodes/\(node)", body: #"{"weight": \#(weight)}"#)
                        let result = try r.decode(ChangeResultModel.self)
                        results.withLock { $0.append((result.version, node, weight)) }
                    } catch {
                        failures.withLock { $0.append("\(error)") }
                    }
                }
            }
            #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
            let done = results.withLock { $0 }.sorted { $0.version < $1.version }
            #expect(done.map(\.version) == Array(2...51))
            var replay = initial.groups
            for r in done {
                let i = replay[0].nodes.firstIndex { $0.address == r.node }!
                replay[0].nodes[i].weight = r.weight
            }
            let final = try bed.api("GET", "/v1/config").decode(ConfigDocument.self)
            #expect(final.version == 51 && final.groups == replay, "the final state is the serial replay")

            // /metrics: promtool accepts it, and it agrees with status for the same traffic.
            #expect(try bed.client("198.18.1.20", port: 80, count: 60).ok == 60)
            _ = try bed.settledStatus()
            let metrics = try bed.api("GET", "/metrics", token: readOnly)
            #expect(metrics.status == 200)
            let file = Self.artefacts + "/metrics.txt"
            try metrics.body.write(toFile: file, atomically: true, encoding: .utf8)
            let (lint, lintOut) = try ChildProcess.run(["/bin/sh", "-c", "\(try tool("promtool")) check metrics < \(file)"])
            #expect(lint == 0, "promtool: \(lintOut)")
            let status = try bed.api("GET", "/v1/status").decode(StatusModel.self)
            let webNAT = try #require(status.groups.first { $0.name == "web-nat" })
            #expect(sample(metrics.body, "fulcrum_group_packets_total{group=\"web-nat\"}") == Double(webNAT.packets))
            #expect(sample(metrics.body, "fulcrum_group_new_flows_total{group=\"web-nat\"}") == Double(webNAT.newFlows))
            #expect(webNAT.newFlows == 60)
            for n in webNAT.nodes {
                #expect(sample(metrics.body, "fulcrum_node_new_flows_total{group=\"web-nat\",node=\"\(n.address):\(n.port)\"}") == Double(n.newFlows))
            }
            #expect(sample(metrics.body, "fulcrum_config_version") == 51)

            // The status page, in headless Chromium: nothing without a token; with the
            // read-only one, the groups, nodes and the latest change.
            let chromium = try tool("chromium")
            let browse = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--user-data-dir=\(bed.directory)/chromium", "--virtual-time-budget=8000"]
            let (_, anonymous) = try bed.exec("lb", browse + ["--dump-dom", "http://127.0.0.1:9180/"])
            #expect(anonymous.contains("id=\"login\"") && !anonymous.contains("data-group=\"web-mat\""), "the page shows nothing without a token")
            let (_, dom) = try bed.exec("lb", browse + ["--dump-dom", "http://127.0.0.1:9180/#token=\(readOnly)"])
            try dom.write(toFile: Self.artefacts + "/status-page.html", atomically: true, encoding: .utf8)
            #expect(dom.contains("<b id=\"version\">51</b>"), "the page shows the version in force")
            for group in ["web-mat", "web-nat", "dns6-nat"] { #expect(dom.contains("data-group=\"\(group)\""), "\(group) on the page") }
            #expect(dom.contains("data-node=\"198.18.0.11\"") && dom.contains("data-node=\"198.18.2.13\""))
            #expect(dom.contains("config.applied") && dom.contains("configuration 51 applied by api"), "the latest change is on the page")
            let screenshot = Self.artefacts + "/status-page.png"
            try? FileManager.default.removeItem(atPath: screenshot)
            try bed.exec("lb", browse + ["--window-size=1280,1800", "--screenshot=\(screenshot)", "http://127.0.0.1:9180/#token=\(readOnly)"])
            #expect(FileManager.default.fileExists(atPath: screenshot))
            print("status page: \(screenshot); metrics: \(file)")
        }

        func sample(_ text: String, _ series: String) -> Double? {
            for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
                return Double(line.dropFirst(series.count + 1).split(separator: " ").first ?? "")
            }
            return nil
        }

        /// Time until `condition` holds for the API's status and metrics, polled every 20 ms.
        func timeUntil(_ bed: Testbed, _ what: String, _ condition: (StatusModel, String) -> Bool) throws -> Double {
            let start = Date()
            while Date().timeIntervalSince(start) < 5 {
                let s = try bed.api("GET", "/v1/status").decode(StatusModel.self)
                let m = try bed.api("GET", "/metrics").body
                if condition(s, m) { return Date().timeIntervalSince(start) }
                usleep(20_000)
            }
            throw Testbed.Failure(description: "\(what) did not show in status and metrics in 5 s")
        }

        /// Every kind of change through fulcrumctl while held MAT and NAT connections talk
        /// every 100 ms: none resets or waits a second, each change shows in status and
        /// metrics within a second, and new connections follow the new weights.
        @Test func changesThroughFulcrumctlUnderTraffic() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let mat = try bed.chat("198.18.1.10", port: 80, held: 12, seconds: 30, newEvery: 0)
            let nat = try bed.chat("198.18.1.20", port: 80, held: 12, seconds: 30, newEvery: 0)
            #expect(mat.ready == 12 && nat.ready == 12)
            var shown: [String: Double] = [:]
            func ctl(_ args: [String]) throws {
                let (status, out) = try bed.ctl(args)
                #expect(status == 0, "fulcrumctl \(args.joined(separator: " ")): \(out)")
            }

            // Add a node: the sorry server's host joins web-nat as a node of weight 2.
            try ctl(["node", "add", "web-nat", "198.18.2.99", "--port", "8080", "--weight", "2"])
            shown["add node"] = try timeUntil(bed, "the new node") { s, m in
                s.groups.first { $0.name == "web-nat" }?.nodes.contains { $0.address == "198.18.2.99" && $0.state == "up" } == true
                    && m.contains("fulcrum_node_weight{group=\"web-nat\",node=\"198.18.2.99:8080\"} 2.0")
            }
            // Change weights: n1:n2:n3:s1 = 1:1:1:2.
            try ctl(["node", "set-weight", "web-nat", "198.18.2.11", "1"])
            try ctl(["node", "set-weight", "web-nat", "198.18.2.12", "1"])
            shown["weights"] = try timeUntil(bed, "the weights") { s, m in
                s.groups.first { $0.name == "web-nat" }?.nodes.map(\.weight) == [1, 1, 1, 2]
                    && m.contains("fulcrum_node_weight{group=\"web-nat\",node=\"198.18.2.11:8080\"} 1.0")
            }
            let split = try bed.client("198.18.1.20", port: 80, count: 250)
            #expect(split.ok == 250)
            for (name, expected) in [("n1", 50.0), ("n2", 50.0), ("n3", 50.0), ("sorry", 100.0)] {
                let got = Double(split.perNode[name] ?? 0)
                #expect(abs(got - expected) <= 0.1 * expected, "\(name): \(got) of 250, expected \(expected)")
            }
            // Drain m3 in web-mat.
            try ctl(["node", "drain", "web-mat", "198.18.0.13"])
            shown["drain"] = try timeUntil(bed, "the drain") { s, m in
                s.groups.first { $0.name == "web-mat" }?.nodes.last?.weight == 0
                    && m.contains("fulcrum_node_weight{group=\"web-mat\",node=\"198.18.0.13\"} 0.0")
            }
            let drained = try bed.client("198.18.1.10", port: 80, count: 50)
            #expect(drained.ok == 50 && drained.perNode["m3"] == nil, "m3 drained: \(drained.perNode)")
            #expect(abs(Double(drained.perNode["m1"] ?? 0) - 30) <= 3 && abs(Double(drained.perNode["m2"] ?? 0) - 20) <= 2,
                    "3:2 between m1 and m2: \(drained.perNode)")
            // Remove the node added above (its connections have all ended).
            try ctl(["node", "remove", "web-nat", "198.18.2.99"])
            shown["remove node"] = try timeUntil(bed, "the removal") { s, m in
                s.groups.first { $0.name == "web-nat" }?.nodes.count == 3 && !m.contains("node=\"198.18.2.99:8080\"")
            }
            // Add a group (web-mat's VIP on port 8443) and remove one (dns6-mat).
            let groupFile = bed.directory + "/alt.json"
            try #"{"name": "alt-mat", "vip": "198.18.1.10", "protocol": "tcp", "ports": [8443], "method": "mat", "interface": "eth-c", "nodes": [{"address": "198.18.0.11"}, {"address": "198.18.0.12"}]}"#
                .write(toFile: groupFile, atomically: true, encoding: .utf8)
            try ctl(["group", "add", groupFile])
            shown["add group"] = try timeUntil(bed, "the new group") { s, m in
                s.groups.contains { $0.name == "alt-mat" } && m.contains("fulcrum_group_packets_total{group=\"alt-mat\"}")
            }
            #expect(try bed.client("198.18.1.10", port: 8443, count: 1).ok == 0, "no server listens on 8443")
            try bed.waitFor("8443 steered to alt-mat", timeout: 5) { ($0.group("alt-mat")?.newFlows ?? 0) > 0 }
            try ctl(["group", "remove", "dns6-mat"])
            shown["remove group"] = try timeUntil(bed, "the removed group") { s, m in
                !s.groups.contains { $0.name == "dns6-mat" } && !m.contains("group=\"dns6-mat\"")
            }
            let m = try mat.finish()
            let n = try nat.finish()
            print("shown after (s): \(shown.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.3f", $0.value))" }.joined(separator: ", ")); MAT \(m); NAT \(n)")
            for (what, seconds) in shown { #expect(seconds < 1, "\(what) took \(seconds) s to show") }
            for (name, r) in [("MAT", m), ("NAT", n)] {
                #expect(r.broken == 0, "\(name): \(r.broken) held connections broke: \(r.errors)")
                #expect(r.maxGapMs < 1000, "\(name): a held connection waited \(r.maxGapMs) ms")
                #expect(r.exchanges > 12 * 100, "\(name): the connections kept talking (\(r.exchanges) exchanges)")
            }
            let (_, events) = try bed.ctl(["events"])
            #expect(events.contains("configuration 7 applied by api"), "every change is an event: \(events.suffix(800))")
        }

        /// SIGKILL in a burst of changes; after the restart the configuration is exactly a
        /// committed version: the last acknowledged one, or the one in flight when it died.
        @Test func aKilledDaemonComesBackWithACommittedVersion() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let acked = Mutex<[Int: String]>([:])
            let burst = Thread {
                for i in 0..<200 {
                    guard let r = try? bed.api("PATCH", "/v1/groups/web-nat/nodes/198.18.2.1\(1 + i % 3)",
                                               body: #"{"weight": \#(i + 1)}"#),
                          let result = try? r.decode(ChangeResultModel.self) else { return }
                    acked.withLock { $0[result.version] = result.hash }
                }
            }
            burst.start()
            while acked.withLock({ $0.count }) < 15 { usleep(5_000) }
            bed.killDaemon()
            usleep(300_000)  // the burst's next request fails and it ends
            let before = acked.withLock { $0 }
            let last = try #require(before.keys.max())
            try bed.startDaemon()
            let doc = try bed.api("GET", "/v1/config").decode(ConfigDocument.self)
            print("acknowledged up to \(last); restarted at \(doc.version)")
            #expect(doc.version == last || doc.version == last + 1, "restarted at \(doc.version), last acknowledged \(last)")
            if let hash = before[doc.version] { #expect(doc.hash == hash, "the committed version \(doc.version) exactly") }
            // The weights are those of one committed change: each node's is a value the
            // burst sent it, and the most recent one is in the state.
            let weights = try #require(doc.groups.first { $0.name == "web-nat" }).nodes.map { $0.weight ?? 1 }
            #expect(weights.allSatisfy { $0 >= 1 && $0 <= doc.version }, "\(weights)")
            let (_, events) = try bed.ctl(["events"])
            #expect(events.contains("from \(bed.directory)/state.json"), "the restart took the state file: \(events.suffix(600))")
        }

        /// The API against Docs/openapi.yaml: schemathesis' generated and negative cases,
        /// every response documented and matching its schema, no 5xx.
        @Test func theAPIHoldsToItsOpenAPIDocument() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            let st = try tool("st")
            let report = Self.artefacts + "/schemathesis.txt"
            // In the testbed's directory: schemathesis leaves its files where it runs.
            let (status, out) = try bed.exec("lb", [
                "/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", bed.directory,
                st, "--config-file", bed.root + "/Tests/Contract/schemathesis.toml", "run", bed.root + "/Docs/openapi.yaml",
                "--url", "http://127.0.0.1:9180", "-H", "Authorization: Bearer \(try bed.token())",
                "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection",
                "--max-examples", "25", "--seed", "7", "--request-timeout", "10", "--no-color",
            ])
            try out.write(toFile: report, atomically: true, encoding: .utf8)
            let summary = out.split(separator: "\n").filter { $0.contains("generated") || $0.contains("failed") || $0.contains("passed") }
            print("schemathesis: \(summary.suffix(3).joined(separator: "; ")) (\(report))")
            #expect(status == 0, "schemathesis found problems (\(report)):\n\(out.suffix(3000))")
            #expect(out.contains("generated"), "schemathesis ran")
            #expect(bed.daemonLog.contains("Fatal error") == false)
        }
    }
}
