//! Start-up: who this member is (from disk, from the flags for a new
//! cluster, or from the running cluster it joins), and the member assembled
//! from storage, MVCC, apply and Raft.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use super::{IdGenerator, Limits, Member, MembersApplied};
use crate::alarm::{Quota, Space};
use crate::apply::{Applier, Waiters};
use crate::auth::{AuthOptions, AuthStore};
use crate::config::{ClusterState, ServerConfig};
use crate::membership::{self, InitialCluster, MemberTable, Membership};
use crate::mvcc::MvccStore;
use crate::peer::{self, PeerActivity, Transport};
use crate::proto::cairnpb::{peer_client::PeerClient, raft_request::Request, MemberAttributes, MemberSet, MembersRequest};
use crate::raft::{LogLimits, Node};
use crate::storage::Database;
use crate::tls::PeerDialer;

/// How long one member named in `--initial-cluster` may take to answer.
const FETCH_MEMBERS_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts to publish this member's attributes.
const PUBLISH_RETRY: Duration = Duration::from_millis(200);

/// How this member's Raft log must be started.
enum RaftStart {
    /// A member of a new cluster: these are its voters, from which its Raft
    /// log is created if it does not exist yet.
    NewCluster(Vec<u64>),
    /// Restarting from disk, or joining a running cluster (which will send
    /// a snapshot): Raft starts from what is on disk.
    FromDisk,
}

/// A started member and the thread running its Raft loop.
pub struct Started {
    pub member: Arc<Member>,
    pub raft_thread: JoinHandle<crate::error::Result<()>>,
}

/// Opens the data directory and starts the member's Raft loop.
pub async fn start(cfg: &ServerConfig, peer_dialer: PeerDialer) -> anyhow::Result<Started> {
    let limits = Limits::from_config(cfg)?;
    let data_dir = cfg.data_dir();
    let database = Database::open(&data_dir).with_context(|| format!("opening data dir {}", data_dir.display()))?;
    let (membership, raft_start) = open_membership(cfg, database.clone(), &peer_dialer).await?;
    crate::failpoint::crash_point("after-identity-persisted");
    let store = Arc::new(MvccStore::open(database.clone())?);
    let waiters = Arc::new(Waiters::default());
    let auth_options = AuthOptions {
        token: cfg.auth_token.clone(),
        token_ttl: Duration::from_secs(cfg.auth_token_ttl),
        bcrypt_cost: cfg.bcrypt_cost,
    };
    let auth = Arc::new(AuthStore::open(&database, &auth_options).context("setting up auth")?);
    let space = Space::new(Quota::from_flag(cfg.quota_backend_bytes), database.clone());
    let applier = Applier::new(database.clone(), store.clone(), waiters.clone())?
        .with_members(membership.table.clone())
        .with_auth(auth.clone())
        .with_space(space.clone());
    let alarms = applier.alarms();
    let watch_hub = applier.watch_hub();
    let leases = applier.leases();
    let plugins = applier.plugins();
    let voters = match raft_start {
        RaftStart::NewCluster(voters) => voters,
        RaftStart::FromDisk => Vec::new(),
    };
    let log_limits = LogLimits {
        snapshot_count: cfg.snapshot_count.max(1),
        catch_up_entries: cfg.snapshot_count.clamp(1, 5_000),
    };
    let (local_id, cluster_id, table) = (membership.local_id, membership.cluster_id, membership.table.clone());
    let activity = Arc::new(PeerActivity::default());
    let transport_activity = activity.clone();
    let dumps = database.dump_dir();
    let transport_dialer = peer_dialer.clone();
    let (node, raft_thread) = Node::start(local_id, database.clone(), &voters, log_limits, applier, |handle| {
        Box::new(Transport::new(
            local_id,
            cluster_id,
            table,
            transport_activity,
            handle,
            dumps,
            transport_dialer,
        ))
    })?;
    tracing::info!(
        name = %cfg.name,
        member_id = %format!("{local_id:x}"),
        cluster_id = %format!("{cluster_id:x}"),
        data_dir = %data_dir.display(),
        revision = store.current_revision(),
        "member started"
    );
    let member = Arc::new(Member {
        database,
        store,
        node,
        waiters,
        ids: IdGenerator::new(local_id),
        membership,
        activity,
        limits,
        watch_hub,
        leases,
        plugins,
        auth,
        alarms,
        space,
        peer_dialer,
    });
    Ok(Started { member, raft_thread })
}

/// Establishes who this member is: from disk when it has run before, from
/// the flags for a new cluster, or by asking the running cluster's members
/// when joining one (`--initial-cluster-state existing`).
async fn open_membership(cfg: &ServerConfig, database: Arc<Database>, dialer: &PeerDialer) -> anyhow::Result<(Membership, RaftStart)> {
    let membership = |cluster_id, local_id, table| Membership {
        cluster_id,
        local_id,
        table,
        strict_reconfig: cfg.strict_reconfig_check,
    };
    if let Some(identity) = membership::load_identity(&database)? {
        let raft_start = match identity.initial_voters {
            Some(voters) => RaftStart::NewCluster(voters),
            None => RaftStart::FromDisk,
        };
        let table = Arc::new(MemberTable::load(database, identity.cluster_id, identity.local_id)?);
        return Ok((membership(identity.cluster_id, identity.local_id, table), raft_start));
    }
    let initial = InitialCluster::from_config(cfg)?;
    let (set, local_id, raft_start) = match cfg.initial_cluster_state {
        ClusterState::New => {
            let voters = initial.members.iter().map(|m| m.id).collect();
            let set = MemberSet {
                cluster_id: initial.cluster_id,
                members: initial.members.iter().map(membership::Member::to_proto).collect(),
                removed: Vec::new(),
            };
            (set, initial.local_id, RaftStart::NewCluster(voters))
        }
        ClusterState::Existing => {
            let set = fetch_members(&initial, cfg, dialer).await?;
            let own = membership::sorted(&cfg.initial_advertise_peer_urls);
            let me = set
                .members
                .iter()
                .find(|m| membership::sorted(&m.peer_ur_ls) == own)
                .ok_or_else(|| anyhow::anyhow!("member with peer URLs {own:?} has not been added to the cluster (use member add first)"))?;
            let id = me.id;
            (set, id, RaftStart::FromDisk)
        }
    };
    let voters = match &raft_start {
        RaftStart::NewCluster(voters) => Some(voters.as_slice()),
        RaftStart::FromDisk => None,
    };
    membership::persist_identity(&database, &set, local_id, voters)?;
    let table = Arc::new(MemberTable::load(database, set.cluster_id, local_id)?);
    Ok((membership(set.cluster_id, local_id, table), raft_start))
}

/// Asks the members named in `--initial-cluster` for the member list, for a
/// member joining a running cluster.
async fn fetch_members(initial: &InitialCluster, cfg: &ServerConfig, dialer: &PeerDialer) -> anyhow::Result<MemberSet> {
    let mut last_error = String::from("no other member in --initial-cluster");
    for member in initial.members.iter().filter(|m| m.name != cfg.name) {
        for url in &member.peer_urls {
            let channel = match peer::connect(dialer, url).await {
                Ok(c) => c,
                Err(e) => {
                    last_error = format!("{url}: {e}");
                    continue;
                }
            };
            let mut client = PeerClient::new(channel).max_decoding_message_size(peer::MAX_PEER_MESSAGE_BYTES);
            match tokio::time::timeout(FETCH_MEMBERS_TIMEOUT, client.members(MembersRequest {})).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(e)) => last_error = format!("{url}: {e}"),
                Err(_) => last_error = format!("{url}: timed out"),
            }
        }
    }
    anyhow::bail!("cannot fetch the cluster's members from its peers: {last_error}")
}

/// Makes this member's name and client URLs known to the whole cluster
/// through Raft, as etcd publishes its attributes on every start, retrying
/// until applied.
pub async fn publish_attributes(member: Arc<Member>, name: String, client_urls: Vec<String>) {
    let attributes = MemberAttributes {
        member_id: member.membership.local_id,
        name,
        client_urls,
    };
    while let Err(e) = member
        .propose::<MembersApplied>(Request::MemberAttributes(attributes.clone()))
        .await
    {
        tracing::debug!(error = %e, "publishing member attributes failed; retrying");
        tokio::time::sleep(PUBLISH_RETRY).await;
    }
}
