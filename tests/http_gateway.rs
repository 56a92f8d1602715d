//! The HTTP surface on the client port: the same HTTP requests, sent with a
//! real HTTP client (curl), to a real etcd 3.4 and to cairn, statuses and
//! JSON bodies compared after normalising ids, terms, indexes and sizes;
//! `/metrics` read by a real Prometheus text parser (python
//! `prometheus_client`); `--listen-metrics-urls`; python-etcd3gw, a client of
//! etcd's JSON gateway, against cairn.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use harness::http::b64;
use harness::metrics::{scrape, Scrape};
use harness::server::free_port;
use harness::{Kind, Server};
use serde_json::{json, Value};

/// One HTTP exchange through curl: (status, body).
fn http(endpoint: &str, method: &str, path: &str, body: Option<&[u8]>, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "--max-time", "20", "-X", method, "-o", "-", "-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.arg(format!("{endpoint}{path}"));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(b) = body {
            stdin.write_all(b).expect("write body");
        }
    }
    let out = child.wait_with_output().expect("curl output");
    assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8 reply");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), body.to_string())
}

fn post(endpoint: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http(endpoint, "POST", path, Some(body.to_string().as_bytes()), &[]);
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text:?}"));
    (status, value)
}

/// Opens a streamed POST whose request body stays open, and returns the
/// first `lines` newline-separated JSON objects of the response.
fn stream(endpoint: &str, path: &str, requests: &[Value], lines: usize) -> Vec<Value> {
    let mut child = Command::new("curl")
        .args(["-s", "-N", "--max-time", "20", "-X", "POST", "-T", "-"])
        .arg(format!("{endpoint}{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run curl");
    let mut stdin = child.stdin.take().expect("stdin");
    for r in requests {
        writeln!(stdin, "{r}").expect("write request");
    }
    // curl sends what it read only once its input ends; the stream stays
    // open on the server after that, as etcd's gateway keeps it.
    drop(stdin);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut got = Vec::new();
    while got.len() < lines {
        let mut line = String::new();
        if out.read_line(&mut line).expect("read stream") == 0 {
            break;
        }
        if !line.trim().is_empty() {
            got.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{path}: {e}: {line:?}")));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    got
}

/// Replaces what legitimately differs between two clusters (ids, terms,
/// indexes, sizes, hashes, the server version and URLs) with placeholders;
/// member and lease ids map to the order they are first seen in.
#[derive(Default)]
struct Normalize {
    endpoint: String,
    peer: String,
    members: BTreeMap<String, String>,
    leases: BTreeMap<String, String>,
}

impl Normalize {
    fn for_server(s: &Server) -> Normalize {
        Normalize {
            endpoint: s.endpoint(),
            peer: s.peer_url(),
            ..Default::default()
        }
    }

    fn id(map: &mut BTreeMap<String, String>, kind: &str, v: &Value) -> Value {
        let key = v.to_string();
        let next = map.len() + 1;
        Value::String(map.entry(key).or_insert_with(|| format!("<{kind}-{next}>")).clone())
    }

    fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let is_member = map.contains_key("peerURLs");
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    let nv = match k.as_str() {
                        "cluster_id" => json!("<cluster>"),
                        "member_id" | "leader" => Self::id(&mut self.members, "member", v),
                        "ID" if is_member => Self::id(&mut self.members, "member", v),
                        "ID" | "lease" => Self::id(&mut self.leases, "lease", v),
                        "raft_term" | "raftTerm" => json!("<term>"),
                        "raftIndex" | "raftAppliedIndex" => json!("<index>"),
                        "dbSize" | "dbSizeInUse" => json!("<size>"),
                        "hash" => json!("<hash>"),
                        "version" | "etcdserver" if v.is_string() => json!("<version>"),
                        _ => self.value(v),
                    };
                    out.insert(k.clone(), nv);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|i| self.value(i)).collect()),
            Value::String(s) => Value::String(s.replace(&self.endpoint, "<client-url>").replace(&self.peer, "<peer-url>")),
            other => other.clone(),
        }
    }
}

/// Both servers, each with its normaliser.
struct Pair {
    etcd: (Server, Normalize),
    cairn: (Server, Normalize),
}

impl Pair {
    fn start(args: &[&str]) -> Pair {
        let etcd = Server::start_with_args(Kind::Etcd, args);
        let cairn = Server::start_with_args(Kind::Cairn, args);
        let (ne, nc) = (Normalize::for_server(&etcd), Normalize::for_server(&cairn));
        Pair {
            etcd: (etcd, ne),
            cairn: (cairn, nc),
        }
    }

    /// The same JSON POST to both; statuses and normalised bodies equal.
    fn post(&mut self, what: &str, path: &str, body: Value) -> Value {
        let (es, eb) = post(&self.etcd.0.endpoint(), path, &body);
        let (cs, cb) = post(&self.cairn.0.endpoint(), path, &body);
        let (eb, cb) = (self.etcd.1.value(&eb), self.cairn.1.value(&cb));
        assert_eq!((cs, &cb), (es, &eb), "{what}: cairn (left) differs from etcd (right)");
        cb
    }

    /// The same raw request to both; statuses equal, and the bodies too
    /// unless `compare` picks what is comparable from each.
    fn raw(&mut self, what: &str, method: &str, path: &str, body: Option<&[u8]>, compare: fn(&str) -> String) {
        let (es, eb) = http(&self.etcd.0.endpoint(), method, path, body, &[]);
        let (cs, cb) = http(&self.cairn.0.endpoint(), method, path, body, &[]);
        assert_eq!(
            (cs, compare(&cb)),
            (es, compare(&eb)),
            "{what}: cairn (left) differs from etcd (right)"
        );
    }

    fn stream(&mut self, what: &str, path: &str, requests: &[Value], lines: usize) -> Vec<Value> {
        let e: Vec<Value> = stream(&self.etcd.0.endpoint(), path, requests, lines)
            .iter()
            .map(|v| self.etcd.1.value(v))
            .collect();
        let c: Vec<Value> = stream(&self.cairn.0.endpoint(), path, requests, lines)
            .iter()
            .map(|v| self.cairn.1.value(v))
            .collect();
        assert_eq!(c.len(), lines, "{what}: cairn sent {c:?}");
        assert_eq!(c, e, "{what}: cairn (left) differs from etcd (right)");
        c
    }
}

fn verbatim(body: &str) -> String {
    body.to_string()
}

/// The gRPC code and whether the error body has etcd's shape; the message
/// of a JSON or base64 decoding error is the decoder's own wording.
fn error_shape(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    let shaped = v["error"].is_string() && v["message"] == v["error"];
    format!("code={} shaped={shaped}", v["code"])
}

#[test]
fn gateway_matches_etcd() {
    let mut p = Pair::start(&[]);
    for (k, v) in [("foo", "bar"), ("foo/a", "1"), ("foo/b", "2"), ("fop", "x")] {
        p.post(&format!("put {k}"), "/v3/kv/put", json!({"key": b64(k), "value": b64(v)}));
    }
    p.post(
        "put prev_kv",
        "/v3/kv/put",
        json!({"key": b64("foo"), "value": b64("baz"), "prev_kv": true}),
    );
    p.post("range one", "/v3/kv/range", json!({"key": b64("foo")}));
    let prefix = p.post("range prefix", "/v3/kv/range", json!({"key": b64("foo"), "range_end": b64("foo0")}));
    assert_eq!(prefix["count"], json!("3"), "{prefix}");
    p.post(
        "range limit count_only camelCase",
        "/v3/kv/range",
        json!({"key": b64("f"), "rangeEnd": b64("g"), "limit": 2, "count_only": true}),
    );
    p.post("range missing", "/v3/kv/range", json!({"key": b64("nope")}));
    p.post("range v3beta", "/v3beta/kv/range", json!({"key": b64("foo")}));
    let txn = p.post(
        "txn nested",
        "/v3/kv/txn",
        json!({
            "compare": [{"key": b64("foo"), "target": "VALUE", "result": "EQUAL", "value": b64("baz")}],
            "success": [
                {"request_txn": {"success": [{"request_range": {"key": b64("foo/a")}}, {"request_put": {"key": b64("t"), "value": b64("1")}}]}},
                {"request_range": {"key": b64("foo"), "range_end": b64("foo0"), "keys_only": true}}
            ],
            "failure": [{"request_delete_range": {"key": b64("foo")}}]
        }),
    );
    assert!(txn["responses"][0]["response_txn"].is_object(), "{txn}");
    p.post(
        "txn failing compare",
        "/v3/kv/txn",
        json!({"compare": [{"key": b64("foo"), "target": "VERSION", "result": "GREATER", "version": "10"}],
               "failure": [{"request_range": {"key": b64("fop")}}]}),
    );
    p.post(
        "deleterange prev_kv",
        "/v3/kv/deleterange",
        json!({"key": b64("foo/"), "range_end": b64("foo0"), "prev_kv": true}),
    );
    p.post("compaction future", "/v3/kv/compaction", json!({"revision": "1000"}));

    let grant = p.post("lease grant", "/v3/lease/grant", json!({"TTL": 60}));
    assert_eq!(grant["ID"], json!("<lease-1>"), "{grant}");
    // The ids themselves differ per server: each side uses its own.
    let etcd_lease = post(&p.etcd.0.endpoint(), "/v3/lease/leases", &json!({})).1["leases"][0]["ID"].clone();
    let cairn_lease = post(&p.cairn.0.endpoint(), "/v3/lease/leases", &json!({})).1["leases"][0]["ID"].clone();
    let both_leases = |p: &mut Pair, what: &str, path: &str, extra: Value| {
        let mut e = json!({"ID": etcd_lease});
        let mut c = json!({"ID": cairn_lease});
        for (k, v) in extra.as_object().expect("object") {
            e[k] = v.clone();
            c[k] = v.clone();
        }
        let (es, eb) = post(&p.etcd.0.endpoint(), path, &e);
        let (cs, cb) = post(&p.cairn.0.endpoint(), path, &c);
        let (eb, cb) = (p.etcd.1.value(&eb), p.cairn.1.value(&cb));
        assert_eq!((cs, &cb), (es, &eb), "{what}: cairn (left) differs from etcd (right)");
    };
    both_leases(
        &mut p,
        "put with lease",
        "/v3/kv/put",
        json!({"key": b64("leased"), "value": b64("v")}),
    );
    both_leases(&mut p, "timetolive keys", "/v3/lease/timetolive", json!({"keys": true}));
    both_leases(&mut p, "timetolive alias", "/v3/kv/lease/timetolive", json!({}));
    p.post("leases", "/v3/lease/leases", json!({}));
    p.post("leases alias", "/v3/kv/lease/leases", json!({}));
    {
        let e = stream(&p.etcd.0.endpoint(), "/v3/lease/keepalive", &[json!({"ID": etcd_lease})], 1);
        let c = stream(&p.cairn.0.endpoint(), "/v3/lease/keepalive", &[json!({"ID": cairn_lease})], 1);
        let (e, c): (Vec<Value>, Vec<Value>) = (
            e.iter().map(|v| p.etcd.1.value(v)).collect(),
            c.iter().map(|v| p.cairn.1.value(v)).collect(),
        );
        assert_eq!(c, e, "keepalive: cairn (left) differs from etcd (right)");
        assert_eq!(c.len(), 1);
    }
    both_leases(&mut p, "revoke", "/v3/lease/revoke", json!({}));
    both_leases(&mut p, "revoke again (alias)", "/v3/kv/lease/revoke", json!({}));
    p.post("range after revoke", "/v3/kv/range", json!({"key": b64("leased")}));

    let events = p.stream(
        "watch from revision 1",
        "/v3/watch",
        &[json!({"create_request": {"key": b64("foo"), "range_end": b64("foo0"), "start_revision": 1, "prev_kv": true}})],
        2,
    );
    assert!(events[1]["result"]["events"].as_array().is_some_and(|e| e.len() > 3), "{events:?}");

    p.post("member list", "/v3/cluster/member/list", json!({}));
    p.post("status", "/v3/maintenance/status", json!({}));
    p.post("hash", "/v3/maintenance/hash", json!({}));
    p.post("election leader of nothing", "/v3/election/leader", json!({"name": b64("e")}));

    p.raw("health", "GET", "/health", None, verbatim);
    p.raw("health serializable", "GET", "/health?serializable=true", None, verbatim);
    p.raw("version", "GET", "/version", None, |b| {
        let v: Value = serde_json::from_str(b).expect("json");
        format!("cluster={} server-is-string={}", v["etcdcluster"], v["etcdserver"].is_string())
    });
    p.raw("malformed JSON", "POST", "/v3/kv/range", Some(b"{bad"), error_shape);
    p.raw("bad base64", "POST", "/v3/kv/range", Some(br#"{"key":"!!"}"#), error_shape);
    p.raw("empty body", "POST", "/v3/kv/put", Some(b""), verbatim);
    p.raw("unknown gateway path", "POST", "/v3/kv/nope", Some(b"{}"), verbatim);
    p.raw("unknown path", "GET", "/nothing", None, verbatim);
    p.raw("unknown version prefix", "POST", "/v3alpha/kv/range", Some(b"{}"), verbatim);
    p.raw("GET on a gateway route", "GET", "/v3/kv/range", None, verbatim);
    let huge = format!(r#"{{"key":"{}","value":"{}"}}"#, b64("big"), b64(&"x".repeat(3 * 1024 * 1024)));
    p.raw("huge body", "POST", "/v3/kv/put", Some(huge.as_bytes()), error_shape);
    p.post("range after huge", "/v3/kv/range", json!({"key": b64("big")}));
}

/// What the required metrics' families are called once parsed (the parser
/// drops counters' `_total`, not gauges').
const REQUIRED: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed",
    "etcd_disk_wal_fsync_duration_seconds",
    "etcd_disk_backend_commit_duration_seconds",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_server_quota_backend_bytes",
    "etcd_debugging_mvcc_keys_total",
    "etcd_mvcc_put",
    "etcd_mvcc_range",
    "etcd_mvcc_txn",
    "etcd_mvcc_delete",
    "etcd_server_slow_apply",
    "grpc_server_started",
    "grpc_server_handled",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
];

fn sample(m: &Scrape, family: &str, sample: &str) -> f64 {
    let (_, samples) = m.get(family).unwrap_or_else(|| panic!("{family} missing"));
    samples
        .iter()
        .find(|(s, _)| s == sample)
        .unwrap_or_else(|| panic!("{sample} missing from {samples:?}"))
        .1
}

#[test]
fn metrics_parse_match_etcd_and_move() {
    let etcd = Server::start(Kind::Etcd);
    let cairn = Server::start(Kind::Cairn);
    let reference = scrape(&etcd.endpoint());
    let before = scrape(&cairn.endpoint());
    for name in REQUIRED {
        let (want_type, want_samples) = reference.get(*name).unwrap_or_else(|| panic!("etcd has no {name}"));
        let (got_type, got_samples) = before.get(*name).unwrap_or_else(|| panic!("cairn has no {name}"));
        assert_eq!(got_type, want_type, "{name}: type");
        if want_type == "histogram" {
            let bounds = |s: &[(String, f64)]| {
                s.iter()
                    .map(|(n, _)| n.clone())
                    .filter(|n| n.contains("_bucket"))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bounds(got_samples), bounds(want_samples), "{name}: buckets");
        }
    }
    // go-grpc-prometheus pre-registers every method and code.
    let range_ok =
        r#"grpc_server_handled_total{"grpc_code": "OK", "grpc_method": "Range", "grpc_service": "etcdserverpb.KV", "grpc_type": "unary"}"#;
    let put_ok =
        r#"grpc_server_handled_total{"grpc_code": "OK", "grpc_method": "Put", "grpc_service": "etcdserverpb.KV", "grpc_type": "unary"}"#;
    sample(&reference, "grpc_server_handled", range_ok);
    assert_eq!(sample(&before, "etcd_server_has_leader", "etcd_server_has_leader{}"), 1.0);
    assert_eq!(sample(&before, "etcd_server_is_leader", "etcd_server_is_leader{}"), 1.0);

    for i in 0..5 {
        let (status, _) = post(
            &cairn.endpoint(),
            "/v3/kv/put",
            &json!({"key": b64(&format!("m{i}")), "value": b64("v")}),
        );
        assert_eq!(status, 200);
    }
    let (status, _) = post(&cairn.endpoint(), "/v3/kv/put", &json!({}));
    assert_eq!(status, 400);
    let after = scrape(&cairn.endpoint());
    let moved = |family: &str, s: &str| sample(&after, family, s) - sample(&before, family, s);
    assert_eq!(moved("etcd_mvcc_put", "etcd_mvcc_put_total{}"), 5.0);
    assert_eq!(moved("etcd_debugging_mvcc_keys_total", "etcd_debugging_mvcc_keys_total{}"), 5.0);
    assert_eq!(moved("grpc_server_handled", put_ok), 5.0);
    let put_invalid = r#"grpc_server_handled_total{"grpc_code": "InvalidArgument", "grpc_method": "Put", "grpc_service": "etcdserverpb.KV", "grpc_type": "unary"}"#;
    assert_eq!(moved("grpc_server_handled", put_invalid), 1.0);
    assert!(moved("etcd_server_proposals_committed_total", "etcd_server_proposals_committed_total{}") >= 5.0);
    assert!(
        moved(
            "etcd_disk_wal_fsync_duration_seconds",
            "etcd_disk_wal_fsync_duration_seconds_count{}"
        ) >= 5.0
    );
}

#[test]
fn metrics_listener_serves_only_monitoring() {
    let (etcd_port, cairn_port) = (free_port(), free_port());
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let cairn_url = format!("http://127.0.0.1:{cairn_port}");
    let _etcd = Server::start_with_args(Kind::Etcd, &["--listen-metrics-urls", &etcd_url]);
    let _cairn = Server::start_with_args(Kind::Cairn, &["--listen-metrics-urls", &cairn_url]);
    for (method, path, body) in [
        ("GET", "/health", None),
        ("GET", "/nothing", None),
        ("POST", "/v3/kv/range", Some(&b"{}"[..])),
        ("GET", "/version", None),
    ] {
        let e = http(&etcd_url, method, path, body, &[]);
        let c = http(&cairn_url, method, path, body, &[]);
        assert_eq!(
            c, e,
            "{method} {path} on the metrics listener: cairn (left) differs from etcd (right)"
        );
    }
    let metrics = scrape(&cairn_url);
    assert!(metrics.contains_key("etcd_server_has_leader"));
}

#[test]
fn host_whitelist_and_cors_as_etcd() {
    let p = Pair::start(&["--host-whitelist", "example.com", "--cors", "http://allowed.example:8080"]);
    for headers in [
        &["Host: example.com", "Origin: http://allowed.example:8080"][..],
        &["Host: example.com", "Origin: http://other.example"][..],
        &["Host: elsewhere.com"][..],
    ] {
        let with_headers = |s: &Server| {
            let mut cmd = Command::new("curl");
            cmd.args(["-s", "-o", "/dev/null", "-D", "-", "-X", "POST", "--data-binary", "{}"]);
            for h in headers {
                cmd.args(["-H", h]);
            }
            let out = cmd.arg(format!("{}/v3/kv/range", s.endpoint())).output().expect("curl");
            let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
            let status = text.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut allow: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("access-control-"))
                .map(|l| l.trim().to_string())
                .collect();
            allow.sort();
            (status, allow)
        };
        let e = with_headers(&p.etcd.0);
        let c = with_headers(&p.cairn.0);
        assert_eq!(c, e, "{headers:?}: cairn (left) differs from etcd (right)");
    }
}

#[test]
fn etcd3gw_client_against_cairn() {
    const SCRIPT: &str = r#"
import sys, etcd3gw
host, port = sys.argv[1], int(sys.argv[2])
c = etcd3gw.Etcd3Client(host=host, port=port, api_path='/v3/')
assert c.put("gw/a", "1")
assert [v for v in c.get("gw/a")] == [b"1"], c.get("gw/a")
lease = c.lease(ttl=30)
assert c.put("gw/b", "2", lease=lease)
assert sorted(k for k in lease.keys()) == [b"gw/b"], lease.keys()
assert lease.ttl() > 0
events, cancel = c.watch("gw/c")
c.put("gw/c", "3")
event = next(events)
cancel()
assert event["kv"]["value"] == b"3", event
lock = c.lock("gwlock", ttl=30)
assert lock.acquire()
assert lock.is_acquired()
assert lock.release()
assert lease.revoke()
assert c.get("gw/b") == []
assert c.delete("gw/a")
print("ok")
"#;
    let cairn = Server::start(Kind::Cairn);
    let addr = cairn.client_addr();
    let out = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, &addr.ip().to_string(), &addr.port().to_string()])
        .output()
        .expect("run python3 (scripts/install-deps.sh installs python3-etcd3gw)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "etcd3gw against cairn failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
