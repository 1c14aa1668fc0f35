import CFulcrumBPF
import FulcrumBPF
import FulcrumCore
import FulcrumDataplane
import FulcrumTestSupport
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// A SYN flood out of one interface of the current network namespace: live frames
/// (BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES) of `bench_syn_flood`, every one a
/// new connection from 198.19.0.0/16, paced to `rate` frames a second (0: as fast as
/// the generator goes) for `seconds`. The peer of `interface` must run an XDP program
/// (a veth drops XDP_TX frames otherwise); the testbed gives the client's one.
public struct SYNFlood {
    public var interface: String
    public var destinationMAC: MACAddress
    public var target: IPAddress
    public var port: UInt16
    public var rate: Double
    public var seconds: Double
    public var cpu: Int?
    public var root: String

    public init(interface: String, destinationMAC: MACAddress, target: IPAddress, port: UInt16, rate: Double,
                seconds: Double, cpu: Int?, root: String) {
        self.interface = interface
        self.destinationMAC = destinationMAC
        self.target = target
        self.port = port
        self.rate = rate
        self.seconds = seconds
        self.cpu = cpu
        self.root = root
    }

    public struct Result: Sendable {
        public var offered: UInt64
        public var seconds: Double
    }

    static func now() -> Double { monotonicSeconds() }

    public func run() throws -> Result {
        precondition(target.isIPv4, "the flood is IPv4")
        if let cpu { try CPUAffinity.pinCurrentThread(to: cpu) }
        let object = try BPFObject(path: BPFObject.locate(named: "bench.bpf.o", sourceRoot: root))
        let program = try object.programFD("bench_syn_flood")
        let counts = try object.map("bench_counts")
        let ifindex = try InterfaceInfo.index(of: interface)
        let frame = PacketBuilder.tcpFrame(source: IPAddress("198.19.0.0")!, destination: target, sourcePort: 1024,
                                           destinationPort: port, flags: TCPFlags.syn,
                                           ethernetDestination: destinationMAC,
                                           ethernetSource: try InterfaceFacts.mac(of: interface))
        let start = Self.now()
        let end = start + seconds
        var sent: UInt64 = 0
        try frame.withUnsafeBytes { bytes in
            while true {
                let t = Self.now()
                if t >= end { break }
                // What is due by now, in chunks of at most 100 ms of traffic: each call has
                // a setup cost, and a pace that falls behind catches up.
                let goal = rate > 0 ? UInt64(rate * (t - start)) : sent &+ 100_000
                let due = goal > sent ? goal - sent : 0
                if due < 64 {
                    usleep(1000)
                    continue
                }
                let repeatCount = UInt32(min(due, rate > 0 ? UInt64(max(64, rate / 10)) : 100_000))
                let r = fulcrum_prog_run_live_frames(program, bytes.baseAddress, UInt32(bytes.count), UInt32(ifindex),
                                                     repeatCount, 64)
                if r < 0 { throw SystemError("live frames out of \(interface)", errno: -r) }
                sent &+= UInt64(repeatCount)
            }
        }
        return Result(offered: counts.sumPerCPU(UInt32(0)), seconds: Self.now() - start)
    }
}
