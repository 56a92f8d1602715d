//! The JSON gateway mode (`--gateway`): puts and ranges as `POST /v3/kv/put`
//! and `POST /v3/kv/range` with JSON bodies, the way HTTP clients of etcd
//! (Patroni, etcd3gw, curl scripts) call it. `--conns` HTTP/1.1 keep-alive
//! connections are shared by the `--clients`: HTTP/1.1 carries one request
//! at a time, so at most `--conns` are in flight. Every reply is read whole
//! and parsed as JSON, as a real client does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::args::Common;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keep-alive HTTP/1.1 connections to the endpoints, handed out one
/// request at a time.
pub struct Gateway {
    endpoints: Vec<String>,
    idle: Mutex<Vec<(SendRequest<Full<Bytes>>, String)>>,
    opened: Mutex<usize>,
    permits: Semaphore,
    token: Option<String>,
}

/// `host:port` of an `http://host:port` or bare endpoint.
fn authority(endpoint: &str) -> anyhow::Result<String> {
    if endpoint.starts_with("https://") {
        bail!("--gateway speaks plain HTTP only; {endpoint} is https");
    }
    Ok(endpoint.trim_start_matches("http://").trim_end_matches('/').to_string())
}

impl Gateway {
    /// Prepares `--conns` connections (opened on first use) and, with
    /// `--user`, authenticates through the gateway once.
    pub async fn connect(common: &Common) -> anyhow::Result<Arc<Gateway>> {
        if common.cacert.is_some() || common.cert.is_some() {
            bail!("--gateway speaks plain HTTP only");
        }
        let endpoints = common.endpoints.iter().map(|e| authority(e)).collect::<anyhow::Result<_>>()?;
        let mut gateway = Gateway {
            endpoints,
            idle: Mutex::new(Vec::new()),
            opened: Mutex::new(0),
            permits: Semaphore::new(common.conns),
            token: None,
        };
        if let Some(user) = &common.user {
            let (name, password) = user.split_once(':').context("--user takes name:password")?;
            let reply = gateway
                .post("/v3/auth/authenticate", json!({"name": name, "password": password}))
                .await
                .map_err(|s| anyhow::anyhow!("authenticating: {}", s.message()))?;
            let token = reply["token"].as_str().context("no token in the authenticate reply")?;
            gateway.token = Some(token.to_string());
        }
        // Fail early, and with the reason, when nothing listens.
        gateway
            .post("/v3/maintenance/status", json!({}))
            .await
            .map_err(|s| anyhow::anyhow!("the gateway does not answer: {}", s.message()))?;
        Ok(Arc::new(gateway))
    }

    async fn open(&self) -> Result<(SendRequest<Full<Bytes>>, String), tonic::Status> {
        let n = {
            let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
            *opened += 1;
            *opened
        };
        let endpoint = &self.endpoints[n % self.endpoints.len()];
        let unavailable = |e: String| tonic::Status::unavailable(format!("{endpoint}: {e}"));
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint))
            .await
            .map_err(|_| unavailable("connect timed out".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| unavailable(e.to_string()))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        tokio::spawn(connection);
        Ok((sender, endpoint.clone()))
    }

    /// One JSON request; the parsed JSON reply of a 2xx answer.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, tonic::Status> {
        let _permit = self.permits.acquire().await.map_err(|_| tonic::Status::cancelled("closed"))?;
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let (mut sender, host) = match pooled {
            Some((s, host)) if !s.is_closed() => (s, host),
            _ => self.open().await?,
        };
        let mut request = hyper::Request::post(path)
            .header(hyper::header::HOST, &host)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, token);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let io = |e: hyper::Error| tonic::Status::unavailable(e.to_string());
        sender.ready().await.map_err(io)?;
        let response = sender.send_request(request).await.map_err(io)?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(io)?.to_bytes();
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push((sender, host));
        let reply: Value =
            serde_json::from_slice(&bytes).map_err(|e| tonic::Status::internal(format!("HTTP {status}: the reply is not JSON: {e}")))?;
        if !status.is_success() {
            let message = reply["error"].as_str().unwrap_or("").to_string();
            return Err(tonic::Status::unknown(format!("HTTP {status}: {message}")));
        }
        Ok(reply)
    }
}

pub fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}
