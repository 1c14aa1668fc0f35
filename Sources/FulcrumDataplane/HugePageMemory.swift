import FulcrumCore
#if canImport(Glibc)
import Glibc
#endif

/// Flow-table memory backed by transparent huge pages: mmap a 2 MiB-aligned region and
/// madvise(MADV_HUGEPAGE), which works with THP in "madvise" mode as Debian ships it.
/// Falls back to ordinary pages when the kernel says no.
public enum HugePageMemory {
    static let hugePage = 2 << 20

    public static let table = TableMemory(
        allocate: { bytes in
            let length = (bytes + hugePage - 1) / hugePage * hugePage + hugePage
            guard let raw = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                  raw != MAP_FAILED else {
                fatalError("mmap of \(length) bytes for the flow table failed: errno \(errno)")
            }
            let address = UInt(bitPattern: raw)
            let aligned = (address + UInt(hugePage) - 1) & ~UInt(hugePage - 1)
            // Give back the unaligned head and tail.
            if aligned > address { munmap(raw, Int(aligned - address)) }
            let used = (bytes + hugePage - 1) / hugePage * hugePage
            let tail = address + UInt(length) - (aligned + UInt(used))
            if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: aligned + UInt(used)), Int(tail)) }
            let pointer = UnsafeMutableRawPointer(bitPattern: aligned)!
            _ = madvise(pointer, used, MADV_HUGEPAGE)
            return pointer
        },
        deallocate: { pointer, bytes in
            munmap(pointer, (bytes + hugePage - 1) / hugePage * hugePage)
        })
}
