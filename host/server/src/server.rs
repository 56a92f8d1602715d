//! The process around a member: starts it ([`crate::member::bootstrap`]),
//! serves its peer and client listeners, and runs it until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::service::Routes;
use tonic::transport::Server;
use tower_layer::Layer;

use crate::api;
use crate::authority_repair::AuthorityRepair;
use crate::config::{MetricsLevel, ServerConfig};
use crate::http;
use crate::member::bootstrap::{self, Started};
use crate::member::{alarms, corrupt, lease_clock, Member};
use crate::metrics::GrpcMetricsLayer;
use crate::peer::{self, LeasePeerService, PeerService, StatePeerService};
use crate::proto::cairnpb::lease_peer_server::LeasePeerServer;
use crate::proto::cairnpb::state_peer_server::StatePeerServer;
use crate::proto::cairnpb::{peer_server::PeerServer, plugins_server::PluginsServer};
use crate::proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::sd_notify;
use crate::tls;

/// How long open client requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// gRPC framing on top of the request limit, as etcd allows.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Resolves `http://host:port` and `https://host:port` listen URLs to
/// socket addresses, each with whether it serves TLS.
async fn resolve(urls: &[String]) -> anyhow::Result<Vec<(SocketAddr, bool)>> {
    let mut addrs = Vec::new();
    for raw in urls {
        let url = url::Url::parse(raw).with_context(|| format!("invalid URL {raw:?}"))?;
        let secure = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => bail!("{raw}: listen URLs must be http:// or https://"),
        };
        let host = url.host_str().context("URL has no host")?;
        let port = url.port().context("URL has no port")?;
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        // Like Go's resolver for "localhost", prefer the IPv4 loopback.
        let addr = resolved
            .iter()
            .find(|a| a.is_ipv4())
            .or(resolved.first())
            .copied()
            .with_context(|| format!("{raw} resolves to no address"))?;
        addrs.push((addr, secure));
    }
    Ok(addrs)
}

/// The client listener's gRPC services, each with its message limits,
/// behind the learner gate and the gRPC metrics.
fn client_grpc_service(cfg: &ServerConfig, member: &Arc<Member>) -> http::GrpcService {
    let max_recv = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let mut routes = Routes::builder();
    routes
        .add_service(
            KvServer::new(api::KvService::new(member.clone()))
                .max_decoding_message_size(max_recv)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            MaintenanceServer::new(api::MaintenanceService::new(member.clone()).with_version(cfg.emulated_etcd_version.clone()))
                .max_decoding_message_size(max_recv),
        )
        .add_service(ClusterServer::new(api::ClusterService::new(member.clone())).max_decoding_message_size(max_recv))
        .add_service(WatchServer::new(
            api::WatchService::new(member.clone()).with_progress_notify_interval(cfg.watch_progress_notify_interval),
        ))
        .add_service(LeaseServer::new(api::LeaseService::new(member.clone())))
        .add_service(AuthServer::new(api::AuthService::new(member.clone())))
        .add_service(LockServer::new(api::LockService::new(member.clone())))
        .add_service(ElectionServer::new(api::ElectionService::new(member.clone())))
        .add_service(
            PluginsServer::new(api::PluginService::new(member.clone()))
                .max_decoding_message_size(cfg.max_plugin_bytes + GRPC_OVERHEAD_BYTES),
        );
    let routes = api::LeaderGateLayer::new(member.clone()).layer(routes.routes().prepare());
    let gated = api::LearnerGateLayer::new(member.membership().clone()).layer(routes);
    GrpcMetricsLayer::new(cfg.metrics == MetricsLevel::Extensive).layer(gated)
}

fn http_config(cfg: &ServerConfig) -> http::HttpConfig {
    // JSON carries bytes as base64, a third larger than on the wire.
    let max_recv = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    http::HttpConfig {
        etcd_version: cfg.emulated_etcd_version.clone(),
        cors: cfg.cors.clone(),
        host_whitelist: cfg.host_whitelist.clone(),
        max_body_bytes: max_recv / 3 * 4 + GRPC_OVERHEAD_BYTES,
        max_message_bytes: max_recv,
    }
}

/// Runs a member until `shutdown` resolves or Raft fails.
pub async fn run(cfg: ServerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let tls = tls::Setup::from_config(&cfg)?;
    let Started { member, raft_thread } = bootstrap::start(&cfg, tls.dialer.clone()).await?;
    let node = member.node().clone();
    let lease_clock = tokio::spawn(lease_clock::run(member.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for (addr, secure) in resolve(&cfg.listen_peer_urls).await? {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        tracing::info!(%addr, tls = secure, "serving peer traffic");
        let router = Server::builder().add_service(
            PeerServer::new(PeerService::new(
                node.clone(),
                member.membership().clone(),
                member.database().dump_dir(),
            ))
            .max_decoding_message_size(peer::MAX_PEER_MESSAGE_BYTES),
        );
        let router = router
            .add_service(LeasePeerServer::new(LeasePeerService::new(member.clone())))
            .add_service(StatePeerServer::new(StatePeerService::new(member.clone())));
        let mut stop = stop_rx.clone();
        let served = router.serve_with_incoming_shutdown(tls::accept(listener, tls.peer.clone().filter(|_| secure)), async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        servers.push(tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::warn!(error = %e, "the peer listener failed");
            }
        }));
    }
    if cfg.initial_corrupt_check() {
        // As etcd: after the peer listeners are up (the peers check us too),
        // before any client is served.
        corrupt::check_initial(&member).await?;
    }
    let space_watch = tokio::spawn(alarms::watch_space(member.clone()));
    let corrupt_monitor =
        (!cfg.corrupt_check_time.is_zero()).then(|| tokio::spawn(corrupt::monitor(member.clone(), cfg.corrupt_check_time)));
    let grpc = client_grpc_service(&cfg, &member);
    let surface = http::HttpSurface::new(member.clone(), grpc.clone(), http_config(&cfg));
    let http_router = http::client_router(surface.clone());
    for (addr, secure) in resolve(&cfg.listen_client_urls).await? {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        tracing::info!(%addr, tls = secure, "serving client requests");
        let mut stop = stop_rx.clone();
        let incoming = tls::accept(listener, tls.client.clone().filter(|_| secure)).map(|conn| conn.map(AuthorityRepair::new));
        servers.push(tokio::spawn(http::serve::serve(
            incoming,
            http::serve::split(grpc.clone(), http_router.clone()),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
    }
    // As etcd, an https:// metrics URL is served with the client TLS
    // configuration (--cert-file, --key-file, --client-cert-auth, …).
    for (addr, secure) in resolve(&cfg.listen_metrics_urls).await? {
        // Setup refuses an https:// URL without client TLS flags.
        let server_tls = tls.client.clone().filter(|_| secure);
        let listener = TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        tracing::info!(%addr, tls = secure, "serving metrics");
        let mut stop = stop_rx.clone();
        let router = http::metrics_router(surface.clone());
        servers.push(tokio::spawn(http::serve::serve(
            tls::accept(listener, server_tls),
            router,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
    }

    // Spawned once every listener is bound: publishing needs a leader and
    // a commit, so when it is done the member serves clients, and only then
    // is systemd told it is ready.
    let publisher = tokio::spawn({
        let (member, name, urls) = (member.clone(), cfg.name.clone(), cfg.advertise_client_urls.clone());
        async move {
            bootstrap::publish_attributes(member, name, urls).await;
            sd_notify::notify(sd_notify::READY);
        }
    });

    let raft_done = tokio::task::spawn_blocking(move || raft_thread.join());
    tokio::pin!(raft_done);
    let removed = member.membership().table.clone();
    let raft_result = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            None
        }
        _ = removed.removed() => {
            tracing::warn!("this member was removed from the cluster; shutting down");
            None
        }
        joined = &mut raft_done => Some(joined),
    };
    sd_notify::notify(sd_notify::STOPPING);
    publisher.abort();
    let _ = stop_tx.send(true);
    // In-flight requests get a moment to finish; clients that keep idle
    // connections open must not hold the shutdown forever.
    let aborts: Vec<_> = servers.iter().map(|s| s.abort_handle()).collect();
    if tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(servers))
        .await
        .is_err()
    {
        tracing::info!("closing client connections still open");
        aborts.iter().for_each(|a| a.abort());
    }
    lease_clock.abort();
    space_watch.abort();
    if let Some(monitor) = corrupt_monitor {
        monitor.abort();
    }
    node.stop();
    let joined = match raft_result {
        Some(j) => j,
        None => raft_done.await,
    };
    // Only after Raft stopped: nothing writes any more.
    if let Err(e) = member.database().flush() {
        tracing::warn!(error = %e, "flushing the database at shutdown failed; the next start replays its WAL");
    }
    match joined {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(anyhow::anyhow!("raft loop failed: {e}")),
        Ok(Err(_)) => Err(anyhow::anyhow!("raft thread panicked")),
        Err(e) => Err(anyhow::anyhow!("raft thread join failed: {e}")),
    }
}
