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
