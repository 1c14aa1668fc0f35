import FulcrumConfiguration
import FulcrumCore
import FulcrumDataplane
import Foundation
import Logging
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// `fulcrum run`: a swift-service-lifecycle `ServiceGroup` of the runtime's services
/// (`Runtime.services`) and what the caller adds (the API). SIGTERM and SIGINT shut it
/// down gracefully, in reverse order: the health and agent threads stop, then the
/// forwarding service detaches XDP.
public final class Daemon: Sendable {
    let configPath: String
    let statusFile: String?
    let bpfObject: String?
    let logger: Logger

    public init(configPath: String, statusFile: String?, bpfObject: String? = nil, logger: Logger) {
        self.configPath = configPath
        self.statusFile = statusFile
        self.bpfObject = bpfObject
        self.logger = logger
    }

    /// Starts the data plane (throws on a start-up failure, before anything is served),
    /// then runs until SIGTERM or SIGINT.
    public func run(services extra: (Runtime) throws -> [any Service] = { _ in [] }) async throws {
        // Block the signals before any thread exists, so every thread inherits the mask and
        // the service group's signal handling (a signalfd) alone receives them.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        ResourceLimits.raiseOpenFiles(logger: logger)

        let config = try HostCheck.load(path: configPath)
        var logger = self.logger
        logger[metadataKey: "host"] = "\(config.nodeName)"
        let stateLock = try StateFile.claim(config.stateFile)
        let events = try EventLog(file: config.events.file, capacity: config.events.memory,
                                  maxFileBytes: config.events.maxBytes, keep: config.events.keep)
        let (committed, note, fromStateFile) = try Controller.initialState(config)
        logger.info("\(note)")
        Controller.recordMissingApplied(committed, fromStateFile: fromStateFile, events: events, note: note)
        var starting = config
        starting.groups = committed.groups
        let dataplane = try Dataplane(options: config.dataplaneOptions(bpfObject: bpfObject), groups: starting.groupSpecs,
                                      routes: config.routeSpecs, logger: logger)
        try dataplane.start()
        let services: [any Service]
        do {
            try Controller.persist(committed, to: config.stateFile)
            let announcer = try config.cluster.map { c in
                try Announcer(interfaces: dataplane.interfaces, floating: c.floatingAddresses.map(\.interface), logger: logger)
            }
            let runtime = try Runtime.assemble(config: config, committed: committed, dataplane: dataplane, events: events,
                                               logger: logger, stateLock: stateLock, announcer: announcer)
            services = try runtime.services(statusFile: statusFile, logger: logger, adding: try extra(runtime))
            runtime.activateIfStandalone()
        } catch {
            dataplane.stop()
            throw error
        }
        logger.info("fulcrum running", metadata: ["groups": "\(committed.groups.count)", "config": "\(configPath)",
                                                   "version": "\(committed.version)"])
        events.record(.notice, "daemon.started",
                      "fulcrum started on \(config.dataplane.interfaces.map(\.name).joined(separator: ", ")) with \(committed.groups.count) groups, \(note)",
                      ["config": configPath, "version": "\(committed.version)", "pid": "\(getpid())"])
        let group = ServiceGroup(configuration: .init(
            services: services.map {
                .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup)
            },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}
