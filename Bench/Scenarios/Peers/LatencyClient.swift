import FulcrumBPF
import FulcrumCore
import FulcrumTestSupport
import Foundation
import Histogram
import FulcrumSystem

/// Round trips of HTTP/1.1 requests on kept-alive connections at a fixed offered rate
/// (open loop: requests are due on a schedule, whatever the answers do), recorded in an
/// HDR histogram in microseconds. Each round trip is timed from the request's write to
/// the end of its response; a request that finds every connection busy waits for one,
/// and that wait counts in its time (it is the queueing a user would see).
struct LatencyClient {
    var target: IPAddress
    var port: UInt16
    var connections: Int
    var rate: Double
    var seconds: Double
    /// Each request is numbered from here ("GET /?NNNNNNNN"), so that bench_stamp and
    /// bench_reply can time its way through the LB; nil: every request is "GET /".
    var firstID: Int? = nil

    struct Result {
        var histogram: Histogram<UInt64>
        var sent: Int
        var completed: Int
        var errors: Int
        var queued: Int
        var seconds: Double
    }

    static let request = Array("GET / HTTP/1.1\r\nHost: fulcrum-bench\r\n\r\n".utf8)

    /// Request number `id` (eight digits, so that every request has the same length).
    static func request(_ id: Int) -> [UInt8] {
        let digits = String(id % 100_000_000)
        return Array("GET /?\(String(repeating: "0", count: 8 - digits.count))\(digits) HTTP/1.1\r\nHost: fulcrum-bench\r\n\r\n".utf8)
    }

    final class Connection {
        var fd: Int32
        var due: Double = 0
        var busy = false
        var buffer: [UInt8] = []
        init(fd: Int32) { self.fd = fd }
    }

    func connect() throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = UInt32(target.ipv4).bigEndian
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else {
            let e = errno
            close(fd)
            throw SystemError("connect \(target):\(port)", errno: e)
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return fd
    }

    /// The length of a complete response at the start of `b`, or nil while incomplete.
    static func responseLength(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        var end = -1
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 {
            end = i + 4
            break
        }
        guard end > 0 else { return nil }
        let head = String(decoding: b[0..<end], as: UTF8.self).lowercased()
        var length = 0
        if let r = head.range(of: "content-length:") {
            length = Int(head[r.upperBound...].prefix { $0 != "\r" }.trimmingCharacters(in: .whitespaces)) ?? 0
        }
        return b.count >= end + length ? end + length : nil
    }

    func run() throws -> Result {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var pool = try (0..<connections).map { _ in Connection(fd: try connect()) }
        defer { for c in pool { close(c.fd) } }
        var waiting: [Double] = []  // due times of requests not yet written
        var sent = 0, completed = 0, errors = 0, queued = 0
        let start = monotonic()
        let end = start + seconds
        var k = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let now = monotonic()
            if now < end {
                while start + Double(k) / rate <= now {
                    waiting.append(start + Double(k) / rate)
                    k += 1
                }
            } else if pool.allSatisfy({ !$0.busy }) || now > end + 2 {
                break
            }
            for c in pool where !c.busy && !waiting.isEmpty {
                let due = waiting.removeFirst()
                if now - due > 0.001 { queued += 1 }
                let request = firstID.map { Self.request($0 + sent) } ?? Self.request
                let n = request.withUnsafeBytes { write(c.fd, $0.baseAddress, $0.count) }
                if n != request.count { errors += 1; continue }
                c.due = monotonic() - max(0, now - due)  // a wait for a free connection counts
                c.busy = true
                sent += 1
            }
            var fds = pool.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            let next = start + Double(k) / rate
            let timeout = now >= end ? 10 : Int32(max(0, min(10, (next - monotonic()) * 1000)))
            guard poll(&fds, nfds_t(fds.count), timeout) >= 0 else { continue }
            for (i, p) in fds.enumerated() where p.revents != 0 {
                let c = pool[i]
                let n = read(c.fd, &buffer, buffer.count)
                if n <= 0 {
                    if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
                    errors += 1
                    close(c.fd)
                    pool[i] = Connection(fd: (try? connect()) ?? -1)
                    if pool[i].fd < 0 { throw Testbed.Failure(description: "latency: lost the connection to \(target)") }
                    continue
                }
                c.buffer += buffer[0..<n]
                if let length = Self.responseLength(c.buffer) {
                    let rtt = monotonic() - c.due
                    _ = histogram.record(UInt64(max(1, rtt * 1e6)))
                    c.buffer.removeFirst(length)
                    c.busy = false
                    completed += 1
                }
            }
        }
        return Result(histogram: histogram, sent: sent, completed: completed, errors: errors, queued: queued,
                      seconds: monotonic() - start)
    }
}
