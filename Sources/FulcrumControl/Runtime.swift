import FulcrumConfiguration
import FulcrumCore
import FulcrumDataplane
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// What the services of a running daemon share: the data plane, the controller (the one
/// owner of the configuration), the event log, the health checker and the agents'
/// listener. The API is built on it (FulcrumAPI). `assemble` wires it without starting
/// anything, so tests build one around a data-plane stand-in, with no root.
public final class Runtime: Sendable {
    public let local: FulcrumConfig
    public let dataplane: any DataplaneControl
    public let controller: Controller
    public let events: EventLog
    public let checker: HealthChecker
    /// The node agents' listener, with an `agent:` section.
    public let agents: AgentService?
    /// This LB's side of the pair, with a `cluster:` section.
    public let cluster: ClusterService?
    public let started = Date()
    /// The committed configuration as last applied, readable without awaiting the
    /// controller (status, metrics, the forwarding loop).
    public let committed: CommittedView
    /// The controller's inputs: health changes, agents' weights and discoveries, SIGHUP.
    let inputs: AsyncStream<Controller.Input>.Continuation
    /// This daemon's claim on its state file, held for its life.
    let stateLock: FileLock?

    init(local: FulcrumConfig, dataplane: any DataplaneControl, controller: Controller, events: EventLog, checker: HealthChecker,
         agents: AgentService?, cluster: ClusterService?, committed: CommittedView, inputs: AsyncStream<Controller.Input>.Continuation, stateLock: FileLock?) {
        self.local = local
        self.dataplane = dataplane
        self.controller = controller
        self.events = events
        self.checker = checker
        self.agents = agents
        self.cluster = cluster
        self.committed = committed
        self.inputs = inputs
        self.stateLock = stateLock
    }

    /// The runtime around a data plane that forwards `committed`, wired once: the health
    /// checker and the agents' listener tell the controller (one stream of inputs), the
    /// controller alone writes to the data plane, and a committed change reaches the
    /// view, the checker and the listener. Nothing runs until the services do (`services`).
    public static func assemble(config: FulcrumConfig, committed: Controller.Committed, dataplane: any DataplaneControl,
                                events: EventLog, logger: Logger, stateLock: FileLock? = nil,
                                announcer: Announcer? = nil) throws -> Runtime {
        let (stream, inputs) = AsyncStream.makeStream(of: Controller.Input.self)
        let checker = try HealthChecker(groups: committed.groups, onChange: { inputs.yield(.health($0)) },
                                    onLocalFault: { inputs.yield(.localFault($0)) })
        let agents = try config.agent.map {
            try AgentService(config: $0, groups: committed.groups, events: events, logger: logger,
                             onWeights: { inputs.yield(.agentWeights($0)) }, onDiscovery: { inputs.yield(.discovered($0)) })
        }
        let view = CommittedView(committed)
        let controller = Controller(local: config, committed: committed, driver: DataplaneDriver(dataplane: dataplane, local: config),
                                    events: events, logger: logger, inputs: stream) { c in
            view.set(c)
            checker.update(groups: c.groups)
            agents?.update(groups: c.groups)
        }
        let cluster = try config.cluster.map {
            try ClusterService(config: $0, nodeName: config.nodeName, interfaces: dataplane.interfaces, controller: controller,
                               committed: view, events: events, logger: logger, announcer: announcer,
                               epochFile: config.stateFile + ".epoch",
                               flowSyncChannels: dataplane.flowSyncChannels(),
                               workerProgress: { [dataplane] in dataplane.workerProgress() },
                               keepAlive: { [dataplane] in dataplane.keepAlive(until: $0) }) { active, reason, then in
                inputs.yield(.activation(active: active, reason: reason, then: then))
            }
        }
        return Runtime(local: config, dataplane: dataplane, controller: controller, events: events, checker: checker,
                       agents: agents, cluster: cluster, committed: view, inputs: inputs, stateLock: stateLock)
    }

    /// The daemon's long-lived work with `extra` (the API) in the order the service group
    /// starts it. It shuts down in reverse: the agents' and health checker's threads stop,
    /// the forwarding service detaches XDP and stops the workers, the API closes, and the
    /// controller, first to start, is the last to stop.
    public func services(statusFile: String?, logger: Logger, adding extra: [any Service] = []) throws -> [any Service] {
        var out: [any Service] = [ControllerService(controller: controller, inputs: inputs)] + extra
        out += [ReloadService(inputs: inputs), try ForwardingService(runtime: self, statusFile: statusFile, logger: logger),
                ThreadService(name: "fulcrum-health", checker.run, stop: checker.stop)]
        if let agents { out.append(ThreadService(name: "fulcrum-agents", agents.loop, stop: agents.stop)) }
        // Last to start, first to stop: on SIGTERM the peer hears of it before anything else stops.
        if let cluster {
            out.append(ThreadService(name: "fulcrum-sync", cluster.sync.loop, stop: cluster.sync.stop))
            if let flows = cluster.flowSync {
                out.append(ThreadService(name: "fulcrum-flowsync", flows.loop, stop: flows.stop))
            }
            out.append(ThreadService(name: "fulcrum-cluster", cluster.loop, stop: cluster.stop))
        }
        return out
    }

    /// Standalone (no `cluster:`), this LB answers for its VIPs as soon as it forwards; in a
    /// pair the cluster service decides.
    public func activateIfStandalone() {
        guard cluster == nil else { return }
        inputs.yield(.activation(active: true, reason: "standalone", then: {}))
    }
}

/// The committed configuration, as the controller last published it.
public final class CommittedView: Sendable {
    private let current: Mutex<Controller.Committed>
    init(_ c: Controller.Committed) { current = Mutex(c) }
    public var value: Controller.Committed { current.withLock { $0 } }
    func set(_ c: Controller.Committed) { current.withLock { $0 = c } }
}

extension Runtime {
    /// What is wrong with this LB itself, in words, for status: empty when nothing is.
    public var alarms: [String] {
        var out: [String] = []
        if let f = checker.localFault {
            out.append("health checks cannot run on this LB: \(f.reason) (\(f.checks) check(s) skipped; node states kept)")
        }
        if let c = cluster?.status.withLock({ $0 }) {
            let down = c.interconnects.enumerated().filter { !$0.element.up }
            if c.peer.role == nil {
                out.append("the peer \(c.peer.name) is not heard on any interconnect")
            } else {
                for (i, link) in down { out.append("interconnect \(i) (\(link.local) ↔ \(link.peer)) is down") }
            }
            if let theirs = c.peer.configuredRole, theirs == c.configuredRole {
                out.append("both LBs are configured as \(theirs): set cluster.role to master on one and slave on the other")
            }
            if c.held { out.append("standing down after a dual active: `fulcrumctl resume` on the LB that should serve") }
            if !c.realtime { out.append("heartbeats run at normal priority (no SCHED_FIFO)") }
            if let f = c.flowSync {
                if f.sending && c.peer.role != nil && !f.peerReady {
                    out.append("flow sync: \(c.peer.name) does not yet hold every flow; a failover now would break established connections")
                }
                if f.lagging { out.append("flow sync lagging: the standby is not keeping up") }
                if let full = f.notHeld["table_full"], full > 0 {
                    out.append("flow sync: \(full) records found the flow table full; every worker of a standby holds every flow: size dataplane.flow_table_size for the box's flows")
                }
            }
        }
        return out
    }
}
