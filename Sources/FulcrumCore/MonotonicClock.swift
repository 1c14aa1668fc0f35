/// Time as the services read it: the system's monotonic clock in the daemon
/// (FulcrumSystem's `SystemClock`), a manual one in tests (FulcrumTestSupport's
/// `ManualClock`), which moves only when told, so timing is tested without sleeps.
public protocol MonotonicClock: Sendable {
    /// Nanoseconds since an arbitrary start; never goes back.
    func nanoseconds() -> UInt64
}

extension MonotonicClock {
    public func seconds() -> Double { Double(nanoseconds()) / 1e9 }
}
