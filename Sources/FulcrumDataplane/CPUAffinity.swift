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
}

