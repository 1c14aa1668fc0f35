import Foundation
import FulcrumTestSupport
import Testing

extension OnTheTestbed {
    /// NAT replies take their egress and next hop from the kernel's routing and neighbour
    /// tables, as IPVS or any router would: the testbed's config has no `routes:`. The
    /// client beside the LB is reached on-link; the far client, behind a router, through
    /// the LB's default route.
    @Suite struct RoutingTests {
        @Test func natRepliesFollowTheKernelsRoutesWithNoRoutesSection() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            #expect(try !bed.readConfig().contains("routes:"))
            try bed.startDaemon()
            for (host, vips) in [("client", ["198.18.1.20", "2001:2:1::20"]), ("far", ["198.18.1.20", "2001:2:1::20"])] {
                for vip in vips {
                    let tcp = try bed.client(vip, port: 80, count: 300, from: host)
                    #expect(tcp.ok == 300 && tcp.failed == 0, "\(host) → \(vip) tcp: \(tcp.errors)")
                    let udp = try bed.client(vip, port: 53, proto: "udp", count: 300, from: host)
                    #expect(udp.ok == 300 && udp.failed == 0, "\(host) → \(vip) udp: \(udp.errors)")
                }
            }
            let s = try bed.status()
            #expect(s.unroutedReplies.isEmpty, "\(s.unroutedReplies)")
            #expect(s.drops["no_route_to_client"] == nil && s.drops["next_hop_unresolved"] == nil, "\(s.drops)")
            #expect(s.routes.contains { $0.prefix == "0.0.0.0/0" && $0.via == "198.18.0.254" && $0.mac != nil }, "\(s.routes)")
        }

        /// The router moves to another address and the LB's default route follows it: NAT
        /// replies take the new path within a second, with no reload.
        @Test func aRouteChangeIsFollowedWithinASecondWithoutAReload() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            #expect(try bed.client("198.18.1.20", port: 80, count: 30, from: "far").ok == 30)
            // (The old address goes first: deleting a primary IPv4 address takes the
            // secondaries of its subnet with it.)
            try bed.exec("rt", ["ip", "addr", "del", "198.18.0.254/24", "dev", "eth0"])
            try bed.exec("rt", ["ip", "-6", "addr", "del", "2001:2::fe/64", "dev", "eth0"])
            try bed.exec("rt", ["ip", "addr", "add", "198.18.0.253/24", "dev", "eth0"])
            try bed.exec("rt", ["ip", "-6", "addr", "add", "2001:2::fd/64", "dev", "eth0", "nodad"])
            // (Its last IPv4 address gone, the router's routes out of eth0 went with it.)
            try bed.exec("rt", ["ip", "route", "replace", "198.18.1.0/24", "dev", "eth0"])
            let start = Date()
            try bed.exec("lb", ["ip", "route", "replace", "default", "via", "198.18.0.253"])
            try bed.exec("lb", ["ip", "-6", "route", "replace", "default", "via", "2001:2::fd"])
            try bed.waitFor("the new IPv4 default route in the workers", timeout: 5) { s in
                s.appliedRoutingVersion == s.routingVersion
                    && s.routes.contains { $0.prefix == "0.0.0.0/0" && $0.via == "198.18.0.253" && $0.mac != nil }
            }
            let took4 = Date().timeIntervalSince(start)
            try bed.waitFor("the new IPv6 default route in the workers", timeout: 5) { s in
                s.appliedRoutingVersion == s.routingVersion
                    && s.routes.contains { $0.prefix == "::/0" && $0.via == "2001:2::fd" && $0.mac != nil }
            }
            let took = Date().timeIntervalSince(start)
            print("route change followed in \(Int(took * 1000)) ms (IPv4 \(Int(took4 * 1000)) ms)")
            #expect(took < 1.0, "the new route took \(took) s")
            #expect(try bed.client("198.18.1.20", port: 80, count: 60, from: "far").ok == 60)
            #expect(try bed.client("2001:2:1::20", port: 80, count: 60, from: "far").ok == 60)
            #expect(try bed.status().version == 1, "no reload")
        }

        /// A reply with no route is counted and shown in status with its destination; the
        /// route's return mends it, with no reload.
        @Test func anUnroutableReplyShowsInStatusByItsDestination() throws {
            let bed = try Testbed()
            defer { bed.tearDown() }
            try bed.startDaemon()
            try bed.exec("lb", ["ip", "route", "del", "default"])
            try bed.waitFor("the workers without a default route", timeout: 5) { s in
                s.appliedRoutingVersion == s.routingVersion && !s.routes.contains { $0.prefix == "0.0.0.0/0" }
            }
            let lost = try bed.client("198.18.1.20", port: 53, proto: "udp", count: 1, from: "far")
            #expect(lost.ok == 0)
            try bed.waitFor("198.18.4.2 listed as unroutable", timeout: 5) { s in
                s.unroutedReplies.contains { $0.destination == "198.18.4.2" && $0.reason == "no route" }
                    && s.drops["no_route_to_client", default: 0] >= 1
            }
            let (_, table) = try bed.exec("lb", [bed.fulcrum, "status", "--status-file", bed.statusPath])
            #expect(table.contains("198.18.4.2  no route"), "\(table)")
            try bed.exec("lb", ["ip", "route", "add", "default", "via", "198.18.0.254"])
            try bed.waitFor("the default route back", timeout: 5) { s in
                s.appliedRoutingVersion == s.routingVersion && s.routes.contains { $0.prefix == "0.0.0.0/0" && $0.mac != nil }
            }
            #expect(try bed.client("198.18.1.20", port: 53, proto: "udp", count: 30, from: "far").ok == 30)
        }
    }
}
