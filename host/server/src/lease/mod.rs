//! Leases: the replicated table of leases and the keys attached to them.
//!
//! Grants, revocations and checkpoints are Raft entries applied here on every
//! member; each lease's record is written in the same RocksDB batch as the
//! rest of its entry. Key attachments need no records of their own: every
//! stored version names its lease, so they are rebuilt from the live keys at
//! start and kept current from each revision's events.
//!
//! Deadlines, in contrast, are local: only the leader's count (see the
//! member's lease clock, `member/lease_clock.rs`), and a new leader restarts
//! every lease's clock from its remaining (checkpointed) TTL, as etcd's
//! lessor does on promotion.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rocksdb::WriteBatch;

use crate::error::{Error, Result};
use crate::mvcc::MvccStore;
use crate::proto::mvccpb::{event::EventType, Event};
use crate::storage::schema::META_LEASE_PREFIX;
use crate::storage::{Database, CF_META};
use crate::txn::LeaseLookup;

/// Lease records in the meta column family: this prefix, then the id.
const RECORD_PREFIX: &[u8] = META_LEASE_PREFIX;
/// etcd's `MaxLeaseTTL`.
pub const MAX_TTL: i64 = 9_000_000_000;
/// etcd's minimum TTL for its default timing: 1.5 election timeouts of
/// 10 ticks of 100 ms, rounded up to whole seconds.
pub const MIN_TTL: i64 = 2;

#[derive(Debug)]
struct Lease {
    ttl: i64,
    /// The remaining TTL last checkpointed through Raft; 0 when none.
    remaining_ttl: i64,
    /// When the leader lets the lease expire. Meaningless on followers.
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
}

impl Lease {
    /// The TTL a new leader starts the lease's clock with.
    fn restart_ttl(&self) -> i64 {
        if self.remaining_ttl > 0 {
            self.remaining_ttl
        } else {
            self.ttl
        }
    }
}

/// A lease as the Lease service reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseInfo {
    pub id: i64,
    pub granted_ttl: i64,
    pub remaining: Duration,
    pub keys: Vec<Vec<u8>>,
}

/// Every lease of the member.
pub struct LeaseTable {
    leases: Mutex<HashMap<i64, Lease>>,
    /// Whether this member's clock counts (etcd's primary lessor): set once
    /// a new leader has restarted every lease's clock, cleared when it stops
    /// leading. Renewals and TTL queries are only answered while set.
    primary: AtomicBool,
}

fn record_key(id: i64) -> Vec<u8> {
    let mut k = RECORD_PREFIX.to_vec();
    k.extend_from_slice(&(id as u64).to_be_bytes());
    k
}

fn encode_record(ttl: i64, remaining_ttl: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&ttl.to_be_bytes());
    v.extend_from_slice(&remaining_ttl.to_be_bytes());
    v
}

fn decode_record(k: &[u8], v: &[u8]) -> Result<(i64, i64, i64)> {
    let corrupt = || Error::Corrupt("malformed lease record".into());
    let id: [u8; 8] = k.get(RECORD_PREFIX.len()..).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
    let ttl: [u8; 8] = v.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
    let remaining: [u8; 8] = v.get(8..16).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
    Ok((
        u64::from_be_bytes(id) as i64,
        i64::from_be_bytes(ttl),
        i64::from_be_bytes(remaining),
    ))
}

impl LeaseTable {
    /// Loads the lease records and re-attaches every live key that names a
    /// lease.
    pub fn open(engine: &Database, store: &MvccStore) -> Result<Self> {
        let mut leases = HashMap::new();
        let now = Instant::now();
        let mut it = engine.db().raw_iterator_cf(engine.cf(CF_META));
        it.seek(RECORD_PREFIX);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(RECORD_PREFIX) {
                break;
            }
            let (id, ttl, remaining_ttl) = decode_record(k, v)?;
            let lease = Lease {
                ttl,
                remaining_ttl,
                deadline: now + secs(if remaining_ttl > 0 { remaining_ttl } else { ttl }),
                keys: BTreeSet::new(),
            };
            leases.insert(id, lease);
            it.next();
        }
        it.status()?;
        // Attachments are not stored apart from the keys, so they are found
        // by visiting every key: skipped when no lease exists (a restart
        // then reads no key at all), streamed otherwise so a large keyspace
        // is never held in memory at once.
        if !leases.is_empty() {
            store.for_each_live(|kv| {
                if kv.lease == 0 {
                    return;
                }
                match leases.get_mut(&kv.lease) {
                    Some(l) => {
                        l.keys.insert(kv.key);
                    }
                    None => tracing::warn!(lease = kv.lease, "key names a lease that does not exist"),
                }
            })?;
        }
        Ok(LeaseTable {
            leases: Mutex::new(leases),
            primary: AtomicBool::new(false),
        })
    }

    /// Replaces every lease with what the database now holds, after a
    /// snapshot from the leader replaced the state.
    pub fn reload(&self, engine: &Database, store: &MvccStore) -> Result<()> {
        let fresh = LeaseTable::open(engine, store)?;
        *self.leases.lock() = fresh.leases.into_inner();
        Ok(())
    }

    // ---- applying replicated changes ----

    /// Applies a grant: records the lease in `batch`. Fails when the id is
    /// taken.
    pub fn grant(&self, id: i64, ttl: i64, engine: &Database, batch: &mut WriteBatch) -> Result<i64> {
        if id == 0 {
            return Err(Error::LeaseNotFound);
        }
        if ttl > MAX_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(MIN_TTL);
        let mut leases = self.leases.lock();
        if leases.contains_key(&id) {
            return Err(Error::LeaseExists);
        }
        batch.put_cf(engine.cf(CF_META), record_key(id), encode_record(ttl, 0));
        leases.insert(
            id,
            Lease {
                ttl,
                remaining_ttl: 0,
                deadline: Instant::now() + secs(ttl),
                keys: BTreeSet::new(),
            },
        );
        Ok(ttl)
    }

    /// The keys attached to a lease that is about to be revoked, in key
    /// order. Fails when the lease does not exist.
    pub fn keys_of(&self, id: i64) -> Result<Vec<Vec<u8>>> {
        let leases = self.leases.lock();
        let lease = leases.get(&id).ok_or(Error::LeaseNotFound)?;
        Ok(lease.keys.iter().cloned().collect())
    }

    /// Stages the removal of a revoked lease's record.
    pub fn stage_revoke(&self, id: i64, engine: &Database, batch: &mut WriteBatch) {
        batch.delete_cf(engine.cf(CF_META), record_key(id));
    }

    /// Forgets a lease whose revocation is durable.
    pub fn forget(&self, id: i64) {
        self.leases.lock().remove(&id);
    }

    /// Applies checkpoints of remaining TTLs (0 clears one).
    pub fn checkpoint(&self, checkpoints: &[(i64, i64)], engine: &Database, batch: &mut WriteBatch) {
        let mut leases = self.leases.lock();
        for &(id, remaining) in checkpoints {
            if let Some(l) = leases.get_mut(&id) {
                l.remaining_ttl = remaining.max(0);
                batch.put_cf(engine.cf(CF_META), record_key(id), encode_record(l.ttl, l.remaining_ttl));
            }
        }
    }

    /// Moves keys between leases as a committed revision's events say: a
    /// put attaches its key to its lease (leaving the previous one), a
    /// delete detaches it.
    pub fn track(&self, events: &[Event]) {
        let mut leases = self.leases.lock();
        for e in events {
            let Some(kv) = &e.kv else { continue };
            let before = e.prev_kv.as_ref().map_or(0, |p| p.lease);
            let after = if e.r#type == EventType::Put as i32 { kv.lease } else { 0 };
            if before == after {
                continue;
            }
            if let Some(l) = leases.get_mut(&before) {
                l.keys.remove(&kv.key);
            }
            if let Some(l) = leases.get_mut(&after) {
                l.keys.insert(kv.key.clone());
            }
        }
    }

    // ---- the leader's clock ----

    /// Restarts every lease's clock from its remaining TTL plus `extend`:
    /// a new leader never lets a lease expire earlier than the old one
    /// would have.
    pub fn promote(&self, extend: Duration) {
        let now = Instant::now();
        let mut leases = self.leases.lock();
        for l in leases.values_mut() {
            l.deadline = now + secs(l.restart_ttl()) + extend;
        }
        // Under the lock, so no renewal sees the old deadlines as primary.
        self.primary.store(true, Ordering::SeqCst);
    }

    /// Stops counting: this member no longer leads, so its deadlines go
    /// stale and renewals must go to the new leader.
    pub fn demote(&self) {
        self.primary.store(false, Ordering::SeqCst);
    }

    pub fn is_primary(&self) -> bool {
        self.primary.load(Ordering::SeqCst)
    }

    /// Renews a lease on the leader. Returns its TTL and whether a
    /// checkpointed remaining TTL should be cleared through Raft; fails with
    /// `NotLeader` unless this member is the primary.
    pub fn renew(&self, id: i64) -> Result<(i64, bool)> {
        let mut leases = self.leases.lock();
        if !self.is_primary() {
            return Err(Error::NotLeader);
        }
        let l = leases.get_mut(&id).ok_or(Error::LeaseNotFound)?;
        let now = Instant::now();
        if l.deadline <= now {
            // Its revocation is on its way; etcd reports it gone.
            return Err(Error::LeaseNotFound);
        }
        l.deadline = now + secs(l.ttl);
        Ok((l.ttl, l.remaining_ttl > 0))
    }

    /// Leases whose deadline has passed, at most `limit` of them.
    pub fn expired(&self, limit: usize) -> Vec<i64> {
        let now = Instant::now();
        let leases = self.leases.lock();
        if !self.is_primary() {
            return Vec::new();
        }
        let mut ids: Vec<(Instant, i64)> = leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, l)| (l.deadline, *id))
            .collect();
        ids.sort();
        ids.into_iter().take(limit).map(|(_, id)| id).collect()
    }

    /// Remaining TTLs worth checkpointing: leases with more than `min` left.
    pub fn remaining_ttls(&self, min: Duration) -> Vec<(i64, i64)> {
        let now = Instant::now();
        let leases = self.leases.lock();
        leases
            .iter()
            .filter_map(|(id, l)| {
                let left = l.deadline.saturating_duration_since(now);
                if left > min {
                    Some((*id, left.as_secs() as i64))
                } else {
                    None
                }
            })
            .collect()
    }

    // ---- reads ----

    pub fn info(&self, id: i64) -> Option<LeaseInfo> {
        let leases = self.leases.lock();
        let l = leases.get(&id)?;
        Some(LeaseInfo {
            id,
            granted_ttl: l.ttl,
            remaining: l.deadline.saturating_duration_since(Instant::now()),
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// Every lease id, soonest deadline first, as etcd lists them.
    pub fn ids(&self) -> Vec<i64> {
        let leases = self.leases.lock();
        let mut ids: Vec<(Instant, i64)> = leases.iter().map(|(id, l)| (l.deadline, *id)).collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }
}

impl LeaseLookup for LeaseTable {
    fn lease_exists(&self, id: i64) -> bool {
        self.leases.lock().contains_key(&id)
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_primary_renews_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Database::open(dir.path()).unwrap();
        let store = MvccStore::open(engine.clone()).unwrap();
        let table = LeaseTable::open(&engine, &store).unwrap();
        let mut batch = WriteBatch::default();
        table.grant(7, 5, &engine, &mut batch).unwrap();
        table.grant(8, 2, &engine, &mut batch).unwrap();
        engine.write(batch, false).unwrap();
        // A member that has not taken over the clock sends renewals on.
        assert!(matches!(table.renew(7), Err(Error::NotLeader)));
        table.promote(Duration::ZERO);
        assert_eq!(table.renew(7).unwrap(), (5, false));
        assert!(matches!(table.renew(9), Err(Error::LeaseNotFound)));
        // Its deadlines are in the past once promoted with none left, so
        // only a primary reports the lease expired.
        table.checkpoint(&[(8, 0)], &engine, &mut WriteBatch::default());
        table.leases.lock().get_mut(&8).unwrap().deadline = Instant::now();
        assert_eq!(table.expired(10), [8]);
        table.demote();
        assert!(table.expired(10).is_empty());
        assert!(matches!(table.renew(7), Err(Error::NotLeader)));
        // A new term's promotion restarts every clock from the full TTL
        // plus the extension.
        table.promote(Duration::from_secs(60));
        let left = table.info(8).unwrap().remaining;
        assert!(left > Duration::from_secs(60) && left <= Duration::from_secs(62), "{left:?}");
        assert!(table.expired(10).is_empty());
    }
}
