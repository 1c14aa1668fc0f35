import CFulcrumBPF
import FulcrumBPF
import FulcrumDataplane
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// Runs work inside a network namespace on a thread of its own (setns changes only the
/// calling thread, and threads it creates inherit it).
enum Namespace {
    final class Box<T>: @unchecked Sendable {
        var value: Result<T, Error>?
        let body: () throws -> T
        let path: String
        let cpu: Int?
        init(path: String, cpu: Int?, body: @escaping () throws -> T) {
            self.path = path
            self.cpu = cpu
            self.body = body
        }
    }

    static func run<T>(_ name: String, cpu: Int? = nil, _ body: @escaping () throws -> T) throws -> T {
        let box = Box(path: "/var/run/netns/\(name)", cpu: cpu, body: body)
        let context = Unmanaged.passRetained(box as AnyObject).toOpaque()
        var thread = pthread_t()
        let r = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue()
            (box as! Runnable).runInside()
            return nil
        }, context)
        guard r == 0 else { throw SystemError("pthread_create", errno: r) }
        pthread_join(thread, nil)
        return try box.value!.get()
    }
}

protocol Runnable { func runInside() }

extension Namespace.Box: Runnable {
    func runInside() {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            value = .failure(SystemError("open \(path)", errno: errno))
            return
        }
        defer { close(fd) }
        let entered = fulcrum_enter_netns(fd)
        guard entered == 0 else {
            value = .failure(SystemError("setns \(path)", errno: -entered))
            return
        }
        if let cpu { try? CPUAffinity.pinCurrentThread(to: cpu) }
        value = Result { try body() }
    }
}
