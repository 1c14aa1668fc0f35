/// What a health check's answer says of the node, read from its bytes: the HTTP status
/// line and body, a UDP answer, an ICMP echo reply. Pure: the checker's thread does the
/// I/O and asks these.
public enum HealthReply {
    public enum Verdict: Sendable, Equatable {
        /// Not enough bytes yet to say.
        case pending
        case up
        case down(String)
    }

    /// An HTTP answer as received so far; `ended`: the node closed the connection.
    /// `expect`: the statuses that mean up; `text`: what the body must contain.
    public static func http(_ received: [UInt8], ended: Bool, expect: [Int], text: String?) -> Verdict {
        guard let end = received.firstIndex(of: UInt8(ascii: "\n")) else {
            return ended || received.count > 8192 ? .down("no HTTP status line") : .pending
        }
        // "HTTP/1.x 200 OK"
        let parts = String(decoding: received[..<end], as: UTF8.self).split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let code = Int(parts[1]) else { return .down("not an HTTP answer") }
        guard expect.contains(code) else { return .down("status \(code)") }
        guard let text else { return .up }
        // The body must hold the text: read until it does, or the answer ends.
        if contains(received, text) { return .up }
        return ended || received.count > 65536 ? .down("body lacks \"\(text.prefix(40))\"") : .pending
    }

    /// A UDP answer: any datagram, holding `text` if one is expected.
    public static func udp(_ answer: [UInt8], text: String?) -> Verdict {
        guard !answer.isEmpty else { return .down("empty answer") }
        if let text, !contains(answer, text) { return .down("answer lacks \"\(text.prefix(40))\"") }
        return .up
    }

    /// Whether `bytes` from a raw ICMP socket are the echo reply to (id, sequence). IPv4
    /// raw sockets deliver the IP header too; ICMPv6 ones do not. Anything else (another
    /// process's echo, an error) is not an answer: the check waits on until its timeout.
    public static func isEchoReply(_ bytes: [UInt8], ipv4: Bool, id: UInt16, sequence: UInt16) -> Bool {
        guard !bytes.isEmpty else { return false }
        let start = ipv4 ? Int(bytes[0] & 0x0F) * 4 : 0
        guard bytes.count >= start + 8 else { return false }
        let replyType: UInt8 = ipv4 ? 0 : 129
        return bytes[start] == replyType && (UInt16(bytes[start + 4]) << 8 | UInt16(bytes[start + 5])) == id
            && (UInt16(bytes[start + 6]) << 8 | UInt16(bytes[start + 7])) == sequence
    }

    /// An ICMP (or ICMPv6) echo request for a raw socket: type, code, checksum, id,
    /// sequence, then `body`. The IPv4 checksum is filled in; the kernel sums ICMPv6 itself.
    public static func echoRequest(ipv4: Bool, id: UInt16, sequence: UInt16, body: [UInt8]) -> [UInt8] {
        var echo: [UInt8] = [ipv4 ? 8 : 128, 0, 0, 0, UInt8(id >> 8), UInt8(id & 0xFF), UInt8(sequence >> 8), UInt8(sequence & 0xFF)]
            + body
        if ipv4 {
            let sum = echo.withUnsafeBytes { Checksum.finish(Checksum.sum($0.baseAddress!, count: $0.count)) }
            echo[2] = UInt8(sum >> 8)
            echo[3] = UInt8(sum & 0xFF)
        }
        return echo
    }

    static func contains(_ hay: [UInt8], _ text: String) -> Bool {
        let needle = Array(text.utf8)
        guard !needle.isEmpty, hay.count >= needle.count else { return needle.isEmpty }
        for start in 0...(hay.count - needle.count) where hay[start] == needle[0] {
            if hay[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}
