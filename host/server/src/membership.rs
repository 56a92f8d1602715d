//! Cluster and member identities, derived from the bootstrap flags the way
//! etcd derives them, so the same flags give the same ids; and the member
//! list, which is replicated state: changed only by applied Raft entries,
//! persisted with them and carried in snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::RwLock;
use prost::Message as _;
use rocksdb::WriteBatch;
use sha1::{Digest, Sha1};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::proto::cairnpb::{MemberAttributes, MemberChange, MemberSet};
use crate::proto::etcdserverpb;
// The voters of a new cluster (`META_INITIAL_VOTERS`) are recorded with the
// identity so that a member killed before its Raft log was created still
// bootstraps it on restart (rather than waiting, as a joining member does,
// for a leader's snapshot, which a new cluster's members would wait for
// from each other forever).
use crate::storage::schema::{META_CLUSTER_ID, META_INITIAL_VOTERS, META_LOCAL_ID, META_MEMBERS};
use crate::storage::Database;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The cluster as the bootstrap flags describe it.
#[derive(Clone, Debug)]
pub struct InitialCluster {
    pub cluster_id: u64,
    pub local_id: u64,
    pub members: Vec<Member>,
}

/// This member's identity and the live member list.
#[derive(Clone)]
pub struct Membership {
    pub cluster_id: u64,
    pub local_id: u64,
    pub table: Arc<MemberTable>,
    /// Whether membership changes are checked first (`--strict-reconfig-check`).
    pub strict_reconfig: bool,
}

impl Member {
    pub fn to_proto(&self) -> etcdserverpb::Member {
        etcdserverpb::Member {
            id: self.id,
            name: self.name.clone(),
            peer_ur_ls: self.peer_urls.clone(),
            client_ur_ls: self.client_urls.clone(),
            is_learner: self.is_learner,
        }
    }

    pub fn from_proto(m: &etcdserverpb::Member) -> Member {
        Member {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_ur_ls.clone(),
            client_urls: m.client_ur_ls.clone(),
            is_learner: m.is_learner,
        }
    }
}

/// The member list in memory, kept equal to its persisted copy.
pub struct MemberTable {
    engine: Arc<Database>,
    cluster_id: u64,
    local_id: u64,
    members: RwLock<BTreeMap<u64, Member>>,
    removed_ids: RwLock<BTreeSet<u64>>,
    removed: watch::Sender<bool>,
}

impl MemberTable {
    pub(crate) fn load(engine: Arc<Database>, cluster_id: u64, local_id: u64) -> Result<MemberTable> {
        let table = MemberTable {
            engine,
            cluster_id,
            local_id,
            members: RwLock::new(BTreeMap::new()),
            removed_ids: RwLock::new(BTreeSet::new()),
            removed: watch::channel(false).0,
        };
        table.reload()?;
        Ok(table)
    }

    /// Re-reads the persisted list, after a snapshot replaced it.
    pub fn reload(&self) -> Result<()> {
        let set = match self.engine.get_meta(META_MEMBERS)? {
            Some(raw) => MemberSet::decode(raw.as_slice())?,
            None => MemberSet::default(),
        };
        let members: BTreeMap<u64, Member> = set.members.iter().map(|m| (m.id, Member::from_proto(m))).collect();
        let gone = set.removed.contains(&self.local_id);
        *self.members.write() = members;
        *self.removed_ids.write() = set.removed.iter().copied().collect();
        if gone {
            self.removed.send_replace(true);
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<Member> {
        self.members.read().values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Member> {
        self.members.read().get(&id).cloned()
    }

    /// Whether `id` is a learner; asked on every client request, so it
    /// copies nothing.
    pub fn is_learner(&self, id: u64) -> bool {
        self.members.read().get(&id).is_some_and(|m| m.is_learner)
    }

    /// Where to reach a member's peer service.
    pub fn peer_url(&self, id: u64) -> Option<String> {
        self.members.read().get(&id).and_then(|m| m.peer_urls.first().cloned())
    }

    pub fn find_by_peer_urls(&self, urls: &[String]) -> Option<Member> {
        let want = sorted(urls);
        self.members.read().values().find(|m| sorted(&m.peer_urls) == want).cloned()
    }

    pub fn as_set(&self) -> MemberSet {
        MemberSet {
            cluster_id: self.cluster_id,
            members: self.members.read().values().map(Member::to_proto).collect(),
            removed: self.removed_ids.read().iter().copied().collect(),
        }
    }

    pub fn is_removed(&self, id: u64) -> bool {
        self.removed_ids.read().contains(&id)
    }

    /// Another member refused our traffic because we were removed: we may
    /// never apply our own removal, so learn of it this way.
    pub fn learn_removed(&self) {
        self.removed.send_replace(true);
    }

    /// Resolves once this member has been removed from the cluster.
    pub async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Records a member's name and client URLs.
    pub fn apply_attributes(&self, a: &MemberAttributes, extra: impl FnOnce(&mut WriteBatch)) -> Result<()> {
        self.update(
            |members, _| {
                if let Some(m) = members.get_mut(&a.member_id) {
                    m.name = a.name.clone();
                    m.client_urls = a.client_urls.clone();
                }
            },
            extra,
        )
    }

    /// Records new peer URLs for a member (`MemberUpdate`).
    pub fn apply_update(&self, change: &MemberChange, extra: impl FnOnce(&mut WriteBatch)) -> Result<()> {
        let Some(new) = &change.member else {
            return self.update(|_, _| {}, extra);
        };
        self.update(
            |members, _| {
                if let Some(m) = members.get_mut(&new.id) {
                    m.peer_urls = new.peer_ur_ls.clone();
                }
            },
            extra,
        )
    }

    /// Applies a committed Raft configuration change to the list.
    pub fn apply_conf_change(
        &self,
        change: raft::eraftpb::ConfChangeType,
        node_id: u64,
        context: &[u8],
        extra: impl FnOnce(&mut WriteBatch),
    ) -> Result<()> {
        use raft::eraftpb::ConfChangeType;
        let record = MemberChange::decode(context).ok().and_then(|c| c.member);
        self.update(
            |members, removed| match change {
                ConfChangeType::RemoveNode => {
                    members.remove(&node_id);
                    removed.insert(node_id);
                }
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    let learner = change == ConfChangeType::AddLearnerNode;
                    match members.get_mut(&node_id) {
                        // Promotion of a learner.
                        Some(m) => m.is_learner = learner,
                        None => {
                            let mut m = record.as_ref().map(Member::from_proto).unwrap_or(Member {
                                id: node_id,
                                name: String::new(),
                                peer_urls: Vec::new(),
                                client_urls: Vec::new(),
                                is_learner: false,
                            });
                            m.id = node_id;
                            m.is_learner = learner;
                            members.insert(node_id, m);
                        }
                    }
                }
            },
            extra,
        )?;
        if change == raft::eraftpb::ConfChangeType::RemoveNode && node_id == self.local_id {
            self.removed.send_replace(true);
        }
        Ok(())
    }

    fn update(&self, f: impl FnOnce(&mut BTreeMap<u64, Member>, &mut BTreeSet<u64>), extra: impl FnOnce(&mut WriteBatch)) -> Result<()> {
        let mut members = self.members.write();
        let mut removed_ids = self.removed_ids.write();
        let mut next = members.clone();
        let mut next_removed = removed_ids.clone();
        f(&mut next, &mut next_removed);
        let set = MemberSet {
            cluster_id: self.cluster_id,
            members: next.values().map(Member::to_proto).collect(),
            removed: next_removed.iter().copied().collect(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.engine.cf(crate::storage::CF_META), META_MEMBERS, set.encode_to_vec());
        extra(&mut batch);
        self.engine.write(batch, false)?;
        *members = next;
        *removed_ids = next_removed;
        Ok(())
    }
}

fn decode_ids(raw: &[u8]) -> Result<Vec<u64>> {
    if raw.len() % 8 != 0 {
        return Err(Error::Corrupt("initial voters record".into()));
    }
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("chunks of 8 bytes")))
        .collect())
}

pub(crate) fn sorted(urls: &[String]) -> Vec<String> {
    let mut v = urls.to_vec();
    v.sort();
    v
}

impl Membership {
    /// Whether this member is a learner, which serves only a few calls.
    pub fn is_local_learner(&self) -> bool {
        self.table.is_learner(self.local_id)
    }
}

/// This member's identity as persisted by an earlier start.
pub struct PersistedIdentity {
    pub local_id: u64,
    pub cluster_id: u64,
    /// The voters of a new cluster this member was created for.
    pub initial_voters: Option<Vec<u64>>,
}

/// The identity an earlier start persisted, if any.
pub fn load_identity(engine: &Database) -> Result<Option<PersistedIdentity>> {
    let (Some(local_id), Some(cluster_id)) = (engine.get_meta_u64(META_LOCAL_ID)?, engine.get_meta_u64(META_CLUSTER_ID)?) else {
        return Ok(None);
    };
    let initial_voters = match engine.get_meta(META_INITIAL_VOTERS)? {
        Some(raw) => Some(decode_ids(&raw)?),
        None => None,
    };
    Ok(Some(PersistedIdentity {
        local_id,
        cluster_id,
        initial_voters,
    }))
}

/// Persists a new member's identity and first member list, durably, before
/// anything else is written.
pub fn persist_identity(engine: &Database, set: &MemberSet, local_id: u64, initial_voters: Option<&[u64]>) -> Result<()> {
    let mut batch = WriteBatch::default();
    let meta = engine.cf(crate::storage::CF_META);
    batch.put_cf(meta, META_MEMBERS, set.encode_to_vec());
    batch.put_cf(meta, META_LOCAL_ID, local_id.to_be_bytes());
    batch.put_cf(meta, META_CLUSTER_ID, set.cluster_id.to_be_bytes());
    if let Some(voters) = initial_voters {
        batch.put_cf(
            meta,
            META_INITIAL_VOTERS,
            voters.iter().flat_map(|id| id.to_be_bytes()).collect::<Vec<u8>>(),
        );
    }
    engine.write(batch, true)
}

/// sha1 over the sorted peer URLs and the cluster token, first 8 bytes.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    for u in &urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("sha1 has 20 bytes"))
}

/// sha1 over the sorted member ids, first 8 bytes.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("sha1 has 20 bytes"))
}

impl InitialCluster {
    /// The cluster `--initial-cluster` and friends describe.
    pub fn from_config(cfg: &ServerConfig) -> Result<Self> {
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for part in cfg.initial_cluster().split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, url) = part
                .split_once('=')
                .ok_or_else(|| Error::InvalidRequest(format!("--initial-cluster entry {part:?} is not name=url")))?;
            by_name.entry(name.to_string()).or_default().push(url.to_string());
        }
        let Some(own_urls) = by_name.get(&cfg.name) else {
            return Err(Error::InvalidRequest(format!(
                "couldn't find local name {:?} in the initial cluster configuration",
                cfg.name
            )));
        };
        let mut advertised = cfg.initial_advertise_peer_urls.clone();
        advertised.sort();
        let local_id = member_id(own_urls, &cfg.initial_cluster_token);
        let mut own = own_urls.clone();
        own.sort();
        if advertised != own {
            return Err(Error::InvalidRequest(format!(
                "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
                cfg.name,
                own.join(","),
                advertised.join(",")
            )));
        }
        let members: Vec<Member> = by_name
            .into_iter()
            .map(|(name, peer_urls)| {
                let local = name == cfg.name;
                Member {
                    id: member_id(&peer_urls, &cfg.initial_cluster_token),
                    client_urls: if local { cfg.advertise_client_urls.clone() } else { Vec::new() },
                    name,
                    peer_urls,
                    is_learner: false,
                }
            })
            .collect();
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        Ok(InitialCluster {
            cluster_id: cluster_id(&ids),
            local_id,
            members,
        })
    }
}
