//! Every column family and every meta record the member keeps, each declared
//! once with its class. Raft snapshots and backups ask [`class_of`] what they
//! may carry and install, so a new record is placed by adding it here.

/// Raft log entries, keyed by big-endian index.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Small records: Raft hard state, applied index, revisions, membership.
pub const CF_META: &str = "meta";
/// MVCC key index: (user key, inverted revision) -> key-value or tombstone.
pub const CF_KV_INDEX: &str = "kv_index";
/// MVCC revision log: revision -> user key, for history scans and hashing.
pub const CF_KV_REV: &str = "kv_rev";

pub const COLUMN_FAMILIES: [&str; 4] = [CF_RAFT_LOG, CF_META, CF_KV_INDEX, CF_KV_REV];

/// Raft's vote and commit index.
pub const META_HARD_STATE: &[u8] = b"raft/hard_state";
/// Raft's voters and learners as of the last applied configuration change.
pub const META_CONF_STATE: &[u8] = b"raft/conf_state";
/// Index and term of the entry just before the first one in the log.
pub const META_TRUNCATED: &[u8] = b"raft/truncated";
/// The last log index whose entry is applied to the state.
pub const META_APPLIED_INDEX: &[u8] = b"apply/applied_index";
/// The cluster's member list.
pub const META_MEMBERS: &[u8] = b"membership/members";
/// This member's id.
pub const META_LOCAL_ID: &[u8] = b"local/member_id";
/// The cluster id this member belongs to.
pub const META_CLUSTER_ID: &[u8] = b"local/cluster_id";
/// The voters a member bootstrapped with (only the first members have any).
pub const META_INITIAL_VOTERS: &[u8] = b"local/initial_voters";
/// Present while a dump is being installed in several writes; names the
/// staged dump so that a restart finishes the install.
pub const META_DUMP_INSTALL: &[u8] = b"local/dump_install";
/// The store's current revision.
pub const META_CURRENT_REV: &[u8] = b"mvcc/current_rev";
/// The revision a compaction was asked for.
pub const META_SCHEDULED_COMPACT: &[u8] = b"mvcc/scheduled_compact_rev";
/// The revision the last finished compaction reached.
pub const META_FINISHED_COMPACT: &[u8] = b"mvcc/finished_compact_rev";
/// Leases: prefix, then the big-endian lease id.
pub const META_LEASE_PREFIX: &[u8] = b"lease/";
/// Plugin bindings: prefix, then the binding's name.
pub const META_PLUGIN_BINDING_PREFIX: &[u8] = b"plugin/binding/";
/// Auth users (`authpb.User`): prefix, then the user name.
pub const META_AUTH_USER_PREFIX: &[u8] = b"auth/user/";
/// Auth roles (`authpb.Role`): prefix, then the role name.
pub const META_AUTH_ROLE_PREFIX: &[u8] = b"auth/role/";
/// Whether auth is enabled (one byte, 1 when it is).
pub const META_AUTH_ENABLED: &[u8] = b"auth/enabled";
/// The auth store's revision.
pub const META_AUTH_REVISION: &[u8] = b"auth/revision";
/// Active alarms (`etcdserverpb.AlarmMember`): prefix, then the big-endian
/// member id and alarm type.
pub const META_ALARM_PREFIX: &[u8] = b"alarm/";

/// Where a record goes when the state moves between members or into a
/// backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Part of the replicated state: in Raft snapshots and in backups, and
    /// restored from both.
    Replicated,
    /// Replicated, so in Raft snapshots and backups, but a restored member
    /// must not inherit it: it belongs to the old cluster's log or members.
    NotRestored,
    /// This member's own bookkeeping: never leaves the member.
    MemberLocal,
}

impl Class {
    /// Whether Raft snapshots and backups carry records of this class.
    pub fn is_carried(self) -> bool {
        !matches!(self, Class::MemberLocal)
    }
}

/// Which keys of a column family a declaration covers.
#[derive(Debug, Clone, Copy)]
pub enum Keys {
    All,
    Exact(&'static [u8]),
    Prefix(&'static [u8]),
}

impl Keys {
    fn covers(&self, key: &[u8]) -> bool {
        match self {
            Keys::All => true,
            Keys::Exact(k) => key == *k,
            Keys::Prefix(p) => key.starts_with(p),
        }
    }
}

/// One kind of record.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub cf: &'static str,
    pub keys: Keys,
    pub class: Class,
}

const fn record(cf: &'static str, keys: Keys, class: Class) -> Record {
    Record { cf, keys, class }
}

/// Every record the member stores.
pub const RECORDS: &[Record] = &[
    record(CF_RAFT_LOG, Keys::All, Class::MemberLocal),
    record(CF_KV_INDEX, Keys::All, Class::Replicated),
    record(CF_KV_REV, Keys::All, Class::Replicated),
    record(CF_META, Keys::Exact(META_HARD_STATE), Class::MemberLocal),
    record(CF_META, Keys::Exact(META_CONF_STATE), Class::MemberLocal),
    record(CF_META, Keys::Exact(META_TRUNCATED), Class::MemberLocal),
    record(CF_META, Keys::Exact(META_LOCAL_ID), Class::MemberLocal),
    record(CF_META, Keys::Exact(META_CLUSTER_ID), Class::MemberLocal),
    record(CF_META, Keys::Exact(META_INITIAL_VOTERS), Class::MemberLocal),
    record(CF_META, Keys::Exact(META_DUMP_INSTALL), Class::MemberLocal),
    record(CF_META, Keys::Exact(META_APPLIED_INDEX), Class::NotRestored),
    record(CF_META, Keys::Exact(META_MEMBERS), Class::NotRestored),
    record(CF_META, Keys::Exact(META_CURRENT_REV), Class::Replicated),
    record(CF_META, Keys::Exact(META_SCHEDULED_COMPACT), Class::Replicated),
    record(CF_META, Keys::Exact(META_FINISHED_COMPACT), Class::Replicated),
    record(CF_META, Keys::Prefix(META_LEASE_PREFIX), Class::Replicated),
    record(CF_META, Keys::Prefix(META_PLUGIN_BINDING_PREFIX), Class::Replicated),
    record(CF_META, Keys::Prefix(META_AUTH_USER_PREFIX), Class::Replicated),
    record(CF_META, Keys::Prefix(META_AUTH_ROLE_PREFIX), Class::Replicated),
    record(CF_META, Keys::Exact(META_AUTH_ENABLED), Class::Replicated),
    record(CF_META, Keys::Exact(META_AUTH_REVISION), Class::Replicated),
    record(CF_META, Keys::Prefix(META_ALARM_PREFIX), Class::Replicated),
    // The entries of the in-process Raft tests' state machine, which travel
    // in snapshots like real state.
    #[cfg(test)]
    record(CF_META, Keys::Prefix(META_TEST_ENTRY_PREFIX), Class::Replicated),
];

/// Where `raft/cluster_test.rs`'s state machine records applied entries.
#[cfg(test)]
pub const META_TEST_ENTRY_PREFIX: &[u8] = b"test/entry/";

/// The class of a stored record, or `None` for a record the schema does not
/// know (a foreign or corrupt one).
pub fn class_of(cf: &str, key: &[u8]) -> Option<Class> {
    RECORDS.iter().find(|r| r.cf == cf && r.keys.covers(key)).map(|r| r.class)
}

/// The column families that hold any record snapshots and backups carry.
pub fn carried_column_families() -> impl Iterator<Item = &'static str> {
    COLUMN_FAMILIES
        .iter()
        .copied()
        .filter(|cf| RECORDS.iter().any(|r| r.cf == *cf && r.class.is_carried()))
}

/// The column family named `name`, as the schema's own string.
pub fn column_family(name: &str) -> Option<&'static str> {
    COLUMN_FAMILIES.iter().copied().find(|cf| *cf == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key each declaration covers.
    fn sample(r: &Record) -> Vec<u8> {
        match r.keys {
            Keys::All => b"any".to_vec(),
            Keys::Exact(k) => k.to_vec(),
            Keys::Prefix(p) => [p, b"x".as_slice()].concat(),
        }
    }

    #[test]
    fn each_record_has_exactly_one_class() {
        for r in RECORDS {
            let key = sample(r);
            let matching: Vec<_> = RECORDS.iter().filter(|o| o.cf == r.cf && o.keys.covers(&key)).collect();
            assert_eq!(matching.len(), 1, "{} {:?} is declared {} times", r.cf, r.keys, matching.len());
            assert_eq!(class_of(r.cf, &key), Some(r.class));
        }
    }

    #[test]
    fn every_column_family_is_declared_and_unknown_records_have_no_class() {
        for cf in COLUMN_FAMILIES {
            assert!(RECORDS.iter().any(|r| r.cf == cf), "{cf} has no record");
        }
        assert!(RECORDS.iter().all(|r| column_family(r.cf).is_some()));
        assert_eq!(class_of(CF_META, b"mvcc/unheard_of"), None);
        assert_eq!(class_of("elsewhere", b"k"), None);
        assert_eq!(carried_column_families().collect::<Vec<_>>(), vec![CF_META, CF_KV_INDEX, CF_KV_REV]);
    }

    #[test]
    fn raft_bookkeeping_stays_local_and_old_cluster_records_are_not_restored() {
        for key in [META_HARD_STATE, META_CONF_STATE, META_TRUNCATED, META_LOCAL_ID, META_CLUSTER_ID] {
            assert_eq!(class_of(CF_META, key), Some(Class::MemberLocal));
        }
        assert_eq!(class_of(CF_RAFT_LOG, &7u64.to_be_bytes()), Some(Class::MemberLocal));
        assert_eq!(class_of(CF_META, META_APPLIED_INDEX), Some(Class::NotRestored));
        assert_eq!(class_of(CF_META, META_MEMBERS), Some(Class::NotRestored));
        assert_eq!(
            class_of(CF_META, &[META_LEASE_PREFIX, &5u64.to_be_bytes()].concat()),
            Some(Class::Replicated)
        );
    }
}
