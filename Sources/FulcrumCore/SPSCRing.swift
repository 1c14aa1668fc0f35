import Synchronization

/// A fixed ring between one producer thread and one consumer thread: no lock, no
/// allocation after `init`. The flow sync's records travel through it from a worker to
/// the sync thread (on the active) and back into a worker (on the standby). Full, `push`
/// says so and the producer keeps what it had (a dirty flow stays dirty): nothing is
/// dropped silently and nothing grows.
// @unchecked Sendable: each slot is written by the producer before `tail` is released and
// read by the consumer after it acquires `tail`, and the other way round for `head`.
public final class SPSCRing<Element: BitwiseCopyable>: @unchecked Sendable {
    public let capacity: Int
    @usableFromInline let mask: Int
    @usableFromInline let storage: UnsafeMutablePointer<Element>
    /// The next slot to read: the consumer's.
    @usableFromInline let head = Atomic<Int>(0)
    /// The next slot to write: the producer's.
    @usableFromInline let tail = Atomic<Int>(0)

    /// - Parameter capacity: rounded up to a power of two.
    public init(capacity: Int) {
        var c = 1
        while c < capacity { c <<= 1 }
        self.capacity = c
        mask = c - 1
        storage = .allocate(capacity: c)
    }

    deinit { storage.deallocate() }

    /// Elements waiting (either side may ask; the answer may be stale by the time it is used).
    public var count: Int { tail.load(ordering: .acquiring) &- head.load(ordering: .acquiring) }

    /// Room for `n` more, as the producer sees it.
    @inlinable
    public func hasRoom(_ n: Int) -> Bool {
        tail.load(ordering: .relaxed) &- head.load(ordering: .acquiring) &+ n <= capacity
    }

    /// Producer: false (nothing written) when full.
    @inlinable
    public func push(_ element: Element) -> Bool {
        let t = tail.load(ordering: .relaxed)
        guard t &- head.load(ordering: .acquiring) < capacity else { return false }
        (storage + (t & mask)).initialize(to: element)
        tail.store(t &+ 1, ordering: .releasing)
        return true
    }

    /// Consumer: the oldest element, or nil when empty.
    @inlinable
    public func pop() -> Element? {
        let h = head.load(ordering: .relaxed)
        guard h != tail.load(ordering: .acquiring) else { return nil }
        let e = storage[h & mask]
        head.store(h &+ 1, ordering: .releasing)
        return e
    }

    /// Consumer: up to `limit` elements to `body`, in order; returns how many.
    @inlinable
    @discardableResult
    public func drain(limit: Int = .max, _ body: (Element) -> Void) -> Int {
        let h = head.load(ordering: .relaxed)
        let n = min(tail.load(ordering: .acquiring) &- h, limit)
        var i = 0
        while i < n {
            body(storage[(h &+ i) & mask])
            i &+= 1
        }
        if n > 0 { head.store(h &+ n, ordering: .releasing) }
        return n
    }
}
