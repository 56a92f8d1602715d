//! The process's Prometheus metrics, with etcd 3.4's names, types, labels
//! and buckets so existing dashboards and alerts work unchanged.
//!
//! One registry per process: the numbers are counted where they arise (the
//! Raft loop, the MVCC store, the gRPC layer in [`GrpcMetricsLayer`]) through
//! [`metrics()`], whose counters are atomics. Gauges that only mirror state
//! another part already keeps (leader, sizes, indexes) are set when scraped.

mod plugins;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame};
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tonic::body::Body;
use tonic::codegen::Service;
use tower_layer::Layer;

/// etcd counts an apply slower than this as slow.
pub const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Metrics {
    registry: Registry,
    pub has_leader: IntGauge,
    pub is_leader: IntGauge,
    pub leader_changes: IntCounter,
    pub proposals_committed: IntGauge,
    pub proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub wal_fsync_seconds: Histogram,
    pub backend_commit_seconds: Histogram,
    pub db_total_size: IntGauge,
    pub db_total_size_in_use: IntGauge,
    pub quota_backend_bytes: IntGauge,
    pub keys_total: IntGauge,
    pub put_total: IntCounter,
    pub range_total: IntCounter,
    pub txn_total: IntCounter,
    pub delete_total: IntCounter,
    pub slow_apply: IntCounter,
    pub plugins: plugins::PluginMetrics,
    grpc_started: IntCounterVec,
    grpc_handled: IntCounterVec,
    grpc_handling_seconds: HistogramVec,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric definitions are valid");
    registry.register(Box::new(g.clone())).expect("metric names are unique");
    g
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric definitions are valid");
    registry.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

/// etcd's disk latency buckets: 1ms doubling to about 8s.
fn disk_histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let buckets = exponential_buckets(0.001, 2.0, 14).expect("valid buckets");
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("metric definitions are valid");
    registry.register(Box::new(h.clone())).expect("metric names are unique");
    h
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        #[cfg(target_os = "linux")]
        if let Err(e) = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())) {
            tracing::warn!(error = %e, "process metrics are not available");
        }
        let grpc_labels = ["grpc_type", "grpc_service", "grpc_method"];
        let grpc_started = IntCounterVec::new(
            Opts::new("grpc_server_started_total", "Total number of RPCs started on the server."),
            &grpc_labels,
        )
        .expect("metric definitions are valid");
        let grpc_handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
            ),
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )
        .expect("metric definitions are valid");
        let grpc_handling_seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            ),
            &grpc_labels,
        )
        .expect("metric definitions are valid");
        for c in [&grpc_started, &grpc_handled] {
            registry.register(Box::new(c.clone())).expect("metric names are unique");
        }
        Metrics {
            has_leader: gauge(
                r,
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                r,
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter(r, "etcd_server_leader_changes_seen_total", "The number of leader changes seen."),
            proposals_committed: gauge(
                r,
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                r,
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                r,
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter(
                r,
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            wal_fsync_seconds: disk_histogram(
                r,
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
            ),
            backend_commit_seconds: disk_histogram(
                r,
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
            ),
            db_total_size: gauge(
                r,
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            db_total_size_in_use: gauge(
                r,
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            quota_backend_bytes: gauge(r, "etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes."),
            keys_total: gauge(r, "etcd_debugging_mvcc_keys_total", "Total number of keys."),
            put_total: counter(r, "etcd_mvcc_put_total", "Total number of puts seen by this member."),
            range_total: counter(r, "etcd_mvcc_range_total", "Total number of ranges seen by this member."),
            txn_total: counter(r, "etcd_mvcc_txn_total", "Total number of txns seen by this member."),
            delete_total: counter(r, "etcd_mvcc_delete_total", "Total number of deletes seen by this member."),
            slow_apply: counter(
                r,
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            ),
            plugins: plugins::PluginMetrics::new(r),
            grpc_started,
            grpc_handled,
            grpc_handling_seconds,
            registry,
        }
    }

    /// Adds `grpc_server_handling_seconds` (etcd's `--metrics extensive`).
    pub fn enable_handling_time(&self) {
        // A second call finds it registered already, which is what it wants.
        let _ = self.registry.register(Box::new(self.grpc_handling_seconds.clone()));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Go's names for gRPC codes, which go-grpc-prometheus puts in `grpc_code`.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The etcd services' methods whose series exist from start-up (as
/// go-grpc-prometheus pre-registers a server's methods), with their types.
const KNOWN_METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
];

/// Methods outside [`KNOWN_METHODS`] that stream.
const OTHER_STREAMS: &[(&str, &str, &str)] = &[("v3electionpb.Election", "Observe", "server_stream")];

/// One method's series, resolved once so a call touches only atomics.
struct MethodSeries {
    started: IntCounter,
    handled: Vec<IntCounter>,
    seconds: Histogram,
}

impl MethodSeries {
    fn new(m: &Metrics, kind: &str, service: &str, method: &str) -> MethodSeries {
        MethodSeries {
            started: m.grpc_started.with_label_values(&[kind, service, method]),
            handled: CODE_NAMES
                .iter()
                .map(|code| m.grpc_handled.with_label_values(&[kind, service, method, code]))
                .collect(),
            seconds: m.grpc_handling_seconds.with_label_values(&[kind, service, method]),
        }
    }
}

/// Counts `grpc_server_started_total` and `grpc_server_handled_total` (and
/// times calls when `--metrics extensive`) for every gRPC call, as
/// go-grpc-prometheus does for etcd: a call is handled when its trailers
/// (its status) are sent, a stream only when it ends.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    series: Arc<HashMap<String, Arc<MethodSeries>>>,
    timed: bool,
}

impl GrpcMetricsLayer {
    pub fn new(timed: bool) -> GrpcMetricsLayer {
        let m = metrics();
        if timed {
            m.enable_handling_time();
        }
        let series = KNOWN_METHODS
            .iter()
            .map(|(service, method, kind)| {
                (
                    format!("/{service}/{method}"),
                    Arc::new(MethodSeries::new(m, kind, service, method)),
                )
            })
            .collect();
        GrpcMetricsLayer {
            series: Arc::new(series),
            timed,
        }
    }

    /// The series of the method at `path` ("/pkg.Service/Method").
    fn series_for(&self, path: &str) -> Option<Arc<MethodSeries>> {
        if let Some(s) = self.series.get(path) {
            return Some(s.clone());
        }
        // Calls to the other services are rare enough to resolve each time.
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let kind = OTHER_STREAMS
            .iter()
            .find(|(s, m, _)| *s == service && *m == method)
            .map_or("unary", |(_, _, k)| *k);
        Some(Arc::new(MethodSeries::new(metrics(), kind, service, method)))
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<S, B> Service<http::Request<B>> for GrpcMetrics<S>
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
        let Some(series) = self.layer.series_for(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        series.started.inc();
        let started = self.layer.timed.then(Instant::now);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let (parts, body) = response.into_parts();
            // A status in the headers is a trailers-only response: done.
            let mut observer = Observer {
                series,
                started,
                done: false,
            };
            if let Some(code) = parts.headers.get("grpc-status") {
                observer.finish(code.as_bytes());
                return Ok(http::Response::from_parts(parts, body));
            }
            let body = Body::new(ObservedBody { inner: body, observer });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

struct Observer {
    series: Arc<MethodSeries>,
    started: Option<Instant>,
    done: bool,
}

impl Observer {
    fn finish(&mut self, code: &[u8]) {
        if self.done {
            return;
        }
        self.done = true;
        let index = std::str::from_utf8(code)
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|i| *i < CODE_NAMES.len())
            .unwrap_or(2);
        self.series.handled[index].inc();
        if let Some(t) = self.started {
            self.series.seconds.observe(t.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Observer {
    /// A body dropped before its trailers went out: the client went away.
    fn drop(&mut self) {
        self.finish(b"1");
    }
}

struct ObservedBody {
    inner: Body,
    observer: Observer,
}

impl HttpBody for ObservedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                this.observer.finish(code.as_bytes());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_etcd_names() {
        let m = metrics();
        m.put_total.inc();
        let _layer = GrpcMetricsLayer::new(false);
        let text = m.render();
        for name in [
            "# TYPE etcd_mvcc_put_total counter",
            "# TYPE etcd_server_proposals_pending gauge",
            "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"}",
            "grpc_server_handled_total{grpc_code=\"Unauthenticated\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
