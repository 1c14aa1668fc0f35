import NIOCore
import NIOHTTPTypes
import Synchronization

/// Keeps the control API from holding more than its share of the daemon: at most
/// `api.max_connections` open at once; a new connection's first request headers within
/// `api.request_timeout`, and every request's body within the same time of its headers;
/// a kept-alive connection closed after `api.idle_timeout` without a request.
///
/// At the cap a new connection is not turned away while idle ones hold the places: the
/// oldest connection that has no request in progress is closed instead, so a thousand
/// connections that never send a byte cannot keep a good client out (it connects, sends at
/// once, and is the newest). Only when every connection is mid-request is the new one
/// closed. What was closed, and why, is counted (`fulcrum_api_connections_closed_total`).
public final class ConnectionGovernor: Sendable {
    public struct Limits: Sendable {
        public var maxConnections: Int
        public var requestTimeout: TimeAmount
        public var idleTimeout: TimeAmount

        public init(maxConnections: Int, requestTimeout: Double, idleTimeout: Double) {
            self.maxConnections = maxConnections
            self.requestTimeout = .nanoseconds(Int64(requestTimeout * 1e9))
            self.idleTimeout = .nanoseconds(Int64(idleTimeout * 1e9))
        }
    }

    /// Why a connection was closed by the governor (metric label values).
    public enum Closed: String, CaseIterable, Sendable {
        /// The cap was reached and this was the oldest connection with no request in progress.
        case evicted
        /// The cap was reached and every open connection was mid-request: the new one went.
        case overLimit = "over_limit"
        case requestTimeout = "request_timeout"
        case idleTimeout = "idle_timeout"
    }

    private struct Open {
        var channel: any Channel
        var serial: UInt64
        var busy: Bool
    }

    public let limits: Limits
    private let open = Mutex<(next: UInt64, byID: [UInt64: Open])>((0, [:]))
    private let closed = Mutex<[Closed: UInt64]>([:])

    public init(limits: Limits) { self.limits = limits }

    public var openConnections: Int { open.withLock { $0.byID.count } }
    public func closedCount(_ reason: Closed) -> UInt64 { closed.withLock { $0[reason] ?? 0 } }

    func count(_ reason: Closed) { closed.withLock { $0[reason, default: 0] += 1 } }

    /// Registers a connection; returns its id and the connection to close to make room
    /// (another, or this one), if the cap is passed.
    func opened(_ channel: any Channel) -> (id: UInt64, close: (any Channel)?) {
        let (id, victim, isSelf) = open.withLock { s -> (UInt64, (any Channel)?, Bool) in
            s.next &+= 1
            let id = s.next
            s.byID[id] = Open(channel: channel, serial: id, busy: false)
            guard s.byID.count > limits.maxConnections else { return (id, nil, false) }
            let idle = s.byID.filter { $0.key != id && !$0.value.busy }.min { $0.value.serial < $1.value.serial }
            if let idle {
                s.byID[idle.key] = nil
                return (id, idle.value.channel, false)
            }
            s.byID[id] = nil
            return (id, channel, true)
        }
        if victim != nil { count(isSelf ? .overLimit : .evicted) }
        return (id, victim)
    }

    func setBusy(_ id: UInt64, _ busy: Bool) {
        open.withLock { s in s.byID[id]?.busy = busy }
    }

    func closed(_ id: UInt64) {
        _ = open.withLock { s in s.byID.removeValue(forKey: id) }
    }

    /// The per-connection half, added to each connection's pipeline after HTTP decoding.
    func handler() -> ConnectionGovernorHandler { ConnectionGovernorHandler(governor: self) }
}

/// One connection's timers and its place in the governor. Runs on the connection's event loop.
final class ConnectionGovernorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let governor: ConnectionGovernor
    private var id: UInt64?
    private var timer: Scheduled<Void>?
    /// Requests read whose answer is not yet written (pipelining may make it more than one).
    private var inProgress = 0
    private var readingRequest = false

    init(governor: ConnectionGovernor) { self.governor = governor }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { register(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        register(context)
        context.fireChannelActive()
    }

    private func register(_ context: ChannelHandlerContext) {
        guard id == nil else { return }
        let (id, victim) = governor.opened(context.channel)
        self.id = id
        if let victim {
            victim.close(promise: nil)
            if victim === context.channel { return }
        }
        arm(context, governor.limits.requestTimeout, .requestTimeout)
    }

    private func arm(_ context: ChannelHandlerContext, _ after: TimeAmount, _ reason: ConnectionGovernor.Closed) {
        timer?.cancel()
        let channel = context.channel
        let governor = self.governor
        timer = context.eventLoop.scheduleTask(in: after) {
            governor.count(reason)
            channel.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            // The request's head arrived; its body must follow within the request timeout.
            if !readingRequest && inProgress == 0, let id { governor.setBusy(id, true) }
            arm(context, governor.limits.requestTimeout, .requestTimeout)
            readingRequest = true
            inProgress += 1
        case .body:
            break
        case .end:
            readingRequest = false
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            inProgress = max(0, inProgress - 1)
            if inProgress == 0 && !readingRequest {
                if let id { governor.setBusy(id, false) }
                arm(context, governor.limits.idleTimeout, .idleTimeout)
            }
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { release() }

    private func release() {
        timer?.cancel()
        timer = nil
        if let id { governor.closed(id) }
        id = nil
    }
}
