//! The gRPC edge: etcd's v3 services, translating between wire messages and
//! the server's internals. Errors become gRPC statuses here and nowhere else.

mod auth;
mod cluster;
mod concurrency;
mod election;
mod grpc_error;
mod kv;
mod leader_gate;
mod learner_gate;
mod lease;
mod lock;
mod maintenance;
mod plugins;
mod watch;

pub use auth::AuthService;
pub use cluster::ClusterService;
pub use election::ElectionService;
pub use kv::KvService;
pub use leader_gate::{LeaderGate, LeaderGateLayer};
pub use learner_gate::{LearnerGate, LearnerGateLayer};
pub use lease::LeaseService;
pub use lock::LockService;
pub use maintenance::MaintenanceService;
pub use plugins::PluginService;
pub use watch::WatchService;

/// The etcd API level Cairn speaks, reported by `Maintenance.Status`.
pub const ETCD_API_VERSION: &str = "3.4.0";
