import CFulcrumBPF
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// How an XDP program is attached.
public enum XDPMode: String, Sendable, CaseIterable {
    /// In the driver (veth, most server NICs): fastest, and what AF_XDP wants.
    case native
    /// In the generic (skb) path: works everywhere, slower; used only as a fallback.
    case generic

    var flags: UInt32 { self == .native ? UInt32(XDP_FLAGS_DRV_MODE) : UInt32(XDP_FLAGS_SKB_MODE) }
}

/// An XDP program attached to an interface through a bpf_link. The link is owned by
/// this process's file descriptor: `detach()` (or deinit) removes it, and if the process
/// dies the kernel closes the fd and removes it too, so a crash never leaves a stale
/// program steering traffic into sockets nobody reads.
public final class XDPLink: @unchecked Sendable {
    public let interface: String
    public let ifindex: Int32
    public let mode: XDPMode
    private var fd: Int32

    /// Attaches in native mode; when `allowGenericFallback` and native is refused, in
    /// generic mode (the caller logs `mode`).
    public init(programFD: Int32, interface: String, allowGenericFallback: Bool = true) throws {
        let index = Int32(bitPattern: if_nametoindex(interface))
        guard index > 0 else { throw BPFError.noSuchInterface(interface) }
        self.interface = interface
        ifindex = index
        let native = fulcrum_xdp_link_attach(programFD, index, XDPMode.native.flags)
        if native >= 0 {
            fd = native
            mode = .native
            return
        }
        guard allowGenericFallback else {
            throw SystemError("attach XDP (native) to \(interface)", errno: -native)
        }
        let generic = fulcrum_xdp_link_attach(programFD, index, XDPMode.generic.flags)
        guard generic >= 0 else {
            throw SystemError("attach XDP to \(interface) (native: errno \(-native), generic)", errno: -generic)
        }
        fd = generic
        mode = .generic
    }

    public var isAttached: Bool { fd >= 0 }

    public func detach() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }

    deinit { detach() }
}

public enum InterfaceInfo {
    public static func index(of name: String) throws -> Int32 {
        let index = Int32(bitPattern: if_nametoindex(name))
        guard index > 0 else { throw BPFError.noSuchInterface(name) }
        return index
    }
}
