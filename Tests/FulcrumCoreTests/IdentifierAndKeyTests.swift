import FulcrumCore
import Testing

@Suite struct IdentifierTests {
    @Test(arguments: ["web-mat", "dns6-nat", "a", "0", "web.v2_test-1", String(repeating: "x", count: 64)])
    func valid(_ name: String) {
        #expect(Identifier.problem(name) == nil)
    }

    @Test(arguments: [
        ("", "is empty"), (String(repeating: "x", count: 65), "65 characters"), ("a b", "other than"), ("a/b", "other than"),
        ("-a", "begin"), (".a", "begin"), ("_a", "begin"), ("a\u{1B}[2J", "other than"), ("a\u{0}", "other than"),
        ("grüße", "other than"), ("a%20b", "other than"),
    ])
    func invalid(_ name: String, _ why: String) {
        let problem = Identifier.problem(name)
        #expect(problem?.contains(why) == true, "\(name.debugDescription): \(problem ?? "accepted")")
    }
}

@Suite struct SharedKeyTests {
    @Test func everyByteCountsAndOnlyEdgeWhitespaceGoes() {
        let random: [UInt8] = [0x41] + (1..<31).map { UInt8(0x80 + $0) } + [0x5A]
        #expect(SharedKey.bytes(fromFile: random) == random, "bytes ≥ 0x80 are kept as they are")
        #expect(SharedKey.bytes(fromFile: random + [0x0A]) == random, "the newline echo adds")
        #expect(SharedKey.bytes(fromFile: [0x20, 0x09] + random + [0x0D, 0x0A]) == random)
        var other = random
        other[5] = 0xFF
        #expect(SharedKey.bytes(fromFile: other) != SharedKey.bytes(fromFile: random), "one byte apart, two keys")
        #expect(SharedKey.bytes(fromFile: [0x20, 0x0A]).isEmpty)
    }

    @Test func theMinimumIsCountedInBytes() {
        #expect(SharedKey.problem(Array(repeating: 0xFF, count: 16), file: "k") == nil)
        #expect(SharedKey.problem(Array(repeating: 0xFF, count: 15), file: "k")?.contains("15 bytes") == true)
        // Eight two-byte characters are 16 bytes: counted as bytes, not characters.
        #expect(SharedKey.problem(Array("éééééééé".utf8), file: "k") == nil)
        #expect(SharedKey.problem(Array("ééééééé".utf8), file: "k") != nil)
    }
}
