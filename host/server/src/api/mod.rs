//! The gRPC edge: etcd's v3 services, translating between wire messages and
//! the server's internals. Errors become gRPC statuses here and nowhere else.

mod auth;
mod cluster;
mod concurrency;
mod election;
mod grpc_error;
mod kv;
mod learner_gate;
mod lease;
mod lock;
mod maintenance;
mod plugins;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::apply::{Applied, Waiters};
use crate::error::{Error, Result};
use crate::lease::LeaseTable;
use crate::membership::Membership;
use crate::mvcc::MvccStore;
use crate::plugin::Plugins;
use crate::proto::cairnpb::{raft_request::Request, RaftRequest};
use crate::proto::etcdserverpb::ResponseHeader;
use crate::raft::NodeHandle;
use crate::storage::Database;
use crate::watch::WatchHub;

pub use auth::AuthService;
pub use cluster::ClusterService;
pub use election::ElectionService;
pub use kv::KvService;
pub use learner_gate::LearnerGateLayer;
pub use lease::LeaseService;
pub use lock::LockService;
pub use maintenance::MaintenanceService;
pub use plugins::PluginService;
pub use watch::WatchService;

/// The etcd API level Cairn speaks, reported by `Maintenance.Status`.
pub const ETCD_API_VERSION: &str = "3.4.0";

/// How long a request may wait for Raft before failing, as etcd computes it
/// from its defaults (5 s plus two election timeouts).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// Request limits from the server flags.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

/// Unique proposal ids: the member id's low 16 bits, then a counter seeded
/// from the clock so ids stay unique across restarts.
pub struct IdGenerator {
    prefix: u64,
    counter: AtomicU64,
}

impl IdGenerator {
    pub fn new(member_id: u64) -> Self {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        IdGenerator {
            prefix: (member_id & 0xFFFF) << 48,
            counter: AtomicU64::new(millis << 8),
        }
    }

    pub fn next(&self) -> u64 {
        self.prefix | (self.counter.fetch_add(1, Ordering::Relaxed) & ((1 << 48) - 1))
    }
}

/// What every service needs: the store for reads, Raft for writes.
pub struct Core {
    pub engine: Arc<Database>,
    pub store: Arc<MvccStore>,
    pub node: NodeHandle,
    pub waiters: Arc<Waiters>,
    pub ids: IdGenerator,
    pub membership: Membership,
    pub limits: Limits,
    pub watch_hub: Arc<WatchHub>,
    pub leases: Arc<LeaseTable>,
    pub plugins: Arc<Plugins>,
}

impl Core {
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.membership.cluster_id,
            member_id: self.membership.local_id,
            revision,
            raft_term: self.node.status().term(),
        }
    }

    /// Fills the member-specific fields of a header produced by apply.
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.header(revision));
    }

    /// Replicates a request through Raft and waits for this member to apply it.
    pub async fn propose(&self, request: Request) -> Result<Applied> {
        self.propose_within(request, self.limits.max_request_bytes).await
    }

    /// Like [`Core::propose`], for requests with a size limit of their own
    /// (plugin components).
    pub async fn propose_within(&self, request: Request, max_bytes: usize) -> Result<Applied> {
        let id = self.ids.next();
        let data = RaftRequest {
            id,
            request: Some(request),
        }
        .encode_to_vec();
        if data.len() > max_bytes {
            return Err(Error::RequestTooLarge);
        }
        let applied = self.waiters.register(id);
        if let Err(e) = self.node.propose(data).await {
            self.waiters.cancel(id);
            return Err(e);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, applied).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => {
                self.waiters.cancel(id);
                Err(Error::Timeout)
            }
        }
    }

    /// Makes a following local read linearizable, unless the client asked
    /// for a serializable one.
    pub async fn read_barrier(&self, serializable: bool) -> Result<()> {
        if serializable {
            return Ok(());
        }
        tokio::time::timeout(REQUEST_TIMEOUT, self.node.linearizable_barrier())
            .await
            .map_err(|_| Error::Timeout)?
    }
}
