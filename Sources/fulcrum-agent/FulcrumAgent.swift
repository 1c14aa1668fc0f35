import ArgumentParser
import Crypto
import FulcrumCore
import Foundation
import Logging
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// The node agent: runs on a real server, measures its CPU load and reports it to the LB
/// every interval, signed with the shared key (Docs/OPERATIONS.md, "Node agents").
@main
struct FulcrumAgent: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrum-agent",
        abstract: "Report this server's CPU load to Fulcrum, for dynamic weights.",
        discussion: """
        Sends an 80-byte report (HMAC-SHA256 with the key file's content) to each --lb \
        every --interval, from the address of --interface, which is this node's identity \
        in the LB's configuration. The load is the share of the CPUs busy, from /proc/stat; \
        or a cgroup's CPU time (--cgroup, v1 cpuacct or v2), over --cpus CPUs; or the first \
        number a --load-command prints (0–100). SIGTERM or SIGINT stop it.
        """)

    @Option(help: "The LB's address on this node's segment (repeatable: both LBs of a pair).") var lb: [String] = []
    @Flag(help: "Also announce this node on its segment (IPv4 broadcast, IPv6 all-nodes multicast), for LB groups with accept_discovered_nodes.")
    var announce = false
    @Option(help: "The interface whose address identifies this node.") var interface: String
    @Option(help: "The file holding the shared key (the LB's agent.key_file).") var keyFile: String
    @Option(help: "The LB's agent port (agent.port).") var port: UInt16 = 65002
    @Option(help: "Seconds between reports.") var interval: Double = 1
    @Option(help: "Measure this cgroup's CPU time instead of the whole machine's.") var cgroup: String?
    @Option(help: "CPUs the cgroup may use (its load is its CPU time over this many).") var cpus: Double = 1
    @Option(help: "A command whose first number (0–100) is the load, instead of measuring.") var loadCommand: String?
    @Flag(help: "Identify by the interface's global IPv6 address.") var ipv6 = false
    @Flag(help: "Make this node accept the VIPs for MAT (nftables table fulcrum_agent, IPv6 VIPs on lo); undone on exit.")
    var configureMat = false
    @Option(help: "A VIP this node serves by MAT (repeatable), for --configure-mat.") var vip: [String] = []
    @Option(help: "trace, debug, info, notice, warning or error.") var logLevel: String = "info"

    func validate() throws {
        guard interval >= 0.05 && interval <= 60 else { throw ValidationError("--interval must be 0.05 to 60 seconds") }
        guard !lb.isEmpty || announce else { throw ValidationError("give --lb ADDRESS, or --announce to be found on the segment") }
        guard lb.allSatisfy({ IPAddress($0) != nil }) else { throw ValidationError("--lb: give the LB's IPv4 or IPv6 address") }
        guard cpus > 0 else { throw ValidationError("--cpus must be positive") }
        guard vip.allSatisfy({ IPAddress($0) != nil }) else { throw ValidationError("--vip: give IPv4 or IPv6 addresses") }
        guard !configureMat || !vip.isEmpty else { throw ValidationError("--configure-mat needs the VIPs: --vip ADDRESS (repeatable)") }
    }

    func run() throws {
        var logger = Logger(label: "fulcrum-agent")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        guard let data = FileManager.default.contents(atPath: keyFile) else {
            throw ValidationError("cannot read the key file \(keyFile)")
        }
        let keyBytes = SharedKey.bytes(fromFile: Array(data))
        if let problem = SharedKey.problem(keyBytes, file: keyFile) { throw ValidationError("--key-file: \(problem)") }
        let key = SymmetricKey(data: keyBytes)
        var targets = lb.compactMap(IPAddress.init)
        let useIPv6 = ipv6 || !(targets.first?.isIPv4 ?? true)
        guard let me = try Self.address(of: interface, ipv6: useIPv6) else {
            throw ValidationError("\(interface) has no \(ipv6 ? "global IPv6" : "IPv4") address")
        }
        let socket = try Sender(from: me, interface: interface)
        if announce {
            if useIPv6 { targets.append(IPAddress("ff02::1")!) } else if let b = try Self.broadcast(of: interface) { targets.append(b) }
        }
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        var mat: MATSetup?
        if configureMat {
            var setup = MATSetup(vips: vip.compactMap(IPAddress.init))
            try setup.install(logger: logger)
            mat = setup
        }
        defer { mat?.remove(logger: logger) }

        // The epoch: when this agent started, in Unix milliseconds (AgentReport's unit), so a
        // restart's reports are newer.
        let epoch = SystemClock.unixMilliseconds()
        var meter = LoadMeter(cgroup: cgroup, cpus: cpus, command: loadCommand)
        _ = meter.sample()
        logger.info("reporting", metadata: ["node": "\(me)", "lb": "\(lb.joined(separator: ","))", "port": "\(port)"])
        var sequence: UInt64 = 0
        while true {
            var info = siginfo_t()
            var wait = timespec(tv_sec: Int(interval), tv_nsec: Int((interval - interval.rounded(.down)) * 1e9))
            let signal = sigtimedwait(&signals, &info, &wait)
            if signal == SIGTERM || signal == SIGINT {
                logger.info("stopping")
                return
            }
            let load = meter.sample()
            sequence += 1
            let report = AgentReport(intervalMilliseconds: UInt16(min(65535, interval * 1000)), epoch: epoch,
                                     sequence: sequence, load: UInt16((load * 1000).rounded()), address: me)
            var bytes = report.encodeSigned()
            bytes.append(contentsOf: HMAC<SHA256>.authenticationCode(for: bytes, using: key))
            for target in targets {
                if let error = socket.send(bytes, to: target, port: port) {
                    logger.warning("cannot send", metadata: ["lb": "\(target)", "error": "\(error)"])
                }
            }
            logger.debug("report", metadata: ["sequence": "\(sequence)", "load": "\(load)"])
        }
    }

    /// The first of the interface's addresses (getifaddrs) that `pick` takes.
    static func firstAddress(of interface: String,
                             _ pick: (_ address: UnsafePointer<sockaddr>, _ netmask: UnsafePointer<sockaddr>?) -> IPAddress?) throws
        -> IPAddress? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { throw ValidationError("getifaddrs: \(String(cString: strerror(errno)))") }
        defer { freeifaddrs(list) }
        var p = list
        while let entry = p {
            defer { p = entry.pointee.ifa_next }
            guard String(cString: entry.pointee.ifa_name) == interface, let sa = entry.pointee.ifa_addr else { continue }
            if let found = pick(sa, entry.pointee.ifa_netmask.map { UnsafePointer($0) }) { return found }
        }
        return nil
    }

    static func ipv4(_ sa: UnsafePointer<sockaddr>) -> UInt32 {
        sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) }
    }

    /// The interface's IPv4 subnet broadcast address (the interface may have none configured).
    static func broadcast(of interface: String) throws -> IPAddress? {
        try firstAddress(of: interface) { sa, mask in
            guard sa.pointee.sa_family == sa_family_t(AF_INET), let mask else { return nil }
            return IPAddress(ipv4: ipv4(sa) | ~ipv4(mask))
        }
    }

    /// The interface's IPv4 address, or its global unicast IPv6 address (not link-local).
    static func address(of interface: String, ipv6: Bool) throws -> IPAddress? {
        try firstAddress(of: interface) { sa, _ in
            if !ipv6 && sa.pointee.sa_family == sa_family_t(AF_INET) { return IPAddress(ipv4: ipv4(sa)) }
            guard ipv6 && sa.pointee.sa_family == sa_family_t(AF_INET6) else { return nil }
            let a = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { s in
                withUnsafeBytes(of: s.pointee.sin6_addr) { IPAddress(networkBytes: $0) }
            }
            return a.flatMap { $0.bytes[0] & 0xE0 == 0x20 ? $0 : nil }
        }
    }
}

/// A UDP socket bound to the node's address: reports leave from its identity.
struct Sender {
    let socket: UDPSocket
    let scope: UInt32

    init(from address: IPAddress, interface: String) throws {
        socket = try UDPSocket(family: address.isIPv4 ? AF_INET : AF_INET6)
        scope = if_nametoindex(interface)
        try socket.setOption(SOL_SOCKET, SO_BROADCAST, 1)  // for --announce
        if !address.isIPv4 { try socket.setOption(Int32(IPPROTO_IPV6), IPV6_MULTICAST_IF, Int32(scope)) }
        try socket.bindTo(SocketAddress(address, port: 0))
    }

    func send(_ bytes: [UInt8], to target: IPAddress, port: UInt16) -> String? {
        do {
            // A multicast target (ff02::1) is on the reporting interface.
            _ = try socket.send(bytes, to: SocketAddress(target, port: port, scope: target.bytes[0] == 0xFF ? scope : 0))
            return nil
        } catch {
            return "\(error)"
        }
    }
}

/// The load, 0…1, since the previous sample.
struct LoadMeter {
    let cgroup: String?
    let cpus: Double
    let command: String?
    var last: (busy: Double, total: Double)?

    init(cgroup: String?, cpus: Double, command: String?) {
        self.cgroup = cgroup
        self.cpus = cpus
        self.command = command
    }

    mutating func sample() -> Double {
        if let command {
            let p = popen(command, "r")
            defer { if p != nil { pclose(p) } }
            var line = [CChar](repeating: 0, count: 256)
            guard let p, fgets(&line, 256, p) != nil else { return 0 }
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let value = text.split(whereSeparator: { !"0123456789.".contains($0) }).first.flatMap { Double($0) } ?? 0
            return min(1, max(0, value / 100))
        }
        let now: (busy: Double, total: Double)
        if let cgroup {
            // cgroup v1: cpuacct.usage (ns); v2: cpu.stat usage_usec.
            let seconds: Double
            if let text = try? String(contentsOfFile: cgroup + "/cpuacct.usage", encoding: .utf8), let ns = Double(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                seconds = ns / 1e9
            } else if let text = try? String(contentsOfFile: cgroup + "/cpu.stat", encoding: .utf8),
                      let line = text.split(separator: "\n").first(where: { $0.hasPrefix("usage_usec ") }),
                      let us = Double(line.split(separator: " ")[1]) {
                seconds = us / 1e6
            } else {
                return 0
            }
            now = (seconds, monotonicSeconds() * cpus)
        } else {
            now = Self.procStat() ?? (0, 0)
        }
        defer { last = now }
        guard let last, now.total > last.total else { return 0 }
        return min(1, max(0, (now.busy - last.busy) / (now.total - last.total)))
    }

    /// /proc/stat's first line: busy and total jiffies of all CPUs.
    static func procStat() -> (busy: Double, total: Double)? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first, line.hasPrefix("cpu ") else { return nil }
        let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard v.count >= 4 else { return nil }
        let idle = v[3] + (v.count > 4 ? v[4] : 0)  // idle + iowait
        let total = v.prefix(8).reduce(0, +)          // user…steal
        return (total - idle, total)
    }
}

/// What a Linux node needs to serve a VIP by MAT (Docs/OPERATIONS.md, node agents), installed with
/// nftables in tables of its own (`ip fulcrum_agent`, `arp fulcrum_agent`) and undone
/// exactly on exit: IPv4 VIPs redirected to the node itself (the kernel accepts them, and
/// conntrack answers from the VIP), ARP requests for them dropped, IPv6 VIPs on lo
/// (removed on exit only if this agent added them). A leftover of an agent that was
/// killed is replaced at the next start.
struct MATSetup {
    let vips: [IPAddress]
    var addedIPv6: [IPAddress] = []
    static let table = "fulcrum_agent"

    init(vips: [IPAddress]) { self.vips = vips }

    struct Failure: Error, CustomStringConvertible { var description: String }

    @discardableResult
    static func run(_ argv: [String], input: String? = nil) -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        let inPipe = Pipe()
        if input != nil { p.standardInput = inPipe }
        do { try p.run() } catch { return (127, "\(error)") }
        if let input {
            inPipe.fileHandleForWriting.write(Data(input.utf8))
            try? inPipe.fileHandleForWriting.close()
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func tool(_ name: String) -> String {
        for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return name
    }

    mutating func install(logger: Logger) throws {
        let nft = Self.tool("nft"), ip = Self.tool("ip")
        // A previous run's tables (it was killed): replaced.
        for family in ["ip", "arp"] { Self.run([nft, "delete", "table", family, Self.table]) }
        let v4 = vips.filter(\.isIPv4).map { "\($0)" }
        if !v4.isEmpty {
            let set = v4.joined(separator: ", ")
            let rules = """
            table ip \(Self.table) {
                chain prerouting {
                    type nat hook prerouting priority dstnat; policy accept;
                    ip daddr { \(set) } redirect
                }
            }
            table arp \(Self.table) {
                chain input {
                    type filter hook input priority filter; policy accept;
                    arp operation request arp daddr ip { \(set) } drop
                }
            }

            """
            let (status, out) = Self.run([nft, "-f", "-"], input: rules)
            guard status == 0 else { throw Failure(description: "nft: \(out)") }
            logger.info("MAT: IPv4 VIPs redirected to this node, ARP for them dropped (nftables tables ip/arp \(Self.table))",
                        metadata: ["vips": "\(set)"])
        }
        for v in vips where !v.isIPv4 {
            let (_, present) = Self.run([ip, "-6", "addr", "show", "dev", "lo"])
            if present.contains(" \(v)/128 ") { continue }
            let (status, out) = Self.run([ip, "-6", "addr", "add", "\(v)/128", "dev", "lo"])
            guard status == 0 else { throw Failure(description: "ip -6 addr add \(v)/128 dev lo: \(out)") }
            addedIPv6.append(v)
            logger.info("MAT: IPv6 VIP on lo", metadata: ["vip": "\(v)"])
        }
    }

    func remove(logger: Logger) {
        let nft = Self.tool("nft"), ip = Self.tool("ip")
        if vips.contains(where: \.isIPv4) {
            for family in ["ip", "arp"] { Self.run([nft, "delete", "table", family, Self.table]) }
        }
        for v in addedIPv6 { Self.run([ip, "-6", "addr", "del", "\(v)/128", "dev", "lo"]) }
        logger.info("MAT: removed what was installed", metadata: ["tables": "ip/arp \(Self.table)",
                                                                  "ipv6": "\(addedIPv6.map { "\($0)" }.joined(separator: ","))"])
    }
}
