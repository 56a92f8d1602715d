//! gRPC connections: each tonic `Channel` built by `Endpoint::connect` is one
//! HTTP/2 connection, and clients sharing it multiplex their streams on it,
//! as etcd's benchmark shares its `--conns` among `--clients`. Over https
//! the connection uses `--cacert` (and `--cert`/`--key`); with `--user` the
//! benchmark authenticates once and every request carries the token, so a
//! server with auth on checks it on every request, as for a real client.

use std::time::Duration;

use anyhow::Context;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::args::Common;
use crate::proto::etcdserverpb::{auth_client::AuthClient, AuthenticateRequest};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection, with the auth token (if any) added to every request.
pub type Conn = InterceptedService<Channel, Token>;

/// The auth token every request carries, as etcd's clients send it.
#[derive(Clone, Default)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

/// Accepts etcd's `host:port` endpoint form as well as URLs.
fn normalize(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

fn tls_config(common: &Common) -> anyhow::Result<Option<ClientTlsConfig>> {
    if common.cacert.is_none() && common.cert.is_none() {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &common.cacert {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    if let (Some(cert), Some(key)) = (&common.cert, &common.key) {
        let cert = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(Some(tls))
}

/// Opens `conns` connections, round-robin over the endpoints, and
/// authenticates once if `--user` is given.
pub async fn connect_all(common: &Common) -> anyhow::Result<Vec<Conn>> {
    let tls = tls_config(common)?;
    let mut channels = Vec::with_capacity(common.conns);
    for i in 0..common.conns {
        let url = normalize(&common.endpoints[i % common.endpoints.len()], tls.is_some());
        let mut endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("invalid endpoint {url:?}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // Large enough that no benchmark stalls on HTTP/2 flow control.
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(16 << 20));
        if let Some(tls) = &tls {
            endpoint = endpoint.tls_config(tls.clone()).context("TLS configuration")?;
        }
        let channel = endpoint.connect().await.with_context(|| format!("connecting to {url}"))?;
        channels.push(channel);
    }
    let token = match &common.user {
        Some(user) => Token(Some(authenticate(&channels[0], user).await?)),
        None => Token::default(),
    };
    Ok(channels.into_iter().map(|c| InterceptedService::new(c, token.clone())).collect())
}

async fn authenticate(channel: &Channel, user: &str) -> anyhow::Result<MetadataValue<Ascii>> {
    let (name, password) = user.split_once(':').context("--user takes name:password")?;
    let reply = AuthClient::new(channel.clone())
        .authenticate(AuthenticateRequest {
            name: name.to_string(),
            password: password.to_string(),
        })
        .await
        .context("authenticating")?
        .into_inner();
    reply.token.parse().context("the server's token is not valid metadata")
}
