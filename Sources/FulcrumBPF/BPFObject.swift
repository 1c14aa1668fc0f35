import CFulcrumBPF
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

public enum BPFError: Error, CustomStringConvertible {
    case objectNotFound(searched: [String])
    case programNotFound(String)
    case mapNotFound(String)
    case noSuchInterface(String)

    public var description: String {
        switch self {
        case let .objectNotFound(searched):
            return "the BPF object fulcrum.bpf.o was not found; looked in: \(searched.joined(separator: ", ")). Run `make bpf` or set FULCRUM_BPF_OBJECT."
        case let .programNotFound(name): return "BPF program \(name) is not in the object"
        case let .mapNotFound(name): return "BPF map \(name) is not in the object"
        case let .noSuchInterface(name): return "no network interface named \(name)"
        }
    }
}

/// A loaded BPF object file: its programs and maps, freed on deinit.
public final class BPFObject: @unchecked Sendable {
    let object: OpaquePointer
    public let path: String

    /// Opens and loads (verifies) an object file.
    /// - Parameter mapEntries: maps sized at load time (name → max_entries), such as the
    ///   offload table, whose size follows the queues and the configuration.
    public init(path: String, mapEntries: [String: UInt32] = [:]) throws {
        self.path = path
        guard let object = bpf_object__open_file(path, nil) else {
            throw SystemError("open BPF object \(path)", errno: Glibc.errno)
        }
        for (name, entries) in mapEntries {
            guard let map = bpf_object__find_map_by_name(object, name) else {
                bpf_object__close(object)
                throw BPFError.mapNotFound(name)
            }
            let r = bpf_map__set_max_entries(map, entries)
            if r != 0 {
                bpf_object__close(object)
                throw SystemError("size BPF map \(name) to \(entries) entries", errno: -r)
            }
        }
        let loaded = bpf_object__load(object)
        if loaded != 0 {
            bpf_object__close(object)
            throw SystemError("load (verify) BPF object \(path)", errno: -loaded)
        }
        self.object = object
    }

    deinit { bpf_object__close(object) }

    public func programFD(_ name: String) throws -> Int32 {
        guard let program = bpf_object__find_program_by_name(object, name) else {
            throw BPFError.programNotFound(name)
        }
        return bpf_program__fd(program)
    }

    public func map(_ name: String) throws -> BPFMap {
        guard let map = bpf_object__find_map_by_name(object, name) else { throw BPFError.mapNotFound(name) }
        return BPFMap(owner: self, name: name, fd: bpf_map__fd(map), keySize: Int(bpf_map__key_size(map)),
                      valueSize: Int(bpf_map__value_size(map)), maxEntries: Int(bpf_map__max_entries(map)), perCPU: bpf_map__type(map) == BPF_MAP_TYPE_PERCPU_ARRAY
                        || bpf_map__type(map) == BPF_MAP_TYPE_PERCPU_HASH)
    }

    /// Where the daemon finds fulcrum.bpf.o without being told: $FULCRUM_BPF_OBJECT,
    /// beside the executable, the install location, then the build tree.
    public static func locate(named name: String = "fulcrum.bpf.o", executable: String = CommandLine.arguments[0],
                              sourceRoot: String? = nil) throws -> String {
        var candidates: [String] = []
        if let env = getenv("FULCRUM_BPF_OBJECT") { candidates.append(String(cString: env)) }
        var exe = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &exe, exe.count - 1)
        let exePath = n > 0 ? String(decoding: exe[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : executable
        if let slash = exePath.lastIndex(of: "/") {
            let dir = String(exePath[..<slash])
            candidates.append(dir + "/" + name)
            candidates.append(dir + "/../bpf/" + name)  // .build/debug → .build/bpf
            candidates.append(dir + "/../../bpf/" + name)  // .build/x86_64-unknown-linux-gnu/debug
            candidates.append(dir + "/../lib/fulcrum/" + name)
        }
        candidates.append("/usr/lib/fulcrum/" + name)
        if let sourceRoot { candidates.append(sourceRoot + "/.build/bpf/" + name) }
        for c in candidates where access(c, R_OK) == 0 { return c }
        throw BPFError.objectNotFound(searched: candidates)
    }
}

/// A BPF map by fd with its key and value sizes; typed access checks the sizes.
public struct BPFMap: @unchecked Sendable {
    /// Keeps the object (and so this fd) open for as long as the map is used.
    let owner: BPFObject
    public let name: String
    public let fd: Int32
    public let keySize: Int
    public let valueSize: Int
    public let maxEntries: Int
    public let perCPU: Bool

    public func update<K: BitwiseCopyable, V: BitwiseCopyable>(_ key: K, _ value: V) throws {
        precondition(MemoryLayout<K>.size == keySize && MemoryLayout<V>.size == valueSize, "\(name): size mismatch")
        _ = try withUnsafeBytes(of: key) { k in
            try withUnsafeBytes(of: value) { v in
                _ = try SystemCall.libbpf("update map \(name)") {
                    bpf_map_update_elem(fd, k.baseAddress, v.baseAddress, UInt64(BPF_ANY))
                }
            }
        }
    }

    /// Deletes a key; a missing key is not an error.
    public func delete<K: BitwiseCopyable>(_ key: K) throws {
        precondition(MemoryLayout<K>.size == keySize)
        let r = withUnsafeBytes(of: key) { bpf_map_delete_elem(fd, $0.baseAddress) }
        if r < 0 && r != -ENOENT { throw SystemError("delete from map \(name)", errno: -r) }
    }

    public func lookup<K: BitwiseCopyable, V: BitwiseCopyable>(_ key: K, as: V.Type = V.self) -> V? {
        precondition(MemoryLayout<K>.size == keySize && MemoryLayout<V>.size == valueSize && !perCPU)
        return withUnsafeBytes(of: key) { k in
            withUnsafeTemporaryAllocation(of: V.self, capacity: 1) { buffer -> V? in
                bpf_map_lookup_elem(fd, k.baseAddress, buffer.baseAddress!) == 0 ? buffer[0] : nil
            }
        }
    }

    /// For a per-CPU map of UInt64: the sum over CPUs.
    public func sumPerCPU<K: BitwiseCopyable>(_ key: K) -> UInt64 {
        precondition(perCPU && valueSize == 8)
        let cpus = Int(libbpf_num_possible_cpus())
        var values = [UInt64](repeating: 0, count: max(cpus, 1))
        let r = withUnsafeBytes(of: key) { k in
            values.withUnsafeMutableBytes { bpf_map_lookup_elem(fd, k.baseAddress, $0.baseAddress) }
        }
        return r == 0 ? values.reduce(0, &+) : 0
    }

    /// Every key currently in a hash map.
    public func keys<K: BitwiseCopyable>(as: K.Type) -> [K] {
        precondition(MemoryLayout<K>.size == keySize)
        var out: [K] = []
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: keySize * 2, alignment: 8)
        defer { buffer.deallocate() }
        let current = buffer
        let next = buffer + keySize
        var hasCurrent = false
        while bpf_map_get_next_key(fd, hasCurrent ? current : nil, next) == 0 {
            out.append(next.loadUnaligned(as: K.self))
            current.copyMemory(from: next, byteCount: keySize)
            hasCurrent = true
        }
        return out
    }
}

/// An mmap-able BPF array (BPF_F_MMAPABLE) mapped into this process: the kernel and
/// the process share its values, written and read without a system call. Unmapped when
/// the last reference goes; the map outlives it (the object holds it).
public final class SharedMapMemory: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let length: Int
    let map: BPFMap

    /// Maps all of `map` (its values, each rounded up to 8 bytes, one after another).
    public init(_ map: BPFMap) throws {
        let stride = (map.valueSize + 7) & ~7
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        length = (map.maxEntries * stride + page - 1) / page * page
        guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, map.fd, 0), p != MAP_FAILED else {
            throw SystemError("mmap BPF map \(map.name) (\(length) bytes)", errno: Glibc.errno)
        }
        base = p
        self.map = map
    }

    deinit { munmap(base, length) }
}
