//! Accepting connections, plain or TLS. Each TLS handshake runs in its own
//! task under a deadline, and only so many at once, so a slow or failing
//! client never holds up the accept loop or the others.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::common_name::common_name;
use super::ServerTls;
use crate::client_identity::ClientIdentity;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at once; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;
/// Connections accepted and not yet taken by the server.
const ACCEPTED_QUEUE: usize = 64;
/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection, plain or TLS, with what is known of its client.
pub struct ClientConn {
    stream: Transport,
    identity: ClientIdentity,
}

impl ClientConn {
    /// The ALPN protocol the client and server agreed on, if TLS.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.stream {
            Transport::Plain(_) => None,
            Transport::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }

    pub fn identity(&self) -> &ClientIdentity {
        &self.identity
    }
}

/// The connections `listener` accepts, through TLS when `tls` is given,
/// each with TCP_NODELAY set (Nagle's algorithm would hold back a
/// response's trailing frames until the client's delayed ACK; etcd disables
/// it too). The accept loop ends when the stream is dropped.
pub fn accept(listener: TcpListener, tls: Option<ServerTls>) -> impl Stream<Item = io::Result<ClientConn>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(accept_loop(listener, tls, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(listener: TcpListener, tls: Option<ServerTls>, tx: mpsc::Sender<io::Result<ClientConn>>) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = tx.closed() => return,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%remote, error = %e, "cannot set TCP_NODELAY");
        }
        let Some(tls) = &tls else {
            let identity = ClientIdentity {
                remote_addr: Some(remote),
                certificate_common_name: None,
            };
            let conn = ClientConn {
                stream: Transport::Plain(tcp),
                identity,
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
            continue;
        };
        let permit = tokio::select! {
            permit = handshakes.clone().acquire_owned() => permit,
            _ = tx.closed() => return,
        };
        let Ok(permit) = permit else { return };
        let (tls, tx) = (tls.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(conn) = handshake(tcp, remote, &tls).await {
                let _ = tx.send(Ok(conn)).await;
            }
        });
    }
}

async fn handshake(tcp: TcpStream, remote: SocketAddr, tls: &ServerTls) -> Option<ClientConn> {
    let acceptor = TlsAcceptor::from(tls.current());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let cn = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| common_name(leaf));
            let identity = ClientIdentity {
                remote_addr: Some(remote),
                certificate_common_name: cn,
            };
            Some(ClientConn {
                stream: Transport::Tls(Box::new(stream)),
                identity,
            })
        }
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "rejected connection: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%remote, "rejected connection: TLS handshake timed out");
            None
        }
    }
}

impl Connected for ClientConn {
    type ConnectInfo = ClientIdentity;

    fn connect_info(&self) -> ClientIdentity {
        self.identity.clone()
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
