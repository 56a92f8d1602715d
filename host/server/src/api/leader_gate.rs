//! etcd's "require leader" (`clientv3.WithRequireLeader`: gRPC metadata
//! `hasleader: true`). A call carrying it is refused with `etcdserver: no
//! leader` while this member knows no leader, and a stream carrying it is
//! ended with that status once the member has been without a leader for
//! [`NO_LEADER_CHECKS`] election timeouts in a row. That is how a client
//! pinned to a partitioned member learns to go elsewhere: a follower cut
//! off from the majority would otherwise keep a watch open that never
//! delivers. Like etcd's interceptors, the gate sits in front of every
//! service, so it covers each stream (watch, lease keep-alive, snapshot,
//! observe) alike; it works on the HTTP/2 response, cutting the body and
//! writing the status as its trailers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::Status;
use tower_layer::Layer;

use crate::error::Error;
use crate::member::Member;

/// The metadata key and value `WithRequireLeader` sends.
const REQUIRE_LEADER_KEY: &str = "hasleader";
const HAS_LEADER: &str = "true";
/// Consecutive leaderless checks, one per election timeout, before open
/// streams are ended; etcd is this patient because re-opening streams
/// costs clients more than refusing new calls.
pub const NO_LEADER_CHECKS: u32 = 3;
/// The methods whose responses are streams (the rest answer at once, so
/// only the refusal at the start applies to them).
const STREAMING: [&str; 4] = [
    "/etcdserverpb.Watch/Watch",
    "/etcdserverpb.Lease/LeaseKeepAlive",
    "/etcdserverpb.Maintenance/Snapshot",
    "/v3electionpb.Election/Observe",
];

#[derive(Clone)]
pub struct LeaderGateLayer {
    member: Arc<Member>,
    /// Bumped at each check that finds the member leaderless for long
    /// enough: every stream open then ends.
    lost: watch::Receiver<u64>,
}

impl LeaderGateLayer {
    /// Starts the leader monitor; it stops with the last gate.
    pub fn new(member: Arc<Member>) -> Self {
        let (tx, lost) = watch::channel(0);
        tokio::spawn(monitor(Arc::downgrade(&member), tx));
        LeaderGateLayer { member, lost }
    }
}

async fn monitor(member: Weak<Member>, lost: watch::Sender<u64>) {
    let mut leaderless = 0;
    loop {
        tokio::select! {
            _ = lost.closed() => return,
            _ = tokio::time::sleep(crate::raft::ELECTION_TIMEOUT) => {}
        }
        let Some(member) = member.upgrade() else { return };
        if member.node().status().leader() == 0 {
            leaderless += 1;
        } else {
            leaderless = 0;
        }
        if leaderless >= NO_LEADER_CHECKS {
            tracing::warn!(checks = leaderless, "no leader: ending the streams that require one");
            lost.send_modify(|n| *n += 1);
        }
    }
}

impl<S> Layer<S> for LeaderGateLayer {
    type Service = LeaderGate<S>;

    fn layer(&self, inner: S) -> LeaderGate<S> {
        LeaderGate {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LeaderGate<S> {
    inner: S,
    layer: LeaderGateLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<S, B> Service<http::Request<B>> for LeaderGate<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let required = request
            .headers()
            .get(REQUIRE_LEADER_KEY)
            .is_some_and(|v| v.as_bytes() == HAS_LEADER.as_bytes());
        if !required {
            return Box::pin(self.inner.call(request));
        }
        if self.layer.member.node().status().leader() == 0 {
            let refusal = Status::from(Error::NoLeader).into_http::<Body>();
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        if !STREAMING.contains(&request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let mut lost = self.layer.lost.clone();
        lost.mark_unchanged();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Body::new(LeaderBound::new(body, lost))))
        })
    }
}

/// A streamed response body that ends with `etcdserver: no leader` when
/// the monitor says so. Dropping the service's body stops the stream's work
/// as a client going away would.
struct LeaderBound {
    inner: Option<Body>,
    lost: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl LeaderBound {
    fn new(inner: Body, mut lost: watch::Receiver<u64>) -> Self {
        let lost = Box::pin(async move {
            // A monitor that stopped (the server is shutting down) ends
            // nothing.
            if lost.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        });
        LeaderBound { inner: Some(inner), lost }
    }
}

impl http_body::Body for LeaderBound {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.lost.as_mut().poll(cx).is_ready() {
            this.inner = None;
            let status = Status::from(Error::NoLeader);
            let mut trailers = http::HeaderMap::new();
            return Poll::Ready(Some(match status.add_header(&mut trailers) {
                Ok(()) => Ok(Frame::trailers(trailers)),
                Err(status) => Err(status),
            }));
        }
        Pin::new(inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }
}
