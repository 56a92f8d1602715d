//! The cluster's alarms, etcd's alarm store: a member that ran out of space
//! (NOSPACE) or whose state differs from the leader's (CORRUPT). The list
//! is replicated state: it changes only by applied Raft entries, is kept
//! beside MVCC in the meta column family and travels in snapshots and
//! backups, so every member refuses the same writes while an alarm is up.

pub mod quota;

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::RwLock;
use prost::Message;
use rocksdb::WriteBatch;
use tokio::sync::Notify;

use crate::error::Result;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use crate::storage::schema::META_ALARM_PREFIX;
use crate::storage::{Database, CF_META};

pub use quota::Quota;

/// One raised alarm: its type (as the wire number) and the member it is for.
type Raised = (i32, u64);

fn record_key(alarm: i32, member_id: u64) -> Vec<u8> {
    [META_ALARM_PREFIX, &member_id.to_be_bytes(), &alarm.to_be_bytes()].concat()
}

fn member(raised: &Raised) -> AlarmMember {
    AlarmMember {
        member_id: raised.1,
        alarm: raised.0,
    }
}

/// The alarms as apply keeps them: the persisted records, mirrored in
/// memory for the checks every write makes.
#[derive(Default)]
pub struct AlarmStore {
    raised: RwLock<BTreeSet<Raised>>,
}

impl AlarmStore {
    pub fn open(engine: &Database) -> Result<Self> {
        let store = AlarmStore::default();
        store.reload(engine)?;
        Ok(store)
    }

    /// Re-reads the records, after start-up or a snapshot install.
    pub fn reload(&self, engine: &Database) -> Result<()> {
        let mut raised = BTreeSet::new();
        let mut it = engine.db().raw_iterator_cf(engine.cf(CF_META));
        it.seek(META_ALARM_PREFIX);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(META_ALARM_PREFIX) {
                break;
            }
            let m = AlarmMember::decode(v)?;
            raised.insert((m.alarm, m.member_id));
            it.next();
        }
        it.status()?;
        *self.raised.write() = raised;
        Ok(())
    }

    /// The alarms of type `alarm`, or all of them for `NONE`, ordered by
    /// type and member.
    pub fn list(&self, alarm: AlarmType) -> Vec<AlarmMember> {
        self.raised
            .read()
            .iter()
            .filter(|r| alarm == AlarmType::None || r.0 == alarm as i32)
            .map(member)
            .collect()
    }

    /// Whether an alarm of this type is raised for any member.
    pub fn is_raised(&self, alarm: AlarmType) -> bool {
        self.raised.read().iter().any(|r| r.0 == alarm as i32)
    }

    /// Whether `member_id` has an alarm of this type.
    pub fn is_raised_for(&self, member_id: u64, alarm: AlarmType) -> bool {
        self.raised.read().contains(&(alarm as i32, member_id))
    }

    /// Applies an alarm request, as etcd's applier does: GET lists, ACTIVATE
    /// raises (answering with the alarm, new or already raised), DEACTIVATE
    /// clears (answering with the alarm cleared, or nothing if it was not
    /// raised). The header is left to the member.
    pub fn apply(&self, engine: &Database, request: &AlarmRequest, mark_applied: impl FnOnce(&mut WriteBatch)) -> Result<AlarmResponse> {
        let raised: Raised = (request.alarm, request.member_id);
        let mut batch = WriteBatch::default();
        let alarms = match AlarmAction::try_from(request.action).unwrap_or(AlarmAction::Get) {
            AlarmAction::Get => self.list(AlarmType::try_from(request.alarm).unwrap_or(AlarmType::None)),
            AlarmAction::Activate => {
                batch.put_cf(engine.cf(CF_META), record_key(raised.0, raised.1), member(&raised).encode_to_vec());
                vec![member(&raised)]
            }
            AlarmAction::Deactivate if self.raised.read().contains(&raised) => {
                batch.delete_cf(engine.cf(CF_META), record_key(raised.0, raised.1));
                vec![member(&raised)]
            }
            AlarmAction::Deactivate => Vec::new(),
        };
        mark_applied(&mut batch);
        engine.write(batch, false)?;
        match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Activate) if self.raised.write().insert(raised) => {
                tracing::warn!(member_id = %format!("{:x}", raised.1), alarm = alarm_name(raised.0), "alarm raised");
            }
            Ok(AlarmAction::Deactivate) if self.raised.write().remove(&raised) => {
                tracing::info!(member_id = %format!("{:x}", raised.1), alarm = alarm_name(raised.0), "alarm cleared");
            }
            _ => {}
        }
        Ok(AlarmResponse { header: None, alarms })
    }

    /// The alarms as etcd writes them in `Maintenance.Status.errors`: the
    /// alarm member in protobuf text format.
    pub fn status_errors(&self) -> Vec<String> {
        self.raised
            .read()
            .iter()
            .map(|(alarm, member_id)| format!("memberID:{member_id} alarm:{} ", alarm_name(*alarm)))
            .collect()
    }

    /// The names of the raised alarm types (`NOSPACE`, `CORRUPT`), each once.
    pub fn raised_names(&self) -> Vec<&'static str> {
        let raised = self.raised.read();
        let mut names: Vec<&'static str> = raised.iter().map(|r| alarm_name(r.0)).collect();
        names.dedup();
        names
    }
}

/// This member's side of the quota: whether its state has room for a
/// request, and a nudge for whoever raises NOSPACE for it once it has not.
pub struct Space {
    quota: Quota,
    engine: Arc<Database>,
    exceeded: Notify,
}

impl Space {
    pub fn new(quota: Quota, engine: Arc<Database>) -> Arc<Space> {
        Arc::new(Space {
            quota,
            engine,
            exceeded: Notify::new(),
        })
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Whether the state has room for `cost` more bytes.
    pub fn admits(&self, cost: u64) -> bool {
        self.quota.admits(self.engine.state_size_bytes(), cost)
    }

    /// After a write was applied: past the quota, wakes [`Space::exceeded`]
    /// (etcd raises NOSPACE from apply too, for a member whose own clients
    /// wrote nothing).
    pub fn check_applied(&self) {
        if !self.admits(0) {
            self.exceeded.notify_one();
        }
    }

    /// Resolves once an applied write found the state past the quota.
    pub async fn exceeded(&self) {
        self.exceeded.notified().await
    }
}

/// An alarm type's name as etcd prints it; unknown numbers print as the
/// number does in Go's text format, which names no type.
pub fn alarm_name(alarm: i32) -> &'static str {
    match AlarmType::try_from(alarm) {
        Ok(t) => t.as_str_name(),
        Err(_) => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        }
    }

    #[test]
    fn alarms_are_raised_cleared_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Database::open(dir.path()).unwrap();
        let store = AlarmStore::open(&engine).unwrap();
        let activate = store
            .apply(&engine, &request(AlarmAction::Activate, 7, AlarmType::Nospace), |_| {})
            .unwrap();
        assert_eq!(activate.alarms.len(), 1);
        // Raising it again answers with the alarm and adds nothing.
        store
            .apply(&engine, &request(AlarmAction::Activate, 7, AlarmType::Nospace), |_| {})
            .unwrap();
        store
            .apply(&engine, &request(AlarmAction::Activate, 9, AlarmType::Corrupt), |_| {})
            .unwrap();
        assert!(store.is_raised(AlarmType::Nospace) && store.is_raised_for(9, AlarmType::Corrupt));
        assert!(!store.is_raised_for(9, AlarmType::Nospace));
        let all = store
            .apply(&engine, &request(AlarmAction::Get, 0, AlarmType::None), |_| {})
            .unwrap();
        assert_eq!(all.alarms.len(), 2);
        let corrupt = store
            .apply(&engine, &request(AlarmAction::Get, 0, AlarmType::Corrupt), |_| {})
            .unwrap();
        assert_eq!(
            corrupt.alarms,
            vec![AlarmMember {
                member_id: 9,
                alarm: AlarmType::Corrupt as i32
            }]
        );
        assert_eq!(
            store.status_errors(),
            vec!["memberID:7 alarm:NOSPACE ", "memberID:9 alarm:CORRUPT "]
        );

        let reopened = AlarmStore::open(&engine).unwrap();
        assert_eq!(reopened.list(AlarmType::None).len(), 2);
        let cleared = reopened
            .apply(&engine, &request(AlarmAction::Deactivate, 7, AlarmType::Nospace), |_| {})
            .unwrap();
        assert_eq!(cleared.alarms.len(), 1);
        // Clearing an alarm that is not raised affects nothing.
        let none = reopened
            .apply(&engine, &request(AlarmAction::Deactivate, 7, AlarmType::Nospace), |_| {})
            .unwrap();
        assert!(none.alarms.is_empty());
        assert!(!reopened.is_raised(AlarmType::Nospace));
        assert_eq!(AlarmStore::open(&engine).unwrap().raised_names(), vec!["CORRUPT"]);
    }
}
