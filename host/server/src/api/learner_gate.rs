//! What a learner serves. As in etcd 3.4, a learner answers only
//! `Maintenance.Status` and serializable `KV.Range`; every other call, stream
//! calls included, is refused before it reaches its service. The gate sits in
//! front of the whole client router because it must see the method; whether
//! a range is serializable is only known from its body, so `KV.Range` passes
//! and its handler asks [`crate::membership::Membership::is_local_learner`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::Service;
use tonic::Status;
use tower_layer::Layer;

use crate::error::Error;
use crate::membership::Membership;

/// Methods a learner may be asked at all.
const SERVED_BY_LEARNERS: [&str; 2] = ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

#[derive(Clone)]
pub struct LearnerGateLayer {
    membership: Membership,
}

impl LearnerGateLayer {
    pub fn new(membership: Membership) -> Self {
        LearnerGateLayer { membership }
    }
}

impl<S> Layer<S> for LearnerGateLayer {
    type Service = LearnerGate<S>;

    fn layer(&self, inner: S) -> LearnerGate<S> {
        LearnerGate {
            inner,
            membership: self.membership.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LearnerGate<S> {
    inner: S,
    membership: Membership,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<S, B> Service<http::Request<B>> for LearnerGate<S>
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
        if !SERVED_BY_LEARNERS.contains(&request.uri().path()) && self.membership.is_local_learner() {
            let refusal = Status::from(Error::NotSupportedForLearner).into_http::<Body>();
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        Box::pin(self.inner.call(request))
    }
}
