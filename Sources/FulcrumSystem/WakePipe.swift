#if canImport(Glibc)
import Glibc
#endif

/// Ends a control thread's `poll` from another thread: the read end goes in the poll
/// set, `wake()` writes a byte, `drain()` empties it. Used by the forwarding loop, the
/// health checker and the agent listener.
public final class WakePipe: Sendable {
    public let readFD: Int32
    let writeFD: Int32

    public init() throws {
        var fds: [Int32] = [-1, -1]
        try SystemCall.run("pipe") { pipe(&fds) }
        for f in fds {
            _ = fcntl(f, F_SETFD, FD_CLOEXEC)
            _ = fcntl(f, F_SETFL, O_NONBLOCK)
        }
        readFD = fds[0]
        writeFD = fds[1]
    }

    deinit {
        close(readFD)
        close(writeFD)
    }

    public func wake() {
        var one: UInt8 = 1
        _ = write(writeFD, &one, 1)  // full: a wake-up is already pending
    }

    public func drain() {
        var bytes = [UInt8](repeating: 0, count: 64)
        while read(readFD, &bytes, bytes.count) > 0 {}
    }

    /// Waits up to `milliseconds` for a wake-up (or for `others` to be ready); returns
    /// the poll set as it came back, this pipe's entry first.
    @discardableResult
    public func wait(_ milliseconds: Int32, also others: [pollfd] = []) -> [pollfd] {
        var fds = [pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)] + others
        _ = poll(&fds, nfds_t(fds.count), milliseconds)
        if fds[0].revents != 0 { drain() }
        return fds
    }
}
