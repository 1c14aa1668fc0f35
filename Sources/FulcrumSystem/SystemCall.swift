#if canImport(Glibc)
import Glibc
#endif

/// An errno from a system or libbpf call, with what was being done.
public struct SystemError: Error, CustomStringConvertible, Equatable {
    public var operation: String
    public var errno: Int32

    public init(_ operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String { "\(operation): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// The one funnel for system calls (as NIO's System.swift): retries EINTR, turns EAGAIN
/// into `nil`, and any other failure into a typed error.
public enum SystemCall {
    /// For calls that return -1 and set errno.
    @discardableResult
    public static func run(_ operation: @autoclosure () -> String, _ body: () -> Int32) throws -> Int32 {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw SystemError(operation(), errno: e)
        }
    }

    /// Same, but EAGAIN/EWOULDBLOCK is "not now" (`nil`), not an error.
    public static func runNonBlocking(_ operation: @autoclosure () -> String, _ body: () -> Int) throws -> Int? {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw SystemError(operation(), errno: e)
        }
    }

    /// For libbpf/libxdp calls that return a negative errno.
    @discardableResult
    public static func libbpf(_ operation: @autoclosure () -> String, _ body: () -> Int32) throws -> Int32 {
        let r = body()
        if r < 0 { throw SystemError(operation(), errno: -r) }
        return r
    }
}
