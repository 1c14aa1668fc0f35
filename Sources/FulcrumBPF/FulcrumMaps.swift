import CFulcrumBPF
import FulcrumCore
import FulcrumSystem

/// One of the XDP program's counters. The list, its order and the names are
/// fulcrum_abi.h's (FULCRUM_COUNTERS): nothing here restates them.
public struct XDPCounter: Hashable, Sendable, CaseIterable, CustomStringConvertible {
    public let index: UInt32

    public init(_ counter: fulcrum_counter) { index = counter.rawValue }

    public static let allCases = (0..<FULCRUM_CNT_MAX.rawValue).map { XDPCounter(fulcrum_counter(rawValue: $0)) }

    /// The name in status and metrics, from the header.
    public var label: String { String(cString: fulcrum_counter_label(index)) }
    public var description: String { label }
    /// True for the counters of frames the program dropped.
    public var isDrop: Bool { label.hasPrefix("dropped_") }

    public static let received = XDPCounter(FULCRUM_CNT_RX)
    public static let toWorker = XDPCounter(FULCRUM_CNT_TO_WORKER)
    public static let noSocket = XDPCounter(FULCRUM_CNT_NO_SOCKET)
    public static let passed = XDPCounter(FULCRUM_CNT_PASS)
    public static let standbyPassed = XDPCounter(FULCRUM_CNT_STANDBY_PASS)
    public static let staleDaemonPassed = XDPCounter(FULCRUM_CNT_STALE_PASS)
    public static let arpReplies = XDPCounter(FULCRUM_CNT_ARP_REPLY)
    public static let neighborAdvertisements = XDPCounter(FULCRUM_CNT_NA_REPLY)
    public static let fragmentsPassed = XDPCounter(FULCRUM_CNT_FRAGMENT)
    public static let fragmentsToWorker = XDPCounter(FULCRUM_CNT_FRAGMENT_TO_WORKER)
    public static let natReplies = XDPCounter(FULCRUM_CNT_NAT_REPLY)
    public static let icmpErrors = XDPCounter(FULCRUM_CNT_ICMP_ERROR)
    public static let otherDestinationMAC = XDPCounter(FULCRUM_CNT_OTHER_MAC)
    public static let vlanTagged = XDPCounter(FULCRUM_CNT_VLAN)
    public static let droppedOversize = XDPCounter(FULCRUM_CNT_DROP_OVERSIZE)
    public static let droppedOverBudget = XDPCounter(FULCRUM_CNT_DROP_OVER_BUDGET)
    public static let droppedTruncatedEthernet = XDPCounter(FULCRUM_CNT_DROP_TRUNCATED_ETHERNET)
    public static let droppedTruncatedVLAN = XDPCounter(FULCRUM_CNT_DROP_TRUNCATED_VLAN)
    public static let droppedMalformedARP = XDPCounter(FULCRUM_CNT_DROP_MALFORMED_ARP)
    public static let droppedTruncatedIP = XDPCounter(FULCRUM_CNT_DROP_TRUNCATED_IP)
    public static let droppedBadIPHeader = XDPCounter(FULCRUM_CNT_DROP_BAD_IP_HEADER)
    public static let droppedIPv6Extensions = XDPCounter(FULCRUM_CNT_DROP_IPV6_EXTENSIONS)
    public static let droppedTruncatedPorts = XDPCounter(FULCRUM_CNT_DROP_TRUNCATED_PORTS)
    public static let droppedMalformedICMP = XDPCounter(FULCRUM_CNT_DROP_MALFORMED_ICMP)
}

/// Typed access to the XDP program's maps. Keys and values are the structs of
/// fulcrum_abi.h, imported from C: nothing here restates their layout.
public struct FulcrumMaps: Sendable {
    public let services: BPFMap
    public let replies: BPFMap
    public let vips: BPFMap
    public let state: BPFMap
    public let counters: BPFMap
    public let sockets: BPFMap
    public let interfaces: BPFMap
    public let local: BPFMap
    public let alive: BPFMap
    public let offload: BPFMap
    public let offloadIndex: BPFMap

    public init(_ object: BPFObject) throws {
        services = try object.map(FULCRUM_MAP_SERVICES)
        replies = try object.map(FULCRUM_MAP_REPLIES)
        vips = try object.map(FULCRUM_MAP_VIPS)
        state = try object.map(FULCRUM_MAP_STATE)
        counters = try object.map(FULCRUM_MAP_COUNTERS)
        sockets = try object.map(FULCRUM_MAP_XSKS)
        interfaces = try object.map(FULCRUM_MAP_IFSLOTS)
        local = try object.map(FULCRUM_MAP_LOCAL)
        alive = try object.map(FULCRUM_MAP_ALIVE)
        offload = try object.map(FULCRUM_MAP_OFFLOAD)
        offloadIndex = try object.map(FULCRUM_MAP_OFFLOAD_INDEX)
    }

    /// Offload on with `entriesPerQueue` entries in each queue's region (a power of two;
    /// the map was sized for it at load), or off with 0. `sharedWriters`: an interface runs
    /// the program in generic mode, where one queue's frames may run on several CPUs at
    /// once, so the program counts into an entry atomically (fulcrum_state).
    public func setOffload(entriesPerQueue: Int, sharedWriters: Bool) throws {
        var s = currentState
        s.offload_mask = entriesPerQueue > 0 ? UInt32(entriesPerQueue - 1) : 0
        s.offload_shared_writers = sharedWriters ? 1 : 0
        try state.update(UInt32(0), s)
    }

    /// The dead-man switch (FULCRUM_MAP_ALIVE): the program answers for the VIPs only
    /// until `nanoseconds` on CLOCK_MONOTONIC; 0 turns it off.
    public func setAliveUntil(_ nanoseconds: UInt64) throws {
        try alive.update(UInt32(0), nanoseconds)
    }

    static func macBytes(_ mac: MACAddress) -> (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) {
        func b(_ i: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: mac.value >> (40 - 8 * i)) }
        return (b(0), b(1), b(2), b(3), b(4), b(5))
    }

    /// Makes an interface a Fulcrum data-plane interface: its slot (for socket keys) and
    /// the MAC that ARP/NS answers on it carry.
    public func setInterface(ifindex: Int32, slot: Int, mac: MACAddress) throws {
        precondition(slot < Int(FULCRUM_MAX_INTERFACES))
        try interfaces.update(UInt32(bitPattern: ifindex), fulcrum_ifslot(slot: UInt32(slot), mac: Self.macBytes(mac), pad: 0))
    }

    public func removeInterface(ifindex: Int32) throws { try interfaces.delete(UInt32(bitPattern: ifindex)) }

    public static func address(_ a: IPAddress) -> fulcrum_addr {
        var out = fulcrum_addr()
        withUnsafeMutableBytes(of: &out.bytes) { raw in
            for (i, b) in a.bytes.enumerated() { raw[i] = b }
        }
        return out
    }

    public static func key(_ k: ServiceKey) -> fulcrum_service_key {
        fulcrum_service_key(addr: address(k.address), port: k.port.bigEndian, proto: k.proto, pad: 0)
    }

    public func setService(_ key: ServiceKey, group: Int, nat: Bool) throws {
        try services.update(Self.key(key), fulcrum_service_value(group: UInt32(group), flags: nat ? FULCRUM_SERVICE_NAT : 0))
    }

    public func removeService(_ key: ServiceKey) throws { try services.delete(Self.key(key)) }

    public func setReply(_ key: ServiceKey, group: Int) throws {
        try replies.update(Self.key(key), fulcrum_service_value(group: UInt32(group), flags: FULCRUM_SERVICE_NAT))
    }

    public func removeReply(_ key: ServiceKey) throws { try replies.delete(Self.key(key)) }

    public func setVIP(_ address: IPAddress, router: Bool = false) throws {
        try vips.update(Self.address(address), fulcrum_vip_value(flags: router ? FULCRUM_VIP_ROUTER : 0, pad: 0))
    }

    public func removeVIP(_ address: IPAddress) throws { try vips.delete(Self.address(address)) }

    /// Active: answer ARP/NS for VIPs and steer their traffic. Standby: pass everything.
    /// The admission budget is kept.
    public func setActive(_ active: Bool) throws {
        var s = currentState
        s.active = active ? 1 : 0
        try state.update(UInt32(0), s)
    }

    /// The admission budget for new TCP connections, per CPU (fulcrum_state).
    /// `perSecond` 0 = no limit.
    public func setAdmission(perSecond: UInt64, burst: UInt64) throws {
        var s = currentState
        s.new_flow_rate = perSecond
        s.new_flow_burst = max(1, burst)
        try state.update(UInt32(0), s)
    }

    var currentState: fulcrum_state {
        state.lookup(UInt32(0), as: fulcrum_state.self) ?? fulcrum_state(active: 0, offload_mask: 0, new_flow_rate: 0, new_flow_burst: 1,
                                                                     offload_shared_writers: 0, pad: 0)
    }

    public var isActive: Bool { (state.lookup(UInt32(0), as: fulcrum_state.self)?.active ?? 0) != 0 }

    public func counter(_ c: XDPCounter) -> UInt64 { counters.sumPerCPU(c.index) }

    /// Entries in the service, reply and VIP maps, as the kernel holds them (one system
    /// call per entry: for status once a second, not per packet).
    public func entryCounts() -> [String: Int] {
        ["services": services.keys(as: fulcrum_service_key.self).count,
         "replies": replies.keys(as: fulcrum_service_key.self).count,
         "vips": vips.keys(as: fulcrum_addr.self).count]
    }

    public func allCounters() -> [XDPCounter: UInt64] {
        Dictionary(uniqueKeysWithValues: XDPCounter.allCases.map { ($0, counter($0)) })
    }

    static func socketKey(slot: Int, queue: Int) -> UInt32 {
        precondition(queue < Int(FULCRUM_MAX_QUEUES) && slot < Int(FULCRUM_MAX_INTERFACES))
        return UInt32(slot) * UInt32(FULCRUM_MAX_QUEUES) + UInt32(queue)
    }

    /// Puts an AF_XDP socket on an interface's queue: the program redirects that queue's
    /// service frames to it.
    public func setSocket(slot: Int, queue: Int, fd: Int32) throws {
        try sockets.update(Self.socketKey(slot: slot, queue: queue), UInt32(bitPattern: fd))
    }

    public func removeSocket(slot: Int, queue: Int) throws { try sockets.delete(Self.socketKey(slot: slot, queue: queue)) }

    /// Makes `fulcrum_local` hold exactly these addresses (the LB's own).
    public func synchronizeLocal(_ addresses: Set<IPAddress>) throws {
        for a in addresses.prefix(Int(FULCRUM_MAX_LOCAL)) { try local.update(Self.address(a), UInt32(1)) }
        let wanted = Set(addresses.map { Self.address($0).bytesKey })
        for k in local.keys(as: fulcrum_addr.self) where !wanted.contains(k.bytesKey) { try local.delete(k) }
    }

    /// Replaces the service, reply and VIP maps with exactly these entries: new ones are
    /// written first, then stale ones deleted, so a service that stays never disappears.
    public func synchronize(services wanted: [ServiceKey: (group: Int, nat: Bool)],
                            replies wantedReplies: [ServiceKey: Int],
                            vips wantedVIPs: Set<IPAddress>) throws {
        for (k, v) in wanted { try setService(k, group: v.group, nat: v.nat) }
        for (k, g) in wantedReplies { try setReply(k, group: g) }
        for a in wantedVIPs { try setVIP(a) }
        let wantedKeys = Set(wanted.keys.map { Self.key($0).bytesKey })
        for k in services.keys(as: fulcrum_service_key.self) where !wantedKeys.contains(k.bytesKey) {
            try services.delete(k)
        }
        let wantedReplyKeys = Set(wantedReplies.keys.map { Self.key($0).bytesKey })
        for k in replies.keys(as: fulcrum_service_key.self) where !wantedReplyKeys.contains(k.bytesKey) {
            try replies.delete(k)
        }
        let wantedVIPKeys = Set(wantedVIPs.map { Self.address($0).bytesKey })
        for k in vips.keys(as: fulcrum_addr.self) where !wantedVIPKeys.contains(k.bytesKey) {
            try vips.delete(k)
        }
    }
}

extension fulcrum_service_key {
    var bytesKey: [UInt8] { withUnsafeBytes(of: self) { Array($0) } }
}

extension fulcrum_addr {
    var bytesKey: [UInt8] { withUnsafeBytes(of: self) { Array($0) } }
}

/// BPF_PROG_TEST_RUN: runs a program on one frame without any interface.
public enum ProgramTestRun {
    public struct Result: Equatable, Sendable {
        public var verdict: UInt32
        public var output: [UInt8]
    }

    public static let aborted: UInt32 = 0
    public static let drop: UInt32 = 1
    public static let pass: UInt32 = 2
    public static let tx: UInt32 = 3
    public static let redirect: UInt32 = 4

    public static func run(programFD: Int32, frame: [UInt8]) throws -> Result {
        var output = [UInt8](repeating: 0, count: frame.count + 256)
        var outSize = UInt32(output.count)
        var verdict: UInt32 = 0
        try SystemCall.libbpf("BPF_PROG_TEST_RUN") {
            fulcrum_prog_test_run(programFD, frame, UInt32(frame.count), &output, &outSize, &verdict)
        }
        return Result(verdict: verdict, output: Array(output.prefix(Int(outSize))))
    }
}
