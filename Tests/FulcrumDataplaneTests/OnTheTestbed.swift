import FulcrumTestSupport
import Testing

/// Every suite that runs a namespace testbed, one test at a time across all of them:
/// two cores cannot host two testbeds and a flood at once and still tell a stall of the
/// LB from one of the machine. (Suites run in parallel otherwise; `.serialized` on a
/// suite orders only its own tests, so they are nested here.)
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason ?? "")"))
enum OnTheTestbed {}
