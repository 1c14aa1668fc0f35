import FulcrumConfiguration
import Foundation
import FulcrumControl
import Testing

@Suite struct EventLogTests {
    func temporaryFile() -> String {
        let dir = NSTemporaryDirectory() + "fulcrum-events-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        return dir + "/events.jsonl"
    }

    @Test func eventsAreNumberedAndTheRingIsBounded() throws {
        let log = try EventLog(file: nil, capacity: 10)
        for i in 0..<25 { log.record(.info, "test.event", "event \(i)") }
        let events = log.events()
        #expect(events.count == 10)
        #expect(events.map(\.sequence) == Array(16...25))
        #expect(log.events(after: 23).map(\.message) == ["event 23", "event 24"])
        #expect(log.events(limit: 3).map(\.sequence) == [23, 24, 25])
    }

    @Test func theFileSurvivesARestartAndSequencesContinue() throws {
        let file = temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: (file as NSString).deletingLastPathComponent) }
        do {
            let log = try EventLog(file: file, capacity: 100)
            log.record(.notice, "daemon.started", "started", ["pid": "1"])
            log.record(.warning, "config.rejected", "rejected")
        }
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(text.split(separator: "\n").count == 2, "one JSON line per event")
        // A crash in the middle of a write leaves a cut line: it is skipped.
        let handle = try #require(FileHandle(forWritingAtPath: file))
        try handle.seekToEnd()
        handle.write(Data("{\"sequence\":3,\"kind\":\"cut".utf8))
        try handle.close()
        let again = try EventLog(file: file, capacity: 100)
        #expect(again.events().map(\.kind) == ["daemon.started", "config.rejected"])
        #expect(again.record(Event(severity: .info, kind: "daemon.started", message: "again")).sequence == 3)
        #expect(EventLog.read(file: file).map(\.sequence) == [1, 2, 3])
    }

    @Test func theFileIsRotatedBySizeAndOnlyKeepCopiesStay() throws {
        let file = temporaryFile()
        defer { try? FileManager.default.removeItem(atPath: (file as NSString).deletingLastPathComponent) }
        let log = try EventLog(file: file, capacity: 1000, maxFileBytes: 4096, keep: 2)
        let padding = String(repeating: "x", count: 200)
        for i in 0..<100 { log.record(.info, "test.event", "event \(i) \(padding)") }
        let fm = FileManager.default
        #expect(fm.fileExists(atPath: file + ".1") && fm.fileExists(atPath: file + ".2"))
        #expect(!fm.fileExists(atPath: file + ".3"))
        for path in [file, file + ".1", file + ".2"] {
            let size = try #require(try fm.attributesOfItem(atPath: path)[.size] as? Int)
            #expect(size <= 4096, "\(path) is \(size) bytes")
        }
        let kept = EventLog.read(file: file, keep: 2)
        #expect(kept.last?.sequence == 100)
        #expect(kept.map(\.sequence) == Array(kept.first!.sequence...100), "the newest events, in order, without gaps")
        #expect(kept.count < 100)
    }

    @Test func theConfigurationNamesTheFile() throws {
        let base = "dataplane:\n  interfaces:\n    - name: eth0\ngroups: []\n"
        let c = try ConfigLoader.parse(base + "events:\n  file: /var/lib/fulcrum/events.jsonl\n  keep: 5\n", file: "lb.yaml")
        #expect(c.events.file == "/var/lib/fulcrum/events.jsonl" && c.events.keep == 5)
        let error = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.parse(base + "events:\n  file: events.jsonl\n", file: "lb.yaml")
        }
        #expect(error.errors.first?.field == "events.file" && error.errors.first?.line == 6, "\(error)")
    }
}
