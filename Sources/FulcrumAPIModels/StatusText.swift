import Foundation
import FulcrumCore

/// The status as an operator reads it: one rendering for `fulcrumctl status` (from the API)
/// and `fulcrum status` (from the status file), both of the one `StatusModel`.
public enum StatusText {
    public static let nodeHeader = ["NODE", "STATE", "WEIGHT", "ACTIVE", "NEW FLOWS", "PACKETS", "BYTES"]

    /// The whole view; with `detail`, the data plane's counters beneath (when the model has them).
    public static func render(_ s: StatusModel, detail: Bool = false) -> String {
        var out = ["host \(s.host)   role \(s.role)   configuration \(s.version) (\(s.hash.prefix(19)))   flows \(s.flows) of \(s.flowCapacity)   up \(Int(s.uptimeSeconds)) s"]
        if let d = s.dataplane, detail {
            out.append("XDP: " + d.attachModes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if let o = s.dataplane?.offload {
            out.append(String(format: "offload: %d flows in XDP, %.1f%% of forwarded frames (%llu)", o.flows, o.share * 100,
                              o.frames))
        }
        if let c = s.cluster {
            out.append(cluster(c))
        }
        for g in s.groups {
            out.append("\n\(g.name)  \(g.vip) \(g.protocol) \(g.ports.map(String.init).joined(separator: ",")) \(g.method) \(g.scheduler)  packets \(g.packets)  new flows \(g.newFlows)" + (g.sorryFlows > 0 ? "  sorry flows \(g.sorryFlows)" : ""))
            out.append(table(nodeHeader, nodeRows(g)).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        }
        if !s.drops.isEmpty {
            out.append("\ndrops: " + s.drops.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if let d = s.dataplane, detail {
            func nonzero(_ m: [String: UInt64], except: Set<String> = []) -> String {
                m.sorted { $0.key < $1.key }.filter { $0.value > 0 && !except.contains($0.key) }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            }
            out.append("\nXDP program: " + nonzero(d.xdp))
            out.append("workers:     " + nonzero(d.counters))
            out.append("AF_XDP:      " + nonzero(d.sockets, except: ["tx_ring_empty"]))
            if !d.unroutedReplies.isEmpty {
                out.append("\nNAT replies not sent (most recent first):")
                for u in d.unroutedReplies {
                    out.append("  \(u.destination)  \(u.reason)\(u.interface.map { " on \($0)" } ?? "")  ×\(u.reports)")
                }
            }
        }
        if let rejected = s.reloadsRejected, rejected > 0 { out.append("\nreloads refused since start: \(rejected)") }
        for alarm in s.alarms ?? [] { out.append("\nALARM: \(alarm)") }
        if !s.events.isEmpty {
            out.append("\nlatest events:")
            for e in s.events.suffix(10) { out.append("  " + eventLine(e)) }
        }
        return out.joined(separator: "\n")
    }

    /// The pair: both LBs' roles, the interconnects, the last transition, config versions.
    public static func cluster(_ c: ClusterStatusModel) -> String {
        var out = ["\ncluster: this LB \(c.role) (\(c.configuredRole)), peer \(c.peer.name) \(c.peer.role ?? "not heard")"
                   + (c.held ? "   HELD: resume one LB" : "")
                   + "   configuration \(c.configVersion), peer's \(c.peerConfigVersion.map(String.init) ?? "unknown")"]
        let rows = c.interconnects.enumerated().map { i, l in
            ["\(i)", "\(l.local) ↔ \(l.peer)", l.up ? "up" : "down",
             l.lastHeardSecondsAgo.map { String(format: "%.3f s ago", $0) } ?? "never", "\(l.sent)", "\(l.received)",
             l.rejected.isEmpty ? "-" : l.rejected.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")]
        }
        out.append(table(["INTERCONNECT", "LINK", "STATE", "LAST HEARD", "SENT", "RECEIVED", "REFUSED"], rows)
            .split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        if let t = c.lastTransition {
            out.append("  last transition \(t.time.prefix(23).replacingOccurrences(of: "T", with: " ")): \(t.from) → \(t.to): \(t.reason)")
        }
        if let f = c.flowSync { out.append(flowSync(f)) }
        return out.joined(separator: "\n")
    }

    /// The flow sync in one line: ready or not, what travelled, how far behind.
    public static func flowSync(_ f: FlowSyncStatusModel) -> String {
        func ms(_ v: Double?) -> String { v.map { String(format: "%.2f ms", $0) } ?? "-" }
        let refused = f.rejected.isEmpty ? "" : ", refused " + f.rejected.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        if f.sending {
            return "  flow sync: standby \(f.peerReady ? "ready" : "NOT READY"), \(f.recordsSent) records sent, \(f.recordsSaved) saved, "
                + "\(f.datagramsResent) datagrams resent, lag p50 \(ms(f.lagP50Milliseconds)) p99 \(ms(f.lagP99Milliseconds))"
                + (f.lastBulkSeconds.map { String(format: ", last bulk transfer %.2f s", $0) } ?? "") + refused + (f.lagging ? ", LAGGING" : "")
        }
        return "  flow sync: \(f.ready ? "ready" : "NOT READY"), \(f.recordsReceived) records received, \(f.recordsHeld) held as flows"
            + (f.notHeld.isEmpty ? "" : ", not held " + f.notHeld.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
            + (f.deferred.isEmpty ? "" : ", deferred " + f.deferred.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
            + refused
    }

    public static func nodeRows(_ g: GroupStatusModel) -> [[String]] {
        g.nodes.map { n in
            [IPAddress(n.address).map { NodeLabel(address: $0, port: UInt16(n.port)).description } ?? n.address,
             n.state + (n.healthDetail.map { " (\($0))" } ?? ""),
             "\(n.weight)", "\(n.activeFlows)", "\(n.newFlows)", "\(n.packets)", "\(n.bytes)"]
        }
    }

    public static func eventLine(_ e: EventModel) -> String {
        "\(e.time.prefix(23).replacingOccurrences(of: "T", with: " "))  \(e.severity.padding(toLength: 7, withPad: " ", startingAt: 0))  \(e.kind)  \(e.message)"
    }

    /// Columns padded to their widest cell; control characters in a cell are shown escaped.
    public static func table(_ header: [String], _ given: [[String]]) -> String {
        let rows = given.map { $0.map(printable) }
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    /// Text from the network made safe for a terminal: control characters (bar newline) as `\u{…}`.
    public static func printable(_ text: String) -> String {
        var out = ""
        out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for u in text.unicodeScalars {
            if u.properties.generalCategory == .control && u != "\n" {
                out += "\\u{\(String(u.value, radix: 16, uppercase: true))}"
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }
}
