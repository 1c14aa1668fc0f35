import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's own share of the host's resources.
enum ResourceLimits {
    /// Raises the soft limit on open files to the hard one. systemd's default soft limit is
    /// 1024; the control API alone could take that many, and a health check, the status
    /// file or netlink that cannot open a descriptor must not be the price of API traffic
    /// (the API also caps its connections: `api.max_connections`).
    static func raiseOpenFiles(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        let before = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            logger.info("open-file limit raised", metadata: ["from": "\(before)", "to": "\(limit.rlim_max)"])
        } else {
            logger.warning("cannot raise the open-file limit", metadata: ["soft": "\(before)", "hard": "\(limit.rlim_max)",
                                                                           "error": "\(String(cString: strerror(errno)))"])
        }
    }
}
