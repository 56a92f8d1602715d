//! The HTTP edge beside gRPC on the client port, as etcd serves it: the
//! gRPC-JSON gateway under `/v3/` ([`gateway`]), `/health`, `/livez`,
//! `/readyz` ([`health`]), `/version` and `/metrics`; plus the plain
//! metrics listeners of `--listen-metrics-urls`. Errors become HTTP statuses
//! here and nowhere else.

pub mod gateway;
pub mod health;
pub mod serve;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use crate::api::{LeaderGate, LearnerGate};
use crate::member::Member;
use crate::metrics::{metrics, GrpcMetrics};

/// The client listener's gRPC services with the layers every call passes,
/// whether it arrives over the wire or through the gateway.
pub type GrpcService = GrpcMetrics<LearnerGate<LeaderGate<tonic::service::Routes>>>;

/// What the HTTP edge is configured with.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The etcd version reported by `/version` and `Maintenance.Status`.
    pub etcd_version: String,
    /// Origins allowed by CORS (`*` for all), as etcd's `--cors`.
    pub cors: Vec<String>,
    /// Hosts requests may be addressed to (`*` or empty for all), as etcd's
    /// `--host-whitelist`.
    pub host_whitelist: Vec<String>,
    /// The largest gateway request body read.
    pub max_body_bytes: usize,
    /// The largest request message a gateway call carries: etcd's gRPC
    /// server limit (`--max-request-bytes` plus gRPC's allowance), which
    /// its gateway's calls meet as any client's.
    pub max_message_bytes: usize,
}

pub struct HttpSurface {
    member: Arc<Member>,
    grpc: GrpcService,
    config: HttpConfig,
}

impl HttpSurface {
    pub fn new(member: Arc<Member>, grpc: GrpcService, config: HttpConfig) -> Arc<HttpSurface> {
        Arc::new(HttpSurface { member, grpc, config })
    }

    pub(crate) fn member(&self) -> &Arc<Member> {
        &self.member
    }

    pub(crate) fn grpc(&self) -> &GrpcService {
        &self.grpc
    }
}

/// The cluster version etcd reports beside its own: "major.minor.0".
fn cluster_version(server: &str) -> String {
    let mut parts = server.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}.0"),
        _ => server.to_string(),
    }
}

/// Everything the client port serves besides gRPC.
pub fn client_router(surface: Arc<HttpSurface>) -> Router {
    let gateway = gateway::routes();
    Router::new()
        .route("/version", get(version))
        .merge(monitoring_routes())
        .nest("/v3", gateway.clone())
        .nest("/v3beta", gateway)
        // The gateway's own root, which axum's nesting leaves out.
        .route("/v3/", any(gateway::not_found))
        .route("/v3beta/", any(gateway::not_found))
        // Unlike `/v3`, etcd registers no `/v3beta/` subtree to redirect to.
        .route("/v3beta", any(not_found))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(clean_paths))
        .layer(axum::middleware::from_fn_with_state(surface.clone(), cors_and_hosts))
        .with_state(surface)
}

/// What a `--listen-metrics-urls` listener serves.
pub fn metrics_router(surface: Arc<HttpSurface>) -> Router {
    monitoring_routes()
        .fallback(not_found)
        .layer(axum::middleware::from_fn(clean_paths))
        .with_state(surface)
}

/// A path as Go's `path.Clean` leaves it (repeated slashes collapsed, `.`
/// and `..` resolved), with its trailing slash kept as Go's HTTP mux keeps
/// it.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut clean = format!("/{}", parts.join("/"));
    if path.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    clean
}

/// Go's HTTP mux, which etcd serves HTTP with, redirects unclean paths to
/// their clean form and `/v3` to its subtree `/v3/`, permanently.
async fn clean_paths(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let target = if path == "/v3" { "/v3/".to_string() } else { clean_path(path) };
    if target == path {
        return next.run(request).await;
    }
    let location = match request.uri().query() {
        Some(q) => format!("{target}?{q}"),
        None => target,
    };
    let Ok(value) = HeaderValue::from_str(&location) else {
        return next.run(request).await;
    };
    let mut response = if matches!(*request.method(), Method::GET | Method::HEAD) {
        let escaped = location
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;");
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!("<a href=\"{escaped}\">Moved Permanently</a>.\n\n"),
        )
            .into_response()
    } else {
        ().into_response()
    };
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    response.headers_mut().insert(header::LOCATION, value);
    response
}

fn monitoring_routes() -> Router<Arc<HttpSurface>> {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(health::health))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
}

/// Go's `http.NotFound`, which etcd answers unknown paths with.
async fn not_found(request: Request) -> Response {
    drain(request).await;
    plain(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// Reads (a bounded part of) a request body that will not be used before
/// answering: over HTTP/2 a stream answered with its body unread is reset,
/// which some clients (curl) report as an error instead of the answer.
pub(crate) async fn drain(request: Request) {
    const DRAIN_BYTES: usize = 64 * 1024;
    let _ = axum::body::to_bytes(request.into_body(), DRAIN_BYTES).await;
}

pub(crate) fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

async fn version(State(surface): State<Arc<HttpSurface>>) -> Response {
    let server = &surface.config.etcd_version;
    #[derive(serde::Serialize)]
    struct Versions<'a> {
        etcdserver: &'a str,
        etcdcluster: String,
    }
    let body = Versions {
        etcdserver: server,
        etcdcluster: cluster_version(server),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json).into_response()
}

async fn render_metrics(State(surface): State<Arc<HttpSurface>>) -> Response {
    let m = metrics();
    let member = &surface.member;
    let raft = member.node().status();
    m.has_leader.set(i64::from(raft.leader() != 0));
    m.is_leader.set(i64::from(raft.is_leader()));
    m.proposals_committed.set(raft.commit_index() as i64);
    m.proposals_applied.set(raft.applied_index() as i64);
    m.db_total_size.set(member.database().size_bytes() as i64);
    m.db_total_size_in_use.set(member.database().size_in_use_bytes() as i64);
    m.quota_backend_bytes.set(member.space().quota().gauge());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        m.render(),
    )
        .into_response()
}

fn allowed(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == "*" || v == value)
}

/// etcd's `--host-whitelist` and `--cors` around every HTTP request on the
/// client port.
async fn cors_and_hosts(State(surface): State<Arc<HttpSurface>>, request: Request, next: Next) -> Response {
    let config = &surface.config;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    let bare_host = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
    if !allowed(&config.host_whitelist, &host) && !allowed(&config.host_whitelist, bare_host) {
        // Refusing unknown hosts stops DNS rebinding (CVE-2018-5702).
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            format!("the Host header {host:?} is not in --host-whitelist; add it there to address this server by that name\n"),
        );
    }
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allow_origin = if config.cors.iter().any(|c| c == "*") {
        Some(HeaderValue::from_static("*"))
    } else {
        origin.filter(|o| o.to_str().is_ok_and(|o| config.cors.iter().any(|c| c == o)))
    };
    let preflight = request.method() == Method::OPTIONS;
    let mut response = if preflight && allow_origin.is_some() {
        StatusCode::OK.into_response()
    } else {
        next.run(request).await
    };
    if let Some(origin) = allow_origin {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("accept, content-type, authorization"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_version_is_major_minor_zero() {
        assert_eq!(cluster_version("3.4.34"), "3.4.0");
        assert_eq!(cluster_version("3.5.13"), "3.5.0");
    }

    #[test]
    fn paths_clean_as_go() {
        assert_eq!(clean_path("/v3/kv/range"), "/v3/kv/range");
        assert_eq!(clean_path("//v3//kv/range"), "/v3/kv/range");
        assert_eq!(clean_path("/v3/kv/../kv/./range"), "/v3/kv/range");
        assert_eq!(clean_path("/health/"), "/health/");
        assert_eq!(clean_path("/../.."), "/");
        assert_eq!(clean_path("/"), "/");
    }

    #[test]
    fn lists_allow_as_etcd() {
        assert!(allowed(&[], "a"));
        assert!(allowed(&["*".into()], "a"));
        assert!(allowed(&["a".into(), "b".into()], "b"));
        assert!(!allowed(&["a".into()], "b"));
    }
}
