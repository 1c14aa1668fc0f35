import FulcrumAPIModels
import FulcrumConfiguration
import FulcrumCore
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

extension Controller {
    /// Everything the daemon's threads and services tell the controller. API calls are
    /// the other way in (`change`, awaited for their answer); both end in this actor,
    /// the one writer of the data plane.
    public enum Input: Sendable {
        /// A health check changed a node's state (the checker's thread).
        case health(HealthChecker.Change)
        /// Health checks cannot run on this LB (nil: they run again).
        case localFault(HealthChecker.LocalFault?)
        /// The weights dynamic weighting puts in force (the agents' thread, every 200 ms).
        case agentWeights([NodeIdentity: Int])
        /// A node an agent announced, or one gone silent (the agents' thread).
        case discovered(DiscoveryDecision)
        /// SIGHUP: read the configuration file again.
        case reload
        /// Answer for the VIPs or stop (standalone at start; in a pair, the cluster
        /// service's decision); `then` runs once the flag is set (the announcements follow).
        case activation(active: Bool, reason: String, then: @Sendable () -> Void)
    }

    /// Handles the inputs, one at a time in arrival order, until their stream ends.
    public func run() async {
        for await input in inputs { handle(input) }
    }

    func handle(_ input: Input) {
        switch input {
        case let .health(change): health(change)
        case let .localFault(fault): localFault(fault)
        case let .agentWeights(weights):
            guard weights != agentWeights else { return }
            agentWeights = weights
            driver.setAgentWeights(weights)
        case let .discovered(d):
            let mutation: Mutation
            switch d {
            case let .add(group, address, port):
                mutation = .addDiscoveredNode(group: group, NodeSpec(address: address, port: port))
            case let .remove(group, address, port):
                mutation = .removeNode(group: group, node: NodeLabel(address: address, port: port).description)
            case let .disable(group, address, port):
                mutation = .patchNode(group: group, node: NodeLabel(address: address, port: port).description,
                                      NodePatchModel(enabled: false))
            }
            _ = try? change(mutation, origin: "discovery")  // a refusal is an event already
        case .reload:
            reload()
        case let .activation(active, reason, then):
            do {
                try driver.setActive(active)
                logger.info(active ? "active: answering for the VIPs (\(reason))" : "not active: VIP traffic is not ours (\(reason))")
                then()
            } catch {
                // The flag is a map write; failing it is the data plane failing. No
                // announcement follows a flag that is not set.
                logger.error("cannot set the active flag to \(active): \(error)")
                events?.record(.error, "cluster.flag_failed", "cannot set the active flag to \(active): \(error)", [:])
            }
        }
    }

    /// A node's health: the data plane learns it by identity (so it holds across reloads);
    /// it is an event, as is a group left with no live node and its return.
    func health(_ change: HealthChecker.Change) {
        let n = change.node
        driver.setHealth(n, up: change.up)
        let fields = ["group": n.group, "node": "\(n.address)", "port": "\(n.port)"]
        if change.up {
            logger.notice("node up", metadata: ["node": "\(n)"])
            events?.record(.notice, "node.up", "\(n.group): node \(n.address) is up", fields)
        } else {
            let why = change.reason ?? "failed"
            logger.warning("node down", metadata: ["node": "\(n)", "reason": "\(why)"])
            events?.record(.warning, "node.down", "\(n.group): node \(n.address) is down (\(why))",
                           fields.merging(["reason": why]) { a, _ in a })
        }
        // A group that is gone (its nodes are "no longer checked") is no alert either way.
        guard let group = committed.groups.first(where: { $0.name == n.group }) else { return }
        let members = group.nodes.map { NodeIdentity(group: group.name, address: $0.address, port: $0.port) }
        switch liveness.record(n, up: change.up, members: members) {
        case let .noLiveNode(name):
            events?.record(.error, "group.no_live_node",
                           "\(name): no node is up; new flows go to "
                               + (group.sorry.map { "the sorry server \($0.address)" } ?? "nowhere (no sorry server)"),
                           ["group": name])
        case let .back(name):
            events?.record(.notice, "group.back", "\(name): a node is up again; new flows go to the nodes", ["group": name])
        case nil:
            break
        }
    }

    /// Health checks that cannot run on this LB (no file descriptor, buffer or port): an
    /// alarm about this LB, never a node's failure; and its end.
    func localFault(_ fault: HealthChecker.LocalFault?) {
        if let fault {
            logger.error("health checks cannot run on this LB; node states are kept", metadata: ["reason": "\(fault.reason)"])
            events?.record(.error, "lb.local_fault",
                           "health checks cannot run on this LB (\(fault.reason)); every node keeps the state it had",
                           ["reason": fault.reason])
        } else {
            logger.notice("health checks run again")
            events?.record(.notice, "lb.local_fault.cleared", "health checks run again on this LB")
        }
    }

    /// SIGHUP: the configuration file's groups become the configuration (like any change);
    /// a changed admission budget applies at once; other node-local settings wait for a
    /// restart, with a warning.
    func reload() {
        do {
            _ = try change(.reloadFile, origin: "SIGHUP")
        } catch {
            return  // logged and recorded as an event by `change`
        }
        guard let next = try? ConfigLoader.load(path: local.file) else { return }
        let running = local.dataplane
        if next.dataplane.admission != running.admission {
            let a = next.dataplane.admission
            do {
                try driver.setAdmission(perSecond: UInt64(a.newConnectionsPerSecond), burst: UInt64(a.burst))
                local.dataplane.admission = a
            } catch {
                logger.error("cannot set the admission budget", metadata: ["error": "\(error)"])
            }
        }
        var restartOnly = next.dataplane
        restartOnly.admission = local.dataplane.admission
        if restartOnly != local.dataplane || next.api != local.api || next.events != local.events {
            logger.warning("node-local settings changed (dataplane, api or events); they take effect at the next restart")
        }
    }
}

/// The controller's inputs handled for the life of the daemon: the first service to
/// start and the last to stop.
final class ControllerService: Service {
    let controller: Controller
    let inputs: AsyncStream<Controller.Input>.Continuation

    init(controller: Controller, inputs: AsyncStream<Controller.Input>.Continuation) {
        self.controller = controller
        self.inputs = inputs
    }

    func run() async throws {
        await withGracefulShutdownHandler {
            await controller.run()
        } onGracefulShutdown: { [inputs] in
            inputs.finish()
        }
    }
}

/// SIGHUP, as the controller's input.
final class ReloadService: Service {
    let inputs: AsyncStream<Controller.Input>.Continuation

    init(inputs: AsyncStream<Controller.Input>.Continuation) { self.inputs = inputs }

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            inputs.yield(.reload)
        }
    }
}
