//! Renewals and TTL queries from any member. Only the leader's lease clock
//! counts, so a member that does not lead forwards them to the one that
//! does over the peer transport, and follows leadership as it moves until
//! the request's time is up, as etcd's members do.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::{lease_clock, Member};
use crate::error::{Error, Result};
use crate::peer::LeaseAuthority;
use crate::proto::cairnpb::lease_peer_client::LeasePeerClient;
use crate::proto::cairnpb::LeaseOutcome;
use crate::proto::etcdserverpb::{LeaseCheckpoint, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse};

/// How long a forwarded request keeps looking for a leader that can answer
/// (etcd: its request timeout, 5 s plus two election timeouts).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(7);
/// How long one attempt at the leader may take before leadership is looked
/// up again: a leader cut off from the others keeps its connections open.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between attempts, while an election or a takeover of the lease
/// clock finishes.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long the leader waits to apply what is committed before answering
/// (etcd's lease handler allows one second), so a lease granted just now
/// is known.
const APPLY_WAIT: Duration = Duration::from_secs(1);

/// Waits until this member applied everything committed so far.
async fn wait_applied(member: &Member) -> Result<()> {
    let commit = member.node.status().commit_index();
    tokio::time::timeout(APPLY_WAIT, member.node.wait_applied(commit))
        .await
        .map_err(|_| Error::Timeout)?
}

/// Fails with `NotLeader` unless this member leads and counts the leases.
fn check_primary(member: &Member) -> Result<()> {
    if member.node.status().is_leader() && member.leases.is_primary() {
        Ok(())
    } else {
        Err(Error::NotLeader)
    }
}

/// Renews a lease on this member, which must be the primary: the lease's
/// TTL, `LeaseNotFound`, or `NotLeader` when another member must answer.
pub async fn renew_here(member: &Arc<Member>, id: i64) -> Result<i64> {
    check_primary(member)?;
    wait_applied(member).await?;
    let (ttl, clear_checkpoint) = member.leases.renew(id)?;
    if clear_checkpoint {
        // A renewed lease must not restart from its old checkpoint after a
        // failover.
        let member = member.clone();
        tokio::spawn(async move {
            lease_clock::checkpoint(&member, vec![LeaseCheckpoint { id, remaining_ttl: 0 }]).await;
        });
    }
    Ok(ttl)
}

/// A lease's remaining and granted TTL (and keys) on this member, which
/// must be the primary. The header is left for the answering member.
pub async fn time_to_live_here(member: &Member, request: &LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse> {
    check_primary(member)?;
    wait_applied(member).await?;
    let info = member.leases.info(request.id).ok_or(Error::LeaseNotFound)?;
    Ok(LeaseTimeToLiveResponse {
        header: None,
        id: request.id,
        ttl: info.remaining.as_secs() as i64,
        granted_ttl: info.granted_ttl,
        keys: if request.keys { info.keys } else { Vec::new() },
    })
}

/// The outcome a forwarded request reports, as an error of ours.
fn outcome(raw: i32) -> Result<()> {
    match LeaseOutcome::try_from(raw) {
        Ok(LeaseOutcome::LeaseFound) => Ok(()),
        Ok(LeaseOutcome::LeaseNotFound) => Err(Error::LeaseNotFound),
        Ok(LeaseOutcome::LeaseNotPrimary) | Err(_) => Err(Error::NotLeader),
    }
}

/// A forwarded request that got no usable answer counts as one that took
/// too long: it is tried again, and only the last failure reaches the client.
fn unanswered(why: impl std::fmt::Display) -> Error {
    tracing::debug!(%why, "forwarded lease request failed");
    Error::Timeout
}

/// Errors after which the request is tried again, possibly elsewhere.
fn retryable(e: &Error) -> bool {
    matches!(e, Error::NotLeader | Error::NoLeader | Error::Timeout)
}

/// Answers lease renewals and TTL queries on any member.
pub struct LeaseRouter {
    member: Arc<Member>,
    /// Channels to the members requests were forwarded to, by member id,
    /// with the URL each was opened for.
    channels: Mutex<HashMap<u64, (String, Channel)>>,
}

impl LeaseRouter {
    pub fn new(member: Arc<Member>) -> Self {
        LeaseRouter {
            member,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Renews a lease wherever the leader is: its TTL, or `LeaseNotFound`.
    pub async fn renew(&self, id: i64) -> Result<i64> {
        self.route(
            || renew_here(&self.member, id),
            |mut client| async move {
                let answer = client.renew(LeaseKeepAliveRequest { id }).await.map_err(unanswered)?.into_inner();
                outcome(answer.outcome)?;
                Ok(answer.ttl)
            },
        )
        .await
    }

    /// A lease's TTLs as the leader counts them, or `LeaseNotFound`.
    pub async fn time_to_live(&self, request: LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse> {
        self.route(
            || time_to_live_here(&self.member, &request),
            |mut client| async move {
                let answer = client.time_to_live(request).await.map_err(unanswered)?.into_inner();
                outcome(answer.outcome)?;
                answer.response.ok_or_else(|| unanswered("no time-to-live in the answer"))
            },
        )
        .await
    }

    /// Runs `here` when this member leads, else `remote` at the leader,
    /// again and again while the answer is "ask someone else" and time is
    /// left. Fails like etcd: `NoLeader` when no leader showed up in time,
    /// `Timeout` when one did but could not answer.
    async fn route<T, H, HF, R, RF>(&self, here: H, remote: R) -> Result<T>
    where
        H: Fn() -> HF,
        HF: Future<Output = Result<T>>,
        R: Fn(LeasePeerClient<Channel>) -> RF,
        RF: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + FORWARD_TIMEOUT;
        loop {
            let status = self.member.node.status();
            let leader = status.leader();
            let attempt = if leader == 0 {
                Err(Error::NoLeader)
            } else if leader == status.id {
                here().await
            } else {
                match self.client(leader).await {
                    Ok(client) => {
                        let limit = ATTEMPT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
                        let result = tokio::time::timeout(limit, remote(client)).await.unwrap_or(Err(Error::Timeout));
                        if matches!(result, Err(Error::Timeout)) {
                            // Connect afresh next time: the member may have restarted or moved.
                            self.channels.lock().remove(&leader);
                        }
                        result
                    }
                    Err(e) => Err(e),
                }
            };
            match attempt {
                Err(e) if retryable(&e) => {
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        tracing::debug!(error = %e, "no leader could answer a lease request in time");
                        return Err(if self.member.node.status().leader() == 0 {
                            Error::NoLeader
                        } else {
                            Error::Timeout
                        });
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                done => return done,
            }
        }
    }

    /// A client for member `id`'s peer service, connecting on first use.
    async fn client(&self, id: u64) -> Result<LeasePeerClient<Channel>> {
        let url = self.member.membership.table.peer_url(id).ok_or(Error::NoLeader)?;
        let cached = self.channels.lock().get(&id).filter(|(u, _)| *u == url).map(|(_, c)| c.clone());
        let channel = match cached {
            Some(c) => c,
            None => {
                let c = crate::peer::connect(&self.member.peer_dialer, &url).await.map_err(|e| {
                    tracing::debug!(%url, error = %e, "cannot reach the leader's peer service");
                    Error::Timeout
                })?;
                self.channels.lock().insert(id, (url, c.clone()));
                c
            }
        };
        Ok(LeasePeerClient::new(channel))
    }
}

/// The leader's side, for the peer service that answers forwarded requests.
#[tonic::async_trait]
impl LeaseAuthority for Arc<Member> {
    async fn renew(&self, id: i64) -> Result<i64> {
        renew_here(self, id).await
    }

    async fn time_to_live(&self, request: &LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse> {
        time_to_live_here(self, request).await
    }
}
