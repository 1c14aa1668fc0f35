import FulcrumCore
import Testing

@Suite struct AddressTests {
    @Test(arguments: [
        ("198.18.0.1", "198.18.0.1"),
        ("2001:2::1", "2001:2::1"),
        ("2001:2:0:0:0:0:0:1", "2001:2::1"),
        ("2001:2:0:1:0:0:0:1", "2001:2:0:1::1"),
        ("::", "::"),
        ("::1", "::1"),
        ("ff02::1", "ff02::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("::ffff:198.18.0.1", "198.18.0.1"),
    ])
    func parsesAndFormats(text: String, canonical: String) throws {
        let a = try #require(IPAddress(text))
        #expect(a.description == canonical)
        #expect(IPAddress(canonical) == a)
    }

    @Test(arguments: ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1::2::3", "12345::", "g::1",
                      "1:2:3:4:5:6:7:8:9", "1.2.3.4:80", "::1.2.3"])
    func rejectsGarbage(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test func ipv4IsMapped() throws {
        let a = try #require(IPAddress("198.18.1.10"))
        #expect(a.isIPv4)
        #expect(a.ipv4 == 0xC612_010A)
        #expect(try #require(IPAddress("2001:2::10")).isIPv4 == false)
    }

    @Test func macAddress() throws {
        let m = try #require(MACAddress("02:00:00:00:00:1b"))
        #expect(m.description == "02:00:00:00:00:1b")
        #expect(MACAddress("02:00:00:00:00") == nil)
        #expect(MACAddress("02:00:00:00:00:zz") == nil)
        #expect(MACAddress.broadcast.isMulticast)
        #expect(!m.isMulticast)
    }
}

@Suite struct NetworkBytesTests {
    @Test func addressesFromTheirWireBytes() {
        #expect(IPAddress(networkBytes: [198, 18, 0, 2]) == IPAddress("198.18.0.2"))
        let v6 = IPAddress("2001:2::1:2")!
        #expect(IPAddress(networkBytes: v6.bytes) == v6)
        #expect(IPAddress(networkBytes: IPAddress("198.18.0.2")!.bytes) == IPAddress("198.18.0.2"), "IPv4-mapped, 16 bytes")
        #expect(IPAddress(networkBytes: [1, 2, 3]) == nil && IPAddress(networkBytes: [UInt8](repeating: 0, count: 8)) == nil)
    }
}
