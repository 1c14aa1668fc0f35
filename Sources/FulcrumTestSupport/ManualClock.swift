import FulcrumCore
import Synchronization

/// A clock that moves only when told (as swift-nio's `EmbeddedEventLoop.advanceTime`):
/// flow timeouts, the agents' silences and expiries, the pair's timers, tested without a
/// sleep. A service takes it as its `MonotonicClock`; a pure type takes `now`.
public final class ManualClock: MonotonicClock {
    private let current: Atomic<UInt64>

    /// Starts at `now` nanoseconds (not 0, so "long ago" is a time like any other).
    public init(now: UInt64 = 1_000_000_000) { current = Atomic(now) }

    public var now: UInt64 { current.load(ordering: .acquiring) }

    public func nanoseconds() -> UInt64 { now }

    public func advance(seconds: Double) { _ = current.add(UInt64(seconds * 1e9), ordering: .releasing) }
}
