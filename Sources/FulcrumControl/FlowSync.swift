import Crypto
import FulcrumAPIModels
import FulcrumConfiguration
import FulcrumCore
import FulcrumDataplane
import Foundation
import Logging
import Synchronization
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// What the flow sync needs of one worker: its rings and switches, and a way to end its
/// idle wait.
public struct WorkerSyncChannel: Sendable {
    public let sync: WorkerSync
    public let wake: @Sendable () -> Void
    public init(sync: WorkerSync, wake: @escaping @Sendable () -> Void) {
        self.sync = sync
        self.wake = wake
    }
}

/// The pair's flow sync (`cluster.flow_sync`), on a thread of its own: hitless failover for
/// every scheduler (PRODUCT.md §7).
///
/// On the active it collects the records the workers export (dirty flows, and on a bulk
/// transfer every flow), packs them into datagrams up to the interconnect's MTU at least
/// every millisecond, signs them (HMAC-SHA256, the pair's key) and sends them to the
/// standby on the first interconnect that is up. Each datagram is kept, in memory fixed at
/// start, until the standby acknowledges it; a gap it reports, or a datagram it does not
/// acknowledge within `resendAfter`, is sent again as it was (a record carries the flow's
/// state when exported and the standby applies a stream in sequence order, so a resend
/// never undoes a later change). A standby that holds no stream (it started, restarted or
/// came back) asks for one: a new stream and a paced bulk transfer of every live flow,
/// then the changes; it is *ready* once it holds the whole bulk transfer.
///
/// On the standby it admits datagrams (size, magic, HMAC, the interconnect's peer address,
/// the stream's epoch and a sequence window), hands the records to every worker (each holds
/// them in its own flow table, as it will route them once active), and acknowledges.
public final class FlowSyncService: @unchecked Sendable {
    let key: SymmetricKey
    let sockets: [UDPSocket]
    let peers: [SocketAddress]
    let channels: [WorkerSyncChannel]
    let roleCell: RoleCell
    /// Bit i: interconnect i is up (the cluster service's view, set on every turn of it).
    public let linksUp = Atomic<UInt64>(0)
    let configVersion: @Sendable () -> Int
    let clock: any MonotonicClock
    let events: EventLog
    let logger: Logger
    let wake: WakePipe
    let stopping = Atomic<Bool>(false)
    public let port: UInt16

    // The thread's own state.
    let sender = FlowSyncSender()
    var receiver = FlowSyncReceiver()
    var ackGuard = ReplayGuard<UInt8>()
    /// This instance's epoch for its acknowledgements (Unix ms at start) and their sequence.
    let ackEpoch: UInt64
    var ackSequence: UInt64 = 0
    var lastAckSent: UInt64 = 0
    /// The link the standby last heard data on (it answers there).
    var replyLink = 0
    var wasActive = false
    /// The bulk transfer under way (its number), when it started, and whether its end is sent.
    var bulkNumber: UInt64 = 0
    var bulkStarted: UInt64 = 0
    var bulkEndSent = true
    var lastBulkSeconds: Double?
    var lagging = false
    var lastPublish: UInt64 = 0
    /// After stepping down: until then, what is in flight or in the rings is still sent.
    var drainUntil: UInt64 = 0
    /// The worker `pack` starts with, turn by turn, so none is starved under overload.
    var firstChannel = 0
    /// Streams followed since start: with the sequence, the order records are applied in.
    var streams: UInt64 = 0
    var lastRejectionLog: UInt64 = 0
    var counts = Counts()
    var lagWindow = LagWindow()

    struct Counts {
        var recordsSent: UInt64 = 0
        var datagramsSent: UInt64 = 0
        var recordsReceived: UInt64 = 0
        var datagramsReceived: UInt64 = 0
        var duplicates: UInt64 = 0
        var discarded: UInt64 = 0
        var bulkTransfers: UInt64 = 0
        var importBusy: UInt64 = 0
        var configBehind: UInt64 = 0
        var rejected: [String: UInt64] = [:]
    }

    /// The last lags (export → acknowledgement), for p50 and p99.
    struct LagWindow {
        static let size = 4096
        var samples = [UInt64](repeating: 0, count: LagWindow.size)
        var next = 0
        var filled = 0
        mutating func add(_ ns: UInt64) {
            samples[next] = ns
            next = (next + 1) % Self.size
            filled = min(filled + 1, Self.size)
        }
        func percentile(_ p: Double) -> Double? {
            guard filled > 0 else { return nil }
            let sorted = samples.prefix(filled).sorted()
            return Double(sorted[min(filled - 1, Int(Double(filled) * p))]) / 1e6
        }
    }

    /// What status shows, published by the thread.
    public let status: Mutex<FlowSyncStatusModel>

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(cluster: FulcrumConfig.Cluster, key: SymmetricKey, channels: [WorkerSyncChannel], role: RoleCell,
                configVersion: @escaping @Sendable () -> Int, epoch: UInt64? = nil,
                events: EventLog, logger: Logger, clock: any MonotonicClock = SystemClock()) throws {
        self.key = key
        self.channels = channels
        self.roleCell = role
        self.configVersion = configVersion
        self.events = events
        self.logger = logger
        self.clock = clock
        port = cluster.flowSyncPort
        var sockets: [UDPSocket] = []
        for (i, link) in cluster.interconnects.enumerated() {
            do {
                let s = try UDPSocket(family: link.local.isIPv4 ? AF_INET : AF_INET6)
                try s.bindTo(SocketAddress(link.local, port: port))
                s.setReceiveBuffer(8 << 20)
                sockets.append(s)
            } catch {
                throw Failure(description: "cluster.interconnects[\(i)].local: cannot listen on \(NodeLabel(address: link.local, port: port)) for the flow sync: \(error)")
            }
        }
        self.sockets = sockets
        peers = cluster.interconnects.map { SocketAddress($0.peer, port: cluster.flowSyncPort) }
        do { wake = try WakePipe() } catch { throw Failure(description: "flow sync: \(error)") }
        // The pair's epoch (kept across a clock set back) when the cluster service gives it.
        ackEpoch = epoch ?? SystemClock.unixMilliseconds()
        status = Mutex(FlowSyncStatusModel())
        for c in channels { c.sync.marking.store(true, ordering: .releasing) }
    }

    public func stop() {
        stopping.store(true, ordering: .releasing)
        wake.wake()
    }

    /// The standby that would take over holds every flow (its bulk transfer acknowledged).
    public var peerReady: Bool { status.withLock { $0.peerReady } }

    /// Before this LB starts answering for the VIPs: every record received is in the
    /// workers' tables (their inbound rings empty), so the first packet after the takeover
    /// finds its flow. Waits at most `timeout` seconds.
    public func settle(timeout: Double = 0.05) {
        let deadline = clock.nanoseconds() + UInt64(timeout * 1e9)
        for c in channels { c.wake() }
        while channels.contains(where: { $0.sync.inbound.count > 0 }) && clock.nanoseconds() < deadline { usleep(200) }
    }

    // MARK: The thread

    public func loop() {
        var buffer = [UInt8](repeating: 0, count: 2048)
        while !stopping.load(ordering: .acquiring) {
            let now = clock.nanoseconds()
            let active = roleCell.role == .active
            if active != wasActive { changeRole(active: active, now: now) }
            if active || now < drainUntil {
                pack(now: now)
                resendOverdue(now: now)
                if active { checkPeer(now: now) }
            } else if drainUntil != 0 {
                // Stepped down and drained (or 200 ms passed): nothing more is kept.
                drainUntil = 0
                sender.drop()
                for c in channels { counts.discarded &+= UInt64(c.sync.outbound.drain { _ in }) }
            }
            // Data is acknowledged in any role (during a hand-over both LBs are active a
            // moment, and the old one's last flows must reach the new); a standby also says
            // every 100 ms what it holds, which is how it asks for a bulk transfer.
            if receiver.unacknowledged && now &- lastAckSent >= 1_000_000 || !active && now &- lastAckSent >= 100_000_000 {
                sendAck(now: now)
            }
            // Status every 20 ms: its percentiles sort the lag window, not a per-turn cost.
            if now &- lastPublish >= 20_000_000 {
                lastPublish = now
                publish(now: now)
            }
            var fds = sockets.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            fds.append(pollfd(fd: wake.readFD, events: Int16(POLLIN), revents: 0))
            // A millisecond's turn while there is a stream to feed or acknowledge; else 100 ms.
            let busy = receiver.unacknowledged || active && (sender.epoch != 0 || channels.contains { $0.sync.outbound.count > 0 })
            _ = poll(&fds, nfds_t(fds.count), busy ? 1 : 100)
            if fds[sockets.count].revents & Int16(POLLIN) != 0 { wake.drain() }
            for (i, s) in sockets.enumerated() where fds[i].revents & Int16(POLLIN) != 0 {
                for _ in 0..<256 {
                    guard let got = buffer.withUnsafeMutableBytes({ try? s.receive(into: $0) }) ?? nil else { break }
                    buffer.withUnsafeBytes { b in
                        receive(UnsafeRawBufferPointer(rebasing: b[0..<min(got.size, b.count)]), size: got.size,
                                from: got.from?.address, on: i, now: clock.nanoseconds())
                    }
                }
            }
        }
        for c in channels { c.sync.exporting.store(false, ordering: .releasing) }
    }

    func changeRole(active: Bool, now: UInt64) {
        wasActive = active
        for c in channels { c.sync.exporting.store(active, ordering: .releasing) }
        if active {
            // What this LB received as standby is its table now; the standby (if any) asks for
            // a bulk transfer of it. The old active's stream is still taken while it hands
            // over (it may decide a few more flows before the neighbours move).
            sender.drop()
        } else {
            // What was exported and not yet acknowledged still goes to the new active (a
            // hand-over's last flows) for up to 200 ms; the workers export nothing more.
            drainUntil = sender.epoch != 0 ? now + 200_000_000 : 0
            if drainUntil == 0 { sender.drop() }
            receiver.reset()
            bulkEndSent = true
        }
    }

    // MARK: Active

    /// Packs what the workers exported into datagrams and sends them; with no stream (no
    /// standby heard), drops it: the standby's bulk transfer will carry the flows.
    func pack(now: UInt64) {
        guard sender.epoch != 0 else {
            for c in channels { counts.discarded &+= UInt64(c.sync.outbound.drain { _ in }) }
            return
        }
        var records = 0
        var buffer: UnsafeMutableRawPointer?
        var used = FlowSyncWire.headerSize
        var oldest: UInt64 = 0
        func flush() {
            guard let b = buffer, records > 0 else { return }
            send(buffer: b, kind: .data, count: records, length: used, oldest: oldest, now: now)
            counts.recordsSent &+= UInt64(records)
            buffer = nil
            records = 0
            used = FlowSyncWire.headerSize
            oldest = 0
        }
        let limit = FlowSyncWire.maxDatagram - FlowSyncWire.macSize
        firstChannel = channels.isEmpty ? 0 : (firstChannel + 1) % channels.count
        channels: for k in channels.indices {
            let c = channels[(firstChannel + k) % channels.count]
            while true {
                if used + FlowSyncRecord.v6Size > limit {
                    flush()
                }
                // A record is taken only when a datagram can hold it: otherwise it waits in its
                // worker's ring (and, that full, as a mark in the worker's table).
                guard buffer != nil || sender.hasRoom else { break channels }
                guard let record = c.sync.outbound.pop() else { break }
                if buffer == nil { buffer = sender.nextBuffer() }
                used += record.encode(to: buffer! + used)
                records += 1
                if oldest == 0 || record.exportedAt < oldest { oldest = record.exportedAt }
            }
        }
        flush()
        // The bulk transfer is whole once every worker has finished its pass and its ring is
        // empty: then its end, in sequence after every record of it.
        if !bulkEndSent && sender.hasRoom
            && channels.allSatisfy({ $0.sync.bulkDone.load(ordering: .acquiring) == bulkNumber && $0.sync.outbound.count == 0 }) {
            send(buffer: sender.nextBuffer(), kind: .bulkEnd, count: 0, length: FlowSyncWire.headerSize, oldest: 0, now: now)
            bulkEndSent = true
            lastBulkSeconds = Double(now &- bulkStarted) / 1e9
        }
        let full = channels.contains { $0.sync.outbound.count > WorkerSync.ringCapacity / 2 } || !sender.hasRoom
        if full != lagging {
            lagging = full
            events.record(full ? .warning : .notice, full ? "flowsync.lagging" : "flowsync.caught_up",
                          full ? "flow sync lagging: the standby is not keeping up (records wait in the workers' tables)"
                               : "flow sync caught up", [:])
        }
    }

    /// Finishes the datagram in `buffer` (header, MAC), records it and sends it.
    func send(buffer: UnsafeMutableRawPointer, kind: FlowSyncWire.Kind, count: Int, length: Int, oldest: UInt64, now: UInt64) {
        FlowSyncWire.Header(kind: kind, epoch: sender.epoch, sequence: sender.nextSequence,
                            configVersion: UInt32(truncatingIfNeeded: configVersion()), count: UInt16(count)).encode(to: buffer)
        let mac = HMAC<SHA256>.authenticationCode(for: UnsafeRawBufferPointer(start: buffer, count: length), using: key)
        mac.withUnsafeBytes { (buffer + length).copyMemory(from: $0.baseAddress!, byteCount: FlowSyncWire.macSize) }
        let total = length + FlowSyncWire.macSize
        let sequence = sender.commit(length: total, kind: kind, oldestExport: oldest, now: now)
        transmit(sequence)
    }

    func transmit(_ sequence: UInt64) {
        guard let bytes = sender.datagram(sequence) else { return }
        let link = activeLink()
        if (try? Socket.sendTo(sockets[link].fd, bytes, peers[link])) != nil { counts.datagramsSent &+= 1 }
    }

    /// The first interconnect that is up, else the first.
    func activeLink() -> Int {
        let up = linksUp.load(ordering: .relaxed)
        return up == 0 ? 0 : min(up.trailingZeroBitCount, sockets.count - 1)
    }

    func resendOverdue(now: UInt64) {
        for s in sender.overdue(now: now) { transmit(s) }
    }

    /// A standby that stops acknowledging for a second is gone: nothing more is kept for it.
    func checkPeer(now: UInt64) {
        guard sender.epoch != 0, sender.inFlight > 0, now &- sender.lastAcknowledgement > 1_000_000_000 else { return }
        sender.drop()
        bulkEndSent = true
        events.record(.warning, "flowsync.peer_silent", "flow sync: the standby has not acknowledged for 1 s; a bulk transfer follows when it is back", [:])
    }

    func startBulk(now: UInt64) {
        sender.startStream(epoch: SystemClock.unixMilliseconds(), now: now)
        bulkNumber &+= 1
        bulkStarted = now
        bulkEndSent = false
        counts.bulkTransfers &+= 1
        for c in channels {
            c.sync.bulkRequested.store(bulkNumber, ordering: .releasing)
            c.wake()
        }
        // An empty datagram at once: the standby adopts the new stream now, not when the first
        // record comes (a pass that skips every flow may take longer than its next request).
        send(buffer: sender.nextBuffer(), kind: .data, count: 0, length: FlowSyncWire.headerSize, oldest: 0, now: now)
        events.record(.notice, "flowsync.bulk", "flow sync: bulk transfer \(bulkNumber) of every flow to the standby started", [:])
    }

    // MARK: Both

    func refuse(_ why: MessageRejection, on link: Int, now: UInt64) {
        counts.rejected[why.rawValue, default: 0] &+= 1
        if now &- lastRejectionLog > 1_000_000_000 {
            lastRejectionLog = now
            logger.warning("flow sync datagram refused on interconnect \(link): \(why.rawValue)")
        }
    }

    func receive(_ bytes: UnsafeRawBufferPointer, size: Int, from source: IPAddress?, on link: Int, now: UInt64) {
        guard size <= bytes.count else { return refuse(.oversize, on: link, now: now) }
        let header: FlowSyncWire.Header
        switch FlowSyncWire.Header.decode(bytes) {
        case let .failure(why): return refuse(why, on: link, now: now)
        case let .success(h): header = h
        }
        let signed = UnsafeRawBufferPointer(rebasing: bytes[0..<(bytes.count - FlowSyncWire.macSize)])
        let mac = UnsafeRawBufferPointer(rebasing: bytes[(bytes.count - FlowSyncWire.macSize)...])
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: signed, using: key) else {
            return refuse(.badMAC, on: link, now: now)
        }
        guard source == peers[link].address else { return refuse(.sourceMismatch, on: link, now: now) }
        let body = UnsafeRawBufferPointer(rebasing: signed[FlowSyncWire.headerSize...])
        if header.kind == .ack {
            guard wasActive else { return }  // a late acknowledgement after this LB stepped down
            guard let ack = FlowSyncWire.Ack.decode(body, header: header) else { return refuse(.garbage, on: link, now: now) }
            if let stale = ackGuard.admit(0, epoch: header.epoch, sequence: header.sequence, now: SystemClock.unixMilliseconds()) {
                return refuse(MessageRejection(stale), on: link, now: now)
            }
            var lags: [UInt64] = []
            switch sender.acknowledge(ack, now: now, lags: &lags) {
            case .needsBulk: if bulkEndSent || sender.epoch == 0 || ack.stream != sender.epoch { startBulk(now: now) }
            case let .resend(sequences): for s in sequences { transmit(s) }
            case .stale: break
            }
            for l in lags { lagWindow.add(l) }
            return
        }
        // Records first checked whole: a datagram is applied entirely or not at all.
        var records: [FlowSyncRecord] = []
        records.reserveCapacity(Int(header.count))
        var offset = 0
        while offset < body.count {
            guard let (r, n) = FlowSyncRecord.decode(body, at: offset) else { return refuse(.garbage, on: link, now: now) }
            records.append(r)
            offset += n
        }
        guard records.count == Int(header.count), header.kind == .data || records.isEmpty else {
            return refuse(.garbage, on: link, now: now)
        }
        // Records of a configuration this LB does not hold yet (a node just added) would not
        // be held: left unacknowledged until the push brings it, and resent then.
        if !records.isEmpty && Int(header.configVersion) > configVersion() {
            counts.configBehind &+= 1
            return
        }
        // Every worker must have room, or the datagram is left unacknowledged (the active
        // sends it again): a record is never acknowledged and lost.
        guard channels.allSatisfy({ $0.sync.inbound.hasRoom(records.count) }) else {
            counts.importBusy &+= 1
            return
        }
        var probe = receiver
        let stream = receiver.stream
        switch probe.admit(header, nowUnixMilliseconds: SystemClock.unixMilliseconds()) {
        case let .refuse(why): return refuse(why, on: link, now: now)
        case .duplicate:
            receiver = probe
            counts.duplicates &+= 1
        case .apply:
            receiver = probe
            replyLink = link
            if receiver.stream != stream { streams &+= 1 }
            counts.datagramsReceived &+= 1
            counts.recordsReceived &+= UInt64(records.count)
            // The order a record is applied in (`exportedAt` is the active's own clock, of no
            // use here): a resend that fills a gap after newer datagrams never undoes them.
            let order = streams << 40 | header.sequence
            for c in channels {
                for var r in records {
                    r.exportedAt = order
                    _ = c.sync.inbound.push(r)
                }
                c.wake()
            }
        }
    }

    // MARK: Standby

    func sendAck(now: UInt64) {
        lastAckSent = now
        ackSequence &+= 1
        let ack = receiver.acknowledgement()
        var out = [UInt8](repeating: 0, count: FlowSyncWire.headerSize + 24 + 8 * ack.missing.count + FlowSyncWire.macSize)
        out.withUnsafeMutableBytes { b in
            let p = b.baseAddress!
            FlowSyncWire.Header(kind: .ack, flags: ack.flags, epoch: ackEpoch, sequence: ackSequence,
                                configVersion: UInt32(truncatingIfNeeded: configVersion()),
                                count: UInt16(ack.missing.count)).encode(to: p)
            let n = FlowSyncWire.headerSize + ack.encode(to: p + FlowSyncWire.headerSize)
            let mac = HMAC<SHA256>.authenticationCode(for: UnsafeRawBufferPointer(start: p, count: n), using: key)
            mac.withUnsafeBytes { (p + n).copyMemory(from: $0.baseAddress!, byteCount: FlowSyncWire.macSize) }
        }
        // Where data last came from, else the first link that is up.
        let link = receiver.stream != 0 ? replyLink : activeLink()
        _ = out.withUnsafeBytes { try? Socket.sendTo(sockets[link].fd, $0, peers[link]) }
    }

    // MARK: Status

    func publish(now: UInt64) {
        var flowsExported: UInt64 = 0, skipped: UInt64 = 0, imported: UInt64 = 0
        var refusedByStandby: [String: UInt64] = [:]
        var pending = 0
        for c in channels {
            flowsExported &+= c.sync.exported.load(ordering: .relaxed)
            skipped &+= c.sync.skipped.load(ordering: .relaxed)
            imported &+= c.sync.imported.load(ordering: .relaxed)
            pending += c.sync.outbound.count
            refusedByStandby["unknown_service", default: 0] &+= c.sync.unknownService.load(ordering: .relaxed)
            refusedByStandby["unknown_node", default: 0] &+= c.sync.unknownNode.load(ordering: .relaxed)
            refusedByStandby["table_full", default: 0] &+= c.sync.tableFull.load(ordering: .relaxed)
        }
        let model = FlowSyncStatusModel(
            enabled: true, sending: wasActive, peerReady: wasActive && sender.peerReady, ready: !wasActive && receiver.ready,
            stream: wasActive ? sender.epoch : receiver.stream, recordsSent: counts.recordsSent,
            datagramsSent: counts.datagramsSent, datagramsResent: sender.resent, recordsReceived: counts.recordsReceived,
            datagramsReceived: counts.datagramsReceived, duplicates: counts.duplicates, rejected: counts.rejected,
            notHeld: refusedByStandby.filter { $0.value > 0 }, recordsExported: flowsExported, recordsSaved: skipped,
            recordsHeld: imported, pending: pending + sender.inFlight, inFlight: sender.inFlight,
            bulkTransfers: counts.bulkTransfers, lastBulkSeconds: lastBulkSeconds,
            lagP50Milliseconds: lagWindow.percentile(0.5), lagP99Milliseconds: lagWindow.percentile(0.99),
            lagging: lagging, discarded: counts.discarded)
        var withDeferred = model
        withDeferred.deferred = ["import_busy": counts.importBusy, "config_behind": counts.configBehind].filter { $0.value > 0 }
        status.withLock { $0 = withDeferred }
    }
}
