import Crypto
@testable import FulcrumConfiguration
@testable import FulcrumControl
import FulcrumAPIModels
import FulcrumCore
import FulcrumDataplane
import Foundation
import Logging
import Synchronization
import Testing

/// The flow-sync service between two LBs on the loopback, with stand-in workers (their
/// rings, filled and drained by the test): no root, no data plane. What crosses is real:
/// UDP datagrams, signed, acknowledged, resent.
@Suite(.serialized) struct FlowSyncServiceTests {
    /// One side: the service on its thread, its stand-in worker, its role.
    final class Side: @unchecked Sendable {
        let service: FlowSyncService
        let worker = WorkerSync()
        let role = RoleCell()
        let thread: Thread

        init(local: String, peer: String, port: UInt16, key: SymmetricKey, events: EventLog) throws {
            let cluster = FulcrumConfig.Cluster(role: .master, peer: "peer",
                                                interconnects: [.init(local: IPAddress(local)!, peer: IPAddress(peer)!)],
                                                keyFile: "/dev/null")
            var c = cluster
            c.flowSyncPort = port
            let w = worker
            service = try FlowSyncService(cluster: c, key: key, channels: [WorkerSyncChannel(sync: w, wake: {})], role: role,
                                          configVersion: { 1 }, events: events, logger: Logger(label: "test"))
            let s = service
            thread = Thread { s.loop() }
            thread.start()
        }

        /// What a worker does each turn, done by the test: finish a bulk transfer at once.
        func workerTurn() {
            let asked = worker.bulkRequested.load(ordering: .acquiring)
            if worker.bulkDone.load(ordering: .relaxed) != asked { worker.bulkDone.store(asked, ordering: .releasing) }
        }

        var status: FlowSyncStatusModel { service.status.withLock { $0 } }
    }

    static func record(_ i: Int) -> FlowSyncRecord {
        FlowSyncRecord(key: FlowKey(source: IPAddress(ipv4: 0xC612_0000 | UInt32(i & 0xFFFF)), destination: IPAddress("198.18.1.10")!,
                                    sourcePort: UInt16(1024 + i % 60000), destinationPort: 80, proto: IPProtocol.tcp),
                       node: IPAddress("198.18.2.11")!, nodePort: 0, state: .established, lifetime: 900, exportedAt: 1)
    }

    func waitUntil(_ what: String, timeout: Double = 5, _ sides: [Side], _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            for s in sides { s.workerTurn() }
            if condition() { return }
            usleep(1000)
        }
        throw Failure(description: "timed out: \(what)")
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    func pair(port: UInt16) throws -> (Side, Side) {
        let key = SymmetricKey(data: Array(repeating: UInt8(7), count: 32))
        let events = try EventLog(file: nil)
        let a = try Side(local: "127.0.0.1", peer: "127.0.0.2", port: port, key: key, events: events)
        let b = try Side(local: "127.0.0.2", peer: "127.0.0.1", port: port, key: key, events: events)
        return (a, b)
    }

    @Test func theStandbyAsksForABulkTransferThenHoldsEveryRecordInOrder() throws {
        let (a, b) = try pair(port: 47311)
        defer { a.service.stop(); b.service.stop() }
        b.role.set(.standby)
        a.role.set(.active)
        try waitUntil("the standby ready", [a, b]) { b.status.ready && a.status.peerReady }
        #expect(a.status.bulkTransfers == 1 && b.status.stream == a.status.stream)
        // 5000 records: through the active's ring, packed, signed, sent, held by the standby.
        var pushed = 0
        var received: [FlowSyncRecord] = []
        try waitUntil("every record across", timeout: 10, [a, b]) {
            while pushed < 5000 && a.worker.outbound.push(Self.record(pushed)) { pushed += 1 }
            b.worker.inbound.drain { received.append($0) }
            return received.count == 5000
        }
        #expect(received.map(\.key) == (0..<5000).map { Self.record($0).key }, "in order, each once")
        // (Status is published every 20 ms: wait for both sides' to show the end.)
        try waitUntil("all acknowledged", [a, b]) {
            a.status.inFlight == 0 && a.status.lagP99Milliseconds != nil && b.status.recordsReceived == 5000
        }
        let s = a.status
        #expect(s.recordsSent == 5000 && s.datagramsSent >= 5000 / 66)
        #expect(b.status.recordsReceived == 5000 && b.status.rejected.isEmpty)
    }

    @Test func forgeriesAreRefusedByReasonAndReachNoWorker() throws {
        let (a, b) = try pair(port: 47321)
        defer { a.service.stop(); b.service.stop() }
        b.role.set(.standby)
        a.role.set(.active)
        try waitUntil("the standby ready", [a, b]) { b.status.ready }
        let rogue = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(rogue) }
        func send(_ bytes: [UInt8], from source: String) {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, source, &local.sin_addr)
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(fd) }
            _ = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            var to = sockaddr_in()
            to.sin_family = sa_family_t(AF_INET)
            to.sin_port = UInt16(47321).bigEndian
            inet_pton(AF_INET, "127.0.0.2", &to.sin_addr)
            _ = bytes.withUnsafeBytes { b in
                withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            }
        }
        func datagram(key: [UInt8], epoch: UInt64) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: FlowSyncWire.headerSize + FlowSyncRecord.v4Size)
            out.withUnsafeMutableBytes { p in
                FlowSyncWire.Header(kind: .data, epoch: epoch, sequence: 1, configVersion: 1, count: 1).encode(to: p.baseAddress!)
                _ = Self.record(1).encode(to: p.baseAddress! + FlowSyncWire.headerSize)
            }
            return out + Array(HMAC<SHA256>.authenticationCode(for: out, using: SymmetricKey(data: key)))
        }
        let later = UInt64(Date().timeIntervalSince1970 * 1000) + 60_000
        send(Array(repeating: 0, count: 20), from: "127.0.0.1")
        send(Array("XXXX".utf8) + Array(repeating: 1, count: 96), from: "127.0.0.1")
        send(datagram(key: Array(repeating: 9, count: 32), epoch: later), from: "127.0.0.1")
        send(datagram(key: Array(repeating: 7, count: 32), epoch: later), from: "127.0.0.3")
        try waitUntil("every forgery refused", [a, b]) {
            ["truncated", "garbage", "bad_mac", "source_mismatch"].allSatisfy { b.status.rejected[$0] == 1 }
        }
        #expect(b.worker.inbound.count == 0 && b.status.recordsReceived == 0 && b.status.ready)
    }

    @Test func aStandbyThatTakesOverStreamsToTheOldActiveOnceItAsks() throws {
        let (a, b) = try pair(port: 47331)
        defer { a.service.stop(); b.service.stop() }
        b.role.set(.standby)
        a.role.set(.active)
        try waitUntil("b ready", [a, b]) { b.status.ready }
        // The roles swap (a failover): b streams to a after a's bulk request.
        a.role.set(.standby)
        b.role.set(.active)
        try waitUntil("a ready", [a, b]) { a.status.ready && b.status.peerReady }
        #expect(b.status.sending && !a.status.sending && b.status.bulkTransfers == 1)
    }
}
