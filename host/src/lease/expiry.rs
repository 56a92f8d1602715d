//! The leader's lease clock: expired leases are revoked through Raft, like
//! any client's revoke, so every member deletes their keys at the same
//! revision. Followers only watch for becoming leader; then they restart
//! every lease's clock (etcd's promote), so a leader change never shortens
//! a lease. Remaining TTLs are checkpointed through Raft now and then, so a
//! long lease does not start over from its full TTL after each failover.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::Core;
use crate::proto::cairnpb::raft_request::Request;
use crate::proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest};

/// How often the leader looks for expired leases (etcd: 500 ms).
const EXPIRY_CHECK: Duration = Duration::from_millis(500);
/// How many leases one check revokes at most, so a burst of expiries does
/// not monopolise Raft.
const REVOKES_PER_CHECK: usize = 64;
/// How often remaining TTLs are checkpointed (etcd's default interval).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);
/// What a new leader adds to every lease: one election timeout, the time a
/// client may have needed to find it.
const PROMOTE_EXTENSION: Duration = Duration::from_secs(1);

/// Runs the lease clock until the task is dropped.
pub async fn run(core: Arc<Core>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    let mut was_leader = false;
    let mut last_checkpoint = Instant::now();
    loop {
        tick.tick().await;
        let status = core.node.status();
        let leader = status.leader() == status.id;
        if leader && !was_leader {
            // Wait until everything committed before this term is applied,
            // so the table holds every lease the old leader knew.
            if core.read_barrier(false).await.is_err() {
                continue;
            }
            core.leases.promote(PROMOTE_EXTENSION);
            last_checkpoint = Instant::now();
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        for id in core.leases.expired(REVOKES_PER_CHECK) {
            if let Err(e) = core.propose(Request::LeaseRevoke(LeaseRevokeRequest { id })).await {
                // Already revoked, or Raft is busy: the next check retries.
                tracing::debug!(lease = id, error = %e, "revoking an expired lease failed");
            }
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            last_checkpoint = Instant::now();
            let checkpoints: Vec<LeaseCheckpoint> = core
                .leases
                .remaining_ttls(CHECKPOINT_INTERVAL)
                .into_iter()
                .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                .collect();
            if !checkpoints.is_empty() {
                checkpoint(&core, checkpoints).await;
            }
        }
    }
}

/// Replicates remaining TTLs (0 clears a lease's checkpoint).
pub async fn checkpoint(core: &Core, checkpoints: Vec<LeaseCheckpoint>) {
    if let Err(e) = core.propose(Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints })).await {
        tracing::debug!(error = %e, "lease checkpoint failed");
    }
}
