//! Raising and clearing alarms through Raft, and the task that raises
//! NOSPACE for this member once its state outgrows the quota.

use std::sync::Arc;
use std::time::Duration;

use super::Member;
use crate::error::Result;
use crate::proto::cairnpb::raft_request::Request;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::{AlarmRequest, AlarmResponse, AlarmType};

/// Pause before trying again to raise an alarm that could not be proposed
/// (no leader, say).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Raises `alarm` for member `member_id` as the cluster's own request.
pub async fn raise(member: &Member, member_id: u64, alarm: AlarmType) -> Result<AlarmResponse> {
    let request = AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id,
        alarm: alarm as i32,
    };
    member.propose(Request::Alarm(request)).await
}

/// Raises NOSPACE for this member unless it is raised already; a failure
/// is only logged, since the refusal the caller is about to give stands
/// either way and the next full write tries again.
pub async fn raise_own_nospace(member: &Member) {
    let local = member.membership.local_id;
    if member.alarms.is_raised_for(local, AlarmType::Nospace) {
        return;
    }
    tracing::warn!(member_id = %format!("{local:x}"), "the backend quota is exceeded; raising the NOSPACE alarm");
    if let Err(e) = raise(member, local, AlarmType::Nospace).await {
        tracing::warn!(error = %e, "raising the NOSPACE alarm failed");
    }
}

/// Raises NOSPACE for this member whenever apply finds its state past the
/// quota, as etcd's apply does for writes it let through.
pub async fn watch_space(member: Arc<Member>) {
    loop {
        member.space.exceeded().await;
        let local = member.membership.local_id;
        // The nudge may be older than a disarm that followed compaction and
        // defragmentation: only a state still full raises the alarm again.
        if member.alarms.is_raised_for(local, AlarmType::Nospace) || member.space.admits(0) {
            continue;
        }
        raise_own_nospace(&member).await;
        if !member.alarms.is_raised_for(local, AlarmType::Nospace) {
            tokio::time::sleep(RETRY_PAUSE).await;
            // Still full? The next applied write says so again; a member
            // that receives none must not wait for one.
            member.space.check_applied();
        }
    }
}
