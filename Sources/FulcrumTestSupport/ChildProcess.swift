#if canImport(Glibc)
import Glibc
#endif

/// A child process started with posix_spawn and reaped with waitpid. (Foundation's
/// Process on Linux can miss a child's exit when waited for off the main thread,
/// leaving a zombie and a hung test; this has no such machinery.)
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    private var exitStatus: Int32?
    /// Read end of the child's stdout+stderr when `capture` was asked for.
    public let outputFD: Int32?
    /// Write end of the child's stdin when `stdinPipe` was asked for.
    public let inputFD: Int32?

    public struct SpawnError: Error, CustomStringConvertible {
        public var description: String
    }

    /// - Parameters:
    ///   - outputPath: send stdout and stderr to this file (appending), else to a pipe
    ///     readable through `outputFD` when `capture`, else to /dev/null.
    public init(_ argv: [String], outputPath: String? = nil, capture: Bool = false, stdinPipe: Bool = false) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var outPipe: [Int32] = [-1, -1]
        var inPipe: [Int32] = [-1, -1]
        if stdinPipe {
            guard ChildProcess.cloexecPipe(&inPipe) else { throw SpawnError(description: "pipe: errno \(errno)") }
            posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        if let outputPath {
            posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        } else if capture {
            guard ChildProcess.cloexecPipe(&outPipe) else { throw SpawnError(description: "pipe: errno \(errno)") }
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 2)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        // A child starts with no signal blocked and every handler at its default: a
        // thread's mask is inherited across exec, and a test runner's or the daemon's
        // signal handling must not keep SIGTERM from a peer it starts.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var child: pid_t = 0
        let r = posix_spawnp(&child, argv[0], &actions, &attributes, &cArgs, environ)
        if outPipe[1] >= 0 { close(outPipe[1]) }
        if inPipe[0] >= 0 { close(inPipe[0]) }
        guard r == 0 else {
            if outPipe[0] >= 0 { close(outPipe[0]) }
            if inPipe[1] >= 0 { close(inPipe[1]) }
            throw SpawnError(description: "spawn \(argv[0]): \(String(cString: strerror(r)))")
        }
        pid = child
        outputFD = capture ? outPipe[0] : nil
        inputFD = stdinPipe ? inPipe[1] : nil
    }

    /// A pipe whose ends are not inherited by other children (the dup2'd copies are).
    static func cloexecPipe(_ fds: inout [Int32]) -> Bool {
        guard pipe(&fds) == 0 else { return false }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return true
    }

    deinit {
        if let outputFD { close(outputFD) }
        if let inputFD { close(inputFD) }
    }

    /// Runs to completion; returns the exit status and everything it printed.
    public static func run(_ argv: [String]) throws -> (Int32, String) {
        let p = try ChildProcess(argv, capture: true)
        let output = p.readAll()
        return (p.wait(), output)
    }

    public func readAll() -> String {
        guard let fd = outputFD else { return "" }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// One line of output (without the newline), or nil at EOF.
    public func readLine() -> String? {
        guard let fd = outputFD else { return nil }
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let n = read(fd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
            if byte == 10 { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
    }

    public func write(_ text: String) {
        guard let fd = inputFD else { return }
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }

    public func signal(_ s: Int32) { kill(pid, s) }

    /// Exit status (or 128 + signal), waiting for it.
    @discardableResult
    public func wait() -> Int32 {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        exitStatus = code
        return code
    }

    public var isRunning: Bool {
        if exitStatus != nil { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid {
            exitStatus = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
            return false
        }
        return true
    }
}
