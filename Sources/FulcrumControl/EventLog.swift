import Foundation
import Synchronization

/// Something an operator should be able to find later: the daemon started or stopped, a
/// configuration was applied or rejected, a node's MAC was learnt or lost, a NAT reply
/// could not be routed. (Node up/down and failover/failback join with their issues.)
public struct Event: Codable, Sendable, Equatable {
    public enum Severity: String, Codable, Sendable, Comparable, CaseIterable {
        case info, notice, warning, error

        public static func < (a: Severity, b: Severity) -> Bool {
            allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
        }
    }

    /// Monotonic across restarts (it continues from the file).
    public var sequence: UInt64
    public var time: Date
    public var severity: Severity
    /// A dotted name: `daemon.started`, `config.applied`, `config.rejected`, …
    public var kind: String
    public var message: String
    public var fields: [String: String]

    public init(sequence: UInt64 = 0, time: Date = Date(), severity: Severity, kind: String, message: String,
                fields: [String: String] = [:]) {
        self.sequence = sequence
        self.time = time
        self.severity = severity
        self.kind = kind
        self.message = message
        self.fields = fields
    }
}

/// The event log: the most recent events in a bounded ring in memory, and every event
/// appended as one JSON line to a file that survives restarts and is rotated by size
/// (`file`, `file.1`, … `file.<keep>`). At start the ring is refilled from the file, and
/// sequence numbers continue where it ended. A line that cannot be read (a file cut by a
/// crash mid-write) is skipped.
public final class EventLog: Sendable {
    public let file: String?
    public let capacity: Int
    public let maxFileBytes: Int
    public let keep: Int
    private let state: Mutex<State>

    struct State {
        var ring: [Event] = []
        var next: UInt64 = 1
        var handle: FileHandle?
        var fileBytes = 0
    }

    public static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }()

    /// - Parameters:
    ///   - file: the JSON-lines file; nil keeps events in memory only.
    ///   - capacity: events kept in memory (and reloaded from the file at start).
    ///   - maxFileBytes: the file is rotated when an append would take it past this.
    ///   - keep: rotated files kept.
    public init(file: String?, capacity: Int = 1000, maxFileBytes: Int = 10 << 20, keep: Int = 3) throws {
        precondition(capacity > 0 && maxFileBytes > 0 && keep >= 0)
        self.file = file
        self.capacity = capacity
        self.maxFileBytes = maxFileBytes
        self.keep = keep
        var initial = State()
        if let file {
            let directory = (file as NSString).deletingLastPathComponent
            if !directory.isEmpty {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            // The ring and the sequence continue from the newest file, then the rotated ones.
            var recent: [Event] = []
            for path in [file] + (1...max(1, keep)).map({ "\(file).\($0)" }) where recent.count < capacity {
                guard let data = FileManager.default.contents(atPath: path) else { continue }
                let events = data.split(separator: UInt8(ascii: "\n")).compactMap {
                    try? EventLog.decoder.decode(Event.self, from: Data($0))
                }
                recent = events + recent
            }
            initial.ring = Array(recent.suffix(capacity))
            initial.next = (recent.map(\.sequence).max() ?? 0) + 1
            if !FileManager.default.fileExists(atPath: file) {
                _ = FileManager.default.createFile(atPath: file, contents: nil)
            }
            guard let handle = FileHandle(forWritingAtPath: file) else {
                throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: file])
            }
            initial.fileBytes = Int(try handle.seekToEnd())
            // A crash in the middle of a write leaves a line without its end: end it, so
            // that the next event starts a line of its own.
            if let data = FileManager.default.contents(atPath: file), let last = data.last, last != UInt8(ascii: "\n") {
                handle.write(Data("\n".utf8))
                initial.fileBytes += 1
            }
            initial.handle = handle
        }
        state = Mutex(initial)
    }

    /// Records an event (its sequence is set here) and returns it as recorded.
    @discardableResult
    public func record(_ event: Event) -> Event {
        state.withLock { s in
            var e = event
            e.sequence = s.next
            s.next += 1
            s.ring.append(e)
            if s.ring.count > capacity { s.ring.removeFirst(s.ring.count - capacity) }
            if s.handle != nil, var line = try? EventLog.encoder.encode(e) {
                line.append(UInt8(ascii: "\n"))
                if s.fileBytes + line.count > maxFileBytes { rotate(&s) }
                s.handle?.write(line)
                s.fileBytes += line.count
            }
            return e
        }
    }

    public func record(_ severity: Event.Severity, _ kind: String, _ message: String, _ fields: [String: String] = [:]) {
        record(Event(severity: severity, kind: kind, message: message, fields: fields))
    }

    /// `file.keep` is dropped, each `file.n` becomes `file.n+1`, the file becomes `file.1`,
    /// and a new file is started.
    private func rotate(_ s: inout State) {
        guard let file else { return }
        try? s.handle?.close()
        let fm = FileManager.default
        if keep == 0 {
            try? fm.removeItem(atPath: file)
        } else {
            try? fm.removeItem(atPath: "\(file).\(keep)")
            for n in stride(from: keep - 1, through: 1, by: -1) where fm.fileExists(atPath: "\(file).\(n)") {
                try? fm.moveItem(atPath: "\(file).\(n)", toPath: "\(file).\(n + 1)")
            }
            try? fm.moveItem(atPath: file, toPath: "\(file).1")
        }
        _ = fm.createFile(atPath: file, contents: nil)
        s.handle = FileHandle(forWritingAtPath: file)
        s.fileBytes = 0
    }

    /// The events in memory with a sequence after `after`, oldest first (the latest
    /// `limit` of them).
    /// The sequence number of the latest event (0: none yet).
    public var lastSequence: UInt64 { state.withLock { $0.next - 1 } }

    public func events(after: UInt64 = 0, limit: Int = .max) -> [Event] {
        state.withLock { s in Array(s.ring.filter { $0.sequence > after }.suffix(limit)) }
    }

    /// Reads the events of a log file (and its rotated files), oldest first, as `fulcrum
    /// events` does without a running daemon.
    public static func read(file: String, keep: Int = 3) -> [Event] {
        var out: [Event] = []
        for path in ((1...max(1, keep)).reversed().map { "\(file).\($0)" }) + [file] {
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            out += data.split(separator: UInt8(ascii: "\n")).compactMap { try? decoder.decode(Event.self, from: Data($0)) }
        }
        return out
    }

    deinit {
        state.withLock { s in try? s.handle?.close() }
    }
}

/// An event as a line for people: time, severity, kind, message.
public enum EventText {
    public static func line(_ e: Event) -> String {
        let time = e.time.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: false))
        return "\(time)  \(e.severity.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0))  \(e.kind)  \(e.message)"
    }
}
