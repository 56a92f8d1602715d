//! The member: one running server's whole context (etcd's `EtcdServer`),
//! which the gRPC services and the peer-side lease service work through.
//! It proposes requests and waits for their typed results, reads behind a
//! linearizable barrier, runs the leader's lease clock and forwards lease
//! renewals to the leader, and is assembled at start-up by [`bootstrap`].

pub mod alarms;
pub mod bootstrap;
pub mod corrupt;
pub mod lease_clock;
pub mod lease_forward;
mod limits;
mod propose;
pub mod reconfig;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use crate::alarm::{quota, AlarmStore, Space};
use crate::apply::Waiters;
use crate::auth::{AuthInfo, AuthStore};
use crate::error::{Error, Result};
use crate::lease::LeaseTable;
use crate::membership::Membership;
use crate::mvcc::MvccStore;
use crate::peer::PeerActivity;
use crate::plugin::Plugins;
use crate::proto::cairnpb::{raft_request::Request, Caller, MemberChange, RaftRequest};
use crate::proto::etcdserverpb::{self, ResponseHeader};
use crate::raft::NodeHandle;
use crate::storage::Database;
use crate::watch::WatchHub;

pub use limits::Limits;
pub use propose::{FromApplied, MembersApplied, PluginRemoved};

/// How long a request may wait for Raft before failing, as etcd computes it
/// from its defaults (5 s plus two election timeouts).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

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

/// One running member: the store for reads, Raft for writes, and the state
/// apply keeps (leases, plugins, watches, the member list).
pub struct Member {
    database: Arc<Database>,
    store: Arc<MvccStore>,
    node: NodeHandle,
    waiters: Arc<Waiters>,
    ids: IdGenerator,
    membership: Membership,
    activity: Arc<PeerActivity>,
    limits: Limits,
    watch_hub: Arc<WatchHub>,
    leases: Arc<LeaseTable>,
    plugins: Arc<Plugins>,
    auth: Arc<AuthStore>,
    alarms: Arc<AlarmStore>,
    space: Arc<Space>,
    /// How to reach the other members (TLS for `https://` peer URLs).
    peer_dialer: crate::tls::PeerDialer,
}

impl Member {
    pub fn database(&self) -> &Arc<Database> {
        &self.database
    }

    pub fn store(&self) -> &Arc<MvccStore> {
        &self.store
    }

    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Connections to the other members, as the peer transport keeps them.
    pub fn peer_dialer(&self) -> &crate::tls::PeerDialer {
        &self.peer_dialer
    }

    pub fn activity(&self) -> &PeerActivity {
        &self.activity
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn watch_hub(&self) -> &Arc<WatchHub> {
        &self.watch_hub
    }

    pub fn leases(&self) -> &Arc<LeaseTable> {
        &self.leases
    }

    pub fn plugins(&self) -> &Arc<Plugins> {
        &self.plugins
    }

    /// The cluster's alarms, as this member applied them.
    pub fn alarms(&self) -> &Arc<AlarmStore> {
        &self.alarms
    }

    /// This member's backend quota and how full its state is.
    pub fn space(&self) -> &Arc<Space> {
        &self.space
    }

    /// Users, roles and tokens: who a request comes from and what it may
    /// do (see [`crate::auth`]).
    pub fn auth(&self) -> &Arc<AuthStore> {
        &self.auth
    }

    /// Who a client request comes from ([`AuthStore::authorize_request`]).
    /// A simple token this member does not know yet may come from an
    /// Authenticate entry it has not applied: after a read barrier it has,
    /// so the token is checked once more then (etcd waits for the index the
    /// token names for the same reason).
    pub async fn authorize<T>(&self, request: &tonic::Request<T>) -> Result<AuthInfo> {
        match self.auth.authorize_request(request) {
            Err(Error::InvalidAuthToken) if self.auth.tokens().is_simple() => {
                self.read_barrier(false).await?;
                self.auth.authorize_request(request)
            }
            other => other,
        }
    }

    /// A fresh id, unique across the cluster and across restarts.
    pub fn next_id(&self) -> u64 {
        self.ids.next()
    }

    /// A fresh lease id: like etcd, only positive ones.
    pub fn next_lease_id(&self) -> i64 {
        loop {
            let id = (self.ids.next() & ((1 << 63) - 1)) as i64;
            if id != 0 {
                return id;
            }
        }
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.membership.cluster_id,
            member_id: self.membership.local_id,
            revision,
            raft_term: self.node.status().term(),
        }
    }

    /// A header at the revision this member has applied up to.
    pub fn current_header(&self) -> ResponseHeader {
        self.header(self.store.current_revision())
    }

    /// Fills the member-specific fields of a header produced by apply.
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.header(revision));
    }

    /// Replicates a request through Raft, waits for this member to apply
    /// it, and returns its result as the type the caller expects, with the
    /// header (if it has one) filled in.
    ///
    /// The entry carries no caller: it is the cluster's own request (lease
    /// expiry, member attributes), which apply does not check. A client's
    /// request goes through [`Member::propose_as`].
    pub async fn propose<R: FromApplied>(&self, request: Request) -> Result<R> {
        self.propose_entry(request, None, self.limits.max_request_bytes).await
    }

    /// Like [`Member::propose`], for a client's request: the entry carries
    /// `caller`, whose permissions apply checks (when auth is on).
    pub async fn propose_as<R: FromApplied>(&self, caller: &AuthInfo, request: Request) -> Result<R> {
        self.check_quota(&request).await?;
        self.propose_entry(request, Some(caller.as_caller()), self.limits.max_request_bytes)
            .await
    }

    /// Like [`Member::propose_as`], for requests with a size limit of their
    /// own (plugin components).
    pub async fn propose_within<R: FromApplied>(&self, caller: &AuthInfo, request: Request, max_bytes: usize) -> Result<R> {
        self.check_quota(&request).await?;
        self.propose_entry(request, Some(caller.as_caller()), max_bytes).await
    }

    /// etcd's check before proposing a client's write: one that this
    /// member's state has no room for is refused, and NOSPACE is raised for
    /// this member first (so that every member refuses such writes).
    async fn check_quota(&self, request: &Request) -> Result<()> {
        let cost = quota::cost(request);
        if cost == 0 || self.space.admits(cost) {
            return Ok(());
        }
        alarms::raise_own_nospace(self).await;
        Err(Error::NoSpace)
    }

    async fn propose_entry<R: FromApplied>(&self, request: Request, caller: Option<Caller>, max_bytes: usize) -> Result<R> {
        let id = self.ids.next();
        let data = RaftRequest {
            id,
            request: Some(request),
            caller,
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
        let applied = self.wait_applied(id, applied).await?;
        let mut result = R::from_applied(applied).ok_or(Error::UnexpectedApplied(R::WHAT))?;
        if let Some(header) = result.header_mut() {
            self.fill(header);
        }
        Ok(result)
    }

    /// Proposes a membership change of `member` and waits until this member
    /// applied it.
    pub async fn propose_conf_change(&self, change: ConfChangeType, member: etcdserverpb::Member) -> Result<()> {
        let request_id = self.ids.next();
        let node_id = member.id;
        let context = MemberChange {
            member: Some(member),
            request_id,
        }
        .encode_to_vec();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change);
        single.node_id = node_id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        cc.context = context.into();
        let applied = self.waiters.register(request_id);
        if let Err(e) = self.node.propose_conf_change(cc).await {
            self.waiters.cancel(request_id);
            return Err(e);
        }
        // Raft turns a change proposed while another is pending into a
        // no-op, which nobody answers: it ends in the timeout.
        self.wait_applied(request_id, applied).await.map(|_| ())
    }

    async fn wait_applied(
        &self,
        id: u64,
        applied: tokio::sync::oneshot::Receiver<crate::apply::ApplyResult>,
    ) -> Result<crate::apply::Applied> {
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

impl Member {
    /// Runs a read that may take long (a large range, a hash of the whole
    /// store) on a blocking thread, so it holds no async worker meanwhile.
    pub async fn read_blocking<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&MvccStore) -> Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        run_blocking(move || read(&store)).await
    }

    /// Runs a read inline, or on a blocking thread when it `may_be_large`.
    pub async fn read<T, F>(&self, may_be_large: bool, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&MvccStore) -> Result<T> + Send + 'static,
    {
        if may_be_large {
            self.read_blocking(read).await
        } else {
            read(&self.store)
        }
    }
}

/// Runs `work` on tokio's blocking pool and waits for it.
pub async fn run_blocking<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::TaskFailed(e.to_string()))?
}
