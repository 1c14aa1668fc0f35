// swift-tools-version: 6.0
import PackageDescription

// Arrows point one way: executables → Control/Dataplane → BPF/Core.
// FulcrumCore imports nothing but the standard library, so every per-packet decision is
// testable without root, a NIC or a clock.

let package = Package(
    name: "Fulcrum",
    products: [
        .library(name: "FulcrumCore", targets: ["FulcrumCore"]),
        .executable(name: "fulcrum", targets: ["fulcrum"]),
        .executable(name: "fulcrum-bench", targets: ["fulcrum-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        .target(name: "FulcrumCore"),
        .target(name: "FulcrumTestSupport", dependencies: ["FulcrumCore"]),
        // libbpf + libxdp, and the one shim for what Swift cannot import (see its header).
        .target(
            name: "CFulcrumBPF",
            linkerSettings: [.linkedLibrary("xdp"), .linkedLibrary("bpf"), .linkedLibrary("elf"), .linkedLibrary("z")]
        ),
        .target(name: "FulcrumBPF", dependencies: ["CFulcrumBPF", "FulcrumCore"]),
        .target(
            name: "FulcrumDataplane",
            dependencies: ["FulcrumBPF", "FulcrumCore", "CFulcrumBPF", .product(name: "Logging", package: "swift-log")]
        ),
        // Benchmark scenarios live under Bench/; the executable only parses arguments.
        .target(
            name: "BenchScenarios",
            dependencies: [
                "FulcrumCore",
                "FulcrumDataplane",
                "FulcrumBPF",
                "CFulcrumBPF",
                "FulcrumTestSupport",
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Bench/Scenarios"
        ),
        .target(
            name: "FulcrumControl",
            dependencies: ["FulcrumCore", "FulcrumDataplane", "FulcrumBPF", "Yams", .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "fulcrum",
            dependencies: ["FulcrumControl", .product(name: "ArgumentParser", package: "swift-argument-parser")]
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
        .testTarget(name: "FulcrumBPFTests", dependencies: ["FulcrumBPF", "CFulcrumBPF", "FulcrumTestSupport"]),
        .testTarget(name: "FulcrumDataplaneTests", dependencies: ["FulcrumTestSupport", "FulcrumCore"]),
        .testTarget(name: "FulcrumControlTests",
                    dependencies: ["FulcrumControl", "FulcrumDataplane", "FulcrumBPF", "FulcrumCore", "FulcrumTestSupport"]),
    ]
)
