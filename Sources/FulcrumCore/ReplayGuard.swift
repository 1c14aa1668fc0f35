/// Why a signed message (an agent report, a heartbeat) is not fresh. Epochs are Unix
/// milliseconds, the sender's start: a restart makes a later one.
public enum Staleness: String, CaseIterable, Sendable, Error {
    /// An epoch before the newest seen from this sender: an old message replayed.
    case oldEpoch = "old_epoch"
    /// An epoch implausibly far ahead of this LB's clock. Accepted, it would make every
    /// real message after it "old" until this LB restarts (a sender whose clock was wrong
    /// for a moment would lock itself out), so it is refused and remembered nowhere.
    case futureEpoch = "future_epoch"
    /// The same epoch with a sequence not above the newest seen.
    case replayed
}

/// Per sender, the newest (epoch, sequence) admitted: a message must be newer, a later
/// epoch (the sender restarted) or the same epoch with a higher sequence, and its epoch no
/// more than `futureTolerance` ahead of this LB's clock. One entry per sender; the caller
/// bounds the senders (`keep`).
public struct ReplayGuard<Sender: Hashable & Sendable>: Sendable {
    /// Ten minutes: clocks of hosts in one site are far closer than that, and a sender
    /// whose clock ran ahead by less is admitted (its later messages stay newer).
    public static var futureTolerance: UInt64 { 600_000 }
    var newest: [Sender: (epoch: UInt64, sequence: UInt64)] = [:]

    public init() {}

    /// Admits and remembers the message, or says why not. `now`: this LB's Unix milliseconds.
    public mutating func admit(_ sender: Sender, epoch: UInt64, sequence: UInt64, now: UInt64) -> Staleness? {
        if epoch > now &+ Self.futureTolerance { return .futureEpoch }
        if let seen = newest[sender] {
            if epoch < seen.epoch { return .oldEpoch }
            if epoch == seen.epoch && sequence <= seen.sequence { return .replayed }
        }
        newest[sender] = (epoch, sequence)
        return nil
    }

    /// Forgets senders no longer known.
    public mutating func keep(_ senders: Set<Sender>) {
        newest = newest.filter { senders.contains($0.key) }
    }

    public var count: Int { newest.count }
}
