import FulcrumCore
#if canImport(Glibc)
import Glibc
#endif

/// The one monotonic clock of the product: what the services read unless a test gives
/// them a manual one.
public struct SystemClock: MonotonicClock {
    @inlinable
    public init() {}

    @inlinable @inline(__always)
    public func nanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Unix time in milliseconds (the epochs of signed messages).
    public static func unixMilliseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(max(0, ts.tv_sec)) &* 1000 &+ UInt64(ts.tv_nsec) / 1_000_000
    }
}

/// Seconds on the monotonic clock.
public func monotonicSeconds() -> Double { Double(SystemClock().nanoseconds()) / 1e9 }

/// Nanoseconds on the monotonic clock (the clock flow timeouts run on; called per batch).
@inlinable @inline(__always)
public func monotonicNanoseconds() -> UInt64 { SystemClock().nanoseconds() }
