// swift-tools-version: 6.0
import PackageDescription

// Arrows point one way: executables → Control/Dataplane → BPF/Core.
// FulcrumCore imports nothing but the standard library, so every per-packet decision is
// testable without root, a NIC or a clock.

let package = Package(
    name: "Fulcrum",
    products: [
        .library(name: "FulcrumCore", targets: ["FulcrumCore"]),
        .executable(name: "fulcrum-bench", targets: ["fulcrum-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.1"),
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
        // Benchmark scenarios live under Bench/; the executable only parses arguments.
        .target(
            name: "BenchScenarios",
            dependencies: [
                "FulcrumCore",
                "FulcrumTestSupport",
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ],
            path: "Bench/Scenarios"
        ),
        .executableTarget(
            name: "fulcrum-bench",
            dependencies: ["BenchScenarios", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "FulcrumCoreTests", dependencies: ["FulcrumCore", "FulcrumTestSupport"]),
        .testTarget(name: "FulcrumBPFTests", dependencies: ["FulcrumBPF", "CFulcrumBPF", "FulcrumTestSupport"]),
    ]
)
