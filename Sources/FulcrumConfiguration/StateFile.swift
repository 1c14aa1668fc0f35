import FulcrumAPIModels
import FulcrumDataplane
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The committed load-balancing configuration on disk, so that changes made through the
/// API outlive a restart. Written whole to a temporary file, fsynced, renamed over the old
/// one and the directory fsynced: after a crash at any point the file is the previous
/// version or the new one, never a mix. It is the configuration's persistence, not status
/// (that is the status file, `StatusModel`), so it lives beside the configuration's loading.
///
/// Which wins at start (Docs/OPERATIONS.md): the state, if the configuration file's groups
/// are still those the state was derived from (`sourceHash`); the file, if the operator
/// has edited its groups since (its version then follows the state's).
public struct StateFile: Codable, Sendable, Equatable {
    public var version: Int
    public var hash: String
    /// The hash of the configuration file's groups when this state began from them.
    public var sourceHash: String
    public var groups: [GroupModel]

    enum CodingKeys: String, CodingKey {
        case version, hash, groups
        case sourceHash = "source_hash"
    }

    public init(version: Int, hash: String, sourceHash: String, groups: [GroupModel]) {
        self.version = version
        self.hash = hash
        self.sourceHash = sourceHash
        self.groups = groups
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Claims the state file for this daemon (a `FileLock` on `<path>.lock` beside it, held
    /// until the process exits): two daemons on one host with one state file would read and
    /// overwrite each other's committed configuration.
    public static func claim(_ path: String) throws -> FileLock {
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory.isEmpty ? "." : directory, withIntermediateDirectories: true)
        do {
            return try FileLock(path: path + ".lock")
        } catch let held as FileLock.Held {
            throw Failure(description: "state_file \(path) is in use by another fulcrum (\(held.holder)); give each daemon on this host its own state_file")
        }
    }

    /// nil when there is no file; throws when there is one that cannot be read.
    public static func read(_ path: String) throws -> StateFile? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Failure(description: "\(path): cannot be read: \(String(cString: strerror(errno)))")
        }
        do {
            return try JSONDecoder().decode(StateFile.self, from: data)
        } catch {
            throw Failure(description: "\(path): is not a Fulcrum state file (\(error)); move it away to start from the configuration file")
        }
    }

    /// The JSON of the groups alone, as `ConfigLoader.parseBalancing` reads them back.
    public var groupsDocument: String {
        let data = (try? BalancingConfig.encoder.encode(BalancingConfigModel(groups: groups))) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The file written around the groups' canonical text (no second encoding of them).
    public static func write(version: Int, hash: String, sourceHash: String, canonicalGroups: Data, to path: String) throws {
        // canonicalGroups is {"groups":[…]}: its members go in as they are.
        var out = Data(#"{"hash":"\#(hash)","source_hash":"\#(sourceHash)","version":\#(version),"#.utf8)
        out.append(canonicalGroups.dropFirst())
        try writeAtomically(out, to: path)
    }

    /// temp file + fsync + rename + fsync of the directory.
    static func writeAtomically(_ data: Data, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temporary = "\(path).tmp.\(getpid())"
        func fail(_ what: String) -> Failure {
            Failure(description: "\(what) \(temporary): \(String(cString: strerror(errno)))")
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw fail("cannot create") }
        var ok = data.withUnsafeBytes { raw -> Bool in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 { if errno == EINTR { continue }; return false }
                offset += n
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok else {
            let error = fail("cannot write")
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let error = fail("cannot rename to \(path):")
            unlink(temporary)
            throw error
        }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }
}
