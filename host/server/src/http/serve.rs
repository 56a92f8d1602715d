//! One listener for gRPC and plain HTTP, as etcd's cmux: each request goes
//! to tonic's routes when its content type is `application/grpc*`, and to the
//! HTTP router (gateway, health, metrics) otherwise. HTTP/1.1 and HTTP/2
//! (prior knowledge) are both accepted on every connection.
//!
//! Clients that open connections and then dawdle (slow-loris) are bounded
//! three ways: a connection must send its first bytes (enough to tell
//! HTTP/2's preface from HTTP/1) within [`FIRST_BYTES_TIMEOUT`], an HTTP/1
//! request its headers within [`HEADER_READ_TIMEOUT`], and no more than
//! [`MAX_CONNECTIONS`] are served at once: past that the listener stops
//! accepting and new clients wait in the kernel's backlog.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body as AxumBody;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinSet;
use tonic::body::Body as GrpcBody;
use tonic::codegen::Service;
use tonic::transport::server::Connected;
use tower::ServiceExt;

/// etcd's default `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an HTTP/1 request may take to send its headers, and an idle
/// keep-alive connection may stay silent before its next request.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new connection may take to send its first bytes.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
/// The bytes that tell an HTTP/2 client (its preface) from an HTTP/1 one.
const VERSION_BYTES: usize = 24;
/// Connections served at once on one listener. Below common descriptor
/// limits, so a flood of connections cannot starve RocksDB or the peers of
/// file descriptors.
pub const MAX_CONNECTIONS: usize = 4096;

/// Whether a request is a gRPC call.
pub fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// One service for a client listener's requests: gRPC calls to `grpc`, the
/// rest to `http`.
pub fn split<G, H>(
    grpc: G,
    http: H,
) -> impl Service<http::Request<hyper::body::Incoming>, Response = http::Response<AxumBody>, Error = Infallible, Future = impl Send>
       + Clone
       + Send
       + 'static
where
    G: Service<http::Request<hyper::body::Incoming>, Response = http::Response<GrpcBody>, Error = Infallible> + Clone + Send + 'static,
    G::Future: Send + 'static,
    H: Service<http::Request<hyper::body::Incoming>, Response = http::Response<AxumBody>, Error = Infallible> + Clone + Send + 'static,
    H::Future: Send + 'static,
{
    tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let (grpc, http) = (grpc.clone(), http.clone());
        async move {
            if is_grpc(&request) {
                let response = grpc.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(AxumBody::new))
            } else {
                http.oneshot(request).await
            }
        }
    })
}

/// Serves every connection `incoming` yields with `service` until `stop`
/// resolves, then shuts the connections down gracefully. Dropping the
/// returned future (the caller's abort after its grace period) closes them
/// all. Each request carries its connection's `ConnectInfo`.
pub async fn serve<S, IO, H>(incoming: S, service: H, stop: impl Future<Output = ()>)
where
    S: Stream<Item = std::io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
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
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(incoming);
    tokio::pin!(stop);
    loop {
        let full = connections.len() >= MAX_CONNECTIONS;
        let conn = tokio::select! {
            conn = incoming.next(), if !full => conn,
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
        let service = service.clone();
        let service = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(info.clone());
            service.clone().oneshot(request)
        });
        let io = FirstBytesDeadline::new(io, FIRST_BYTES_TIMEOUT);
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

/// A connection that fails its reads once `timeout` has passed before it
/// sent [`VERSION_BYTES`] bytes (or ended): hyper's own header timeout
/// starts only once it knows the connection is HTTP/1.
struct FirstBytesDeadline<IO> {
    io: IO,
    seen: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> FirstBytesDeadline<IO> {
    fn new(io: IO, timeout: Duration) -> Self {
        FirstBytesDeadline {
            io,
            seen: 0,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytesDeadline<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let read = buf.filled().len() - before;
                this.seen += read;
                if this.seen >= VERSION_BYTES || read == 0 {
                    this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent too little too slowly after connecting",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytesDeadline<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_connection_times_out_and_a_talking_one_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let mut silent = FirstBytesDeadline::new(server, Duration::from_millis(100));
        let mut buf = [0u8; 8];
        let err = silent.read(&mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = FirstBytesDeadline::new(server, Duration::from_millis(100));
        client.write_all(&[b'x'; VERSION_BYTES]).await.expect("write");
        let mut buf = [0u8; VERSION_BYTES];
        talking.read_exact(&mut buf).await.expect("read");
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.write_all(b"later").await.expect("write");
        let n = talking.read(&mut buf).await.expect("no deadline once the version is known");
        assert_eq!(&buf[..n], b"later");
    }
}
