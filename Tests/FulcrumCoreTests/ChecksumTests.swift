@testable import FulcrumCore
import FulcrumTestSupport
import Testing

@Suite struct ChecksumTests {
    @Test func fullSumMatchesReference() {
        var rng = SplitMix(seed: 7)
        for length in 0..<80 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let ours = bytes.withUnsafeBytes { Checksum.finish(Checksum.sum($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count: length)) }
            #expect(ours == PacketBuilder.checksum(bytes), "length \(length)")
        }
    }

    /// The branch-free fold gives what the textbook loop gives, for any 64-bit sum.
    @Test func foldMatchesTheTextbookLoop() {
        func reference(_ value: UInt64) -> UInt16 {
            var v = value
            while v > 0xFFFF { v = (v & 0xFFFF) + (v >> 16) }
            return UInt16(v)
        }
        var values: [UInt64] = [0, 1, 0xFFFF, 0x1_0000, 0x1_FFFE, 0xFFFF_0001, 0xFFFF_FFFF, 0x1_0000_0000,
                                0x1_FFFF_FFFE, 0xFFFF_FFFF_0000_0001, .max, .max - 1]
        var rng = SplitMix(seed: 1071)
        for _ in 0..<20_000 {
            let v = UInt64.random(in: 0...UInt64.max, using: &rng)
            values.append(v)
            values.append(v >> UInt64.random(in: 0..<64, using: &rng))
        }
        for v in values { #expect(Checksum.fold(v) == reference(v), "\(String(v, radix: 16))") }
    }

    /// RFC 1624: updating a checksum from the changed words gives what a full
    /// recomputation gives, including around the 0x0000/0xFFFF corner.
    @Test func incrementalEqualsFull() {
        var rng = SplitMix(seed: 42)
        for round in 0..<5000 {
            var words = (0..<10).map { _ in UInt16.random(in: 0...0xFFFF, using: &rng) }
            if round % 7 == 0 { words = words.map { _ in 0 } }
            func full(_ w: [UInt16]) -> UInt16 {
                PacketBuilder.checksum(w.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] })
            }
            let before = full(words)
            let index = Int.random(in: 0..<10, using: &rng)
            let newValue: UInt16 = round % 5 == 0 ? 0xFFFF - words[index] : .random(in: 0...0xFFFF, using: &rng)
            var delta = ChecksumDelta()
            delta.replace16(words[index], newValue)
            words[index] = newValue
            #expect(delta.apply(to: before) == full(words), "round \(round)")
        }
    }
}
