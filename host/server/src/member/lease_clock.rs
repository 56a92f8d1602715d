//! The leader's lease clock: expired leases are revoked through Raft, like
//! any client's revoke, so every member deletes their keys at the same
//! revision. Followers only watch for becoming leader; then they restart
//! every lease's clock (etcd's promote), so a leader change never shortens
//! a lease. Remaining TTLs are checkpointed through Raft now and then, so a
//! long lease does not start over from its full TTL after each failover.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Member;
use crate::proto::cairnpb::raft_request::Request;
use crate::proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseRevokeRequest, LeaseRevokeResponse,
};

/// How often the leader looks for expired leases (etcd: 500 ms).
const EXPIRY_CHECK: Duration = Duration::from_millis(500);
/// How often a change of leadership is looked for: renewals forwarded to a
/// new leader wait for it to take over the clock.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(100);
/// How many leases one check revokes at most, so a burst of expiries does
/// not monopolise Raft.
const REVOKES_PER_CHECK: usize = 64;
/// How often remaining TTLs are checkpointed (etcd's default interval).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);
/// What a new leader adds to every lease: one election timeout, the time a
/// client may have needed to find it.
const PROMOTE_EXTENSION: Duration = Duration::from_secs(1);

/// Runs the lease clock until the task is dropped.
pub async fn run(member: Arc<Member>) {
    let mut tick = tokio::time::interval(LEADERSHIP_CHECK);
    // The term this member led in when it last took over the clock; a
    // new term means another leader may have renewed leases meanwhile.
    let mut leading_term = None;
    let mut last_checkpoint = Instant::now();
    let mut last_expiry_check = Instant::now();
    loop {
        tick.tick().await;
        let status = member.node.status();
        let term = status.term();
        let now_leading = (status.leader() == status.id).then_some(term);
        if now_leading != leading_term && leading_term.is_some() {
            member.leases.demote();
            leading_term = None;
        }
        if now_leading.is_some() && leading_term.is_none() {
            // Wait until everything committed before this term is applied,
            // so the table holds every lease the old leader knew.
            if member.read_barrier(false).await.is_err() {
                continue;
            }
            member.leases.promote(PROMOTE_EXTENSION);
            leading_term = now_leading;
            last_checkpoint = Instant::now();
        }
        if leading_term.is_none() || last_expiry_check.elapsed() < EXPIRY_CHECK {
            continue;
        }
        last_expiry_check = Instant::now();
        for id in member.leases.expired(REVOKES_PER_CHECK) {
            let revoke = Request::LeaseRevoke(LeaseRevokeRequest { id });
            if let Err(e) = member.propose::<LeaseRevokeResponse>(revoke).await {
                // Already revoked, or Raft is busy: the next check retries.
                tracing::debug!(lease = id, error = %e, "revoking an expired lease failed");
            }
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            last_checkpoint = Instant::now();
            let checkpoints: Vec<LeaseCheckpoint> = member
                .leases
                .remaining_ttls(CHECKPOINT_INTERVAL)
                .into_iter()
                .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                .collect();
            if !checkpoints.is_empty() {
                checkpoint(&member, checkpoints).await;
            }
        }
    }
}

/// Replicates remaining TTLs (0 clears a lease's checkpoint).
pub async fn checkpoint(member: &Member, checkpoints: Vec<LeaseCheckpoint>) {
    let request = Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints });
    if let Err(e) = member.propose::<LeaseCheckpointResponse>(request).await {
        tracing::debug!(error = %e, "lease checkpoint failed");
    }
}
