/// A node agent's report (`fulcrum-agent`): its load, who it is, and when. 80 bytes, fixed:
///
/// ```
///  0  "FLCA"          magic
///  4  1               version
///  5  kind            1 = report
///  6  interval ms     u16, how often the agent reports
///  8  epoch           u64, the agent's start (Unix milliseconds): grows across restarts
/// 16  sequence        u64, from 1 within an epoch
/// 24  load            u16, per mille of the node's CPU busy (0–1000)
/// 26  family          u8, 4 or 6
/// 27  reserved        u8 × 5, zero
/// 32  address         16 bytes, the node's address (IPv4 in the first 4)
/// 48  HMAC-SHA256     32 bytes over bytes 0..<48, keyed by the shared key file
/// ```
/// All integers big-endian. The HMAC is swift-crypto's, outside this module; this is the
/// layout and the checks that need no key.
public struct AgentReport: SignedMessage, Equatable {
    public static let size = 80
    public static let magic: [UInt8] = Array("FLCA".utf8)
    public static let version: UInt8 = 1

    public var intervalMilliseconds: UInt16
    public var epoch: UInt64
    public var sequence: UInt64
    /// Per mille (0–1000).
    public var load: UInt16
    public var address: IPAddress

    public init(intervalMilliseconds: UInt16, epoch: UInt64, sequence: UInt64, load: UInt16, address: IPAddress) {
        self.intervalMilliseconds = intervalMilliseconds
        self.epoch = epoch
        self.sequence = sequence
        self.load = load
        self.address = address
    }

    /// Why a datagram is not a usable report, as counted by the LB.
    public typealias Rejection = MessageRejection

    /// The 48 signed bytes (the caller appends the HMAC).
    public func encodeSigned() -> [UInt8] {
        var out = AgentReport.magic
        out.append(AgentReport.version)
        out.append(1)
        BigEndian.append(UInt64(intervalMilliseconds), bytes: 2, to: &out)
        BigEndian.append(epoch, bytes: 8, to: &out)
        BigEndian.append(sequence, bytes: 8, to: &out)
        BigEndian.append(UInt64(min(load, 1000)), bytes: 2, to: &out)
        out.append(address.isIPv4 ? 4 : 6)
        out.append(contentsOf: [0, 0, 0, 0, 0])
        let bytes = address.isIPv4 ? Array(address.bytes[12..<16]) : address.bytes
        out.append(contentsOf: bytes)
        out.append(contentsOf: [UInt8](repeating: 0, count: 16 - bytes.count))
        return out
    }

    /// Checks size and layout (not the HMAC: `verify` is the caller's, with the key).
    public static func decode(_ datagram: UnsafeRawBufferPointer) -> Result<AgentReport, Rejection> {
        if let problem = frameProblem(datagram) { return .failure(problem) }
        guard datagram[5] == 1 else { return .failure(.garbage) }
        let family = datagram[26]
        guard family == 4 || family == 6, (27..<32).allSatisfy({ datagram[$0] == 0 }) else { return .failure(.garbage) }
        let address: IPAddress?
        if family == 4 {
            guard (36..<48).allSatisfy({ datagram[$0] == 0 }) else { return .failure(.garbage) }
            address = IPAddress(networkBytes: datagram[32..<36])
        } else {
            address = IPAddress(networkBytes: datagram[32..<48])
        }
        let load = BigEndian.read(datagram, 24, 2)
        guard let address, load <= 1000 else { return .failure(.garbage) }
        return .success(AgentReport(intervalMilliseconds: UInt16(BigEndian.read(datagram, 6, 2)), epoch: BigEndian.read(datagram, 8, 8),
                                    sequence: BigEndian.read(datagram, 16, 8), load: UInt16(load), address: address))
    }
}

extension ReplayGuard where Sender == IPAddress {
    /// A report, keyed by the node it names.
    public mutating func admit(_ r: AgentReport, now: UInt64) -> AgentReport.Rejection? {
        admit(r.address, epoch: r.epoch, sequence: r.sequence, now: now).map(MessageRejection.init)
    }
}
