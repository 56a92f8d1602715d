//! Dialing peers: `https://` peer URLs go through TLS with the peer
//! certificates (reloaded like the listeners'), `http://` ones stay plain.
//!
//! tonic is built without its own TLS, and may refuse `https://` URIs when
//! another crate of the build turns it on; so the endpoint is given the
//! URL's `http://` form and TLS happens in [`PeerConnector`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::server_config::SideConfig;
use super::{Protocol, Reloading, TlsError};

/// How this member dials its peers. Cheap to clone.
#[derive(Clone, Default)]
pub struct PeerDialer {
    /// `None` when no peer TLS is configured: `https://` peers are then
    /// verified against the system's CAs, presenting no certificate.
    tls: Option<Arc<Reloading<ClientConfig>>>,
    protocol: Option<Protocol>,
    /// The system-CA configuration, made on first use.
    system: Arc<Mutex<Option<Arc<ClientConfig>>>>,
}

/// Where and how to dial one peer URL.
pub enum Dial {
    Plain(String),
    /// The `http://` URI to give tonic, and the connector doing TLS.
    Tls(String, PeerConnector),
}

impl PeerDialer {
    pub(crate) fn new(peer: &SideConfig, protocol: &Protocol) -> Result<PeerDialer, TlsError> {
        let configured = peer.identity.is_some() || peer.trusted_ca_file.is_some();
        let tls = if configured {
            let build = peer.clone();
            Some(Arc::new(Reloading::new("peer dialer", peer.files(), move || {
                build.client_config()
            })?))
        } else {
            None
        };
        Ok(PeerDialer {
            tls,
            protocol: Some(protocol.clone()),
            system: Arc::default(),
        })
    }

    /// How to dial `url`: plain for anything but `https://`.
    pub fn dial(&self, url: &str) -> Result<Dial, TlsError> {
        let Some(rest) = url.strip_prefix("https://") else {
            return Ok(Dial::Plain(url.to_string()));
        };
        let parsed = url::Url::parse(url).map_err(|e| TlsError::Incomplete(format!("invalid peer URL {url:?}: {e}")))?;
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(TlsError::Incomplete(format!("peer URL {url:?} has no host"))),
        };
        let server_name = ServerName::try_from(host.as_str())
            .map_err(|e| TlsError::Incomplete(format!("peer URL {url:?}: {e}")))?
            .to_owned();
        let config = match &self.tls {
            Some(tls) => tls.current(),
            None => self.system_config()?,
        };
        Ok(Dial::Tls(format!("http://{rest}"), PeerConnector { config, server_name }))
    }

    fn system_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut made = self.system.lock();
        if let Some(config) = made.as_ref() {
            return Ok(config.clone());
        }
        let protocol = match &self.protocol {
            Some(p) => p.clone(),
            None => Protocol::from_flags(&[], "", "")?,
        };
        let mut config = ClientConfig::builder_with_provider(protocol.provider)
            .with_protocol_versions(&protocol.versions)?
            .with_root_certificates(super::files::system_roots())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let config = Arc::new(config);
        *made = Some(config.clone());
        Ok(config)
    }
}

/// Connects to the URI's host and port and does the TLS handshake.
#[derive(Clone)]
pub struct PeerConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower::Service<Uri> for PeerConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let (config, server_name) = (self.config.clone(), self.server_name.clone());
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
