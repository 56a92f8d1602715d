//! Hostile and unusual input on the HTTP side of the client port, and auth
//! through the JSON gateway: the same requests sent with curl to a real
//! etcd 3.4 and to cairn, statuses and bodies compared (bodies after
//! normalising ids and headers; decoder error messages, whose wording is
//! Go's own, by gRPC code and shape). Also: slow-loris connections and a
//! flood of idle ones do not take the server down or starve gRPC clients,
//! and `--listen-metrics-urls=https://…` serves TLS with the client
//! certificate configuration, as etcd does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::http::{b64, curl, exchange, post_json, Request};
use harness::server::free_port;
use harness::tls::{client_tls_flags, CertFiles, Pki, Validity};
use harness::{etcdctl, Kind, Server};
use serde_json::{json, Value};

/// Replaces what differs between two servers by nature: response headers
/// (cluster and member ids, terms), lease ids and auth tokens.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let nv = match k.as_str() {
                        "header" => json!("<header>"),
                        "ID" => json!("<id>"),
                        "token" => json!("<token>"),
                        _ => normalize(v),
                    };
                    (k.clone(), nv)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// How two answers are compared.
#[derive(Clone, Copy)]
enum Compare {
    /// Status and normalised JSON body.
    Json,
    /// Status, gRPC code and the error body's shape: the message is the
    /// JSON decoder's own wording.
    ErrorShape,
    /// Status and body as they are.
    Verbatim,
}

fn comparable(status: u16, body: &str, how: Compare) -> String {
    match how {
        Compare::Verbatim => format!("{status} {body}"),
        Compare::Json => {
            let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
            format!("{status} {}", normalize(&v))
        }
        Compare::ErrorShape => {
            let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
            let shaped = v["error"].is_string() && v["message"] == v["error"] && v.as_object().is_some_and(|o| o.len() == 3);
            format!("{status} code={} shaped={shaped}", v["code"])
        }
    }
}

struct Pair {
    etcd: Server,
    cairn: Server,
    /// Every difference found, reported together at the end.
    differences: std::cell::RefCell<Vec<String>>,
}

impl Pair {
    fn start(args: &[&str]) -> Pair {
        Pair {
            etcd: Server::start_with_args(Kind::Etcd, args),
            cairn: Server::start_with_args(Kind::Cairn, args),
            differences: Default::default(),
        }
    }

    fn same(&self, what: &str, req: &Request, how: Compare) {
        let (es, eb) = exchange(&self.etcd.endpoint(), req);
        let (cs, cb) = exchange(&self.cairn.endpoint(), req);
        if comparable(cs, &cb, how) != comparable(es, &eb, how) {
            self.differences
                .borrow_mut()
                .push(format!("{what}:\n  cairn: {cs} {cb}\n  etcd:  {es} {eb}"));
        }
    }

    #[track_caller]
    fn assert_no_differences(&self) {
        let d = self.differences.borrow();
        assert!(d.is_empty(), "cairn differs from etcd in {} cases:\n{}", d.len(), d.join("\n"));
    }
}

fn put_body(value_len: usize) -> String {
    format!(r#"{{"key":"{}","value":"{}"}}"#, b64("big"), b64(&"x".repeat(value_len)))
}

#[test]
fn hostile_bodies_and_paths_match_etcd() {
    // Small enough that a too-large request is cheap to send.
    let p = Pair::start(&["--max-request-bytes", "4096"]);
    let foo = b64("foo");
    let range_cases: Vec<(&str, String, Compare)> = vec![
        ("unterminated object", "{".into(), Compare::ErrorShape),
        ("missing value", r#"{"key":}"#.into(), Compare::ErrorShape),
        ("an array", "[]".into(), Compare::ErrorShape),
        ("a string", r#""str""#.into(), Compare::ErrorShape),
        ("null is all defaults", "null".into(), Compare::Json),
        ("trailing garbage after the object", "{}x".into(), Compare::Json),
        (
            "two objects: the first counts",
            format!(r#"{{"key":"{foo}"}}{{"key":"YmFy"}}"#),
            Compare::Json,
        ),
        ("key as a number", r#"{"key":5}"#.into(), Compare::ErrorShape),
        ("key as an array", r#"{"key":["a"]}"#.into(), Compare::ErrorShape),
        (
            "limit as a word",
            format!(r#"{{"key":"{foo}","limit":"abc"}}"#),
            Compare::ErrorShape,
        ),
        ("limit as a bool", format!(r#"{{"key":"{foo}","limit":true}}"#), Compare::ErrorShape),
        ("limit fractional", format!(r#"{{"key":"{foo}","limit":1.5}}"#), Compare::ErrorShape),
        (
            "limit past int64",
            format!(r#"{{"key":"{foo}","limit":"99999999999999999999"}}"#),
            Compare::ErrorShape,
        ),
        (
            "keys_only as a word",
            format!(r#"{{"key":"{foo}","keys_only":"yes"}}"#),
            Compare::ErrorShape,
        ),
        (
            "unknown enum name",
            format!(r#"{{"key":"{foo}","sort_order":"SIDEWAYS"}}"#),
            Compare::ErrorShape,
        ),
        (
            "unknown fields are skipped",
            r#"{"nope":1,"also":{"x":[1,2]}}"#.into(),
            Compare::Json,
        ),
        (
            "deep nesting",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            Compare::ErrorShape,
        ),
        ("invalid UTF-8", "{\"key\":\"\u{fffd}\"}".into(), Compare::ErrorShape),
    ];
    for (what, body, how) in &range_cases {
        p.same(what, &Request::post("/v3/kv/range", body.as_bytes()), *how);
    }
    p.same(
        "invalid UTF-8 bytes",
        &Request::post("/v3/kv/range", b"{\"key\":\"\xff\xfe\"}"),
        Compare::ErrorShape,
    );
    p.same(
        "a wrong type inside a txn",
        &Request::post("/v3/kv/txn", br#"{"success":[{"request_put":{"key":5}}]}"#),
        Compare::ErrorShape,
    );
    p.same(
        "TTL as a word",
        &Request::post("/v3/lease/grant", br#"{"TTL":"abc"}"#),
        Compare::ErrorShape,
    );
    // Past --max-request-bytes, within gRPC's allowance above it: etcd's own
    // check. Past that allowance too: gRPC's message limit.
    p.same(
        "a put over --max-request-bytes",
        &Request::post("/v3/kv/put", put_body(8000).as_bytes()),
        Compare::Json,
    );
    p.same(
        "a put over the gRPC message limit",
        &Request::post("/v3/kv/put", put_body(600_000).as_bytes()),
        Compare::ErrorShape,
    );
    p.same(
        "a body far over any limit",
        &Request::post("/v3/kv/put", put_body(3_000_000).as_bytes()),
        Compare::ErrorShape,
    );
    p.same(
        "nothing stored by the refused puts",
        &Request::post("/v3/kv/range", br#"{"key":"YmlnAA=="}"#),
        Compare::Json,
    );
    let text_plain = ["-H".to_string(), "Content-Type: text/plain".to_string()];
    p.same(
        "a JSON body sent as text/plain",
        &Request::post("/v3/kv/range", format!(r#"{{"key":"{foo}"}}"#).as_bytes()).with_args(&text_plain),
        Compare::Json,
    );
    let chunked = ["-H".to_string(), "Transfer-Encoding: chunked".to_string()];
    p.same(
        "a chunked body",
        &Request::post("/v3/kv/put", format!(r#"{{"key":"{foo}","value":"{foo}"}}"#).as_bytes()).with_args(&chunked),
        Compare::Json,
    );
    for path in [
        "/v3/kv/range/extra",
        "/v3/",
        "/v4/kv/range",
        "/v3/kv/Range",
        "/V3/kv/range",
        "/metrics/x",
        "/health/",
        "/v3/watch/x",
        "/v3beta",
        "/v3alpha/",
    ] {
        p.same(&format!("unknown path {path}"), &Request::post(path, b"{}"), Compare::Verbatim);
    }
    p.same(
        "a query string is ignored",
        &Request::post("/v3/kv/range?x=1", b"{}"),
        Compare::Json,
    );
    // Go's HTTP mux redirects to the clean path; curl does not follow.
    let path_as_is = ["--path-as-is".to_string(), "-D".to_string(), "/dev/stderr".to_string()];
    for (method, path) in [
        ("POST", "/v3"),
        ("POST", "//v3/kv/range"),
        ("POST", "/v3/kv/../kv/range?a=b"),
        ("GET", "//health"),
    ] {
        let req = Request {
            method,
            path,
            body: (method == "POST").then_some(&b"{}"[..]),
            args: &path_as_is,
        };
        p.same(&format!("{method} {path}"), &req, Compare::Verbatim);
        let location = |s: &Server| redirect_location(&s.endpoint(), method, path);
        assert_eq!(location(&p.cairn), location(&p.etcd), "{method} {path}: Location");
    }
    for method in ["PUT", "DELETE", "GET", "PATCH"] {
        let req = Request {
            method,
            path: "/v3/kv/range",
            body: None,
            args: &[],
        };
        p.same(&format!("{method} on a gateway route"), &req, Compare::Verbatim);
    }
    p.assert_no_differences();
    // Still serving, over both protocols.
    let (status, _) = post_json(
        &p.cairn.endpoint(),
        "/v3/kv/put",
        &json!({"key": b64("after"), "value": b64("1")}),
        &[],
    );
    assert_eq!(status, 200);
    let got = etcdctl(&p.cairn.endpoint(), &["get", "after", "--print-value-only"]);
    assert_eq!(got.assert_ok().stdout.trim(), "1");
}

fn redirect_location(base: &str, method: &str, path: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-s", "--path-as-is", "-o", "/dev/null", "-D", "-", "-X", method])
        .arg(format!("{base}{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
        .map(|l| l.trim().to_string())
}

/// Each server's own token for a user, through `/v3/auth/authenticate`.
fn token(base: &str, name: &str, password: &str) -> String {
    let (status, reply) = post_json(base, "/v3/auth/authenticate", &json!({"name": name, "password": password}), &[]);
    assert_eq!(status, 200, "{reply}");
    reply["token"].as_str().expect("token").to_string()
}

#[test]
fn auth_over_gateway_matches_etcd() {
    let p = Pair::start(&[]);
    let (foo, fop) = (b64("foo"), b64("fop"));
    let setup: Vec<(&str, Value)> = vec![
        ("/v3/auth/role/add", json!({"name": "root"})),
        ("/v3/auth/user/add", json!({"name": "root", "password": "rootpw"})),
        ("/v3/auth/user/grant", json!({"user": "root", "role": "root"})),
        ("/v3/auth/role/add", json!({"name": "reader"})),
        (
            "/v3/auth/role/grant",
            json!({"name": "reader", "perm": {"permType": "READ", "key": foo, "range_end": fop}}),
        ),
        ("/v3/auth/user/add", json!({"name": "alice", "password": "alicepw"})),
        ("/v3/auth/user/grant", json!({"user": "alice", "role": "reader"})),
        ("/v3/auth/enable", json!({})),
    ];
    for (path, body) in &setup {
        let text = body.to_string();
        p.same(path, &Request::post(path, text.as_bytes()), Compare::Json);
    }
    p.assert_no_differences();
    let root = (
        token(&p.etcd.endpoint(), "root", "rootpw"),
        token(&p.cairn.endpoint(), "root", "rootpw"),
    );
    let alice = (
        token(&p.etcd.endpoint(), "alice", "alicepw"),
        token(&p.cairn.endpoint(), "alice", "alicepw"),
    );
    // Each side's own token in the same place.
    let both = |what: &str, path: &str, body: Value, tokens: Option<(&str, &String, &String)>, how: Compare| {
        let text = body.to_string();
        let headers = |t: Option<&String>| -> Vec<String> {
            match (tokens, t) {
                (Some((header, _, _)), Some(t)) => vec!["-H".into(), format!("{header}: {t}")],
                _ => vec![],
            }
        };
        let (eh, ch) = (headers(tokens.map(|t| t.1)), headers(tokens.map(|t| t.2)));
        let (es, eb) = exchange(&p.etcd.endpoint(), &Request::post(path, text.as_bytes()).with_args(&eh));
        let (cs, cb) = exchange(&p.cairn.endpoint(), &Request::post(path, text.as_bytes()).with_args(&ch));
        assert_eq!(
            comparable(cs, &cb, how),
            comparable(es, &eb, how),
            "{what}: cairn (left) differs from etcd (right)\ncairn: {cb}\netcd: {eb}"
        );
    };
    let auth = |t: &(String, String)| -> (String, String) { (t.0.clone(), t.1.clone()) };
    let (re, rc) = auth(&root);
    let (ae, ac) = auth(&alice);
    let root_h = Some(("Authorization", &re, &rc));
    let alice_h = Some(("Authorization", &ae, &ac));
    let put = json!({"key": foo, "value": b64("v")});
    let get = json!({"key": foo});
    both("a put without a token", "/v3/kv/put", put.clone(), None, Compare::Json);
    both("a range without a token", "/v3/kv/range", get.clone(), None, Compare::Json);
    both("root puts", "/v3/kv/put", put.clone(), root_h, Compare::Json);
    both("alice reads what she may", "/v3/kv/range", get.clone(), alice_h, Compare::Json);
    both("alice may not write", "/v3/kv/put", put.clone(), alice_h, Compare::Json);
    both(
        "alice may not read elsewhere",
        "/v3/kv/range",
        json!({"key": b64("bar")}),
        alice_h,
        Compare::Json,
    );
    both(
        "alice may not write in a txn",
        "/v3/kv/txn",
        json!({"success": [{"request_put": {"key": foo, "value": foo}}]}),
        alice_h,
        Compare::Json,
    );
    both("alice may not list users", "/v3/auth/user/list", json!({}), alice_h, Compare::Json);
    both(
        "alice grants a lease",
        "/v3/lease/grant",
        json!({"TTL": 30}),
        alice_h,
        Compare::Json,
    );
    both("a lock without a token", "/v3/lock/lock", json!({"name": foo}), None, Compare::Json);
    // etcd 3.4 lists members to anyone; cairn, as etcd 3.6, to users only.
    both(
        "member list with a token",
        "/v3/cluster/member/list",
        json!({}),
        alice_h,
        Compare::ErrorShape,
    );
    let garbage = "garbage.1".to_string();
    both(
        "an unknown token",
        "/v3/kv/range",
        get.clone(),
        Some(("Authorization", &garbage, &garbage)),
        Compare::Json,
    );
    let (be, bc) = (format!("Bearer {ae}"), format!("Bearer {ac}"));
    both(
        "a Bearer prefix is not etcd's form",
        "/v3/kv/range",
        get.clone(),
        Some(("Authorization", &be, &bc)),
        Compare::Json,
    );
    both(
        "grpc-gateway's metadata header carries the token too",
        "/v3/kv/range",
        get.clone(),
        Some(("Grpc-Metadata-Token", &ae, &ac)),
        Compare::Json,
    );
    both(
        "a plain token header is not forwarded",
        "/v3/kv/range",
        get.clone(),
        Some(("token", &ae, &ac)),
        Compare::Json,
    );
    for (name, password) in [("alice", "wrong"), ("bob", "x")] {
        both(
            &format!("authenticate {name}:{password}"),
            "/v3/auth/authenticate",
            json!({"name": name, "password": password}),
            None,
            Compare::Json,
        );
    }
    both("root disables auth", "/v3/auth/disable", json!({}), root_h, Compare::Json);
    both("open again", "/v3/kv/put", put, None, Compare::Json);
}

/// Writes `bytes` one at a time, a pause apart, to every connection;
/// returns how many the server closed on the way.
fn drip(conns: &mut [TcpStream], bytes: &[u8], pause: Duration) -> usize {
    let mut closed = vec![false; conns.len()];
    for b in bytes {
        for (c, gone) in conns.iter_mut().zip(closed.iter_mut()) {
            if !*gone && c.write_all(&[*b]).is_err() {
                *gone = true;
            }
        }
        std::thread::sleep(pause);
    }
    closed.iter().filter(|c| **c).count()
}

/// Whether the server has closed `conn` (EOF, reset, or an error answer
/// followed by close), waiting at most `within`.
fn closed_by_server(mut conn: &TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        conn.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        match conn.read(&mut buf) {
            Ok(0) => return true,
            // An error answer (408) before the close: keep reading.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn slow_clients_do_not_starve_the_server() {
    let server = Server::start(Kind::Cairn);
    let addr = server.client_addr();
    let rt = harness::runtime();
    // A gRPC client connected before the flood.
    let mut early = rt
        .block_on(etcd_client::Client::connect([server.endpoint()], None))
        .expect("connect");
    // A gateway watch, whose response streams for longer than any of the
    // timeouts below: they bound requests being sent, not answers.
    let mut watch = std::process::Command::new("curl")
        .args(["-s", "-N", "--max-time", "150", "-X", "POST", "--data-binary"])
        .arg(json!({"create_request": {"key": b64("watched")}}).to_string())
        .arg(format!("{}/v3/watch", server.endpoint()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let mut watch_lines = std::io::BufReader::new(watch.stdout.take().expect("stdout"));
    let mut created = String::new();
    std::io::BufRead::read_line(&mut watch_lines, &mut created).expect("watch created");
    assert!(created.contains(r#""created":true"#), "{created}");
    // Slow-loris: headers a byte at a time; and connections that say nothing.
    let mut slow: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    let silent: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    let started = Instant::now();
    let closed_early = drip(&mut slow, b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\n", Duration::from_millis(50));
    assert_eq!(closed_early, 0, "slow connections closed before any timeout");
    // Meanwhile the server answers everyone else, old and new connections.
    for i in 0..5 {
        rt.block_on(early.put(format!("k{i}"), "v", None))
            .expect("gRPC put on an existing connection");
        let got = etcdctl(&server.endpoint(), &["get", &format!("k{i}"), "--print-value-only"]);
        assert_eq!(got.assert_ok().stdout.trim(), "v");
        let (status, _) = exchange(&server.endpoint(), &Request::get("/health"));
        assert_eq!(status, 200);
    }
    // The server gives up on them: the header timeout for the slow ones,
    // the first-bytes timeout for the silent ones (30 s each, from their
    // start), long before this bound.
    let bound = Duration::from_secs(90).saturating_sub(started.elapsed());
    let slow_closed = slow.iter().filter(|c| closed_by_server(c, bound)).count();
    let silent_closed = silent.iter().filter(|c| closed_by_server(c, Duration::from_secs(5))).count();
    assert_eq!(slow_closed, slow.len(), "slow-loris connections still open");
    assert_eq!(silent_closed, silent.len(), "silent connections still open");
    rt.block_on(early.put("after", "v", None)).expect("gRPC after the flood");
    // The watch opened before it all is still there, past every timeout.
    rt.block_on(early.put("watched", "v", None)).expect("put");
    let mut event = String::new();
    std::io::BufRead::read_line(&mut watch_lines, &mut event).expect("watch event");
    assert!(event.contains(&b64("watched")) && event.contains("events"), "{event:?}");
    let _ = watch.kill();
    let _ = watch.wait();
}

/// Raises this process's open-file limit (which the server started next
/// inherits) to what the flood below needs, as far as the hard limit allows.
fn raise_open_files(want: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit with a valid rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}

#[test]
fn connection_limit_holds_and_recovers() {
    let open_files = raise_open_files(10_000);
    assert!(open_files >= 5000, "the open-file limit ({open_files}) is too low for this test");
    let server = Server::start(Kind::Cairn);
    let addr = server.client_addr();
    let rt = harness::runtime();
    let mut early = rt
        .block_on(etcd_client::Client::connect([server.endpoint()], None))
        .expect("connect");
    // More idle connections than the server serves at once (4096): the
    // rest wait in the listen backlog.
    let mut flood = Vec::new();
    for _ in 0..4200 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(c) => flood.push(c),
            Err(_) => break,
        }
    }
    assert!(flood.len() >= 4100, "only {} connections opened", flood.len());
    // The connection opened before keeps working at the limit.
    for i in 0..3 {
        rt.block_on(early.put(format!("during{i}"), "v", None))
            .expect("gRPC on an existing connection at the limit");
    }
    // Once the idle ones time out the server accepts new clients again.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = etcdctl(&server.endpoint(), &["get", "during0", "--print-value-only"]);
        if got.status == Some(0) && got.stdout.trim() == "v" {
            break;
        }
        assert!(Instant::now() < deadline, "no new connection served after the flood: {got:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(flood);
    let (status, _) = exchange(&server.endpoint(), &Request::get("/health"));
    assert_eq!(status, 200);
}

fn tls_args(pki: &Pki, client: Option<&CertFiles>) -> Vec<String> {
    let mut args = vec!["--cacert".to_string(), pki.ca_file().display().to_string()];
    if let Some(c) = client {
        args.extend([
            "--cert".into(),
            c.cert.display().to_string(),
            "--key".into(),
            c.key.display().to_string(),
        ]);
    }
    args
}

#[test]
fn https_metrics_listener_as_etcd() {
    let pki = Pki::new("ca");
    let server_cert = pki.issue("server", "server", Validity::Current);
    let client_cert = pki.issue("client", "alice", Validity::Current);
    let mut flags = client_tls_flags(pki.ca_file(), &server_cert);
    let mut outcomes = Vec::new();
    for kind in [Kind::Etcd, Kind::Cairn] {
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        flags.extend(["--listen-metrics-urls".to_string(), url.clone()]);
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        let server = Server::start_with_args(kind, &args);
        flags.truncate(flags.len() - 2);
        let with_cert = tls_args(&pki, Some(&client_cert));
        let without_cert = tls_args(&pki, None);
        // The metrics listener may come up just after the client port the
        // harness waited for.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (status, metrics) = loop {
            match curl(&url, &Request::get("/metrics").with_args(&with_cert)) {
                Ok(answer) => break answer,
                Err(e) if Instant::now() > deadline => panic!("{kind:?}: {url} never answered: {e:?}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        assert_eq!(status, 200, "{kind:?}");
        assert!(metrics.contains("etcd_server_has_leader 1"), "{kind:?}: {metrics}");
        let health = exchange(&url, &Request::get("/health").with_args(&with_cert));
        let not_served = exchange(&url, &Request::post("/v3/kv/range", b"{}").with_args(&with_cert));
        // --client-cert-auth: no certificate, no answer.
        let refused = curl(&url, &Request::get("/metrics").with_args(&without_cert)).is_err();
        // The client port itself stays plain HTTP.
        let (client_status, _) = exchange(&server.endpoint(), &Request::get("/health"));
        outcomes.push((kind, health, not_served, refused, client_status));
    }
    let cairn = outcomes.pop().expect("cairn");
    let etcd = outcomes.pop().expect("etcd");
    assert_eq!(
        (&cairn.1, &cairn.2, cairn.3, cairn.4),
        (&etcd.1, &etcd.2, etcd.3, etcd.4),
        "cairn (left) differs from etcd (right)"
    );
    assert!(cairn.3, "a client without a certificate was served");
}
