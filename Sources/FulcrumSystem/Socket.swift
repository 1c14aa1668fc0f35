import FulcrumCore
#if canImport(Glibc)
import Glibc
#endif

/// Every socket the product opens goes through here: opened close-on-exec, errors typed
/// (`SystemError`), EINTR retried, EAGAIN a value (nil). The descriptor is the caller's
/// to close (`Socket.close`), or a `UDPSocket`'s.
public enum Socket {
    public static func open(family: Int32, type: Int32, protocol proto: Int32 = 0, nonBlocking: Bool = false,
                            _ what: @autoclosure () -> String = "socket") throws -> Int32 {
        let flags = Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        return try SystemCall.run(what()) { socket(family, type | flags, proto) }
    }

    public static func bindTo(_ fd: Int32, _ address: SocketAddress) throws {
        try address.withSockaddr { sa, length in
            _ = try SystemCall.run("bind to \(address)") { Glibc.bind(fd, sa, length) }
        }
    }

    /// Binds to raw `sockaddr` bytes (netlink, AF_XDP).
    public static func bindTo(_ fd: Int32, raw: UnsafeRawBufferPointer, _ what: @autoclosure () -> String) throws {
        try SystemCall.run(what()) { Glibc.bind(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count)) }
    }

    /// Starts a connection; true when it completed at once (UDP, raw, loopback), false
    /// when it is in progress (a non-blocking TCP connect).
    public static func connect(_ fd: Int32, to address: SocketAddress) throws -> Bool {
        try address.withSockaddr { sa, length in
            while true {
                if Glibc.connect(fd, sa, length) == 0 { return true }
                switch errno {
                case EINTR: continue
                case EINPROGRESS: return false
                default: throw SystemError("connect to \(address)", errno: errno)
                }
            }
        }
    }

    public static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws {
        var v = value
        try SystemCall.run("setsockopt \(level)/\(name)") { setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// A pending error of a non-blocking connect (SO_ERROR); 0 when it succeeded.
    public static func pendingError(_ fd: Int32) -> Int32 {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 ? error : errno
    }

    /// Sends on a connected socket; nil when it would block.
    public static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, flags: Int32 = Int32(MSG_NOSIGNAL)) throws -> Int? {
        try SystemCall.runNonBlocking("send") { Glibc.send(fd, bytes.baseAddress, bytes.count, flags) }
    }

    /// Receives on a connected socket; nil when nothing is there.
    public static func receive(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        try SystemCall.runNonBlocking("recv") { recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT)) }
    }

    public static func sendTo(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ target: SocketAddress) throws -> Int? {
        try target.withSockaddr { sa, length in
            try SystemCall.runNonBlocking("send to \(target)") { sendto(fd, bytes.baseAddress, bytes.count, 0, sa, length) }
        }
    }

    /// One datagram and who sent it; nil when none is queued. `size` is the datagram's
    /// length, which may exceed the buffer (MSG_TRUNC).
    public static func receiveFrom(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws -> (size: Int, from: SocketAddress?)? {
        var from = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = try withUnsafeMutablePointer(to: &from) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                try SystemCall.runNonBlocking("recvfrom") {
                    recvfrom(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT) | Int32(MSG_TRUNC), sa, &length)
                }
            }
        }
        guard let n else { return nil }
        return (n, SocketAddress(from))
    }

    /// An AF_XDP kick (a zero-length send or receive tells the kernel to look at a ring).
    /// On the packet path: no allocation, no throw; the kernel's answer does not matter.
    @inlinable @inline(__always)
    public static func kickTransmit(_ fd: Int32) -> Bool { sendto(fd, nil, 0, Int32(MSG_DONTWAIT), nil, 0) >= 0 }

    @inlinable @inline(__always)
    public static func kickReceive(_ fd: Int32) { _ = recvfrom(fd, nil, 0, Int32(MSG_DONTWAIT), nil, nil) }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// A connection waiting on a listening socket, with its peer's address; nil when none is.
    /// The connection blocks (O_NONBLOCK is not inherited): give it timeouts.
    public static func accept(_ listener: Int32) throws -> (fd: Int32, from: SocketAddress?)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = try withUnsafeMutablePointer(to: &storage) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                try SystemCall.runNonBlocking("accept") { Int(Glibc.accept(listener, sa, &length)) }
            }
        }
        guard let fd else { return nil }
        _ = fcntl(Int32(fd), F_SETFD, FD_CLOEXEC)
        return (Int32(fd), SocketAddress(storage))
    }

    /// Receive and send timeouts of a blocking socket (SO_RCVTIMEO, SO_SNDTIMEO).
    public static func setTimeouts(_ fd: Int32, seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Exactly `count` bytes from a blocking socket, or nil (closed, timed out, failed).
    public static func receiveExactly(_ fd: Int32, _ count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
            if n < 0 && Glibc.errno == EINTR { continue }
            guard n > 0 else { return nil }
            got += n
        }
        return out
    }
}

/// A non-blocking UDP socket: the agents' listener, fulcrum-agent's sender, the pair's
/// heartbeats to come. Closed when it goes.
public final class UDPSocket: @unchecked Sendable {
    public let fd: Int32

    /// `dualStack`: an IPv6 socket that also takes IPv4 (as IPv4-mapped addresses).
    public init(family: Int32, dualStack: Bool = false) throws {
        fd = try Socket.open(family: family, type: Int32(SOCK_DGRAM.rawValue), nonBlocking: true, "UDP socket")
        if dualStack {
            do { try Socket.setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 0) } catch {
                Socket.close(fd)
                throw error
            }
        }
    }

    deinit { Socket.close(fd) }

    public func bindTo(_ address: SocketAddress) throws { try Socket.bindTo(fd, address) }

    public func setOption(_ level: Int32, _ name: Int32, _ value: Int32) throws { try Socket.setOption(fd, level, name, value) }

    /// A receive buffer of `bytes`, past the system's maximum where this process may.
    public func setReceiveBuffer(_ bytes: Int32) {
        if (try? setOption(SOL_SOCKET, SO_RCVBUFFORCE, bytes)) == nil { try? setOption(SOL_SOCKET, SO_RCVBUF, bytes) }
    }

    public func send(_ bytes: [UInt8], to target: SocketAddress) throws -> Bool {
        try bytes.withUnsafeBytes { try Socket.sendTo(fd, $0, target) } != nil
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> (size: Int, from: SocketAddress?)? {
        try Socket.receiveFrom(fd, into: buffer)
    }
}
