//! One listener for gRPC and plain HTTP, as etcd's cmux: each request goes
//! to tonic's routes when its content type is `application/grpc*`, and to the
//! HTTP router (gateway, health, metrics) otherwise. HTTP/1.1 and HTTP/2
//! (prior knowledge) are both accepted on every connection.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::body::Body as AxumBody;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tonic::body::Body as GrpcBody;
use tonic::codegen::Service;
use tonic::transport::server::Connected;
use tower::ServiceExt;

/// etcd's default `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether a request is a gRPC call.
pub fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Serves every connection `incoming` yields until `stop` resolves, then
/// shuts the connections down gracefully. Dropping the returned future (the
/// caller's abort after its grace period) closes them all.
pub async fn serve<S, IO, G, H>(incoming: S, grpc: G, http: H, stop: impl Future<Output = ()>)
where
    S: Stream<Item = std::io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    G: Service<http::Request<hyper::body::Incoming>, Response = http::Response<GrpcBody>, Error = Infallible> + Clone + Send + 'static,
    G::Future: Send + 'static,
    H: Service<http::Request<hyper::body::Incoming>, Response = http::Response<AxumBody>, Error = Infallible> + Clone + Send + 'static,
    H::Future: Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        // etcd does not limit concurrent streams (watchers open many).
        .max_concurrent_streams(None)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    builder.http1().timer(TokioTimer::new());
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(incoming);
    tokio::pin!(stop);
    loop {
        let conn = tokio::select! {
            conn = incoming.next() => conn,
            () = &mut stop => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let io = match conn {
            Some(Ok(io)) => io,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "accepting a client connection failed");
                continue;
            }
            None => break,
        };
        let info = io.connect_info();
        let (grpc, http) = (grpc.clone(), http.clone());
        let service = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(info.clone());
            let (grpc, http) = (grpc.clone(), http.clone());
            async move {
                if is_grpc(&request) {
                    let response = grpc.oneshot(request).await?;
                    Ok::<_, Infallible>(response.map(AxumBody::new))
                } else {
                    http.oneshot(request).await
                }
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let mut closing = closing.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let mut asked = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "client connection ended with an error");
                        }
                        return;
                    }
                    // Finish the requests in flight, accept no more.
                    _ = closing.wait_for(|c| *c), if !asked => {
                        asked = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
    // Dropped before that (the caller's abort after its grace period),
    // `connections` aborts the connections still open.
}
