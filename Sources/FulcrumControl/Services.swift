import FulcrumAPIModels
import FulcrumConfiguration
import FulcrumCore
import FulcrumDataplane
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals
import Synchronization
import FulcrumSystem
#if canImport(Glibc)
import Glibc
#endif

/// A blocking loop on a thread of its own, as a service: the group starts it, and its
/// graceful shutdown calls `stop`, then waits for the loop to return.
final class ThreadService: Service {
    let name: String
    let body: @Sendable () -> Void
    let stop: @Sendable () -> Void

    init(name: String, _ body: @escaping @Sendable () -> Void, stop: @escaping @Sendable () -> Void) {
        self.name = name
        self.body = body
        self.stop = stop
    }

    func run() async throws {
        await withTaskCancellationOrGracefulShutdownHandler { [self] in
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let thread = Thread { [self] in
                    body()
                    done.resume()
                }
                thread.name = name
                thread.start()
            }
        } onCancelOrGracefulShutdown: { [self] in
            stop()
        }
    }
}

/// The forwarding loop's control side, on a thread of its own (its netlink I/O blocks):
/// follows the kernel's routes and neighbours, and writes the status file. On shutdown
/// (the health checks and agents already stopped) it detaches the data plane.
final class ForwardingService: Service, @unchecked Sendable {
    let runtime: Runtime
    let statusFile: String?
    let logger: Logger
    let stopping = Atomic<Bool>(false)
    /// Ends the loop's current pause.
    let wake: WakePipe
    // Touched by the loop's thread only.
    var statusWrites = 0
    var lastMapEntries: [String: Int] = [:]

    init(runtime: Runtime, statusFile: String?, logger: Logger) throws {
        wake = try WakePipe()
        self.runtime = runtime
        self.statusFile = statusFile
        self.logger = logger
    }

    func run() async throws {
        await withTaskCancellationOrGracefulShutdownHandler {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let thread = Thread { [self] in
                    loop()
                    done.resume()
                }
                thread.name = "fulcrum-control"
                thread.start()
            }
        } onCancelOrGracefulShutdown: { [self] in
            stopping.store(true, ordering: .releasing)
            wake.wake()
        }
    }

    /// Sleeps up to `milliseconds`, or until shutdown.
    func pause(_ milliseconds: Int32) { wake.wait(milliseconds) }

    /// Node MACs learnt or lost, and destinations newly unroutable, as events.
    func record(_ refresh: Dataplane.RoutingRefresh) {
        let events = runtime.events
        for (group, address, mac) in refresh.nodeMACs {
            if let mac {
                events.record(.info, "node.mac.learned", "\(group): node \(address) is at \(mac)",
                              ["group": group, "node": "\(address)", "mac": "\(mac)"])
            } else {
                events.record(.warning, "node.mac.lost", "\(group): node \(address) has no MAC; it gets no new flows",
                              ["group": group, "node": "\(address)"])
            }
        }
        for u in refresh.newlyUnrouted {
            events.record(.warning, "reply.unroutable", "NAT replies to \(u.destination) cannot be sent: \(u.reason.rawValue)",
                          ["destination": "\(u.destination)", "reason": u.reason.rawValue])
        }
    }

    func loop() {
        let dataplane = runtime.dataplane
        let watch: RoutingWatch?
        do { watch = try RoutingWatch() } catch {
            logger.warning("no subscription to routing changes; they are read every second", metadata: ["error": "\(error)"])
            watch = nil
        }
        record(dataplane.refreshRouting())
        writeStatus()
        var lastNeighborRefresh = monotonicSeconds()
        var fastRefreshes = 10  // resolve quickly right after start and after a change
        var seenVersion = runtime.committed.value.version
        // A gateway newly without a MAC (a new route, a router that moved): wake every
        // 50 ms for a second, so the kernel's answer reaches the workers in one short
        // wait instead of two of the usual 200 ms. Only a new one: a gateway that stays
        // unresolved must not keep the loop dumping the tables 20 times a second.
        var unresolvedGateways = Set<IPAddress>()
        var quickTicks = 0
        while !stopping.load(ordering: .acquiring) {
            pause(quickTicks > 0 ? 50 : 200)
            if stopping.load(ordering: .acquiring) { break }
            let version = runtime.committed.value.version
            if version != seenVersion {
                seenVersion = version
                fastRefreshes = 10
                statusWrites = 0  // the next status shows the maps as the change left them
            }
            let now = monotonicSeconds()
            let changed = (watch?.drain() ?? false) || dataplane.hasUnrouted
            if changed || fastRefreshes > 0 || quickTicks > 0 || now - lastNeighborRefresh >= 1 {
                let refresh = dataplane.refreshRouting()
                record(refresh)
                if !refresh.unresolvedGateways.isSubset(of: unresolvedGateways) { quickTicks = 20 }
                unresolvedGateways = refresh.unresolvedGateways
                lastNeighborRefresh = now
                fastRefreshes = max(0, fastRefreshes - 1)
                quickTicks = max(0, quickTicks - 1)
            }
            writeStatus()
        }
        logger.info("stopping")
        runtime.events.record(.notice, "daemon.stopping", "fulcrum stopping")
        dataplane.stop()
    }

    func writeStatus() {
        guard let statusFile else { return }
        do {
            // The map sizes cost a system call per entry: read them once a second.
            statusWrites &+= 1
            if statusWrites % 5 == 1 { lastMapEntries = runtime.dataplane.mapEntryCounts() }
            try runtime.statusModel(mapEntries: lastMapEntries).write(to: statusFile)
        } catch {
            logger.warning("cannot write status file", metadata: ["path": "\(statusFile)", "error": "\(error)"])
        }
    }
}

