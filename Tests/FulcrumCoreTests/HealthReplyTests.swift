import FulcrumCore
import Testing

@Suite struct HealthReplyTests {
    static let http: [(String, Bool, [Int], String?, HealthReply.Verdict)] = [
        ("HTTP/1.0 200 OK\r\n\r\nhello", true, [200], nil, .up),
        ("HTTP/1.1 204 No Content\r\n", false, [200, 204], nil, .up),
        ("HTTP/1.1 503 Service Unavailable\r\n", false, [200], nil, .down("status 503")),
        ("HTTP/1.1 20", false, [200], nil, .pending),                       // the status line is not whole yet
        ("HTTP/1.1 20", true, [200], nil, .down("no HTTP status line")),    // and the node closed
        ("SSH-2.0-OpenSSH\r\n", false, [200], nil, .down("not an HTTP answer")),
        ("HTTP/1.1 200 OK\r\n\r\nready", false, [200], "ready", .up),
        ("HTTP/1.1 200 OK\r\n\r\nrea", false, [200], "ready", .pending),   // the body may still hold it
        ("HTTP/1.1 200 OK\r\n\r\nbusy", true, [200], "ready", .down("body lacks \"ready\"")),
    ]

    @Test(arguments: http.indices)
    func httpAnswers(_ i: Int) {
        let (text, ended, expect, body, verdict) = Self.http[i]
        #expect(HealthReply.http(Array(text.utf8), ended: ended, expect: expect, text: body) == verdict, "\(text.debugDescription)")
    }

    @Test func udpAnswers() {
        #expect(HealthReply.udp(Array("pong".utf8), text: nil) == .up)
        #expect(HealthReply.udp([], text: nil) == .down("empty answer"))
        #expect(HealthReply.udp(Array("version 1.2".utf8), text: "1.2") == .up)
        #expect(HealthReply.udp(Array("version 1.3".utf8), text: "1.2") == .down("answer lacks \"1.2\""))
    }

    @Test func onlyTheEchoReplyAskedForCounts() {
        // IPv4: a 20-byte IP header, then type 0, code, checksum, id 0x1234, sequence 7.
        let ipHeader: [UInt8] = [0x45] + [UInt8](repeating: 0, count: 19)
        let reply: [UInt8] = ipHeader + [0, 0, 0, 0, 0x12, 0x34, 0, 7]
        #expect(HealthReply.isEchoReply(reply, ipv4: true, id: 0x1234, sequence: 7))
        #expect(!HealthReply.isEchoReply(reply, ipv4: true, id: 0x1234, sequence: 8), "another sequence")
        #expect(!HealthReply.isEchoReply(reply, ipv4: true, id: 0x4321, sequence: 7), "another process's echo")
        var request = reply
        request[20] = 8
        #expect(!HealthReply.isEchoReply(request, ipv4: true, id: 0x1234, sequence: 7), "an echo request is no reply")
        #expect(!HealthReply.isEchoReply(Array(reply.prefix(25)), ipv4: true, id: 0x1234, sequence: 7), "truncated")
        // ICMPv6: no IP header; the reply's type is 129.
        #expect(HealthReply.isEchoReply([129, 0, 0, 0, 0x12, 0x34, 0, 7], ipv4: false, id: 0x1234, sequence: 7))
        #expect(!HealthReply.isEchoReply([128, 0, 0, 0, 0x12, 0x34, 0, 7], ipv4: false, id: 0x1234, sequence: 7))
        #expect(!HealthReply.isEchoReply([], ipv4: true, id: 0, sequence: 0))
    }
}
