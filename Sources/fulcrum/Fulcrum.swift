import FulcrumConfiguration
import ArgumentParser
import FulcrumAPI
import FulcrumAPIModels
import FulcrumControl
import Logging

@main
struct Fulcrum: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrum",
        abstract: "Fulcrum L4 load balancer: XDP steering, AF_XDP workers, MAT and NAT forwarding.",
        subcommands: [Run.self, Check.self, Status.self, Events.self])
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the data plane for the groups in a configuration file.",
        discussion: "SIGHUP reloads the file (a bad file is logged and the running configuration kept); SIGTERM or SIGINT stop cleanly. With an `api:` section, the control API, /metrics and the status page are served (Docs/OPERATIONS.md).")

    @Option(name: .shortAndLong, help: "The YAML configuration file.") var config: String
    @Option(help: "Write counters as JSON to this file every 0.2 s.") var statusFile: String?
    @Option(help: "The XDP object (default: found beside the executable or in the build tree).") var bpfObject: String?
    @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel: Logger.Level = .info

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "fulcrum")
        do {
            try await Daemon(configPath: config, statusFile: statusFile, bpfObject: bpfObject, logger: logger).run { runtime in
                try ControlAPI.services(runtime: runtime, metrics: Metrics(runtime: runtime), logger: logger)
            }
        } catch let error as ConfigErrors {
            printError(error.description)
            throw ExitCode(2)
        } catch {
            printError("fulcrum: \(error)")
            throw ExitCode(1)
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a configuration file without running anything.",
        discussion: "By default the file is checked as `fulcrum run` would check it on this host: its interfaces must exist here with the queues asked for, and its cores must be ones this process may use. --offline checks the file alone (on a build machine, say).")

    @Option(name: .shortAndLong, help: "The YAML configuration file.") var config: String
    @Flag(help: "Check the file alone, not against this host's interfaces and cores.") var offline = false

    func run() throws {
        do {
            let c = offline ? try ConfigLoader.load(path: config) : try HostCheck.load(path: config)
            print("\(config): OK — \(c.groups.count) group(s), \(c.groups.reduce(0) { $0 + $1.nodes.count }) node(s), interfaces \(c.dataplane.interfaces.map(\.name).joined(separator: ", "))")
        } catch let error as ConfigErrors {
            printError(error.description)
            throw ExitCode(2)
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a running daemon's counters from its status file as tables.")

    @Option(help: "The file given to `fulcrum run --status-file`.") var statusFile: String

    func run() throws {
        let s: StatusModel
        do {
            s = try StatusModel.read(from: statusFile)
        } catch {
            printError("cannot read \(statusFile): \(error)")
            throw ExitCode(1)
        }
        print(StatusText.render(s, detail: true))
    }
}

extension Event.Severity: ExpressibleByArgument {}

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the event log (events.file of the configuration), oldest first.",
        discussion: "Reads the file and its rotated copies; the daemon need not be running.")

    @Option(help: "The event log file (events.file).") var file: String
    @Option(help: "Only events with a sequence number after this one.") var since: UInt64 = 0
    @Option(help: "Only events of at least this severity: info, notice, warning or error.") var severity: Event.Severity = .info
    @Option(help: "Rotated files kept (events.keep).") var keep = 3
    @Flag(help: "One JSON object per line, as in the file.") var json = false

    func run() throws {
        let events = EventLog.read(file: file, keep: keep).filter { $0.sequence > since && $0.severity >= severity }
        for e in events {
            if json {
                print(String(decoding: try EventLog.encoder.encode(e), as: UTF8.self))
            } else {
                print(EventText.line(e))
            }
        }
    }
}

func printError(_ text: String) {
    var stderr = StandardError()
    print(text, to: &stderr)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var bytes = Array(string.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
