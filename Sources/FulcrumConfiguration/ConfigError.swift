/// One problem in a configuration file: where, which field, which value, and what to do.
public struct ConfigError: Error, Equatable, CustomStringConvertible, Sendable {
    public var file: String
    public var line: Int?
    public var field: String
    public var value: String?
    public var message: String

    /// Values and messages are cut to a few lines' length: an error names what is wrong,
    /// it never echoes the file (a 5 MB scalar stays out of the log).
    public init(file: String, line: Int?, field: String, value: String?, message: String) {
        self.file = file
        self.line = line
        self.field = field
        self.value = value.map { ConfigError.shortened($0, to: 80) }
        self.message = ConfigError.shortened(message, to: 400)
    }

    static func shortened(_ text: String, to limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        return String(text.prefix(limit)) + "… (\(text.utf8.count) bytes)"
    }

    public var description: String {
        let place = line.map { "\(file):\($0)" } ?? file
        let shown = value.map { " (value: \"\($0)\")" } ?? ""
        return "\(place): \(field): \(message)\(shown)"
    }
}

/// Every problem found in a file, in file order. The running configuration is kept
/// when this is thrown.
public struct ConfigErrors: Error, CustomStringConvertible, Sendable {
    public var errors: [ConfigError]
    public var description: String { errors.map(\.description).joined(separator: "\n") }
    public init(errors: [ConfigError]) { self.errors = errors }
}
