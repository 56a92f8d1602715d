//! gRPC connections: each tonic `Channel` built by `Endpoint::connect` is one
//! HTTP/2 connection, and clients sharing it multiplex their streams on it,
//! as etcd's benchmark shares its `--conns` among `--clients`.

use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts etcd's `host:port` endpoint form as well as URLs.
fn normalize(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// Opens `conns` connections, round-robin over the endpoints.
pub async fn connect_all(endpoints: &[String], conns: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        let url = normalize(&endpoints[i % endpoints.len()]);
        let endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("invalid endpoint {url:?}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // Large enough that no benchmark stalls on HTTP/2 flow control.
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(16 << 20));
        let channel = endpoint.connect().await.with_context(|| format!("connecting to {url}"))?;
        channels.push(channel);
    }
    Ok(channels)
}
