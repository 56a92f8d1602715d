//! Corruption checks, after etcd's: the state hashes (HashKV) of the
//! members are compared at one revision, where they must agree. At start-up
//! (`--experimental-initial-corrupt-check`) a member that disagrees with a
//! peer refuses to start; periodically (`--experimental-corrupt-check-time`)
//! the leader compares the others with itself and raises the CORRUPT alarm
//! for the first member that disagrees, which stops writes cluster-wide.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::{alarms, Member, REQUEST_TIMEOUT};
use crate::error::Result;
use crate::peer::HashSource;
use crate::proto::cairnpb::state_peer_client::StatePeerClient;
use crate::proto::etcdserverpb::{AlarmType, HashKvRequest, HashKvResponse};

/// One peer's answer: its id and its hash, or why there is none.
struct PeerHash {
    id: u64,
    answer: std::result::Result<HashKvResponse, String>,
}

/// This member's hash at `revision` (0: current): hash, compact revision
/// and its current revision.
async fn own_hash(member: &Member, revision: i64) -> Result<(u32, i64, i64)> {
    member.read_blocking(move |store| store.hash_kv(revision)).await
}

/// Asks every other member for its hash at `revision`, over the peer URLs.
async fn peer_hashes(member: &Member, revision: i64) -> Vec<PeerHash> {
    let mut answers = Vec::new();
    for peer in member.membership.table.list() {
        if peer.id == member.membership.local_id || peer.peer_urls.is_empty() {
            continue;
        }
        let mut last_error = String::new();
        let mut answer = None;
        for url in &peer.peer_urls {
            match hash_at(member, url, revision).await {
                Ok(resp) => {
                    answer = Some(resp);
                    break;
                }
                Err(e) => {
                    tracing::warn!(peer = %format!("{:x}", peer.id), %url, revision, error = %e, "failed hash kv request");
                    last_error = e;
                }
            }
        }
        answers.push(PeerHash {
            id: peer.id,
            answer: answer.ok_or(last_error),
        });
    }
    answers
}

async fn hash_at(member: &Member, url: &str, revision: i64) -> std::result::Result<HashKvResponse, String> {
    let channel = crate::peer::connect(&member.peer_dialer, url).await.map_err(|e| e.to_string())?;
    let mut client = StatePeerClient::new(channel);
    match tokio::time::timeout(REQUEST_TIMEOUT, client.hash_kv(HashKvRequest { revision })).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// etcd's initial check: this member's hash at its current revision must
/// equal every peer's at that revision, where both compacted alike. Peers
/// that cannot answer (down, behind) are skipped.
pub async fn check_initial(member: &Member) -> anyhow::Result<()> {
    let local = member.membership.local_id;
    tracing::info!(member_id = %format!("{local:x}"), "starting initial corruption check");
    let (hash, compact, revision) = own_hash(member, 0).await?;
    let mut mismatches = 0;
    for peer in peer_hashes(member, revision).await {
        let Ok(resp) = peer.answer else { continue };
        if resp.hash == hash {
            continue;
        }
        if resp.compact_revision == compact {
            tracing::warn!(
                local_hash = hash,
                remote_hash = resp.hash,
                revision,
                compact_revision = compact,
                remote = %format!("{:x}", peer.id),
                "found different hash values from remote peer"
            );
            mismatches += 1;
        } else {
            tracing::warn!(
                compact_revision = compact,
                remote_compact_revision = resp.compact_revision,
                remote = %format!("{:x}", peer.id),
                "found different compact revision values from remote peer"
            );
        }
    }
    if mismatches > 0 {
        bail!("{local:x} found data inconsistency with peers");
    }
    tracing::info!(member_id = %format!("{local:x}"), "initial corruption checking passed; no corruption");
    Ok(())
}

/// Runs etcd's periodic check every `interval` while this member leads.
pub async fn monitor(member: Arc<Member>, interval: Duration) {
    tracing::info!(interval = ?interval, "enabled corruption checking");
    loop {
        tokio::time::sleep(interval).await;
        if !member.node.status().is_leader() {
            continue;
        }
        if let Err(e) = check_peers(&member).await {
            tracing::warn!(error = %e, "failed to check hash KV");
        }
    }
}

/// The leader's check, as etcd's: its own hash before and after a
/// linearizable barrier (a change at the same revision means its own state
/// moved under it), then each peer's at the first revision: a peer ahead of
/// the leader, compacted further, or with another hash where it compacted
/// alike, is the corrupt one. One alarm per check.
async fn check_peers(member: &Member) -> Result<()> {
    let (hash, compact, revision) = own_hash(member, 0).await?;
    let peers = peer_hashes(member, revision).await;
    member.read_barrier(false).await?;
    let (hash2, compact2, revision2) = own_hash(member, 0).await?;
    let mut corrupt = None;
    if hash2 != hash && revision2 == revision && compact2 == compact {
        tracing::warn!(revision, hash, hash2, "found hash mismatch");
        corrupt = Some(member.membership.local_id);
    }
    let mut checked = 0;
    for peer in &peers {
        let Ok(resp) = &peer.answer else { continue };
        checked += 1;
        let id = resp.header.as_ref().map_or(peer.id, |h| h.member_id);
        let peer_revision = resp.header.as_ref().map_or(0, |h| h.revision);
        let why = if peer_revision > revision2 {
            Some("revision from follower must be less than or equal to leader's")
        } else if resp.compact_revision > compact2 {
            Some("compact revision from follower must be less than or equal to leader's")
        } else if resp.compact_revision == compact && resp.hash != hash {
            Some("same compact revision then hashes must match")
        } else {
            None
        };
        if let Some(why) = why {
            tracing::warn!(
                follower = %format!("{id:x}"),
                leader_revision = revision2,
                follower_revision = peer_revision,
                leader_hash = hash,
                follower_hash = resp.hash,
                "{why}"
            );
            corrupt.get_or_insert(id);
        }
    }
    tracing::info!(peers_checked = checked, "finished peer corruption check");
    if let Some(id) = corrupt {
        if !member.alarms.is_raised_for(id, AlarmType::Corrupt) {
            alarms::raise(member, id, AlarmType::Corrupt).await?;
        }
    }
    Ok(())
}

/// The answering side, for the peer service.
#[tonic::async_trait]
impl HashSource for Arc<Member> {
    async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse> {
        let (hash, compact_revision, rev) = own_hash(self, revision).await?;
        Ok(HashKvResponse {
            header: Some(self.header(rev)),
            hash,
            compact_revision,
        })
    }
}
