import FulcrumBPF
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive claim for the life of this process: an `flock` on a lock file, which the
/// kernel drops when the process exits however it exits. Two daemons claiming one thing,
/// one after the other or at the same instant, end with exactly one holding it and the
/// other told which process does.
public final class FileLock: @unchecked Sendable {
    public let path: String
    private var fd: Int32

    /// Who holds a lock that could not be taken: "pid N", or the lock file when the kernel
    /// does not say.
    public struct Held: Error, CustomStringConvertible {
        public var path: String
        public var holder: String
        public var description: String { "\(path) is locked by \(holder)" }
    }

    public init(path: String) throws {
        self.path = path
        let fd = try SystemCall.run("open \(path)") { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }
        self.fd = fd
        do {
            try SystemCall.run("lock \(path)") { flock(fd, LOCK_EX | LOCK_NB) }
        } catch let error as SystemError where error.errno == EWOULDBLOCK {
            // The kernel says who holds the lock (/proc/locks); the pid in the file may be
            // a previous holder's until the new one has written its own.
            var holder = FileLock.lockHolder(fd)
            for _ in 0..<50 where holder == nil {
                usleep(2_000)
                holder = FileLock.lockHolder(fd) ?? FileLock.readHolder(fd)
            }
            close(fd)
            self.fd = -1
            throw Held(path: path, holder: holder.map { "pid \($0)" } ?? "lock \(path)")
        } catch {
            close(fd)
            self.fd = -1
            throw error
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// The pid holding an flock on `fd`'s file, from /proc/locks
    /// (`1: FLOCK  ADVISORY  WRITE 1234 00:19:5678 0 EOF`).
    static func lockHolder(_ fd: Int32) -> Int32? {
        var st = stat()
        guard fstat(fd, &st) == 0, let f = fopen("/proc/locks", "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 512)
        while fgets(&line, 512, f) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let fields = text.split(separator: " ")
            guard fields.count >= 6, fields[1] == "FLOCK" else { continue }
            let device = fields[5].split(separator: ":")
            guard device.count == 3, UInt64(device[2]) == UInt64(st.st_ino) else { continue }
            return Int32(fields[4])
        }
        return nil
    }

    static func readHolder(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return Int32(String(decoding: buffer.prefix(n).filter { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self))
    }

    deinit {
        if fd >= 0 { close(fd) }
    }
}

/// A data-plane interface claimed for this process: a `FileLock` on
/// /run/fulcrum/<netns>-<interface>.lock, taken before any queue is touched.
///
/// The network namespace's inode is part of the name: interface names repeat across
/// namespaces (every testbed has an `eth-c`), and /run is shared by them.
enum InterfaceLock {
    static var directory: String {
        if let dir = getenv("FULCRUM_RUN_DIR") { return String(cString: dir) }
        return "/run/fulcrum"
    }

    static func claim(_ interface: String) throws -> FileLock {
        let dir = directory
        if mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw SystemError("create \(dir)", errno: errno)
        }
        var ns = stat()
        let namespace = stat("/proc/self/ns/net", &ns) == 0 ? "\(ns.st_ino)" : "host"
        do {
            return try FileLock(path: "\(dir)/\(namespace)-\(interface).lock")
        } catch let held as FileLock.Held {
            throw DataplaneError.interfaceInUse(interface: interface, by: held.holder)
        }
    }
}
