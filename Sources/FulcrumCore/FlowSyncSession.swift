/// Which sequences of a stream the standby holds: every one up to `cumulative`, and a
/// bitmap of those received above it (a resent datagram fills a gap; one received twice,
/// or older than the window, is refused as replayed). IPsec's anti-replay window, with
/// the cumulative edge an acknowledgement needs.
public struct SequenceWindow: Sendable, Equatable {
    public static let size = 4096
    public private(set) var cumulative: UInt64 = 0
    public private(set) var highest: UInt64 = 0
    var bits = [UInt64](repeating: 0, count: SequenceWindow.size / 64)

    public init() {}

    public enum Admission: Equatable, Sendable { case fresh, duplicate, beyondWindow }

    /// Takes `sequence` (≥ 1) if it is new and within the window.
    public mutating func admit(_ sequence: UInt64) -> Admission {
        if sequence <= cumulative { return .duplicate }
        if sequence > cumulative &+ UInt64(Self.size) { return .beyondWindow }
        let i = Int(sequence % UInt64(Self.size))
        if bits[i >> 6] & (1 << UInt64(i & 63)) != 0 { return .duplicate }
        bits[i >> 6] |= 1 << UInt64(i & 63)
        highest = max(highest, sequence)
        // Move the edge over every sequence now held contiguously, freeing its bit.
        while true {
            let next = Int((cumulative &+ 1) % UInt64(Self.size))
            guard bits[next >> 6] & (1 << UInt64(next & 63)) != 0 else { break }
            bits[next >> 6] &= ~(1 << UInt64(next & 63))
            cumulative &+= 1
        }
        return .fresh
    }

    /// The sequences above `cumulative` and below `highest` not yet held, the first `limit`.
    public func missing(limit: Int) -> [UInt64] {
        var out: [UInt64] = []
        var s = cumulative &+ 1
        while s < highest && out.count < limit {
            let i = Int(s % UInt64(Self.size))
            if bits[i >> 6] & (1 << UInt64(i & 63)) == 0 { out.append(s) }
            s &+= 1
        }
        return out
    }
}

/// The standby's end of a stream: admits data by (epoch, sequence), knows when it is ready
/// (it holds every datagram up to the bulk transfer's end), and says what to acknowledge.
/// Pure: time is a parameter; the sync service does the I/O.
public struct FlowSyncReceiver: Sendable {
    public private(set) var stream: UInt64 = 0
    public private(set) var window = SequenceWindow()
    /// The bulk transfer's last sequence, once its end was heard.
    public private(set) var bulkEnd: UInt64?
    /// Something arrived since the last acknowledgement.
    public private(set) var unacknowledged = false

    public init() {}

    /// Ready: the bulk transfer of the current stream is whole.
    public var ready: Bool { bulkEnd.map { window.cumulative >= $0 } ?? false }

    /// Forgets the stream (this LB became active, or the stream broke): the next
    /// acknowledgement asks for a bulk transfer.
    public mutating func reset() {
        stream = 0
        window = SequenceWindow()
        bulkEnd = nil
        unacknowledged = true
    }

    public enum Admission: Equatable, Sendable {
        /// New: apply its records.
        case apply
        /// Held already (a resend whose first copy arrived, its acknowledgement lost): not
        /// applied again, acknowledged again.
        case duplicate
        case refuse(MessageRejection)
    }

    /// Admits a signed datagram's header. A later epoch starts a new stream (the active
    /// started a bulk transfer); an earlier one is old.
    public mutating func admit(_ header: FlowSyncWire.Header, nowUnixMilliseconds: UInt64) -> Admission {
        if header.epoch > nowUnixMilliseconds &+ ReplayGuard<UInt8>.futureTolerance { return .refuse(.futureEpoch) }
        if header.epoch < stream { return .refuse(.oldEpoch) }
        guard header.sequence >= 1 else { return .refuse(.garbage) }
        if header.epoch > stream {
            stream = header.epoch
            window = SequenceWindow()
            bulkEnd = nil
        }
        switch window.admit(header.sequence) {
        case .fresh: break
        case .duplicate:
            unacknowledged = true
            return .duplicate
        case .beyondWindow: return .refuse(.replayed)
        }
        if header.kind == .bulkEnd { bulkEnd = header.sequence }
        unacknowledged = true
        return .apply
    }

    /// The acknowledgement to send now; clears `unacknowledged`.
    public mutating func acknowledgement() -> FlowSyncWire.Ack {
        unacknowledged = false
        return FlowSyncWire.Ack(stream: stream, cumulative: window.cumulative, highest: window.highest, ready: ready,
                                needsBulk: stream == 0,
                                missing: window.missing(limit: FlowSyncWire.Ack.maxMissing))
    }
}

/// The active's end of a stream: numbers datagrams, keeps each signed copy until the
/// standby acknowledges it (in memory fixed at start: `capacity` datagrams), resends what
/// the standby reports missing and what goes unacknowledged past `resendAfter`, and
/// measures the lag from a record's export to its acknowledgement.
/// Pure: time is a parameter; the sync service signs and sends.
public final class FlowSyncSender: @unchecked Sendable {
    public let capacity: Int
    public let slotBytes = FlowSyncWire.maxDatagram
    let storage: UnsafeMutableRawPointer
    var lengths: [Int]
    var sentAt: [UInt64]
    var oldestExport: [UInt64]
    /// The stream's epoch; 0 while there is none (no standby heard, or it went silent).
    public private(set) var epoch: UInt64 = 0
    var lastEpoch: UInt64 = 0
    public private(set) var nextSequence: UInt64 = 1
    public private(set) var acknowledged: UInt64 = 0
    /// The bulk transfer's end marker, once sent; the standby is ready when it acknowledges it.
    public private(set) var bulkEndSequence: UInt64?
    public private(set) var peerReady = false
    /// When the standby last acknowledged anything (monotonic ns).
    public private(set) var lastAcknowledgement: UInt64 = 0
    /// How long a datagram waits for its acknowledgement before it is sent again: three
    /// smoothed round trips (of datagrams sent once: Karn's rule), within 2–200 ms, so a
    /// standby that is slow rather than lossy is not buried in resends.
    public private(set) var resendAfter: UInt64 = 5_000_000
    var smoothedRTT: UInt64 = 0
    var wasResent: [Bool]
    /// Held by the standby above its cumulative edge (selectively acknowledged): never
    /// resent by the timer, which would otherwise resend every datagram behind one lost.
    var held: [Bool]
    public private(set) var resent: UInt64 = 0

    public init(capacity: Int = 512) {
        self.capacity = capacity
        storage = .allocate(byteCount: capacity * FlowSyncWire.maxDatagram, alignment: 16)
        lengths = Array(repeating: 0, count: capacity)
        sentAt = Array(repeating: 0, count: capacity)
        oldestExport = Array(repeating: 0, count: capacity)
        wasResent = Array(repeating: false, count: capacity)
        held = Array(repeating: false, count: capacity)
    }

    deinit { storage.deallocate() }

    /// Starts a new stream (a bulk transfer follows): everything in flight is forgotten.
    /// `epoch` must be later than the last stream's (Unix ms, or one past it).
    public func startStream(epoch: UInt64, now: UInt64) {
        lastEpoch = max(epoch, lastEpoch &+ 1)
        self.epoch = lastEpoch
        nextSequence = 1
        acknowledged = 0
        bulkEndSequence = nil
        peerReady = false
        lastAcknowledgement = now
    }

    /// Datagrams sent and not yet acknowledged.
    public var inFlight: Int { Int(nextSequence &- 1 &- acknowledged) }
    public var hasRoom: Bool { epoch != 0 && inFlight < capacity }

    /// The buffer for the next datagram (`slotBytes` long). Fill it, then `commit`.
    public func nextBuffer() -> UnsafeMutableRawPointer {
        storage + Int(nextSequence % UInt64(capacity)) * slotBytes
    }

    /// The next datagram was written (`length` bytes, signed); returns its sequence.
    @discardableResult
    public func commit(length: Int, kind: FlowSyncWire.Kind, oldestExport export: UInt64, now: UInt64) -> UInt64 {
        let s = nextSequence
        let i = Int(s % UInt64(capacity))
        lengths[i] = length
        sentAt[i] = now
        oldestExport[i] = export
        wasResent[i] = false
        held[i] = false
        if kind == .bulkEnd { bulkEndSequence = s }
        nextSequence &+= 1
        return s
    }

    /// The stored bytes of an unacknowledged datagram.
    public func datagram(_ sequence: UInt64) -> UnsafeRawBufferPointer? {
        guard sequence > acknowledged && sequence < nextSequence else { return nil }
        let i = Int(sequence % UInt64(capacity))
        return UnsafeRawBufferPointer(start: storage + i * slotBytes, count: lengths[i])
    }

    /// What an acknowledgement means. `lags` gets, for every datagram it newly covers that
    /// carried records, the time from the oldest record's export to now.
    public enum AckOutcome: Equatable, Sendable {
        /// Resend these (reported missing, and not sent within `resendAfter`).
        case resend([UInt64])
        /// The standby holds no stream, or one this LB no longer has the datagrams of: a new
        /// stream and a bulk transfer.
        case needsBulk
        /// For another stream (an old one's late acknowledgement): nothing to do.
        case stale
    }

    public func acknowledge(_ ack: FlowSyncWire.Ack, now: UInt64, lags: inout [UInt64]) -> AckOutcome {
        if ack.needsBulk || epoch == 0 { return .needsBulk }
        guard ack.stream == epoch else { return ack.stream > epoch ? .needsBulk : .stale }
        lastAcknowledgement = now
        if ack.cumulative >= nextSequence { return .needsBulk }  // holds what this LB never sent
        while acknowledged < ack.cumulative {
            acknowledged &+= 1
            let i = Int(acknowledged % UInt64(capacity))
            if oldestExport[i] != 0 && now > oldestExport[i] { lags.append(now &- oldestExport[i]) }
            // A datagram held behind a gap reports the gap's delay, not a round trip: sampled
            // only from acknowledgements with no gap (and, Karn, never a resent one).
            if !wasResent[i] && ack.missing.isEmpty && now > sentAt[i] {
                let rtt = now &- sentAt[i]
                smoothedRTT = smoothedRTT == 0 ? rtt : (smoothedRTT &* 7 &+ rtt) / 8
            }
        }
        if smoothedRTT > 0 { resendAfter = min(200_000_000, max(2_000_000, smoothedRTT &* 3)) }
        // Above the edge, up to the highest it holds, all but the gaps it lists are held. The
        // list stops at `maxMissing`: past its last entry nothing is known to be held.
        let known = ack.missing.count == FlowSyncWire.Ack.maxMissing ? (ack.missing.last ?? ack.cumulative) : ack.highest
        var s = acknowledged &+ 1
        let gaps = Set(ack.missing)
        while s <= min(known, nextSequence &- 1) {
            if !gaps.contains(s) { held[Int(s % UInt64(capacity))] = true }
            s &+= 1
        }
        peerReady = ack.ready && bulkEndSequence.map { ack.cumulative >= $0 } ?? false
        var again: [UInt64] = []
        for s in ack.missing where s > acknowledged && s < nextSequence {
            let i = Int(s % UInt64(capacity))
            if now &- sentAt[i] >= resendAfter / 2 {
                sentAt[i] = now
                wasResent[i] = true
                again.append(s)
            }
        }
        resent &+= UInt64(again.count)
        return .resend(again)
    }

    /// Datagrams unacknowledged for `resendAfter` (their acknowledgement, or they, were
    /// lost), at most `limit`, oldest first; their clocks restart.
    public func overdue(now: UInt64, limit: Int = 64) -> [UInt64] {
        var out: [UInt64] = []
        var s = acknowledged &+ 1
        while s < nextSequence && out.count < limit {
            let i = Int(s % UInt64(capacity))
            if !held[i] && now &- sentAt[i] >= resendAfter {
                sentAt[i] = now
                wasResent[i] = true
                out.append(s)
            }
            s &+= 1
        }
        resent &+= UInt64(out.count)
        return out
    }

    /// The peer stopped acknowledging: nothing is kept for it (a bulk transfer follows when
    /// it is heard again).
    public func drop() {
        epoch = 0
        acknowledged = nextSequence &- 1
        peerReady = false
        bulkEndSequence = nil
    }
}
