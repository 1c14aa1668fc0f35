import FulcrumCore
/// Renders a status report as the tables an operator reads.
public enum StatusTable {
    public static func render(_ s: StatusReport) -> String {
        var out = "host \(s.host)   config generation \(s.configGeneration)   flows \(s.flows) of \(s.flowCapacity)\n"
        out += "XDP: " + s.attachModes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n\n"
        var rows = [["group", "node", "weight", "health", "mac", "active flows", "new flows", "packets", "bytes"]]
        for g in s.groups {
            rows.append([g.name, "(all)", "", "", "", "", "\(g.newFlows)", "\(g.packets)", "\(g.bytes)"])
            for n in g.nodes {
                let address = IPAddress(n.address).map { NodeLabel(address: $0, port: UInt16(n.port)).description } ?? n.address
                rows.append(["", address, "\(n.weight)", n.health ?? "-", n.mac ?? "unresolved", "\(n.activeFlows)", "\(n.newFlows)",
                             "\(n.packets)", "\(n.bytes)"])
            }
        }
        out += table(rows)
        out += "\nXDP program: " + s.xdp.sorted { $0.key < $1.key }.filter { $0.value > 0 }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        out += "\nworkers:     " + s.counters.sorted { $0.key < $1.key }.filter { $0.value > 0 }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let drops = s.drops.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        out += "\ndrops:       " + (drops.isEmpty ? "none" : drops)
        let kernel = s.sockets.sorted { $0.key < $1.key }.filter { $0.value > 0 && $0.key != "tx_ring_empty" }
            .map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        out += "\nAF_XDP:      " + kernel + "\n"
        if !s.events.isEmpty {
            out += "\nRecent events:\n" + s.events.map { "  " + EventText.line($0) }.joined(separator: "\n") + "\n"
        }
        if !s.unroutedReplies.isEmpty {
            out += "\nNAT replies not sent (most recent first):\n"
            for u in s.unroutedReplies {
                out += "  \(u.destination)  \(u.reason)\(u.interface.map { " on \($0)" } ?? "")  ×\(u.reports)\n"
            }
        }
        return out
    }

    static func table(_ rows: [[String]]) -> String {
        let widths = rows[0].indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        var out = ""
        for (i, row) in rows.enumerated() {
            out += row.enumerated().map { c, cell in
                c < 5 ? cell + String(repeating: " ", count: widths[c] - cell.count)
                      : String(repeating: " ", count: widths[c] - cell.count) + cell
            }.joined(separator: "  ") + "\n"
            if i == 0 { out += widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n" }
        }
        return out
    }
}
