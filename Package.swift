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
        .executableTarget(
            name: "fulcrum-bench",
            dependencies: [
                "FulcrumCore",
                "FulcrumTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ]
        ),
        .testTarget(name: "FulcrumCoreTests", dependencies: ["FulcrumCore", "FulcrumTestSupport"]),
    ]
)
