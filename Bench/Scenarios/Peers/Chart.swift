import Foundation

/// One SVG chart per scenario, written by hand: a horizontal bar per system and point
/// (the median), a whisker from min to max, the value at its end; systems that did not
/// run are listed with their status. No library in the project's list draws SVG, and a
/// bar chart is some forty lines of it.
enum Chart {
    static let colors = ["fulcrum": "#1f6feb", "peer": "#8b949e", "ceiling": "#3fb950", "reference": "#d29922"]

    static func svg(_ s: BenchReport.Scenario, machine: BenchReport.Machine) -> String {
        // Latency: p50, p99 and p99.9 (the maximum, one sample, would set the scale; it is in the JSON).
        let rows = s.results.filter { !(s.name == "latency" && $0.parameter.hasSuffix(" max")) }
        let top = 56.0, rowHeight = 26.0, labelWidth = 400.0, barWidth = 420.0, right = 300.0
        let width = labelWidth + barWidth + right
        let height = top + Double(rows.count) * rowHeight + 40
        let maxValue = rows.compactMap { $0.max ?? $0.median }.max() ?? 1
        let scale = maxValue > 0 ? barWidth / maxValue : 0
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="10" y="20" font-size="15" font-weight="bold">\(escape("fulcrum-bench \(s.name): \(s.title)"))</text>
        <text x="10" y="38" fill="#555">\(escape("\(s.unit), median of the runs, whiskers min–max; \(s.higherIsBetter ? "longer is better" : "shorter is better")\(s.name == "latency" ? " (maxima in the JSON)" : ""). \(machine.cpus) CPUs, kernel \(machine.kernel)"))</text>

        """
        for (i, r) in rows.enumerated() {
            let y = top + Double(i) * rowHeight
            out += "<text x=\"\(Int(labelWidth - 8))\" y=\"\(f(y + 16))\" text-anchor=\"end\">\(escape(r.label + " · " + r.parameter))</text>\n"
            guard r.status == "ran", let median = r.median else {
                out += "<text x=\"\(Int(labelWidth + 4))\" y=\"\(f(y + 16))\" fill=\"#999\">\(escape(r.status + (r.reason.map { ": " + $0 } ?? "")))</text>\n"
                continue
            }
            let color = colors[r.role] ?? "#888"
            out += "<rect x=\"\(Int(labelWidth))\" y=\"\(f(y + 4))\" width=\"\(f(max(1, median * scale)))\" height=\"\(f(rowHeight - 8))\" fill=\"\(color)\"/>\n"
            if let lo = r.min, let hi = r.max, hi > lo {
                let y0 = y + rowHeight / 2
                out += "<line x1=\"\(f(labelWidth + lo * scale))\" y1=\"\(f(y0))\" x2=\"\(f(labelWidth + hi * scale))\" y2=\"\(f(y0))\" stroke=\"black\"/>\n"
                for x in [lo, hi] {
                    out += "<line x1=\"\(f(labelWidth + x * scale))\" y1=\"\(f(y0 - 5))\" x2=\"\(f(labelWidth + x * scale))\" y2=\"\(f(y0 + 5))\" stroke=\"black\"/>\n"
                }
            }
            out += "<text x=\"\(f(labelWidth + (r.max ?? median) * scale + 6))\" y=\"\(f(y + 16))\">\(escape(short(median)))</text>\n"
        }
        var legendX = 10.0
        let legendY = top + Double(rows.count) * rowHeight + 20
        for role in ["fulcrum", "ceiling", "reference", "peer"] where rows.contains(where: { $0.role == role }) {
            out += "<rect x=\"\(f(legendX))\" y=\"\(f(legendY - 10))\" width=\"12\" height=\"12\" fill=\"\(colors[role]!)\"/>"
            out += "<text x=\"\(f(legendX + 16))\" y=\"\(f(legendY))\">\(role)</text>\n"
            legendX += 100
        }
        return out + "</svg>\n"
    }

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}
