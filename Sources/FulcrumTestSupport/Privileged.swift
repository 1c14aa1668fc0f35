#if canImport(Glibc)
import Glibc
#endif

/// Whether tests that need root (BPF, XDP, AF_XDP, network namespaces) can run here.
/// They skip with `reason` when they cannot; CI sets FULCRUM_REQUIRE_PRIVILEGED=1, and
/// then the companion test `privilegesAreThereWhenRequired` fails instead.
public enum Privileged {
    public static var reason: String? {
        if geteuid() != 0 { return "needs root (BPF, XDP, AF_XDP and network namespaces); run as root or in CI" }
        if access("/sys/fs/bpf", F_OK) != 0 { return "needs bpffs at /sys/fs/bpf" }
        return nil
    }

    public static var available: Bool { reason == nil }

    public static var required: Bool {
        guard let v = getenv("FULCRUM_REQUIRE_PRIVILEGED") else { return false }
        return String(cString: v) == "1"
    }

    /// The repository root, from a test file's #filePath (Tests/<Target>/<File>.swift).
    public static func repositoryRoot(from filePath: String = #filePath) -> String {
        var parts = filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }
}
