@testable import FulcrumAPI
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Testing

/// The API's connection governor on embedded channels, with time moved by hand: no
/// socket, no sleep.
@Suite struct ConnectionGovernorTests {
    func connection(_ governor: ConnectionGovernor) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(governor.handler())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9180)).wait()
        return channel
    }

    func head(_ channel: EmbeddedChannel) throws {
        try channel.writeInbound(HTTPRequestPart.head(HTTPRequest(method: .get, scheme: nil, authority: "fulcrum", path: "/v1/status")))
    }

    func answer(_ channel: EmbeddedChannel) throws {
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try channel.writeOutbound(HTTPResponsePart.end(nil))
    }

    @Test func atTheCapTheOldestIdleConnectionMakesRoom() throws {
        let governor = ConnectionGovernor(limits: .init(maxConnections: 2, requestTimeout: 10, idleTimeout: 60))
        let first = try connection(governor), second = try connection(governor)
        try head(first)  // mid-request: not a candidate
        let third = try connection(governor)
        #expect(first.isActive && !second.isActive && third.isActive, "the oldest idle one (second) was closed")
        #expect(governor.closedCount(.evicted) == 1 && governor.openConnections == 2)
        try head(third)
        let fourth = try connection(governor)
        #expect(!fourth.isActive && first.isActive && third.isActive, "every other connection is mid-request: the new one goes")
        #expect(governor.closedCount(.overLimit) == 1 && governor.openConnections == 2)
        // An answered request makes its connection idle again, and a candidate.
        try first.writeInbound(HTTPRequestPart.end(nil))
        try answer(first)
        let fifth = try connection(governor)
        #expect(!first.isActive && fifth.isActive && third.isActive)
    }

    @Test func aRequestMustArriveInTimeAndAnIdleConnectionIsClosed() throws {
        let governor = ConnectionGovernor(limits: .init(maxConnections: 10, requestTimeout: 2, idleTimeout: 5))
        let silent = try connection(governor)
        silent.embeddedEventLoop.advanceTime(by: .milliseconds(1999))
        #expect(silent.isActive)
        silent.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!silent.isActive && governor.closedCount(.requestTimeout) == 1)

        // Headers in time, the body not: closed at the same timeout, from the head.
        let slowBody = try connection(governor)
        slowBody.embeddedEventLoop.advanceTime(by: .seconds(1))
        try head(slowBody)
        slowBody.embeddedEventLoop.advanceTime(by: .milliseconds(1999))
        #expect(slowBody.isActive)
        slowBody.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!slowBody.isActive && governor.closedCount(.requestTimeout) == 2)

        // A whole request: no timer while it is handled, however long; after the answer,
        // the idle timeout.
        let kept = try connection(governor)
        try head(kept)
        try kept.writeInbound(HTTPRequestPart.end(nil))
        kept.embeddedEventLoop.advanceTime(by: .seconds(30))
        #expect(kept.isActive, "the handler's own time is not the client's")
        try answer(kept)
        kept.embeddedEventLoop.advanceTime(by: .milliseconds(4999))
        #expect(kept.isActive)
        kept.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!kept.isActive && governor.closedCount(.idleTimeout) == 1)
        #expect(governor.openConnections == 0)
    }
}

@Suite struct TokenTests {
    @Test(arguments: ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR   abc"])
    func theSchemeIsCaseInsensitive(_ header: String) {
        #expect(Tokens.bearer(header) == Array("abc".utf8))
    }

    @Test(arguments: ["Basic abc", "Bearerabc", "Bearer ", "Bearer", "", "Bear abc", "Bearer\tabc"])
    func notABearerToken(_ header: String) {
        #expect(Tokens.bearer(header) == nil)
    }

    @Test func tokensAreComparedAsBytes() {
        let full: [UInt8] = Array(repeating: 0xFF, count: 20), readOnly: [UInt8] = Array(repeating: 0xFE, count: 20)
        let tokens = Tokens(full: full, readOnly: readOnly)
        #expect(tokens.access(full) == .full && tokens.access(readOnly) == .readOnly)
        var near = full
        near[19] = 0xFE
        #expect(tokens.access(near) == nil && tokens.access(full + [0]) == nil && tokens.access([]) == nil)
    }
}
