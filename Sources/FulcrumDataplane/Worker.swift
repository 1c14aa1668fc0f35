import CFulcrumBPF
import FulcrumBPF
import FulcrumCore
import Synchronization
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// A change for a worker, applied on its thread between batches.
/// Commands that name a node by index carry the generation of the layout they were
/// computed for; a worker holding another generation ignores them (the reload that
/// changed the layout carried the current state anyway).
public enum WorkerCommand: Sendable {
    /// A new layout, its tables built off the packet thread: the worker renumbers its
    /// flows through the handoff's slot map and swaps the balancer in.
    case install(LayoutHandoff)
    case nodeUp(generation: UInt64, group: Int, node: Int, up: Bool)
    case nodeMAC(generation: UInt64, group: Int, node: Int, mac: MACAddress?)
    case sorryMAC(generation: UInt64, group: Int, mac: MACAddress?)
    /// New weights for a group, with its Maglev table for them built off the packet thread.
    case weights(generation: UInt64, group: Int, [Int], MaglevHandoff)
    case nodeEnabled(generation: UInt64, group: Int, node: Int, enabled: Bool)
    case sorryUp(generation: UInt64, group: Int, up: Bool)
    /// Where NAT replies go now (the kernel's routes or neighbours changed).
    case routing(RoutingTable)
    /// The active role changed: every offloaded flow back to the worker, and flows offered
    /// to the XDP program from now on only while active.
    case offloadOffering(Bool)
}

/// A new layout's `Balancer`, built by the control thread for one worker (its schedulers,
/// Maglev tables and service tables: the costly part), with the old-slot → new-slot map.
/// `@unchecked Sendable`: ownership moves to the worker with the command; the control
/// thread never touches it after sending.
public final class LayoutHandoff: @unchecked Sendable {
    let balancer: Balancer
    let remap: [SlotTarget]

    init(balancer: Balancer, remap: [SlotTarget]) {
        self.balancer = balancer
        self.remap = remap
    }
}

/// A Maglev table built by the control thread for one worker's scheduler; ownership
/// moves with the command.
public final class MaglevHandoff: @unchecked Sendable {
    let table: MaglevTable
    init(_ table: MaglevTable) { self.table = table }
}

/// Destinations a worker's NAT replies could not be sent to, for the control plane:
/// storage reserved once, so the worker's appends never allocate.
struct UnroutedLog: ~Copyable {
    static let capacity = 64
    var entries: [UnroutedReply]
    init() {
        entries = []
        entries.reserveCapacity(Self.capacity)
    }
}

/// One data-plane worker: a thread pinned to a core that owns the AF_XDP sockets of one
/// queue (one per data-plane interface), a flow table and a `Balancer`. Nothing it
/// touches per packet is shared: control changes wait in a queue until the end of a
/// batch (a short lock, held only to swap the queue), and counters have one writer, the
/// worker, and are read by the control plane as relaxed atomics.
public final class Worker: @unchecked Sendable {
    public let queue: Int
    public let cpu: Int
    let sockets: [XDPSocket]
    var balancer: Balancer
    private let commands = Mutex<[WorkerCommand]>([])
    private let running = Atomic<Bool>(false)
    private let applied: Atomic<UInt64>
    private let unrouted = Mutex(UnroutedLog())
    private let routingApplied = Atomic<UInt64>(0)
    private let published: Mutex<(WorkerCounters, FlowTable, BalancerSpec)>
    private let wakeFD: Int32
    private var thread: pthread_t?
    /// Frames the TX ring had no room for, and loop statistics.
    public let stalls = Atomic<UInt64>(0)
    /// Turns of the worker's loop (at least one every 10 ms, idle or not): a count that
    /// stands still is a worker that is stuck (the pair's data-plane monitor).
    public let progress = Atomic<UInt64>(0)
    /// Benchmark reference only: swap MACs and send back, no decision (xdpsock's l2fwd).
    let reflectOnly: Bool
    /// The flow sync's rings and switches (`Worker+Sync.swift`).
    public let sync = WorkerSync()
    /// The last bulk transfer this worker started (its thread's own).
    var bulkSeen: UInt64 = 0
    /// The frames of one RX batch, handed to the balancer together.
    let batch: PacketBatch = {
        let b = PacketBatch(capacity: XDPSocket.batchSize)
        // A frame starts XDP_PACKET_HEADROOM into its 2 KiB UMEM chunk.
        b.frameCapacity = Int(FULCRUM_MAX_WORKER_FRAME)
        return b
    }()

    /// The longest the loop keeps looking after its last frame before it sleeps (ns;
    /// `IdleSpin` sizes each look from the gaps between frames).
    let idleSpin: UInt64
    /// This worker's region of the XDP offload table; nil with offload off.
    let offload: FlowOffload?

    /// Flows the XDP program forwards for this worker now.
    public var offloadedFlows: Int { offload?.offloadedFlows ?? 0 }

    init(queue: Int, cpu: Int, sockets: [XDPSocket], balancer: Balancer, reflectOnly: Bool = false, idleSpin: UInt64 = 0,
         offload: FlowOffload? = nil) throws {
        self.reflectOnly = reflectOnly
        self.offload = offload
        // The data plane starts passive: nothing is offered until it is made active.
        balancer.attachOffload(offload, offering: false)
        self.idleSpin = idleSpin
        self.queue = queue
        self.cpu = cpu
        self.sockets = sockets
        self.balancer = balancer
        published = Mutex((balancer.counters, balancer.flows, balancer.spec))
        applied = Atomic(balancer.spec.generation)
        wakeFD = try SystemCall.libbpf("eventfd") { fulcrum_eventfd_nonblocking() }
    }

    deinit { close(wakeFD) }

    /// The counters, flow table and spec in use now (they change on reload).
    public var current: (counters: WorkerCounters, flows: FlowTable, spec: BalancerSpec) {
        published.withLock { ($0.0, $0.1, $0.2) }
    }

    /// Kernel AF_XDP statistics summed over this worker's sockets.
    public func socketStatistics() -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for s in sockets {
            let st = s.statistics()
            out["rx_dropped", default: 0] += st.rx_dropped
            out["rx_invalid_descs", default: 0] += st.rx_invalid_descs
            out["tx_invalid_descs", default: 0] += st.tx_invalid_descs
            out["rx_ring_full", default: 0] += st.rx_ring_full
            out["rx_fill_ring_empty", default: 0] += st.rx_fill_ring_empty_descs
            out["tx_ring_empty", default: 0] += st.tx_ring_empty_descs
        }
        out["tx_stalls"] = stalls.load(ordering: .relaxed)
        out["frames_free"] = UInt64(sockets.reduce(0) { $0 + $1.freeCount })
        out["tx_outstanding"] = UInt64(sockets.reduce(0) { $0 + $1.txOutstanding })
        return out
    }

    /// Commands sent to this worker, and applied by it, since start.
    private let sentCount = Atomic<Int>(0)
    private let appliedCount = Atomic<Int>(0)
    public var commandCounts: (sent: Int, applied: Int) {
        (sentCount.load(ordering: .acquiring), appliedCount.load(ordering: .acquiring))
    }

    public func send(_ command: WorkerCommand) {
        commands.withLock { $0.append(command) }
        sentCount.add(1, ordering: .releasing)
        wake()
    }

    func start() throws {
        running.store(true, ordering: .releasing)
        let context = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        let r = pthread_create(&t, nil, { raw in
            let worker = Unmanaged<Worker>.fromOpaque(raw!).takeRetainedValue()
            // Named for ps, top and fault injection (Bench/testbed/stall-thread.py).
            CPUAffinity.nameCurrentThread("fulcrum-q\(worker.queue)")
            worker.run()
            return nil
        }, context)
        guard r == 0 else {
            Unmanaged<Worker>.fromOpaque(context).release()
            throw SystemError("start worker for queue \(queue)", errno: r)
        }
        thread = t
    }

    /// Ends the worker's idle wait (a command, records from the flow sync, a stop).
    public func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    func stop() {
        running.store(false, ordering: .releasing)
        wake()
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    private func applyCommands() {
        let batch = commands.withLock { pending -> [WorkerCommand] in
            defer { pending.removeAll(keepingCapacity: true) }
            return pending
        }
        for command in batch {
            let current = balancer.spec.generation
            switch command {
            case let .install(handoff): install(handoff)
            case let .nodeUp(gen, g, n, up): if gen == current { balancer.setNodeUp(group: g, node: n, up) }
            case let .nodeMAC(gen, g, n, mac): if gen == current { balancer.setNodeMAC(group: g, node: n, mac) }
            case let .sorryMAC(gen, g, mac): if gen == current { balancer.setSorryMAC(group: g, mac) }
            case let .weights(gen, g, w, t): if gen == current { balancer.setWeights(group: g, w, table: t.table) }
            case let .nodeEnabled(gen, g, n, on): if gen == current { balancer.setNodeEnabled(group: g, node: n, on) }
            case let .routing(table): balancer.setRouting(table)
            case let .sorryUp(gen, g, up): if gen == current { balancer.setSorryUp(group: g, up) }
            case let .offloadOffering(on): balancer.setOffloadOffering(on)
            }
        }
        balancer.commitChanges()
        // A new layout, weights or node states may have changed the stateless answer for
        // flows the standby was never sent: look at them again.
        if batch.contains(where: {
            switch $0 {
            case .routing, .offloadOffering: false
            default: true
            }
        }) { balancer.flows.startRecheck() }
        appliedCount.add(batch.count, ordering: .releasing)
        applied.store(balancer.spec.generation, ordering: .releasing)
        routingApplied.store(balancer.routingVersion, ordering: .releasing)
    }

    /// Moves the balancer's unrouted destinations to where the control plane reads them.
    /// Never blocks the worker: if the control plane holds the lock, they wait a loop.
    private func publishUnrouted() {
        let b = balancer
        _ = unrouted.withLockIfAvailable { log in
            b.drainUnrouted { u in
                if log.entries.count < UnroutedLog.capacity && !log.entries.contains(u) { log.entries.append(u) }
            }
        }
    }

    /// Whether replies could not be sent somewhere since the last `takeUnrouted`.
    public var hasUnrouted: Bool { unrouted.withLock { !$0.entries.isEmpty } }

    /// The destinations replies could not be sent to since the last call.
    public func takeUnrouted() -> [UnroutedReply] {
        unrouted.withLock { log in
            defer { log.entries.removeAll(keepingCapacity: true) }
            return log.entries
        }
    }

    /// The version of the routing table this worker sends replies by.
    public var routingVersion: UInt64 { routingApplied.load(ordering: .acquiring) }

    /// The generation of the layout this worker forwards with.
    public var appliedGeneration: UInt64 { applied.load(ordering: .acquiring) }

    /// Swaps in a new layout and keeps every flow whose node is still there. The tables
    /// were built off this thread; here the flows are renumbered (one walk of the table
    /// through an array) and the counters that outlive a layout carried over.
    private func install(_ handoff: LayoutHandoff) {
        let old = balancer
        let next = handoff.balancer
        next.takeOver(from: old, remap: handoff.remap)
        balancer = next
        published.withLock { $0 = (next.counters, next.flows, next.spec) }
    }

    private func run() {
        try? CPUAffinity.pinCurrentThread(to: cpu)
        var pollSet = sockets.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        pollSet.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0))
        // When a frame last arrived: within the spin's window of it (at most `idleSpin`,
        // following the gaps between frames: IdleSpin) the loop looks again at once
        // rather than sleeping, so the next frame of a burst costs no wake-up, and a look
        // that keeps missing stops being paid for.
        var lastFrame: UInt64 = 0
        var spin = IdleSpin(maximum: idleSpin)
        while running.load(ordering: .acquiring) {
            progress.store(progress.load(ordering: .relaxed) &+ 1, ordering: .relaxed)  // one writer: this thread
            // Commands wait while more were sent than applied (only this thread applies).
            if sentCount.load(ordering: .acquiring) != appliedCount.load(ordering: .relaxed) { applyCommands() }
            let now = monotonicNanoseconds()
            var received = 0
            for index in 0..<sockets.count {
                received &+= receiveBatch(index, now: now)
            }
            for s in sockets {
                s.reapCompletions()
                s.refillFillRing()
            }
            balancer.maintain(now: now)
            if balancer.unroutedCount > 0 { publishUnrouted() }
            let marking = sync.marking.load(ordering: .relaxed)
            if marking != balancer.flows.syncEnabled { balancer.flows.syncEnabled = marking }
            let syncBusy = marking && syncTurn(now: now)
            if received != 0 {
                if lastFrame != 0 { spin.frame(after: now &- lastFrame) }
                lastFrame = now
            } else if now &- lastFrame >= spin.window {
                // Idle: sleep until a frame, a command or 10 ms (for expiry sweeps); not
                // while a bulk transfer of the flow sync has more to give.
                _ = poll(&pollSet, nfds_t(pollSet.count), syncBusy ? 1 : 10)
                if pollSet[pollSet.count - 1].revents != 0 {
                    var value: UInt64 = 0
                    _ = read(wakeFD, &value, 8)
                }
            }
        }
    }

    /// Receives, decides and transmits up to one batch from socket `index`.
    @inline(__always)
    private func receiveBatch(_ index: Int, now: UInt64) -> Int {
        let s = sockets[index]
        var rxIndex: UInt32 = 0
        let n = Int(xsk_ring_cons__peek(s.rx, UInt32(XDPSocket.batchSize), &rxIndex))
        if n == 0 {
            if s.fillNeedsWakeup { Socket.kickReceive(s.fd) }
            return 0
        }
        let b = balancer
        let batch = self.batch
        for k in 0..<n {
            let desc = xsk_ring_cons__rx_desc(s.rx, rxIndex &+ UInt32(k)).pointee
            batch.frames[k] = s.frame(desc.addr)
            batch.lengths[k] = Int(desc.len)
        }
        if reflectOnly {
            for k in 0..<n {
                let frame = batch.frames[k]
                let destination = RawBytes.loadMAC(frame, 0)
                Rewrite.mat(frame, destinationMAC: RawBytes.loadMAC(frame, 6), sourceMAC: destination)
                batch.verdicts[k] = .transmit(interface: index)
            }
        } else {
            b.process(batch, count: n, now: now, ingress: index)
        }
        var queuedOn = 0  // bit i: socket i has new TX descriptors
        for k in 0..<n {
            let desc = xsk_ring_cons__rx_desc(s.rx, rxIndex &+ UInt32(k)).pointee
            let frame = batch.frames[k]
            var verdict = batch.verdicts[k]
            var outLength = desc.len
            if case let .answer(answer) = verdict {
                verdict = .transmit(interface: answer.interface)
                outLength = UInt32(answer.length)
            }
            switch verdict {
            case .answer:
                s.recycle(desc.addr)  // (made a transmit above)
            case .transmit(let egress):
                if egress == index {
                    if transmit(on: s, address: desc.addr, length: outLength) {
                        queuedOn |= 1 << index
                    } else {
                        s.recycle(desc.addr)
                    }
                } else if egress < sockets.count, let copy = sockets[egress].takeFreeFrame() {
                    let out = sockets[egress]
                    out.frame(copy).copyMemory(from: frame, byteCount: Int(outLength))
                    if transmit(on: out, address: copy, length: outLength) {
                        queuedOn |= 1 << egress
                    } else {
                        out.recycle(copy)
                    }
                    s.recycle(desc.addr)
                } else {
                    b.counters.count(.transmitRingFull)
                    s.recycle(desc.addr)
                }
            case .pass, .drop:
                // A frame in AF_XDP cannot go back to the kernel; the XDP program only
                // sends what is ours, so this is a reload race or a malformed frame.
                s.recycle(desc.addr)
            }
        }
        xsk_ring_cons__release(s.rx, UInt32(n))
        var i = 0
        while queuedOn != 0 {
            if queuedOn & 1 != 0 {
                let out = sockets[i]
                xsk_ring_prod__submit(out.tx, UInt32(out.pendingTX))
                out.txOutstanding &+= out.pendingTX
                out.pendingTX = 0
                out.kickTransmit()
            }
            queuedOn >>= 1
            i &+= 1
        }
        return n
    }

    @inline(__always)
    private func transmit(on s: XDPSocket, address: UInt64, length: UInt32) -> Bool {
        var txIndex: UInt32 = 0
        guard xsk_ring_prod__reserve(s.tx, 1, &txIndex) == 1 else {
            balancer.counters.count(.transmitRingFull)
            _ = stalls.add(1, ordering: .relaxed)
            return false
        }
        let desc = xsk_ring_prod__tx_desc(s.tx, txIndex)!
        desc.pointee.addr = address
        desc.pointee.len = length
        desc.pointee.options = 0
        s.pendingTX &+= 1
        return true
    }
}
