/// One problem in a configuration file: where, which field, which value, and what to do.
public struct ConfigError: Error, Equatable, CustomStringConvertible, Sendable {
    public var file: String
    public var line: Int?
    public var field: String
    public var value: String?
    public var message: String

    public init(file: String, line: Int?, field: String, value: String?, message: String) {
        self.file = file
        self.line = line
        self.field = field
        self.value = value
        self.message = message
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
}
