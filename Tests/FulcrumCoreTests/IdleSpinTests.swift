import FulcrumCore
import Testing

/// The worker's look for its next frame before it sleeps (`IdleSpin`): it stays while
/// frames come within it, grows while a longer look would have caught them, and falls
/// to nothing while they come too far apart for any look to.
@Suite struct IdleSpinTests {
    static let us: UInt64 = 1000

    @Test func framesWithinTheWindowLeaveItAsItIs() {
        var spin = IdleSpin(maximum: 50 * Self.us)
        for gap in [1, 10, 49, 50].map({ UInt64($0) * Self.us }) {
            spin.frame(after: gap)
            #expect(spin.window == 50 * Self.us)
        }
    }

    @Test func gapsLongerThanAnyLookShrinkItToNothingAndItStaysThere() {
        var spin = IdleSpin(maximum: 50 * Self.us)
        var windows: [UInt64] = []
        for _ in 0..<4 {
            spin.frame(after: 1000 * Self.us)  // 1,000 requests a second, one frame each
            windows.append(spin.window / Self.us)
        }
        // 50 → 25 → 12.5 → below the 10 µs floor: 0, and no look from then on.
        #expect(windows == [25, 12, 0, 0])
    }

    @Test func gapsALongerLookWouldHaveCaughtGrowItBackToTheMaximum() {
        var spin = IdleSpin(maximum: 50 * Self.us)
        for _ in 0..<3 { spin.frame(after: 1000 * Self.us) }
        #expect(spin.window == 0)
        var windows: [UInt64] = []
        for _ in 0..<4 {
            spin.frame(after: 40 * Self.us)  // a burst's frames 40 µs apart
            windows.append(spin.window / Self.us)
        }
        // From 0 to the 10 µs start, doubling to 40 catches the gap; it grows no further.
        #expect(windows == [10, 20, 40, 40])
        spin.frame(after: 45 * Self.us)
        #expect(spin.window == 50 * Self.us)  // capped at the maximum, not 80
    }

    @Test func noSpinAtAllIsNeverALook() {
        var spin = IdleSpin(maximum: 0)
        for gap in [0, 5, 100, 100_000].map({ UInt64($0) * Self.us }) {
            spin.frame(after: gap)
            #expect(spin.window == 0)
        }
    }
}
