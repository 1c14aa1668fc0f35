// swift-tools-version: 6.0
import PackageDescription

// Arrows point one way (down):
//   fulcrum, fulcrumctl, fulcrum-agent, fulcrum-bench    thin executables
//   FulcrumAPI          the Hummingbird application: routes, tokens, connection governor, metrics, page
//   FulcrumControl      the controller and its inputs, the runtime's services, the pair and its
//                       flow sync, the status report
//   FulcrumConfiguration the configuration file: schema, loading, validation, the synced document,
//                       the state file
//   FulcrumDataplane    UMEM, rings, workers, neighbours and routes
//   FulcrumBPF          the XDP object, links, typed maps
//   FulcrumSystem       the one syscall funnel: errno → typed errors, sockets, the wake pipe, the clock
//   FulcrumCore         pure: the packet path and the control decisions; time is a parameter
// FulcrumAPIModels (the API's bodies and the one status model, with its text rendering) stands
// beside them on FulcrumCore alone, shared by the API, the daemon, fulcrumctl and the tests.
// FulcrumCore imports nothing but the standard library, so every decision the LB makes is
// testable without root, a NIC or a clock.

let package = Package(
    name: "Fulcrum",
    products: [
        .library(name: "FulcrumCore", targets: ["FulcrumCore"]),
        .executable(name: "fulcrum", targets: ["fulcrum"]),
        .executable(name: "fulcrum-bench", targets: ["fulcrum-bench"]),
        .executable(name: "fulcrumctl", targets: ["fulcrumctl"]),
        .executable(name: "fulcrum-agent", targets: ["fulcrum-agent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.29.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.20.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .target(name: "FulcrumCore"),
        .target(name: "FulcrumTestSupport", dependencies: ["FulcrumCore", "FulcrumAPIModels"]),
        // libbpf + libxdp, and the one shim for what Swift cannot import (see its header).
        .target(
            name: "CFulcrumBPF",
            linkerSettings: [.linkedLibrary("xdp"), .linkedLibrary("bpf"), .linkedLibrary("elf"), .linkedLibrary("z")]
        ),
        .target(name: "FulcrumSystem", dependencies: ["FulcrumCore"]),
        .target(name: "FulcrumBPF", dependencies: ["CFulcrumBPF", "FulcrumCore", "FulcrumSystem"]),
        .target(
            name: "FulcrumDataplane",
            dependencies: ["FulcrumBPF", "FulcrumCore", "FulcrumSystem", "CFulcrumBPF", .product(name: "Logging", package: "swift-log")]
        ),
        // Benchmark scenarios live under Bench/; the executable only parses arguments.
        .target(
            name: "BenchScenarios",
            dependencies: [
                "FulcrumCore",
                "FulcrumDataplane",
                "FulcrumBPF",
                "FulcrumSystem",
                "CFulcrumBPF",
                "FulcrumTestSupport",
                "FulcrumControl",
                "FulcrumConfiguration",
                "FulcrumAPIModels",
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Bench/Scenarios"
        ),
        // The request and response bodies of the control API, shared by the server and fulcrumctl.
        .target(name: "FulcrumAPIModels", dependencies: ["FulcrumCore"]),
        // The configuration: the file's schema, its loading and validation (every error names
        // the file, line, field and value), and the synced balancing document.
        .target(
            name: "FulcrumConfiguration",
            dependencies: ["FulcrumCore", "FulcrumDataplane", "FulcrumAPIModels", "Yams",
                           .product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "FulcrumControl",
            dependencies: ["FulcrumConfiguration", "FulcrumCore", "FulcrumSystem", "FulcrumDataplane", "FulcrumBPF", "FulcrumAPIModels", "Yams",
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                           .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                           .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl")]
        ),
        // The control API: Hummingbird router, token middleware, metrics, the status page.
        .target(
            name: "FulcrumAPI",
            dependencies: ["FulcrumControl", "FulcrumConfiguration", "FulcrumAPIModels", "FulcrumCore",
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "HummingbirdTLS", package: "hummingbird"),
                           .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                           .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl"),
                           .product(name: "Prometheus", package: "swift-prometheus"),
                           .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]
        ),
        .executableTarget(
            name: "fulcrum",
            dependencies: ["FulcrumControl", "FulcrumConfiguration", "FulcrumAPI", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            exclude: ["fulcrum.service"]  // installed by `make install`
        ),
        // The node agent: on the real servers, reports their load for dynamic weights.
        .executableTarget(
            name: "fulcrum-agent",
            dependencies: ["FulcrumCore", "FulcrumSystem", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "Logging", package: "swift-log")],
            exclude: ["fulcrum-agent.service"]
        ),
        .executableTarget(
            name: "fulcrumctl",
            dependencies: ["FulcrumAPIModels", "FulcrumCore", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "NIOFoundationCompat", package: "swift-nio")]
        ),
        // The testbed's servers and clients (Bench/Peers): real sockets, payloads checked.
        .executableTarget(
            name: "fulcrum-testpeer",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Bench/Peers/testpeer"
        ),
        .executableTarget(
            name: "fulcrum-bench",
            dependencies: ["BenchScenarios", "FulcrumCore", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "FulcrumCoreTests", dependencies: ["FulcrumCore", "FulcrumTestSupport"]),
        .testTarget(name: "FulcrumBPFTests", dependencies: ["FulcrumBPF", "CFulcrumBPF", "FulcrumSystem", "FulcrumTestSupport"]),
        .testTarget(name: "FulcrumDataplaneTests", dependencies: ["FulcrumTestSupport", "FulcrumCore", "FulcrumAPIModels",
                                                                 .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "FulcrumControlTests",
                    dependencies: ["FulcrumControl", "FulcrumConfiguration", "FulcrumDataplane", "FulcrumBPF", "FulcrumCore", "FulcrumTestSupport",
                                   "FulcrumAPIModels",
                                   .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "FulcrumAPITests",
                    dependencies: ["FulcrumAPI", "FulcrumAPIModels", "FulcrumControl", "FulcrumConfiguration", "FulcrumCore", "FulcrumDataplane", "FulcrumTestSupport",
                                   .product(name: "HummingbirdTesting", package: "hummingbird"),
                                   .product(name: "NIOEmbedded", package: "swift-nio"),
                                   .product(name: "NIOHTTPTypes", package: "swift-nio-extras")]),
    ]
)

// `make test-asan` builds the pure core and its tests alone under AddressSanitizer: the
// server packages (NIO, Hummingbird) would triple the time and are not what it checks.
import Foundation
if ProcessInfo.processInfo.environment["FULCRUM_CORE_ONLY"] != nil {
    let core: Set<String> = ["FulcrumCore", "FulcrumAPIModels", "FulcrumTestSupport", "FulcrumCoreTests"]
    package.targets = package.targets.filter { core.contains($0.name) }
    package.products = package.products.filter { $0.name == "FulcrumCore" }
    package.dependencies = []
}
