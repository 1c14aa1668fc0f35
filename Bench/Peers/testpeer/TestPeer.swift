// fulcrum-testpeer: the real servers and clients of the namespace testbed.
//
//   serve  --name n1 --tcp 80,443 --udp 53      answer "<name>:<payload>" on every port
//   client --target VIP --port 80 --proto tcp --count 300
//          one request per connection (TCP) or per source port (UDP), payload checked
//          byte for byte; prints JSON {"ok":…, "failed":…, "perNode":{…}}
//   hold   --target VIP --port 80 --count 20
//          opens connections and answers one request on each, prints which node served
//          each, waits for a line on stdin, then sends a second request on each and
//          prints the result (for drain and reload tests).
//   chat   --target VIP --port 80 --held 20 --interval 0.1 --seconds 60 --new-every 0.5
//          holds connections that exchange a message every interval, opens new ones as
//          it goes, and prints JSON with broken connections, failed new ones, the
//          longest gap between two answers on any connection (for flood tests) and the
//          longest a new connection took to open and answer.
//   send-frame --interface eth0 --hex 0200…  [--count N]
//          sends a raw Ethernet frame (AF_PACKET), for forged and odd frames.
import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

@main
struct TestPeer: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fulcrum-testpeer",
                                                    subcommands: [Serve.self, Client.self, Hold.self, Chat.self,
                                                                   SendFrame.self, SendDatagrams.self])
}

enum Socket {
    static func address(_ text: String, port: UInt16) -> (sockaddr_storage, socklen_t)? {
        var storage = sockaddr_storage()
        if text.contains(":") {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, text, &a.sin6_addr) == 1 else { return nil }
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size))
        }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        guard inet_pton(AF_INET, text, &a.sin_addr) == 1 else { return nil }
        withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
        return (storage, socklen_t(MemoryLayout<sockaddr_in>.size))
    }

    static func withAddress<R>(_ s: inout sockaddr_storage, _ body: (UnsafePointer<sockaddr>) -> R) -> R {
        withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
    }

    static func setTimeout(_ fd: Int32, seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Reads until a newline, EOF or timeout.
    static func readLine(_ fd: Int32) -> [UInt8]? {
        var out: [UInt8] = []
        var byte: UInt8 = 0
        while out.count < 65536 {
            let n = recv(fd, &byte, 1, 0)
            if n <= 0 { return out.isEmpty ? nil : out }
            out.append(byte)
            if byte == 10 { return out }
        }
        return out
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }
}

struct Serve: ParsableCommand {
    @Option var name: String
    @Option(help: "Comma-separated TCP ports.") var tcp: String = ""
    @Option(help: "Comma-separated UDP ports.") var udp: String = ""
    @Option(help: "A TCP port answering HTTP requests (for health checks).") var http: UInt16?
    @Option(help: "The HTTP status to answer is read from this file on each request (200 when it is absent).")
    var httpStatusFile: String?

    func run() throws {
        var fds: [(Int32, Bool)] = []
        func listenOn(_ port: UInt16, tcp: Bool) throws {
            let fd = socket(AF_INET6, Int32(tcp ? SOCK_STREAM.rawValue : SOCK_DGRAM.rawValue), 0)
            var zero: Int32 = 0
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, 4)
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
            guard case (var addr, let len)? = Socket.address("::", port: port),
                  Socket.withAddress(&addr, { bind(fd, $0, len) }) == 0 else {
                throw ValidationError("cannot bind port \(port): errno \(errno)")
            }
            if tcp { listen(fd, 1024) } else { Datagram.enablePacketInfo(fd) }
            fds.append((fd, tcp))
        }
        for p in tcp.split(separator: ",").compactMap({ UInt16($0) }) { try listenOn(p, tcp: true) }
        for p in udp.split(separator: ",").compactMap({ UInt16($0) }) { try listenOn(p, tcp: false) }
        let httpIndex = fds.count
        if let http { try listenOn(http, tcp: true) }
        let prefix = Array("\(name):".utf8)
        var open: [Int32] = []
        while true {
            var polls = fds.map { pollfd(fd: $0.0, events: Int16(POLLIN), revents: 0) }
                + open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard poll(&polls, nfds_t(polls.count), -1) > 0 else { continue }
            for (i, p) in polls.enumerated() where p.revents != 0 {
                if i < fds.count {
                    let (fd, isTCP) = fds[i]
                    if isTCP && http != nil && i == httpIndex {
                        let c = accept(fd, nil, nil)
                        if c >= 0 { answerHTTP(c) }
                    } else if isTCP {
                        let c = accept(fd, nil, nil)
                        if c >= 0 { Socket.setTimeout(c, seconds: 5); open.append(c) }
                    } else {
                        Datagram.answer(fd, prefix: prefix)
                    }
                } else {
                    let c = p.fd
                    if let line = Socket.readLine(c), Socket.sendAll(c, prefix + line) { continue }
                    close(c)
                    open.removeAll { $0 == c }
                }
            }
        }
    }
}

extension Serve {
    /// Reads the request's first line and answers with the status the file says.
    func answerHTTP(_ c: Int32) {
        Socket.setTimeout(c, seconds: 2)
        _ = Socket.readLine(c)
        var status = 200
        if let path = httpStatusFile, let f = fopen(path, "r") {
            var line = [CChar](repeating: 0, count: 16)
            if fgets(&line, 16, f) != nil {
                status = Int(String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) ?? 200
            }
            fclose(f)
        }
        _ = Socket.sendAll(c, Array("HTTP/1.0 \(status) \(status == 200 ? "OK" : "Unavailable")\r\nContent-Length: 0\r\n\r\n".utf8))
        close(c)
    }
}

struct Result: Encodable {
    var ok = 0
    var failed = 0
    var perNode: [String: Int] = [:]
    var errors: [String] = []
}

func printJSON(_ r: Result) {
    let nodes = r.perNode.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
    let errors = r.errors.prefix(5).map { "\"\(String($0.map { $0 == "\"" ? "'" : $0 }))\"" }.joined(separator: ",")
    print("{\"ok\":\(r.ok),\"failed\":\(r.failed),\"perNode\":{\(nodes)},\"errors\":[\(errors)]}")
    fflush(nil)
}

/// One request on a connected socket; returns the serving node's name if the reply
/// echoes the payload exactly.
func exchange(_ fd: Int32, payload: [UInt8], datagram: Bool = false) -> Result? {
    guard Socket.sendAll(fd, payload) else { return nil }
    if datagram {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? check(Array(buffer[0..<n]), payload) : nil
    }
    guard let reply = Socket.readLine(fd) else { return nil }
    return check(reply, payload)
}

func check(_ reply: [UInt8], _ payload: [UInt8]) -> Result? {
    guard let colon = reply.firstIndex(of: 58), Array(reply[(colon + 1)...]) == payload else { return nil }
    var r = Result()
    r.ok = 1
    r.perNode[String(decoding: reply[..<colon], as: UTF8.self)] = 1
    return r
}

func connectTo(_ target: String, _ port: UInt16, tcp: Bool) -> Int32? {
    guard case (var addr, let len)? = Socket.address(target, port: port) else { return nil }
    let fd = socket(Int32(addr.ss_family), Int32(tcp ? SOCK_STREAM.rawValue : SOCK_DGRAM.rawValue), 0)
    Socket.setTimeout(fd, seconds: 3)
    guard Socket.withAddress(&addr, { connect(fd, $0, len) }) == 0 else {
        close(fd)
        return nil
    }
    return fd
}

func payload(_ i: Int, _ tag: String, size: Int = 0) -> [UInt8] {
    let text = "fulcrum \(tag) request \(i) \(UInt64.random(in: 0...UInt64.max)) "
    return Array((text + String(repeating: "x", count: max(0, size - text.utf8.count - 1)) + "\n").utf8)
}

struct Client: ParsableCommand {
    @Option var target: String
    @Option var port: UInt16
    @Option var proto: String = "tcp"
    @Option var count: Int = 300
    @Option(help: "Bytes per request (a UDP datagram over the MTU is fragmented).") var size: Int = 0
    @Flag(help: "A line for people instead of JSON.") var text = false

    func run() throws {
        var total = Result()
        var consecutiveFailures = 0
        for i in 0..<count {
            // A path that is down fails every request with a timeout: stop early so a
            // broken run takes seconds, not count × timeout.
            if consecutiveFailures >= 10 {
                total.failed += count - i
                total.errors.append("gave up after 10 consecutive failures")
                break
            }
            let tcp = proto == "tcp"
            let p = payload(i, proto, size: size)
            var outcome: Result?
            if let fd = connectTo(target, port, tcp: tcp) {
                outcome = exchange(fd, payload: p, datagram: !tcp)
                close(fd)
            }
            if let outcome {
                consecutiveFailures = 0
                total.ok += 1
                for (k, v) in outcome.perNode { total.perNode[k, default: 0] += v }
            } else {
                consecutiveFailures += 1
                total.failed += 1
                total.errors.append("request \(i): \(String(cString: strerror(errno)))")
            }
        }
        if text {
            let nodes = total.perNode.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            print("\(proto.uppercased()) \(target) port \(port): \(total.ok)/\(count) answered byte-exact   \(nodes)")
        } else {
            printJSON(total)
        }
    }
}

struct Hold: ParsableCommand {
    @Option var target: String
    @Option var port: UInt16
    @Option var count: Int = 20

    func run() throws {
        var held: [(Int32, String)] = []
        var first = Result()
        for i in 0..<count {
            guard let fd = connectTo(target, port, tcp: true), let r = exchange(fd, payload: payload(i, "first")) else {
                first.failed += 1
                continue
            }
            Socket.setTimeout(fd, seconds: 10)
            let node = r.perNode.keys.first!
            held.append((fd, node))
            first.ok += 1
            first.perNode[node, default: 0] += 1
        }
        printJSON(first)
        _ = readLine()
        var second = Result()
        for (i, (fd, node)) in held.enumerated() {
            if let r = exchange(fd, payload: payload(i, "second")), r.perNode[node] == 1 {
                second.ok += 1
                second.perNode[node, default: 0] += 1
            } else {
                second.failed += 1
                second.errors.append("held connection \(i) to \(node) broke")
            }
            close(fd)
        }
        printJSON(second)
    }
}


/// A UDP server behind direct server return must answer from the address it was asked
/// on (the VIP), not from whatever source the route would pick: it reads the request's
/// destination (IP_PKTINFO / IPV6_PKTINFO) and sends the reply from it. The control-message
/// layout is written out because CMSG_* are C macros.
enum Datagram {
    static let ipPacketInfo: Int32 = 8         // IP_PKTINFO
    static let ipv6ReceivePacketInfo: Int32 = 49  // IPV6_RECVPKTINFO
    static let ipv6PacketInfo: Int32 = 50      // IPV6_PKTINFO
    static let headerLength = MemoryLayout<cmsghdr>.size  // 16 on 64-bit Linux

    static func enablePacketInfo(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_IPV6), ipv6ReceivePacketInfo, &one, 4)
        setsockopt(fd, Int32(IPPROTO_IP), ipPacketInfo, &one, 4)
    }

    static func answer(_ fd: Int32, prefix: [UInt8]) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var control = [UInt8](repeating: 0, count: 256)
        var from = sockaddr_storage()
        var controlLength = 0
        let n: Int = buffer.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { ctl in
                withUnsafeMutablePointer(to: &from) { fromPointer in
                    var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                    return withUnsafeMutablePointer(to: &iov) { iovPointer in
                        var msg = msghdr(msg_name: UnsafeMutableRawPointer(fromPointer),
                                         msg_namelen: socklen_t(MemoryLayout<sockaddr_storage>.size),
                                         msg_iov: iovPointer, msg_iovlen: 1, msg_control: ctl.baseAddress,
                                         msg_controllen: ctl.count, msg_flags: 0)
                        let r = recvmsg(fd, &msg, 0)
                        if r >= 0 { controlLength = msg.msg_controllen }
                        return r
                    }
                }
            }
        }
        guard n > 0 else { return }
        control.removeSubrange(min(controlLength, control.count)...)
        // Find the packet-info message and turn it into the reply's source.
        var reply = prefix + buffer[0..<n]
        var out: [UInt8] = []
        var offset = 0
        while offset + headerLength <= control.count {
            let length = control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: Int.self) }
            let level = control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 8, as: Int32.self) }
            let type = control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 12, as: Int32.self) }
            guard length >= headerLength, offset + length <= control.count else { break }
            let data = Array(control[(offset + headerLength)..<(offset + length)])
            if level == Int32(IPPROTO_IPV6) && type == ipv6PacketInfo && data.count >= 20 {
                // struct in6_pktinfo { in6_addr addr; unsigned ifindex; }: send from addr.
                out = message(level: level, type: type, data: Array(data[0..<16]) + [0, 0, 0, 0])
            } else if level == Int32(IPPROTO_IP) && type == ipPacketInfo && data.count >= 12 {
                // struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }:
                // spec_dst := the address the request was sent to.
                out = message(level: level, type: type, data: [0, 0, 0, 0] + Array(data[8..<12]) + [0, 0, 0, 0])
            }
            offset += (length + 7) & ~7
        }
        let fromLength = socklen_t(from.ss_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size
                                                                           : MemoryLayout<sockaddr_in>.size)
        reply.withUnsafeMutableBytes { data in
            out.withUnsafeMutableBytes { ctl in
                withUnsafeMutablePointer(to: &from) { fromPointer in
                    var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                    withUnsafeMutablePointer(to: &iov) { iovPointer in
                        var msg = msghdr(msg_name: UnsafeMutableRawPointer(fromPointer), msg_namelen: fromLength,
                                         msg_iov: iovPointer, msg_iovlen: 1,
                                         msg_control: ctl.count > 0 ? ctl.baseAddress : nil,
                                         msg_controllen: ctl.count, msg_flags: 0)
                        _ = sendmsg(fd, &msg, 0)
                    }
                }
            }
        }
    }

    static func message(level: Int32, type: Int32, data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        withUnsafeBytes(of: headerLength + data.count) { out += $0 }
        withUnsafeBytes(of: level) { out += $0 }
        withUnsafeBytes(of: type) { out += $0 }
        out += data
        while out.count % 8 != 0 { out.append(0) }
        return out
    }
}

/// Connections held through a flood: each exchanges a message every `interval`; new ones
/// are opened every `newEvery`. A held connection breaks on a reset, a timeout, a wrong
/// answer or an answer from another node.
struct Chat: ParsableCommand {
    @Option var target: String
    @Option var port: UInt16
    @Option(help: "Connections opened before the loop starts.") var held: Int = 20
    @Option(help: "Seconds between two messages on a connection.") var interval: Double = 0.1
    @Option var seconds: Double = 10
    @Option(help: "Seconds between new connections (0: none).") var newEvery: Double = 0.5
    @Option(help: "At most this many connections are held.") var maxHeld: Int = 200

    struct Report {
        var opened = 0
        var failedNew = 0
        var broken = 0
        var exchanges = 0
        var maxGapMs = 0.0
        var maxOpenMs = 0.0
        var errors: [String] = []
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    func run() throws {
        var report = Report()
        // `opening`: the seconds this loop has spent opening new connections, read at a
        // connection's last answer. One thread does everything, so while a new
        // connection's SYN waits for its retransmission (1 s) no held connection is asked
        // anything: that time is the new connection's wait, reported as such, and is
        // taken out of the held connections' gaps, which are the LB's answer to them.
        var connections: [(fd: Int32, node: String, last: Double, opening: Double)] = []
        var opening = 0.0
        var sequence = 0
        func open() {
            sequence += 1
            let start = Self.now()
            let fd = connectTo(target, port, tcp: true)
            let r = fd.flatMap { exchange($0, payload: payload(sequence, "chat")) }
            let end = Self.now()
            opening += end - start
            report.maxOpenMs = max(report.maxOpenMs, (end - start) * 1000)
            guard let fd, let r else {
                report.failedNew += 1
                report.errors.append("new connection \(sequence): \(String(cString: strerror(errno)))")
                if let fd { close(fd) }
                return
            }
            connections.append((fd, r.perNode.keys.first!, end, opening))
            report.opened += 1
        }
        for _ in 0..<held { open() }
        report.maxOpenMs = 0  // the new connections' figure
        print("{\"ready\":\(connections.count)}")  // the caller may start what it tests now
        fflush(nil)
        let end = Self.now() + seconds
        var nextNew = Self.now() + newEvery
        var nextRound = Self.now()
        while Self.now() < end {
            if newEvery > 0 && Self.now() >= nextNew && connections.count < maxHeld {
                open()
                nextNew += newEvery
            }
            if Self.now() >= nextRound {
                nextRound += interval
                var i = 0
                while i < connections.count {
                    sequence += 1
                    let c = connections[i]
                    if let r = exchange(c.fd, payload: payload(sequence, "chat")), r.perNode[c.node] == 1 {
                        let t = Self.now()
                        report.maxGapMs = max(report.maxGapMs, (t - c.last - (opening - c.opening)) * 1000)
                        connections[i].last = t
                        connections[i].opening = opening
                        report.exchanges += 1
                        i += 1
                    } else {
                        report.broken += 1
                        report.errors.append("connection to \(c.node) broke: \(String(cString: strerror(errno)))")
                        close(c.fd)
                        connections.remove(at: i)
                    }
                }
            }
            usleep(2000)
        }
        for c in connections { close(c.fd) }
        let errors = report.errors.prefix(5).map { "\"\(String($0.map { $0 == "\"" ? "'" : $0 }))\"" }.joined(separator: ",")
        print("{\"opened\":\(report.opened),\"failedNew\":\(report.failedNew),\"broken\":\(report.broken),"
              + "\"exchanges\":\(report.exchanges),\"maxGapMs\":\(Int(report.maxGapMs.rounded(.up))),"
              + "\"maxOpenMs\":\(Int(report.maxOpenMs.rounded(.up))),\"errors\":[\(errors)]}")
        fflush(nil)
    }
}

/// One raw Ethernet frame out of an interface, `count` times.
struct SendFrame: ParsableCommand {
    @Option var interface: String
    @Option(help: "The frame, as hex digits.") var hex: String
    @Option var count: Int = 1

    func run() throws {
        let bytes = try hexBytes(hex)
        let index = if_nametoindex(interface)
        guard index > 0 else { throw ValidationError("no interface \(interface)") }
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), 0)
        guard fd >= 0 else { throw ValidationError("AF_PACKET socket: errno \(errno)") }
        defer { close(fd) }
        // struct sockaddr_ll: family, protocol, ifindex, hatype, pkttype, halen, addr[8].
        var address = [UInt8](repeating: 0, count: 20)
        withUnsafeBytes(of: UInt16(AF_PACKET)) { address.replaceSubrange(0..<2, with: $0) }
        withUnsafeBytes(of: Int32(index)) { address.replaceSubrange(4..<8, with: $0) }
        address[11] = 6
        address.replaceSubrange(12..<18, with: bytes[0..<6])
        for _ in 0..<count {
            let sent = bytes.withUnsafeBytes { frame in
                address.withUnsafeBytes { sendto(fd, frame.baseAddress, frame.count, 0,
                                                 $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), 20) }
            }
            guard sent == bytes.count else { throw ValidationError("sendto: errno \(errno)") }
        }
    }
}

/// UDP datagrams with the given payloads, each `count` times, as fast as they go (bad
/// agent reports, floods). Only to the target given.
struct SendDatagrams: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "datagrams")
    @Option var target: String
    @Option var port: UInt16
    @Option(help: "A payload as hex digits (repeatable: sent in turn).") var hex: [String] = []
    @Option(help: "Random payloads of this many bytes instead.") var randomBytes: Int?
    @Option var count: Int = 1

    func run() throws {
        var payloads: [[UInt8]] = []
        for h in hex { payloads.append(try hexBytes(h)) }
        guard let (address, length) = Socket.address(target, port: port) else { throw ValidationError("--target: not an address") }
        let fd = socket(Int32(address.ss_family), Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw ValidationError("socket: errno \(errno)") }
        defer { close(fd) }
        var sent = 0
        var random = SystemRandomNumberGenerator()
        for _ in 0..<count {
            let batch = randomBytes.map { n in [(0..<n).map { _ in UInt8.random(in: 0...255, using: &random) }] } ?? payloads
            for payload in batch {
                var a = address
                let r = payload.withUnsafeBytes { b in
                    withUnsafePointer(to: &a) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, b.count, 0, $0, length) }
                    }
                }
                if r >= 0 { sent += 1 }
            }
        }
        print("{\"sent\":\(sent)}")
    }
}

/// `--hex` digits as bytes (an odd count gets a trailing 0).
func hexBytes(_ hex: String) throws -> [UInt8] {
    var bytes: [UInt8] = []
    var digits = Array(hex.utf8)
    if digits.count % 2 == 1 { digits.append(0x30) }
    for i in stride(from: 0, to: digits.count, by: 2) {
        guard let b = UInt8(String(decoding: digits[i..<(i + 2)], as: UTF8.self), radix: 16) else {
            throw ValidationError("--hex: not hex at \(i)")
        }
        bytes.append(b)
    }
    return bytes
}
