import FulcrumConfiguration
import FulcrumCore
import FulcrumDataplane

/// What the control plane needs of the data plane: `Dataplane` in `fulcrum run`, a
/// recorder in tests, so the controller, the API and status run without root, a NIC or
/// an XDP program.
public protocol DataplaneControl: AnyObject, Sendable {
    /// The data-plane interfaces, in the order groups and routes index them.
    var interfaces: [String] { get }
    var isActive: Bool { get }
    var hasUnrouted: Bool { get }
    /// Each dynamically weighted node's weight in force.
    var weightsInForce: [NodeIdentity: Int] { get }
    func snapshot() -> DataplaneSnapshot
    /// Each worker's loop count: one that stands still is stuck.
    func workerProgress() -> [UInt64]
    /// The XDP program's dead-man switch: answer for the VIPs until then (monotonic ns).
    func keepAlive(until nanoseconds: UInt64)
    /// BPF map entries by map (a system call per entry: not on every status write).
    func mapEntryCounts() -> [String: Int]
    /// Throws what `configure` would, and changes nothing.
    func validate(groups: [GroupSpec], routes: [RouteSpec]) throws
    /// All of it or none of it; returns the new layout's generation.
    @discardableResult
    func configure(groups: [GroupSpec], routes: [RouteSpec]) throws -> UInt64
    /// Whether this LB answers for its VIPs.
    func setActive(_ active: Bool) throws
    func setHealth(_ node: NodeIdentity, up: Bool)
    func setAgentWeights(_ weights: [NodeIdentity: Int])
    func setAdmission(perSecond: UInt64, burst: UInt64) throws
    /// Each worker's end of the flow sync (none in a stand-in without workers).
    func flowSyncChannels() -> [WorkerSyncChannel]
    /// Follows the kernel's neighbours and routes once.
    @discardableResult
    func refreshRouting() -> Dataplane.RoutingRefresh
    func stop()
}

extension DataplaneControl {
    public func flowSyncChannels() -> [WorkerSyncChannel] { [] }
}

extension Dataplane: DataplaneControl {
    public func flowSyncChannels() -> [WorkerSyncChannel] { workerSyncs.map { WorkerSyncChannel(sync: $0.sync, wake: $0.wake) } }
    public var interfaces: [String] { options.interfaces }
    public func mapEntryCounts() -> [String: Int] { maps.entryCounts() }
}
