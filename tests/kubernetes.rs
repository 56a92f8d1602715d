//! What Kubernetes asks of etcd, end to end: kubeadm's etcd command line
//! with real certificates, watches and keep-alives that require a leader,
//! stream-wide progress requests that never overtake an event, and the
//! apiserver's compactor, paginated lists and health probe compared with a
//! real etcd.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient, watch_request::RequestUnion, LeaseGrantRequest,
    LeaseKeepAliveRequest, RangeRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use harness::server::free_port;
use harness::tls::{Pki, Validity};
use harness::{etcdctl_with, Cluster, Differential, Kind};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

/// Generous bound for anything that should happen within a few election
/// timeouts.
const LEADER_LOSS_TIMEOUT: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------
// kubeadm's command line
// ---------------------------------------------------------------------------

/// A server started from an exact command line (no harness defaults), with
/// its client, metrics and TLS material.
struct Kubeadm {
    child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
    clients: [String; 2],
    metrics: String,
    pki: Pki,
    client_cert: harness::tls::CertFiles,
}

impl Drop for Kubeadm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags kubeadm writes into etcd's static pod manifest, for one
/// member on loopback ports, with etcd 3.4/3.5's spellings or 3.6's.
fn kubeadm_flags(
    dir: &Path,
    pki: &Pki,
    server: &harness::tls::CertFiles,
    peer: &harness::tls::CertFiles,
    v36: bool,
) -> (Vec<String>, [String; 2], String) {
    let (c1, c2, p, m) = (free_port(), free_port(), free_port(), free_port());
    let name = "control-plane-1";
    let ca = pki.ca_file().display().to_string();
    let clients = [format!("https://127.0.0.1:{c1}"), format!("https://127.0.0.1:{c2}")];
    let metrics = format!("http://127.0.0.1:{m}");
    let peer_url = format!("https://127.0.0.1:{p}");
    let mut flags = vec![
        format!("--advertise-client-urls={}", clients[1]),
        format!("--cert-file={}", server.cert.display()),
        "--client-cert-auth=true".to_string(),
        format!("--data-dir={}", dir.join("etcd").display()),
    ];
    if v36 {
        flags.push("--feature-gates=InitialCorruptCheck=true".to_string());
    } else {
        flags.push("--experimental-initial-corrupt-check=true".to_string());
        flags.push("--experimental-watch-progress-notify-interval=5s".to_string());
    }
    flags.extend([
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={name}={peer_url}"),
        format!("--key-file={}", server.key.display()),
        format!("--listen-client-urls={},{}", clients[0], clients[1]),
        format!("--listen-metrics-urls={metrics}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--name={name}"),
        format!("--peer-cert-file={}", peer.cert.display()),
        "--peer-client-cert-auth=true".to_string(),
        format!("--peer-key-file={}", peer.key.display()),
        format!("--peer-trusted-ca-file={ca}"),
        "--snapshot-count=10000".to_string(),
        format!("--trusted-ca-file={ca}"),
    ]);
    if v36 {
        flags.push("--watch-progress-notify-interval=5s".to_string());
    }
    (flags, clients, metrics)
}

fn server_binary() -> PathBuf {
    match harness::target_kind() {
        Kind::Cairn => harness::cairn_bin(),
        _ => harness::require_etcd(),
    }
}

fn start_kubeadm(bin: &Path, v36: bool) -> Kubeadm {
    let pki = Pki::new("kubeadm");
    let server = pki.issue("server", "control-plane-1", Validity::Current);
    let peer = pki.issue("peer", "control-plane-1", Validity::Current);
    let client_cert = pki.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", Validity::Current);
    let dir = tempfile::tempdir().expect("tempdir");
    let (flags, clients, metrics) = kubeadm_flags(dir.path(), &pki, &server, &peer, v36);
    let log = dir.path().join("server.log");
    let out = std::fs::File::create(&log).expect("log file");
    let child = Command::new(bin)
        .args(&flags)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log handle"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let mut k = Kubeadm {
        child,
        _dir: dir,
        log,
        clients,
        metrics,
        pki,
        client_cert,
    };
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = k.child.try_wait() {
            panic!("server exited with {status}: {}\n{}", flags.join(" "), k.log_text());
        }
        if k.ctl(&k.clients[0], true, &["endpoint", "health"]).status == Some(0) {
            return k;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not ready:\n{}", k.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Kubeadm {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// etcdctl over TLS, presenting the apiserver's client certificate or
    /// none.
    fn ctl(&self, endpoint: &str, with_cert: bool, args: &[&str]) -> harness::Output {
        let mut all: Vec<String> = vec![format!("--cacert={}", self.pki.ca_file().display())];
        if with_cert {
            all.push(format!("--cert={}", self.client_cert.cert.display()));
            all.push(format!("--key={}", self.client_cert.key.display()));
        }
        all.extend(["--dial-timeout=2s".to_string(), "--command-timeout=4s".to_string()]);
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        etcdctl_with(&harness::require_etcdctl(), endpoint, &all, None, Duration::from_secs(20))
    }
}

/// `curl` of a plain-HTTP URL: (status, body).
fn http_get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn check_kubeadm_member(k: &Kubeadm) {
    for (i, ep) in k.clients.iter().enumerate() {
        let key = format!("/registry/ns/{i}");
        k.ctl(ep, true, &["put", &key, "v"]).assert_ok();
        let got = k.ctl(ep, true, &["get", &key, "--print-value-only"]);
        got.assert_ok();
        assert_eq!(got.stdout.trim(), "v", "{got:#?}");
    }
    // Client certificates are required.
    let anonymous = k.ctl(&k.clients[0], false, &["get", "/registry/ns/0"]);
    assert_ne!(anonymous.status, Some(0), "served a client without a certificate: {anonymous:#?}");
    // kubeadm's probes, on the metrics listener.
    for path in ["/livez", "/readyz"] {
        let (status, body) = http_get(&format!("{}{path}", k.metrics));
        assert_eq!((status, body.trim()), (200, "ok"), "{path}\n{}", k.log_text());
    }
    let (status, body) = http_get(&format!("{}/health", k.metrics));
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(health["health"], "true", "{body}");
    let (status, body) = http_get(&format!("{}/metrics", k.metrics));
    assert_eq!(status, 200);
    assert!(body.contains("etcd_server_has_leader 1"), "no leader gauge in /metrics");
}

#[test]
fn kubeadm_command_line_serves_tls_with_client_certs_and_probes() {
    let k = start_kubeadm(&server_binary(), false);
    check_kubeadm_member(&k);
}

#[test]
fn kubeadm_command_line_with_etcd_36_spellings() {
    // etcd 3.4 and 3.5 know neither spelling, so this one runs on Cairn.
    let k = start_kubeadm(&harness::cairn_bin(), true);
    check_kubeadm_member(&k);
}

#[test]
fn feature_gates_are_checked_at_start() {
    let run = |gates: &str| {
        let dir = tempfile::tempdir().expect("tempdir");
        let peer = format!("http://127.0.0.1:{}", free_port());
        let client = format!("http://127.0.0.1:{}", free_port());
        let mut child = Command::new(harness::cairn_bin())
            .args([
                &format!("--data-dir={}", dir.path().join("d").display()),
                &format!("--listen-client-urls={client}"),
                &format!("--advertise-client-urls={client}"),
                &format!("--listen-peer-urls={peer}"),
                &format!("--initial-advertise-peer-urls={peer}"),
                &format!("--feature-gates={gates}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn");
        // A bad list fails at once; a good one starts and serves.
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let mut err = String::new();
                use std::io::Read;
                let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                return Err((status, err));
            }
            let probe = ["endpoint", "health", "--dial-timeout=1s", "--command-timeout=3s"];
            if harness::etcdctl_timeout(&client, &probe, None, Duration::from_secs(10)).status == Some(0) {
                let _ = child.kill();
                let mut err = String::new();
                use std::io::Read;
                let _ = child.wait();
                let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                return Ok(err);
            }
            assert!(start.elapsed() < Duration::from_secs(30), "neither failed nor served: {gates}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    for (bad, why) in [
        ("InitialCorruptCheck", "missing bool value"),
        ("InitialCorruptCheck=maybe", "invalid value"),
        ("NoSuchFeature=true", "unrecognized feature gate: NoSuchFeature"),
    ] {
        let (status, err) = run(bad).expect_err(bad);
        assert!(!status.success(), "{bad}: {status}");
        assert!(err.contains(why), "{bad}: {err}");
    }
    let log = run("StopGRPCServiceOnDefrag=true,TxnModeWriteWithSharedBuffer=false,LeaseCheckpoint=true").expect("valid gates");
    assert!(
        log.contains("ignoring feature gate") && log.contains("StopGRPCServiceOnDefrag=true"),
        "{log}"
    );
    assert!(
        !log.contains("TxnModeWriteWithSharedBuffer") && !log.contains("LeaseCheckpoint=true"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// WithRequireLeader
// ---------------------------------------------------------------------------

async fn plain_channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {endpoint}: {e}"))
}

/// A request carrying what `clientv3.WithRequireLeader` adds.
fn require_leader<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("hasleader", "true".parse().expect("ascii"));
    request
}

fn create(key: &str, range_end: &str, start_revision: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.as_bytes().to_vec(),
            range_end: range_end.as_bytes().to_vec(),
            start_revision,
            ..Default::default()
        })),
    }
}

fn progress_request() -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    }
}

/// Opens a watch stream (requiring a leader or not) and creates one watch.
async fn open_watch(channel: &Channel, leader: bool, key: &str) -> Result<(mpsc::Sender<WatchRequest>, Streaming<WatchResponse>), Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(create(key, "", 0)).await.expect("queue create");
    let stream = ReceiverStream::new(rx);
    let request = if leader { require_leader(stream) } else { Request::new(stream) };
    let mut responses = WatchClient::new(channel.clone()).watch(request).await?.into_inner();
    let created = responses.message().await?.expect("created response");
    assert!(created.created, "{created:?}");
    Ok((tx, responses))
}

fn assert_no_leader(status: &Status, what: &str) {
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "etcdserver: no leader"),
        "{what}: {status:?}"
    );
}

#[test]
fn require_leader_streams_end_when_the_member_loses_its_leader() {
    let mut cluster = Cluster::start_kind(harness::target_kind(), 3, &[]);
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let (ep_leader, ep_follower) = (cluster.members[leader].endpoint(), cluster.members[follower].endpoint());
    let rt = harness::runtime();
    // The request halves stay open (held here) so only the server can end
    // the streams.
    let (_watch_tx, mut watch, plain_tx, mut plain, _keepalive_tx, mut keepalive) = rt.block_on(async {
        let channel = plain_channel(&ep_follower).await;
        let (watch_tx, watch) = open_watch(&channel, true, "/registry/pods/").await.expect("watch with a leader");
        let (plain_tx, plain) = open_watch(&channel, false, "/registry/pods/").await.expect("plain watch");
        let lease = LeaseClient::new(plain_channel(&ep_leader).await)
            .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
            .await
            .expect("grant")
            .into_inner();
        let (ka_tx, ka_rx) = mpsc::channel(4);
        ka_tx.send(LeaseKeepAliveRequest { id: lease.id }).await.expect("queue keep-alive");
        let mut keepalive = LeaseClient::new(channel.clone())
            .lease_keep_alive(require_leader(ReceiverStream::new(ka_rx)))
            .await
            .expect("keep-alive with a leader")
            .into_inner();
        let first = keepalive.message().await.expect("keep-alive answer").expect("one answer");
        assert_eq!((first.id, first.ttl), (lease.id, 60));
        (watch_tx, watch, plain_tx, plain, ka_tx, keepalive)
    });

    let pid = cluster.partition(follower);
    rt.block_on(async {
        let ended = tokio::time::timeout(LEADER_LOSS_TIMEOUT, watch.message())
            .await
            .expect("the watch requiring a leader was not ended");
        assert_no_leader(&ended.expect_err("the watch ended without an error"), "watch");
        let ended = tokio::time::timeout(LEADER_LOSS_TIMEOUT, keepalive.message())
            .await
            .expect("the keep-alive requiring a leader was not ended");
        assert_no_leader(&ended.expect_err("the keep-alive ended without an error"), "keep-alive");

        // Nothing new that requires a leader is served, calls included.
        let channel = plain_channel(&ep_follower).await;
        let refused = open_watch(&channel, true, "/registry/")
            .await
            .map(|_| ())
            .expect_err("watch created without a leader");
        assert_no_leader(&refused, "new watch");
        let refused = KvClient::new(channel.clone())
            .range(require_leader(RangeRequest {
                key: b"/registry/health".to_vec(),
                serializable: true,
                ..Default::default()
            }))
            .await
            .expect_err("a range requiring a leader was served without one");
        assert_no_leader(&refused, "range");

        // A watch that did not ask is left open: it still answers.
        plain_tx.send(progress_request()).await.expect("queue progress");
        let answer = tokio::time::timeout(Duration::from_secs(15), plain.message())
            .await
            .expect("the plain watch went quiet")
            .expect("the plain watch ended")
            .expect("the plain watch ended");
        assert_eq!(answer.watch_id, -1, "{answer:?}");
    });
    cluster.heal_partition(follower, pid);
    rt.block_on(async {
        let channel = plain_channel(&ep_follower).await;
        let start = Instant::now();
        loop {
            match open_watch(&channel, true, "/registry/").await {
                Ok(_) => break,
                Err(status) => {
                    assert_no_leader(&status, "watch after healing");
                    assert!(start.elapsed() < LEADER_LOSS_TIMEOUT, "the member found no leader after healing");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Progress requests
// ---------------------------------------------------------------------------

/// What the reader of the stress stream keeps, to check each response
/// against everything before it.
#[derive(Default)]
struct ProgressCheck {
    /// Highest event revision delivered on the stream so far.
    max_event: i64,
    /// Last stream-wide progress revision.
    last_progress: i64,
    progress_answers: usize,
    /// Per watch: the revision no later event of it may be at or below
    /// (raised by progress after its creation), and its last event.
    floor: HashMap<i64, i64>,
    last_event: HashMap<i64, i64>,
    events: HashMap<i64, usize>,
}

impl ProgressCheck {
    fn observe(&mut self, r: &WatchResponse) {
        let revision = r.header.as_ref().map_or(0, |h| h.revision);
        if r.created {
            assert!(!r.canceled, "watch refused: {r:?}");
            self.floor.insert(r.watch_id, 0);
            return;
        }
        if r.canceled {
            self.floor.remove(&r.watch_id);
            return;
        }
        if r.events.is_empty() {
            if r.watch_id == -1 {
                assert!(
                    revision >= self.max_event,
                    "progress at {revision} after an event at {}",
                    self.max_event
                );
                assert!(
                    revision >= self.last_progress,
                    "progress went back from {} to {revision}",
                    self.last_progress
                );
                self.last_progress = revision;
                self.progress_answers += 1;
                for floor in self.floor.values_mut() {
                    *floor = revision;
                }
            } else {
                // A watch's own progress notification.
                let last = self.last_event.get(&r.watch_id).copied().unwrap_or(0);
                assert!(
                    revision >= last,
                    "watch {} notified at {revision} after its event at {last}",
                    r.watch_id
                );
                if let Some(floor) = self.floor.get_mut(&r.watch_id) {
                    *floor = (*floor).max(revision);
                }
            }
            return;
        }
        let floor = *self
            .floor
            .get(&r.watch_id)
            .unwrap_or_else(|| panic!("events for unknown watch {}", r.watch_id));
        for e in &r.events {
            let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            assert!(rev > floor, "watch {}: event at {rev} after progress at {floor}", r.watch_id);
            let last = self.last_event.entry(r.watch_id).or_insert(0);
            assert!(rev >= *last, "watch {}: event at {rev} after one at {last}", r.watch_id);
            *last = rev;
            self.max_event = self.max_event.max(rev);
        }
        *self.events.entry(r.watch_id).or_insert(0) += r.events.len();
    }
}

/// Puts `n` keys under `k/`, every fifth in a transaction with one under
/// `j/` (two events at one revision). Returns the events under `k/` and
/// under `j/`.
async fn write_load(endpoint: String, n: usize) -> (usize, usize) {
    let prefix = "k/";
    let mut c = harness::connect(&endpoint).await;
    let mut j_events = 0;
    for i in 0..n {
        let key = format!("{prefix}{}", i % 37);
        if i % 5 == 0 {
            let other = format!("j/{}", i % 11);
            c.txn(Txn::new().and_then([TxnOp::put(key.as_str(), "t", None), TxnOp::put(other.as_str(), "t", None)]))
                .await
                .expect("txn");
            j_events += 1;
        } else {
            c.put(key, format!("v{i}"), None).await.expect("put");
        }
    }
    (n, j_events)
}

#[test]
fn progress_never_overtakes_an_event_under_load() {
    let server = harness::Server::start_with_args(harness::target_kind(), &["--experimental-watch-progress-notify-interval=100ms"]);
    let endpoint = server.endpoint();
    let rt = harness::runtime();
    rt.block_on(async {
        // History for watches that start far back.
        let (preloaded, _) = write_load(endpoint.clone(), 1500).await;
        let (tx, rx) = mpsc::channel::<WatchRequest>(256);
        let channel = plain_channel(&endpoint).await;
        let mut responses = WatchClient::new(channel)
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        let mut with_notify = create("k/", "k0", 0);
        if let Some(RequestUnion::CreateRequest(c)) = with_notify.request_union.as_mut() {
            c.progress_notify = true;
        }
        // Watch ids 0..=4: live on k/, one key, k/ from revision 1, k/ with
        // its own progress notifications, live on j/.
        for r in [
            create("k/", "k0", 0),
            create("k/1", "", 0),
            create("k/", "k0", 1),
            with_notify,
            create("j/", "j0", 0),
        ] {
            tx.send(r).await.expect("queue create");
        }
        let mut check = ProgressCheck::default();
        while check.floor.len() < 5 {
            let r = responses.message().await.expect("watch stream failed").expect("watch stream ended");
            check.observe(&r);
        }
        let writers = [
            tokio::spawn(write_load(endpoint.clone(), 1200)),
            tokio::spawn(write_load(endpoint.clone(), 1200)),
        ];
        // Progress requests racing the writes, and watches that join from
        // old revisions (so some are always catching up) and leave.
        let requester = {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut i: i64 = 0;
                loop {
                    if tx.send(progress_request()).await.is_err() {
                        return;
                    }
                    if i % 40 == 0 {
                        let _ = tx.send(create("k/", "k0", 1 + (i * 7) % 1400)).await;
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        };
        let (mut live_k, mut live_j) = (0, 0);
        let mut writers_done = false;
        let mut pending: Vec<_> = writers.into_iter().collect();
        let deadline = Instant::now() + Duration::from_secs(240);
        while !writers_done {
            assert!(Instant::now() < deadline, "writers did not finish");
            let r = tokio::time::timeout(Duration::from_secs(60), responses.message())
                .await
                .expect("the watch stream went quiet")
                .expect("watch stream failed")
                .expect("watch stream ended");
            check.observe(&r);
            if pending.iter().all(|h| h.is_finished()) {
                for h in pending.drain(..) {
                    let (k, j) = h.await.expect("writer");
                    live_k += k;
                    live_j += j;
                }
                writers_done = true;
            }
        }
        requester.abort();
        // Quiet now: a progress request must come back at the current
        // revision once every watch has caught up.
        let mut kv = harness::connect(&endpoint).await;
        let current = kv.get("k/0", None).await.expect("get").header().expect("header").revision();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            tx.send(progress_request()).await.expect("queue progress");
            let r = tokio::time::timeout(Duration::from_secs(60), responses.message())
                .await
                .expect("no answer to a progress request")
                .expect("watch stream failed")
                .expect("watch stream ended");
            check.observe(&r);
            if r.watch_id == -1 && r.events.is_empty() && r.header.as_ref().map(|h| h.revision) == Some(current) {
                break;
            }
            assert!(Instant::now() < deadline, "progress never reached revision {current}");
        }
        assert!(check.progress_answers > 10, "only {} progress answers", check.progress_answers);
        // Each watch saw exactly the changes in its range.
        let seen = |id: i64| check.events.get(&id).copied().unwrap_or(0);
        assert_eq!(seen(0), live_k, "the live k/ watch");
        assert_eq!(seen(2), preloaded + live_k, "the k/ watch from revision 1");
        assert_eq!(seen(3), live_k, "the k/ watch with progress notifications");
        assert_eq!(seen(4), live_j, "the j/ watch");
    });
}

/// The progress response's shape, against real etcd 3.5.1: watch id -1 and
/// a header at the current revision, on a stream with watches and on one
/// without.
async fn progress_shape_session(endpoint: String) -> Value {
    let mut c = harness::connect(&endpoint).await;
    for i in 0..5 {
        c.put(format!("p/{i}"), "v", None).await.expect("put");
    }
    let mut s = c
        .watch("p/", Some(WatchOptions::new().with_prefix().with_start_revision(1)))
        .await
        .expect("watch");
    let mut out = Vec::new();
    let created = s.message().await.expect("created").expect("created");
    out.push(json!({"created": created.created(), "watch_id": created.watch_id()}));
    let mut events = 0;
    while events < 5 {
        events += s.message().await.expect("history").expect("history").events().len();
    }
    s.watch("q/", Some(WatchOptions::new().with_prefix())).await.expect("second watch");
    let created = s.message().await.expect("created").expect("created");
    out.push(json!({"created": created.created(), "watch_id": created.watch_id()}));
    s.request_progress().await.expect("progress");
    let p = s.message().await.expect("progress").expect("progress");
    out.push(json!({
        "header": harness::convert::header(p.header()),
        "watch_id": p.watch_id(),
        "created": p.created(),
        "canceled": p.canceled(),
        "events": p.events().len(),
        "compact_revision": p.compact_revision(),
    }));
    // A stream with no watch at all.
    let mut s2 = c.watch("r/", None).await.expect("watch");
    let created = s2.message().await.expect("created").expect("created");
    s2.cancel(created.watch_id()).await.expect("cancel");
    let canceled = s2.message().await.expect("canceled").expect("canceled");
    out.push(json!({"canceled": canceled.canceled()}));
    s2.request_progress().await.expect("progress");
    let p = s2.message().await.expect("progress").expect("progress");
    out.push(json!({"header": harness::convert::header(p.header()), "watch_id": p.watch_id()}));
    Value::Array(out)
}

#[test]
fn progress_response_shape_matches_etcd_35() {
    let mut d = Differential::start_against(Kind::Etcd35, Some(harness::etcdctl35_bin()), &[]);
    d.compare_sessions("progress response shape", progress_shape_session);
}

// ---------------------------------------------------------------------------
// The apiserver's storage patterns, against etcd 3.4
// ---------------------------------------------------------------------------

const COMPACT_REV_KEY: &str = "compact_rev_key";

/// One round of the apiserver's compactor: `t` is the version of the
/// compact key it last saw, `rev` the revision it wants compacted.
async fn compact_round(c: &mut etcd_client::Client, t: i64, rev: i64) -> (i64, i64, Value) {
    let txn = Txn::new()
        .when([Compare::version(COMPACT_REV_KEY, CompareOp::Equal, t)])
        .and_then([TxnOp::put(COMPACT_REV_KEY, rev.to_string(), None)])
        .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
    let resp = c.txn(txn).await.expect("compactor txn");
    let cur_rev = resp.header().expect("header").revision();
    if !resp.succeeded() {
        let version = match &resp.op_responses()[0] {
            etcd_client::TxnOpResponse::Get(g) => g.kvs()[0].version(),
            other => panic!("else branch answered {other:?}"),
        };
        return (version, cur_rev, json!({"txn": harness::convert::txn(&resp)}));
    }
    let compacted = if rev == 0 {
        Value::Null
    } else {
        harness::convert::result(&c.compact(rev, None).await, harness::convert::compaction)
    };
    (t + 1, cur_rev, json!({"txn": harness::convert::txn(&resp), "compact": compacted}))
}

async fn compactor_session(endpoint: String) -> Value {
    let mut c = harness::connect(&endpoint).await;
    let mut out = Vec::new();
    // First round: nothing compacted yet, the key is created.
    let (mut t, mut rev, step) = compact_round(&mut c, 0, 0).await;
    out.push(step);
    for round in 0..3 {
        for i in 0..4 {
            c.put(format!("/registry/pods/p{i}"), format!("r{round}"), None).await.expect("put");
        }
        let (t2, rev2, step) = compact_round(&mut c, t, rev).await;
        out.push(json!({"t": t2, "step": step}));
        (t, rev) = (t2, rev2);
    }
    // Another apiserver with a stale view loses the race and learns the
    // current version.
    let (t_other, _, step) = compact_round(&mut c, t - 1, rev).await;
    out.push(json!({"stale_t": t_other, "step": step}));
    // Compacting below the compacted revision is refused.
    out.push(harness::convert::result(&c.compact(1, None).await, harness::convert::compaction));
    Value::Array(out)
}

/// A list as the apiserver pages it: limit, range end, and every page
/// after the first pinned to the first page's revision; a compaction in
/// between makes the next page fail.
async fn paginated_list_session(endpoint: String) -> Value {
    let mut c = harness::connect(&endpoint).await;
    for i in 0..11 {
        c.put(format!("/registry/configmaps/default/cm{i:02}"), "x", None)
            .await
            .expect("put");
    }
    let prefix = "/registry/configmaps/";
    let end = "/registry/configmaps0";
    let mut out = Vec::new();
    let first = c
        .get(prefix, Some(GetOptions::new().with_range(end).with_limit(4)))
        .await
        .expect("first page");
    let pinned = first.header().expect("header").revision();
    out.push(harness::convert::get(&first));
    // Writes after the first page are not seen by the later ones.
    c.put("/registry/configmaps/default/cm00", "changed", None).await.expect("put");
    c.delete("/registry/configmaps/default/cm10", None).await.expect("delete");
    let mut next = first.kvs().last().expect("a key").key().to_vec();
    next.push(0);
    let mut more = first.more();
    while more {
        let page = c
            .get(
                next.clone(),
                Some(GetOptions::new().with_range(end).with_limit(4).with_revision(pinned)),
            )
            .await
            .expect("page");
        out.push(harness::convert::get(&page));
        more = page.more();
        if let Some(last) = page.kvs().last() {
            next = last.key().to_vec();
            next.push(0);
        }
    }
    // A compaction past the pinned revision ends the pagination.
    let first = c
        .get(prefix, Some(GetOptions::new().with_range(end).with_limit(4)))
        .await
        .expect("first page");
    let pinned = first.header().expect("header").revision();
    c.put("/registry/configmaps/default/cm01", "again", None).await.expect("put");
    let now = c.put("/registry/configmaps/default/cm02", "again", None).await.expect("put");
    c.compact(now.header().expect("header").revision(), None).await.expect("compact");
    let mut next = first.kvs().last().expect("a key").key().to_vec();
    next.push(0);
    let refused = c
        .get(next, Some(GetOptions::new().with_range(end).with_limit(4).with_revision(pinned)))
        .await;
    out.push(harness::convert::result(&refused, harness::convert::get));
    // The apiserver then starts over at the current revision.
    let fresh = c
        .get(prefix, Some(GetOptions::new().with_range(end).with_limit(100)))
        .await
        .expect("list again");
    out.push(harness::convert::get(&fresh));
    Value::Array(out)
}

/// The apiserver's etcd health check: a get of a key that does not exist.
async fn health_probe_session(endpoint: String) -> Value {
    let mut c = harness::connect(&endpoint).await;
    let mut out = Vec::new();
    out.push(harness::convert::get(&c.get("/registry/health", None).await.expect("health get")));
    c.put("/registry/x", "1", None).await.expect("put");
    out.push(harness::convert::get(
        &c.get("/registry/health", Some(GetOptions::new().with_serializable()))
            .await
            .expect("health get"),
    ));
    out.push(harness::convert::get(
        &c.get("/registry/health", Some(GetOptions::new().with_count_only()))
            .await
            .expect("health get"),
    ));
    Value::Array(out)
}

#[test]
fn apiserver_storage_patterns_match_etcd() {
    let mut d = Differential::start();
    d.compare_sessions("compactor rounds", compactor_session);
    d.compare_sessions("paginated list pinned to its first page", paginated_list_session);
    d.compare_sessions("health probe", health_probe_session);
}
