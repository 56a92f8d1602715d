//! Lease keep-alive: each client owns a lease and a keep-alive stream, and
//! keeps one refresh in flight on it.

use std::time::Duration;

use crate::conn::Conn;
use anyhow::Context;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::args::Common;
use super::driver::{run_workers, Budget, Worker};
use super::report::Report;
use crate::proto::etcdserverpb::lease_client::LeaseClient;
use crate::proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest};

const REVOKE_TIMEOUT: Duration = Duration::from_secs(5);

struct KeepAliveWorker {
    id: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: tonic::Streaming<LeaseKeepAliveResponse>,
}

impl Worker for KeepAliveWorker {
    async fn step(&mut self) -> Result<(), tonic::Status> {
        self.requests
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| tonic::Status::unavailable("cairn-bench: keep-alive stream closed"))?;
        match self.responses.message().await? {
            Some(resp) if resp.ttl > 0 => Ok(()),
            Some(_) => Err(tonic::Status::not_found("cairn-bench: lease expired")),
            None => Err(tonic::Status::unavailable("cairn-bench: keep-alive stream ended")),
        }
    }
}

async fn start_worker(channel: Conn, ttl: i64) -> anyhow::Result<KeepAliveWorker> {
    let mut lease = LeaseClient::new(channel);
    let id = lease
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .context("granting a lease")?
        .into_inner()
        .id;
    let (requests, rx) = mpsc::channel(1);
    // Queued before the call: a server may send headers only with its first
    // response.
    requests
        .send(LeaseKeepAliveRequest { id })
        .await
        .context("queueing the first keep-alive")?;
    let mut responses = lease
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .context("opening a keep-alive stream")?
        .into_inner();
    responses
        .message()
        .await
        .context("first keep-alive")?
        .context("keep-alive stream closed at once")?;
    Ok(KeepAliveWorker { id, requests, responses })
}

pub async fn keepalive(common: &Common, channels: &[Conn], ttl: i64) -> anyhow::Result<Report> {
    let mut workers = Vec::with_capacity(common.clients);
    for i in 0..common.clients {
        workers.push(start_worker(channels[i % channels.len()].clone(), ttl).await?);
    }
    let ids: Vec<i64> = workers.iter().map(|w| w.id).collect();
    let mut report = run_workers("lease-keepalive", common, workers, Budget::from_common(common)).await?;
    // Leave the server as we found it; a lease that outlives us expires anyway.
    let mut revoked = 0u64;
    let mut lease = LeaseClient::new(channels[0].clone());
    for id in ids {
        if let Ok(Ok(_)) = tokio::time::timeout(REVOKE_TIMEOUT, lease.lease_revoke(LeaseRevokeRequest { id })).await {
            revoked += 1;
        }
    }
    report.extra.push(("leases".into(), Value::from(common.clients)));
    report.extra.push(("leases_revoked".into(), Value::from(revoked)));
    Ok(report)
}
