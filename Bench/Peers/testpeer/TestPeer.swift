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
import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

@main
struct TestPeer: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fulcrum-testpeer",
                                                    subcommands: [Serve.self, Client.self, Hold.self])
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

    func run() throws {
        var fds: [(Int32, Bool)] = []
        func listenOn(_ port: UInt16, tcp: Bool) throws {
            let fd = socket(AF_INET6, Int32(tcp ? SOCK_STREAM.rawValue : SOCK_DGRAM.rawValue), 0)
            var zero: Int32 = 0
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, 4)
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
            guard var (addr, len) = Socket.address("::", port: port),
                  Socket.withAddress(&addr, { bind(fd, $0, len) }) == 0 else {
                throw ValidationError("cannot bind port \(port): errno \(errno)")
            }
            if tcp { listen(fd, 1024) }
            fds.append((fd, tcp))
        }
        for p in tcp.split(separator: ",").compactMap({ UInt16($0) }) { try listenOn(p, tcp: true) }
        for p in udp.split(separator: ",").compactMap({ UInt16($0) }) { try listenOn(p, tcp: false) }
        let prefix = Array("\(name):".utf8)
        var open: [Int32] = []
        while true {
            var polls = fds.map { pollfd(fd: $0.0, events: Int16(POLLIN), revents: 0) }
                + open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard poll(&polls, nfds_t(polls.count), -1) > 0 else { continue }
            for (i, p) in polls.enumerated() where p.revents != 0 {
                if i < fds.count {
                    let (fd, isTCP) = fds[i]
                    if isTCP {
                        let c = accept(fd, nil, nil)
                        if c >= 0 { Socket.setTimeout(c, seconds: 5); open.append(c) }
                    } else {
                        var buffer = [UInt8](repeating: 0, count: 65536)
                        var from = sockaddr_storage()
                        var fromLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
                        let n = withUnsafeMutablePointer(to: &from) {
                            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, 0, $0, &fromLength) }
                        }
                        if n > 0 {
                            let reply = prefix + buffer[0..<n]
                            _ = Socket.withAddress(&from) { sendto(fd, reply, reply.count, 0, $0, fromLength) }
                        }
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
    guard var (addr, len) = Socket.address(target, port: port) else { return nil }
    let fd = socket(Int32(addr.ss_family), Int32(tcp ? SOCK_STREAM.rawValue : SOCK_DGRAM.rawValue), 0)
    Socket.setTimeout(fd, seconds: 3)
    guard Socket.withAddress(&addr, { connect(fd, $0, len) }) == 0 else {
        close(fd)
        return nil
    }
    return fd
}

func payload(_ i: Int, _ tag: String) -> [UInt8] {
    Array("fulcrum \(tag) request \(i) \(UInt64.random(in: 0...UInt64.max))\n".utf8)
}

struct Client: ParsableCommand {
    @Option var target: String
    @Option var port: UInt16
    @Option var proto: String = "tcp"
    @Option var count: Int = 300
    @Flag(help: "A line for people instead of JSON.") var text = false

    func run() throws {
        var total = Result()
        for i in 0..<count {
            let tcp = proto == "tcp"
            let p = payload(i, proto)
            var outcome: Result?
            if let fd = connectTo(target, port, tcp: tcp) {
                outcome = exchange(fd, payload: p, datagram: !tcp)
                close(fd)
            }
            if let outcome {
                total.ok += 1
                for (k, v) in outcome.perNode { total.perNode[k, default: 0] += v }
            } else {
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
