import MallocInterposerSwift

/// Counts malloc calls in a region, through ordo-one's malloc interposer (LD_PRELOAD'ed by
/// `make bench`). It checks itself first: a region that certainly allocates must count,
/// or a "0 allocations" figure would mean nothing.
public enum AllocationCounter {
    public struct NotActive: Error, CustomStringConvertible {
        public var description: String {
            "the malloc counter is not active: run through `make bench`, which sets LD_PRELOAD to libMallocInterposerSwift.so"
        }
    }

    /// Verifies that counting works in this process.
    public static func selfTest() throws {
        let before = count { _ = ContiguousArray<Int>(repeating: 1, count: 1000) }
        guard before > 0 else { throw NotActive() }
    }

    /// Mallocs made while `body` runs.
    @inline(never)
    public static func count(_ body: () -> Void) -> Int {
        MallocInterposerSwift.initialize()
        MallocInterposerSwift.hook()
        body()
        MallocInterposerSwift.unhook()
        return MallocInterposerSwift.getStatistics().mallocCount
    }
}
