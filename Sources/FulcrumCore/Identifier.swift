/// The names an operator gives (a group's, this LB's node name): 1 to 64 characters of
/// letters, digits, `.`, `_` and `-`, beginning with a letter or a digit. They appear in
/// URL paths, metric labels, file names, event messages and terminals, so nothing in
/// them needs escaping anywhere, and their size is bounded wherever they are kept.
public enum Identifier {
    public static let maxLength = 64
    public static let rule = "1 to 64 characters of letters, digits, '.', '_' and '-', beginning with a letter or a digit"

    /// Why `name` is not a valid identifier, or nil.
    public static func problem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty else { return "is empty; must be \(rule)" }
        guard bytes.count <= maxLength else { return "is \(bytes.count) characters long; must be \(rule)" }
        func isAlphanumeric(_ b: UInt8) -> Bool { (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) }
        guard isAlphanumeric(bytes[0]) else { return "must begin with a letter or a digit (\(rule))" }
        guard bytes.allSatisfy({ isAlphanumeric($0) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D }) else {
            return "holds a character other than letters, digits, '.', '_' and '-' (\(rule))"
        }
        return nil
    }
}
