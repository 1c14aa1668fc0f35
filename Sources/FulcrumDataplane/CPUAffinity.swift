import CFulcrumBPF
import FulcrumBPF
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// CPU pinning that respects the process's allowed set (taskset, cgroups).
public enum CPUAffinity {
    /// The CPUs this process may run on, ascending.
    public static func allowedCPUs() -> [Int] {
        var cpus = [Int32](repeating: 0, count: 1024)
        let n = fulcrum_allowed_cpus(&cpus, Int32(cpus.count))
        guard n > 0 else { return [0] }
        return cpus.prefix(Int(n)).map(Int.init)
    }

    /// Pins the calling thread to one CPU.
    public static func pinCurrentThread(to cpu: Int) throws {
        try SystemCall.libbpf("pin worker to CPU \(cpu)") { fulcrum_pin_current_thread(Int32(cpu)) }
    }

    /// Names the calling thread (its comm, 15 bytes at most), as ps and /proc show it.
    public static func nameCurrentThread(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
}
