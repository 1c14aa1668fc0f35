/// A shared secret as its file holds it (the agent key, the API tokens, the pair's key):
/// bytes, never text. Every byte counts, 0x80 and above included; only ASCII whitespace
/// at either end is dropped (the newline an editor or `echo` adds), the same way on every
/// side, so `head -c 32 /dev/urandom > key` works as it is.
public enum SharedKey {
    /// The least a key may hold, counted in bytes after the trim.
    public static let minimumBytes = 16

    /// The key in a file's contents.
    public static func bytes(fromFile contents: [UInt8]) -> [UInt8] {
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D || b == 0x0B || b == 0x0C }
        guard let first = contents.firstIndex(where: { !isSpace($0) }),
              let last = contents.lastIndex(where: { !isSpace($0) }) else { return [] }
        return Array(contents[first...last])
    }

    /// Why a file's key cannot be used, for the field's error; nil when it can.
    public static func problem(_ key: [UInt8], file: String) -> String? {
        key.count >= minimumBytes ? nil
            : "the key in \(file) is \(key.count) bytes, fewer than \(minimumBytes); make one with `head -c 32 /dev/urandom | base64 > \(file)`"
    }
}
