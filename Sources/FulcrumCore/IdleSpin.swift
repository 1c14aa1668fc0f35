/// How long a worker keeps looking for its next frame before it sleeps in `poll`
/// (`dataplane.idle_spin_us` is the most it looks). A look that catches the next frame
/// saves a wake-up; one that does not is CPU spent for nothing. So the window follows
/// the gaps between frames, as the kernel's cpuidle haltpoll governor does for a
/// guest's idle CPU:
/// - the next frame came within the window: it was caught, nothing changes;
/// - it came after the window but within `maximum`: a longer look would have caught
///   it, the window doubles (from `growStart` when it was 0), up to `maximum`;
/// - it came later than `maximum`: no look would have caught it, the window halves
///   (to 0 below `growStart`).
/// Pure: the worker feeds it the gaps it sees; no clock, no allocation.
public struct IdleSpin: Sendable {
    /// The longest look (ns).
    public let maximum: UInt64
    /// Where a window of 0 grows from, and below which a shrinking one becomes 0 (ns).
    public let growStart: UInt64
    /// How long to look now (ns).
    public private(set) var window: UInt64

    public init(maximum: UInt64, growStart: UInt64 = 10_000) {
        self.maximum = maximum
        self.growStart = min(growStart, maximum)
        window = maximum
    }

    /// A frame came `gap` ns after the one before it.
    @inline(__always)
    public mutating func frame(after gap: UInt64) {
        if gap <= window { return }
        if gap <= maximum {
            window = window == 0 ? growStart : min(maximum, window &* 2)
        } else {
            let half = window / 2
            window = half < growStart ? 0 : half
        }
    }
}
