import CFulcrumBPF
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's own account of an XDP program's run time (`bpf_prog_info.run_time_ns`
/// and `run_cnt`), kept only while run-time statistics are enabled (BPF_ENABLE_STATS):
/// what the program itself costs per frame, apart from the driver and the rest of the
/// path. The statistics cost two clock reads per run while on, so a benchmark turns them
/// on for a pass of its own, not for the figures it publishes.
public enum ProgramStatistics {
    /// Run time and runs of one program so far.
    public struct Sample: Sendable, Equatable {
        public var nanoseconds: UInt64
        public var runs: UInt64

        public init(nanoseconds: UInt64 = 0, runs: UInt64 = 0) {
            self.nanoseconds = nanoseconds
            self.runs = runs
        }

        public static func - (a: Sample, b: Sample) -> Sample {
            Sample(nanoseconds: a.nanoseconds &- b.nanoseconds, runs: a.runs &- b.runs)
        }

        public static func + (a: Sample, b: Sample) -> Sample {
            Sample(nanoseconds: a.nanoseconds &+ b.nanoseconds, runs: a.runs &+ b.runs)
        }

        /// Nanoseconds per run, nil when nothing ran.
        public var perRun: Double? { runs == 0 ? nil : Double(nanoseconds) / Double(runs) }
    }

    /// Run-time statistics on for as long as the returned descriptor is open.
    public static func enable() throws -> FileDescriptorOwner {
        let fd = bpf_enable_stats(BPF_STATS_RUN_TIME)
        guard fd >= 0 else { throw SystemError("enable BPF run-time statistics", errno: -fd) }
        return FileDescriptorOwner(fd)
    }

    /// The ID of the XDP program attached to `interface` (in this network namespace), nil
    /// when none is.
    public static func attachedProgram(interface: String) throws -> UInt32? {
        let index = try InterfaceInfo.index(of: interface)
        var id: UInt32 = 0
        let r = bpf_xdp_query_id(index, 0, &id)
        guard r == 0 else { throw SystemError("query the XDP program of \(interface)", errno: -r) }
        return id == 0 ? nil : id
    }

    /// The program's run time and runs so far.
    public static func sample(program id: UInt32) throws -> Sample {
        let fd = bpf_prog_get_fd_by_id(id)
        guard fd >= 0 else { throw SystemError("open BPF program \(id)", errno: -fd) }
        defer { close(fd) }
        var info = bpf_prog_info()
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        let r = bpf_obj_get_info_by_fd(fd, &info, &length)
        guard r == 0 else { throw SystemError("read BPF program \(id)'s information", errno: -r) }
        return Sample(nanoseconds: info.run_time_ns, runs: info.run_cnt)
    }
}

/// A file descriptor closed when its owner goes.
public final class FileDescriptorOwner: @unchecked Sendable {
    public private(set) var fd: Int32

    public init(_ fd: Int32) { self.fd = fd }

    public func close() {
        if fd >= 0 {
            _ = Glibc.close(fd)
            fd = -1
        }
    }

    deinit { close() }
}
