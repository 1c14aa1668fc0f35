import FulcrumConfiguration
import FulcrumBPF
import FulcrumDataplane

/// What `fulcrum run` would refuse on this host, found without starting anything: an
/// interface that does not exist, more queues than it has, a core this process may not
/// run on. `fulcrum check` runs these after the file's own checks, so that check and run
/// agree on every configuration.
public enum HostCheck {
    public static func problems(_ config: FulcrumConfig, allowedCPUs: [Int] = CPUAffinity.allowedCPUs()) -> [ConfigError] {
        var out: [ConfigError] = []
        for (i, interface) in config.dataplane.interfaces.enumerated() {
            let field = "dataplane.interfaces[\(i)]"
            let line = config.lines["\(field).name"]
            guard (try? InterfaceInfo.index(of: interface.name)) != nil else {
                out.append(ConfigError(file: config.file, line: line, field: "\(field).name", value: interface.name,
                                       message: "no such interface on this host (ip link shows the names)"))
                continue
            }
            let has = InterfaceFacts.rxQueues(of: interface.name)
            if interface.queues > has {
                out.append(ConfigError(file: config.file, line: line, field: "\(field).queues", value: "\(interface.queues)",
                                       message: "\(interface.name) has \(has) receive queue(s); one worker serves each queue, so use at most \(has)"))
            }
        }
        for (i, core) in (config.dataplane.cores ?? []).enumerated() where !allowedCPUs.contains(core) {
            out.append(ConfigError(file: config.file, line: config.lines["dataplane.cores[\(i)]"], field: "dataplane.cores[\(i)]",
                                   value: "\(core)",
                                   message: "is not a CPU this process may run on (allowed: \(allowedCPUs.map(String.init).joined(separator: ", ")))"))
        }
        return out
    }

    /// Parses, validates and checks against the host: what both `check` and `run` use.
    public static func load(path: String) throws -> FulcrumConfig {
        let config = try ConfigLoader.load(path: path)
        let problems = problems(config)
        if !problems.isEmpty { throw ConfigErrors(errors: problems) }
        return config
    }
}
