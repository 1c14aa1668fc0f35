import CFulcrumBPF
import FulcrumBPF
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// One AF_XDP socket with its own UMEM: the four rings (fill, completion, RX, TX), the
/// frame memory, and a free-frame stack. Owned and touched by one worker thread; the
/// rings are reached only through libxdp's inline helpers.
public final class XDPSocket: @unchecked Sendable {
    public static let frameSize = Int(FULCRUM_UMEM_FRAME_SIZE)
    public static let batchSize = 64

    public let interface: String
    public let ifindex: Int32
    public let queue: Int
    public let frameCount: Int
    public let ringSize: Int
    let area: UnsafeMutableRawPointer
    let areaBytes: Int
    var umem: OpaquePointer?
    var socket: OpaquePointer?
    let fill: UnsafeMutablePointer<xsk_ring_prod>
    let completion: UnsafeMutablePointer<xsk_ring_cons>
    let rx: UnsafeMutablePointer<xsk_ring_cons>
    let tx: UnsafeMutablePointer<xsk_ring_prod>
    /// Frames owned by the worker and not in any ring.
    let freeFrames: UnsafeMutablePointer<UInt64>
    var freeCount = 0
    /// Frames queued on TX and not yet completed.
    var txOutstanding = 0
    /// Descriptors reserved on TX in this batch and not yet submitted.
    var pendingTX = 0
    public private(set) var fd: Int32 = -1
    private var released = false

    /// - Parameters:
    ///   - frameCount: UMEM frames; half go to the fill ring, half stay for TX.
    public init(interface: String, queue: Int, frameCount: Int = 4096, ringSize: Int = 2048) throws {
        precondition(ringSize & (ringSize - 1) == 0 && frameCount >= ringSize)
        self.interface = interface
        ifindex = try InterfaceInfo.index(of: interface)
        self.queue = queue
        self.frameCount = frameCount
        self.ringSize = ringSize
        areaBytes = frameCount * XDPSocket.frameSize
        guard let mapped = mmap(nil, areaBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              mapped != MAP_FAILED else {
            throw SystemError("mmap \(areaBytes) bytes of UMEM", errno: errno)
        }
        area = mapped
        fill = .allocate(capacity: 1)
        completion = .allocate(capacity: 1)
        rx = .allocate(capacity: 1)
        tx = .allocate(capacity: 1)
        for ring in [fill, tx] { ring.initialize(to: xsk_ring_prod()) }
        for ring in [completion, rx] { ring.initialize(to: xsk_ring_cons()) }
        freeFrames = .allocate(capacity: frameCount)
        for i in 0..<frameCount { freeFrames[i] = UInt64(i * XDPSocket.frameSize) }
        freeCount = frameCount

        var umemConfig = xsk_umem_config(fill_size: UInt32(ringSize), comp_size: UInt32(ringSize),
                                         frame_size: UInt32(XDPSocket.frameSize), frame_headroom: 0, flags: 0)
        var umemPointer: OpaquePointer?
        do {
            try SystemCall.libbpf("create UMEM for \(interface) queue \(queue)") {
                xsk_umem__create(&umemPointer, area, UInt64(areaBytes), fill, completion, &umemConfig)
            }
            umem = umemPointer
            var socketConfig = xsk_socket_config()
            socketConfig.rx_size = UInt32(ringSize)
            socketConfig.tx_size = UInt32(ringSize)
            // Fulcrum loads its own XDP program; libxdp must not load its default one.
            socketConfig.libxdp_flags = UInt32(XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD)
            // The kernel picks zero-copy where the driver has it and copy mode otherwise.
            socketConfig.bind_flags = UInt16(XDP_USE_NEED_WAKEUP)
            var socketPointer: OpaquePointer?
            var r = xsk_socket__create(&socketPointer, interface, UInt32(queue), umemPointer, rx, tx, &socketConfig)
            // A socket closed a moment ago (a restart, a data plane stopped and started
            // again) gives its queue back from a kernel work queue, not at close: EBUSY
            // for a little while. A queue still in use stays busy past this.
            var waited = 0
            while r == -EBUSY && waited < 1000 {
                usleep(20_000)
                waited += 20
                r = xsk_socket__create(&socketPointer, interface, UInt32(queue), umemPointer, rx, tx, &socketConfig)
            }
            if r == -EBUSY {
                throw SystemError("queue \(queue) of \(interface) is already bound to another AF_XDP socket (another fulcrum, or another AF_XDP program, is using it)", errno: EBUSY)
            }
            try SystemCall.libbpf("create AF_XDP socket on \(interface) queue \(queue)") { r }
            socket = socketPointer
            fd = xsk_socket__fd(socketPointer)
        } catch {
            release()
            throw error
        }
        refillFillRing()
    }

    /// Frees everything, once: the error path of `init` calls it, and deinit (which
    /// Swift runs for a class whose init threw after setting every property) calls it
    /// again — the second call must find nothing to free.
    private func release() {
        guard !released else { return }
        released = true
        if let socket { xsk_socket__delete(socket) }
        if let umem { xsk_umem__delete(umem) }
        socket = nil
        umem = nil
        munmap(area, areaBytes)
        fill.deallocate()
        completion.deallocate()
        rx.deallocate()
        tx.deallocate()
        freeFrames.deallocate()
    }

    deinit { release() }

    @inline(__always)
    func frame(_ address: UInt64) -> UnsafeMutableRawPointer {
        area + Int(truncatingIfNeeded: address)
    }

    /// Gives free frames to the kernel for receiving, keeping some for TX copies.
    @inline(__always)
    func refillFillRing() {
        let reserveForTX = frameCount / 4
        let available = freeCount - reserveForTX
        guard available > 0 else { return }
        // reserve() is all-or-nothing: ask for exactly the slots that are free. And
        // nb_free(ring, n) may answer more than n (all it knows to be free): clamp.
        let wanted = min(available, ringSize)
        let room = min(Int(xsk_prod_nb_free(fill, UInt32(wanted))), wanted)
        guard room > 0 else { return }
        var index: UInt32 = 0
        let n = Int(xsk_ring_prod__reserve(fill, UInt32(room), &index))
        guard n > 0 else { return }
        for i in 0..<n {
            freeCount &-= 1
            xsk_ring_prod__fill_addr(fill, index &+ UInt32(i)).pointee = freeFrames[freeCount]
        }
        xsk_ring_prod__submit(fill, UInt32(n))
    }

    /// Takes back frames whose transmission completed.
    @inline(__always)
    func reapCompletions() {
        guard txOutstanding > 0 else { return }
        var index: UInt32 = 0
        let n = Int(xsk_ring_cons__peek(completion, UInt32(ringSize), &index))
        guard n > 0 else { return }
        for i in 0..<n {
            freeFrames[freeCount] = xsk_ring_cons__comp_addr(completion, index &+ UInt32(i)).pointee
            freeCount &+= 1
        }
        xsk_ring_cons__release(completion, UInt32(n))
        txOutstanding &-= n
    }

    @inline(__always)
    func recycle(_ address: UInt64) {
        freeFrames[freeCount] = address & ~UInt64(XDPSocket.frameSize - 1)
        freeCount &+= 1
    }

    /// Pops a free frame for a copy, or nil.
    @inline(__always)
    func takeFreeFrame() -> UInt64? {
        guard freeCount > 0 else { return nil }
        freeCount &-= 1
        return freeFrames[freeCount]
    }

    /// Kicks the kernel to send what is on the TX ring, when it asks for a kick. In copy
    /// mode one sendto sends at most 32 descriptors (the kernel's TX_BATCH_SIZE) and
    /// answers EAGAIN while more wait, so kick until it stops saying so.
    @inline(__always)
    func kickTransmit() {
        guard xsk_ring_prod__needs_wakeup(tx) != 0 else { return }
        var tries = 0
        while tries < 16 {
            if Socket.kickTransmit(fd) { return }
            if errno != EAGAIN { return }  // EBUSY, ENOBUFS, ENETDOWN: try again next batch
            tries &+= 1
        }
    }

    /// The kernel's counters for this socket (XDP_STATISTICS): why frames were lost
    /// between the XDP redirect and the rings.
    public func statistics() -> xdp_statistics {
        var stats = xdp_statistics()
        var length = socklen_t(MemoryLayout<xdp_statistics>.size)
        _ = getsockopt(fd, 283 /* SOL_XDP */, XDP_STATISTICS, &stats, &length)
        return stats
    }

    @inline(__always)
    var fillNeedsWakeup: Bool { xsk_ring_prod__needs_wakeup(fill) != 0 }
}
