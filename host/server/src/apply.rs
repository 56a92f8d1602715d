//! The state machine behind Raft: decodes each committed [`RaftRequest`],
//! executes it against MVCC, persists the result with the applied index, and
//! hands the response to the client waiting on this member (if any).
//!
//! KV writes are planned once (`txn::WritePlan`) and pass through the
//! applier chain of [`chain`]. An error that every member reaches alike is
//! the client's answer; any other stops this member (crash-stop), since
//! applying on past it could diverge from the others.

mod chain;
#[cfg(test)]
mod tests;

pub use chain::{AlarmChecks, AuthChecks, MvccApplier, PluginChecks, WriteApplier};

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prost::Message;
use rocksdb::WriteBatch;
use tokio::sync::oneshot;

use crate::alarm::{AlarmStore, Space};
use crate::auth::{AuthApplied, AuthOptions, AuthStore};
use crate::error::{Error, Result};
use crate::lease::LeaseTable;
use crate::membership::MemberTable;
use crate::mvcc::{KeyRange, MvccStore, WriteTxn};
use crate::plugin::Plugins;
use crate::proto::cairnpb::{raft_request::Request, Caller, PluginInfo, RaftRequest};
use crate::proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseCheckpointResponse, LeaseGrantResponse, LeaseRevokeResponse, PutRequest,
    PutResponse, ResponseHeader, TxnResponse,
};
use crate::raft::StateMachine;
use crate::storage::schema::META_APPLIED_INDEX;
use crate::storage::{Database, CF_META};
use crate::txn::{Write, WritePlan, WriteResponse};
use crate::watch::WatchHub;

/// The outcome of one applied request.
#[derive(Debug)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseCheckpoint(LeaseCheckpointResponse),
    PluginInstall(PluginInfo),
    PluginRemove,
    /// A membership record was applied.
    Members,
    Auth(AuthApplied),
    Alarm(AlarmResponse),
}

pub type ApplyResult = Result<Applied>;

/// Clients waiting for their proposals to be applied, by proposal id.
#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>,
}

impl Waiters {
    pub fn register(&self, id: u64) -> oneshot::Receiver<ApplyResult> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(id, tx);
        rx
    }

    pub fn cancel(&self, id: u64) {
        self.waiting.lock().remove(&id);
    }

    fn notify(&self, id: u64, result: ApplyResult) {
        if let Some(tx) = self.waiting.lock().remove(&id) {
            let _ = tx.send(result);
        }
    }
}

pub struct Applier {
    engine: Arc<Database>,
    store: Arc<MvccStore>,
    waiters: Arc<Waiters>,
    applied_index: u64,
    watch_hub: Arc<WatchHub>,
    leases: Arc<LeaseTable>,
    members: Option<Arc<MemberTable>>,
    plugins: Arc<Plugins>,
    auth: Arc<AuthStore>,
    alarms: Arc<AlarmStore>,
    /// This member's quota, checked after writes that add data (`None`:
    /// unchecked, as in tests of apply alone).
    space: Option<Arc<Space>>,
    writes: Box<dyn WriteApplier>,
}

impl Applier {
    pub fn new(engine: Arc<Database>, store: Arc<MvccStore>, waiters: Arc<Waiters>) -> Result<Self> {
        let applied_index = engine.get_meta_u64(META_APPLIED_INDEX)?.unwrap_or(0);
        let watch_hub = WatchHub::new(store.current_revision());
        let leases = Arc::new(LeaseTable::open(&engine, &store)?);
        let plugins = Plugins::open(&engine)?;
        let auth = Arc::new(AuthStore::open(&engine, &AuthOptions::default()).map_err(|e| Error::Corrupt(format!("auth: {e:#}")))?);
        let alarms = Arc::new(AlarmStore::open(&engine)?);
        let writes = chain::writes(alarms.clone(), auth.clone(), leases.clone(), plugins.clone(), store.clone());
        Ok(Applier {
            engine,
            store,
            waiters,
            applied_index,
            watch_hub,
            leases,
            members: None,
            plugins,
            auth,
            alarms,
            space: None,
            writes,
        })
    }

    /// Uses `auth` (opened with this member's token settings) as the auth
    /// store apply keeps current.
    pub fn with_auth(mut self, auth: Arc<AuthStore>) -> Self {
        self.writes = chain::writes(
            self.alarms.clone(),
            auth.clone(),
            self.leases.clone(),
            self.plugins.clone(),
            self.store.clone(),
        );
        self.auth = auth;
        self
    }

    /// The member's auth store, kept current by apply.
    pub fn auth(&self) -> Arc<AuthStore> {
        self.auth.clone()
    }

    /// Checks `space` after every applied write that adds data.
    pub fn with_space(mut self, space: Arc<Space>) -> Self {
        self.space = Some(space);
        self
    }

    /// The cluster's alarms, kept current by apply.
    pub fn alarms(&self) -> Arc<AlarmStore> {
        self.alarms.clone()
    }

    /// After a write that added data: lets the quota notice a full state.
    fn check_space(&self) {
        if let Some(space) = &self.space {
            space.check_applied();
        }
    }

    /// The member's lease table, kept current by apply.
    pub fn leases(&self) -> Arc<LeaseTable> {
        self.leases.clone()
    }

    /// The member's plugin registry, kept current by apply.
    pub fn plugins(&self) -> Arc<Plugins> {
        self.plugins.clone()
    }

    /// Where this member's committed changes are published for watchers.
    pub fn watch_hub(&self) -> Arc<WatchHub> {
        self.watch_hub.clone()
    }

    /// Commits a write and hands its events, if it made a revision, to the
    /// watchers.
    fn commit(&self, txn: WriteTxn<'_>, extra: impl FnOnce(&mut WriteBatch)) -> Result<()> {
        let events = txn.commit(extra)?;
        if !events.is_empty() {
            self.leases.track(&events);
            self.watch_hub.publish(self.store.current_revision(), events);
        }
        Ok(())
    }

    /// Lets applied entries change the member list.
    pub fn with_members(mut self, members: Arc<MemberTable>) -> Self {
        self.members = Some(members);
        self
    }

    /// Applies `request`; `caller` is who the entry says asked (`None`: the
    /// cluster itself).
    fn execute(&self, index: u64, request: &Request, caller: Option<&Caller>) -> ApplyResult {
        let cf = self.engine.cf(CF_META);
        let mark_applied = |batch: &mut WriteBatch| batch.put_cf(cf, META_APPLIED_INDEX, index.to_be_bytes());
        match request {
            Request::Put(r) => self.write(Write::Put(r), caller, mark_applied),
            Request::DeleteRange(r) => self.write(Write::DeleteRange(r), caller, mark_applied),
            Request::Txn(r) => self.write(Write::Txn(r), caller, mark_applied),
            Request::Compaction(r) => {
                chain::check_alarms(&self.alarms, false)?;
                self.auth.check_applied_admin(caller)?;
                self.store.compact(r.revision, mark_applied)?;
                Ok(Applied::Compaction(CompactionResponse {
                    header: Some(ResponseHeader {
                        revision: self.store.current_revision(),
                        ..Default::default()
                    }),
                }))
            }
            Request::LeaseGrant(r) => {
                chain::check_alarms(&self.alarms, true)?;
                let mut batch = WriteBatch::default();
                let ttl = self.leases.grant(r.id, r.ttl, &self.engine, &mut batch)?;
                mark_applied(&mut batch);
                self.engine.write(batch, false)?;
                self.check_space();
                Ok(Applied::LeaseGrant(LeaseGrantResponse {
                    header: self.header(),
                    id: r.id,
                    ttl,
                    error: String::new(),
                }))
            }
            Request::LeaseRevoke(r) => {
                chain::check_alarms(&self.alarms, false)?;
                self.auth.check_lease_keys(caller, r.id, &self.leases)?;
                // All attached keys go in one revision, with the lease.
                let keys = self.leases.keys_of(r.id)?;
                let mut txn = self.store.write_txn();
                for key in keys {
                    txn.delete_range(&KeyRange::Single(key))?;
                }
                self.commit(txn, |batch| {
                    self.leases.stage_revoke(r.id, &self.engine, batch);
                    mark_applied(batch);
                })?;
                self.leases.forget(r.id);
                Ok(Applied::LeaseRevoke(LeaseRevokeResponse { header: self.header() }))
            }
            Request::LeaseCheckpoint(r) => {
                let checkpoints: Vec<(i64, i64)> = r.checkpoints.iter().map(|c| (c.id, c.remaining_ttl)).collect();
                let mut batch = WriteBatch::default();
                self.leases.checkpoint(&checkpoints, &self.engine, &mut batch);
                mark_applied(&mut batch);
                self.engine.write(batch, false)?;
                Ok(Applied::LeaseCheckpoint(LeaseCheckpointResponse { header: self.header() }))
            }
            Request::PluginInstall(b) => Ok(Applied::PluginInstall(self.plugins.apply_install(
                &self.engine,
                b,
                index,
                mark_applied,
            )?)),
            Request::PluginRemove(r) => {
                self.plugins.apply_remove(&self.engine, &r.name, mark_applied)?;
                Ok(Applied::PluginRemove)
            }
            Request::MemberAttributes(a) => {
                match &self.members {
                    Some(m) => m.apply_attributes(a, mark_applied)?,
                    None => self.persist_applied(index)?,
                }
                Ok(Applied::Members)
            }
            Request::MemberUpdate(c) => {
                match &self.members {
                    Some(m) => m.apply_update(c, mark_applied)?,
                    None => self.persist_applied(index)?,
                }
                Ok(Applied::Members)
            }
            Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::Authenticate(_)
            | Request::AuthUserAdd(_)
            | Request::AuthUserGet(_)
            | Request::AuthUserList(_)
            | Request::AuthUserDelete(_)
            | Request::AuthUserChangePassword(_)
            | Request::AuthUserGrantRole(_)
            | Request::AuthUserRevokeRole(_)
            | Request::AuthRoleAdd(_)
            | Request::AuthRoleGet(_)
            | Request::AuthRoleList(_)
            | Request::AuthRoleDelete(_)
            | Request::AuthRoleGrantPermission(_)
            | Request::AuthRoleRevokePermission(_) => Ok(Applied::Auth(self.auth.apply(&self.engine, request, caller, mark_applied)?)),
            Request::Alarm(r) => Ok(Applied::Alarm(self.alarms.apply(&self.engine, r, mark_applied)?)),
        }
    }

    /// Plans a KV write on the state before it and runs it through the chain.
    fn write(&self, request: Write<'_>, caller: Option<&Caller>, mark_applied: impl FnOnce(&mut WriteBatch)) -> ApplyResult {
        let altered;
        let request = match request {
            // A member whose state silently diverges, for the tests of the
            // corruption check.
            Write::Put(p) if crate::failpoint::is_set("apply-put-differently") => {
                altered = PutRequest {
                    value: [p.value.as_slice(), b"~"].concat(),
                    ..p.clone()
                };
                Write::Put(&altered)
            }
            other => other,
        };
        let mut txn = self.store.write_txn();
        let plan = WritePlan::new(&txn, request, &*self.leases)?;
        let response = self.writes.apply(&plan, caller, &mut txn)?;
        self.commit(txn, mark_applied)?;
        if !matches!(request, Write::DeleteRange(_)) {
            self.check_space();
        }
        Ok(match response {
            WriteResponse::Put(r) => Applied::Put(r),
            WriteResponse::DeleteRange(r) => Applied::DeleteRange(r),
            WriteResponse::Txn(r) => Applied::Txn(r),
        })
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision: self.store.current_revision(),
            ..Default::default()
        })
    }

    fn persist_applied(&self, index: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.engine.cf(CF_META), META_APPLIED_INDEX, index.to_be_bytes());
        self.engine.write(batch, false)
    }
}

impl StateMachine for Applier {
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            self.persist_applied(index)?;
            self.applied_index = index;
            return Ok(());
        }
        let request = match RaftRequest::decode(data) {
            Ok(r) => r,
            Err(e) => {
                // Every member decodes the same bytes the same way, so
                // skipping is a deterministic decision.
                tracing::error!(index, error = %e, "skipping undecodable raft entry");
                self.persist_applied(index)?;
                self.applied_index = index;
                return Ok(());
            }
        };
        let result = match &request.request {
            Some(r) => self.execute(index, r, request.caller.as_ref()),
            None => Err(Error::InvalidRequest("empty raft request".into())),
        };
        let result = match result {
            Err(e) if !e.is_deterministic() => {
                // The raft loop ends on this error and the process exits.
                tracing::error!(index, error = %e, "applying a committed entry failed on this member only; stopping");
                return Err(e);
            }
            result => result,
        };
        if result.is_err() {
            // A refused request changed nothing; only the index moves on.
            self.persist_applied(index)?;
        }
        self.applied_index = index;
        self.waiters.notify(request.id, result);
        Ok(())
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }

    fn apply_conf_change(&mut self, index: u64, change: raft::eraftpb::ConfChangeType, node_id: u64, context: &[u8]) -> Result<()> {
        let cf = self.engine.cf(CF_META);
        match &self.members {
            Some(m) => m.apply_conf_change(change, node_id, context, |b| b.put_cf(cf, META_APPLIED_INDEX, index.to_be_bytes()))?,
            None => self.persist_applied(index)?,
        }
        self.applied_index = index;
        // The proposer waits on the change's id, carried in its context.
        if let Ok(c) = crate::proto::cairnpb::MemberChange::decode(context) {
            self.waiters.notify(c.request_id, Ok(Applied::Members));
        }
        Ok(())
    }

    fn restored(&mut self, index: u64) -> Result<()> {
        self.store.reload()?;
        if let Some(m) = &self.members {
            m.reload()?;
        }
        // State kept beside MVCC must follow the snapshot too.
        self.leases.reload(&self.engine, &self.store)?;
        self.plugins.reload(&self.engine)?;
        self.auth.reload(&self.engine)?;
        self.alarms.reload(&self.engine)?;
        self.watch_hub.restored(self.store.current_revision());
        self.persist_applied(index)?;
        self.applied_index = index;
        Ok(())
    }
}
