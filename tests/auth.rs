//! Auth (users, roles, tokens, permission checks) against real etcd: the
//! same etcdctl invocations and raw gRPC calls against etcd 3.4 (and, with
//! its own etcdctl, the official etcd 3.5.1) and against cairn, compared
//! after normalisation, error strings and exit codes included; then the
//! checks etcd 3.4 missed and etcd 3.6 makes, against cairn alone; then
//! tokens and auth state across a 3-member cluster.
//!
//! Run etcd-vs-etcd with `CAIRN_TEST_TARGET=etcd` to validate the scenarios
//! (the 3.6-only checks are then skipped: etcd 3.4 lacks them).

use std::time::Duration;

use cairn_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use harness::auth::{self as a, ROOT};
use harness::{both, etcdctl, etcdctl_stdin, target_kind, txn_input, Cluster, Differential, Kind, Server};
use serde_json::{json, Value};

/// Both sides of `d` get users, roles and auth on, the same way.
fn enable_auth(d: &mut Differential) {
    d.ctl("enable without a root user", &["auth", "enable"]);
    let mut outputs = Vec::new();
    a::setup_users(|step, args| {
        let (r, t) = d.ctl(step, args);
        outputs.push(t.clone());
        r
    });
    for o in &outputs {
        o.assert_ok();
    }
}

/// The etcdctl scenario every reference runs: set-up, allowed and denied
/// reads, writes and txns, wrong credentials, admin-only commands for a
/// user without roles, user and role listings, auth disabled again.
fn etcdctl_scenario(d: &mut Differential, etcd35: bool) {
    enable_auth(d);
    d.ctl("anonymous put", &["put", "foo/a", "1"]);
    d.ctl("anonymous get", &["get", "foo/a"]);
    d.ctl("root put", &["--user", ROOT, "put", "foo/a", "1"]);
    d.ctl("root put key1", &["--user", ROOT, "put", "key1", "k"]);
    d.ctl("root put bar", &["--user", ROOT, "put", "bar", "b", "-w", "json"]);
    d.ctl("root get", &["--user", ROOT, "get", "", "--prefix", "-w", "json"]);
    d.ctl("root with --password", &["--user", "root", "--password", "rootpw", "get", "bar"]);

    d.ctl("alice reads her prefix", &["--user", "alice:apw", "get", "foo/a", "-w", "json"]);
    d.ctl("alice reads the whole prefix", &["--user", "alice:apw", "get", "foo/", "--prefix"]);
    d.ctl("alice reads beyond her prefix", &["--user", "alice:apw", "get", "foo", "--prefix"]);
    d.ctl("alice reads another key", &["--user", "alice:apw", "get", "bar"]);
    d.ctl("alice reads everything", &["--user", "alice:apw", "get", "", "--from-key"]);
    d.ctl(
        "alice reads serializably",
        &["--user", "alice:apw", "get", "bar", "--consistency=s"],
    );
    d.ctl("alice puts into a read-only prefix", &["--user", "alice:apw", "put", "foo/b", "1"]);
    d.ctl("alice deletes in a read-only prefix", &["--user", "alice:apw", "del", "foo/a"]);
    d.ctl("alice deletes a prefix", &["--user", "alice:apw", "del", "wo/", "--prefix"]);
    d.ctl("alice writes her write-only prefix", &["--user", "alice:apw", "put", "wo/x", "1"]);
    d.ctl("prev-kv needs read", &["--user", "alice:apw", "put", "wo/x", "2", "--prev-kv"]);
    d.ctl("alice reads write-only", &["--user", "alice:apw", "get", "wo/x"]);
    d.ctl(
        "alice readwrite key",
        &["--user", "alice:apw", "put", "key1", "k2", "--prev-kv", "-w", "json"],
    );

    let denied_compare = txn_input(&[r#"value("bar") = "b""#], &["put key1 t1"], &[]);
    d.ctl_stdin("txn compare needs read", &["--user", "alice:apw", "txn"], denied_compare.as_bytes());
    let denied_failure = txn_input(&[r#"value("key1") = "nope""#], &["put key1 t2"], &["del foo/a"]);
    d.ctl_stdin(
        "txn failure branch is checked",
        &["--user", "alice:apw", "txn"],
        denied_failure.as_bytes(),
    );
    let denied_get = txn_input(&[], &["get bar"], &[]);
    d.ctl_stdin(
        "txn get needs read",
        &["--user", "alice:apw", "txn", "-w", "json"],
        denied_get.as_bytes(),
    );
    let allowed = txn_input(&[r#"value("key1") = "k2""#], &["put key1 t3", "get foo/a"], &["get foo/a"]);
    d.ctl_stdin("txn allowed", &["--user", "alice:apw", "txn", "-w", "json"], allowed.as_bytes());

    d.ctl("wrong password", &["--user", "alice:wrong", "get", "foo/a"]);
    d.ctl("unknown user", &["--user", "nobody:x", "get", "foo/a"]);
    d.ctl("bob has no role", &["--user", "bob:bpw", "get", "foo/a"]);
    d.ctl("bob lists members", &["--user", "bob:bpw", "member", "list", "-w", "json"]);
    d.ctl("bob reads status", &["--user", "bob:bpw", "endpoint", "status", "-w", "json"]);
    d.ctl("bob health", &["--user", "bob:bpw", "endpoint", "health"]);
    d.ctl("bob hashkv", &["--user", "bob:bpw", "endpoint", "hashkv"]);
    d.ctl("bob defrag", &["--user", "bob:bpw", "defrag"]);
    d.ctl("anonymous hashkv", &["endpoint", "hashkv"]);
    d.ctl("anonymous defrag", &["defrag"]);
    let (ref_db, tgt_db) = (
        d.reference.dir().join("bob.db").display().to_string(),
        d.target.dir().join("bob.db").display().to_string(),
    );
    d.ctl_each(
        "bob snapshot",
        &["--user", "bob:bpw", "snapshot", "save", &ref_db],
        &["--user", "bob:bpw", "snapshot", "save", &tgt_db],
        None,
    );
    d.ctl("bob grants a lease", &["--user", "bob:bpw", "lease", "grant", "100", "-w", "json"]);
    d.ctl(
        "bob adds a member",
        &["--user", "bob:bpw", "member", "add", "x", "--peer-urls=http://127.0.0.1:1"],
    );
    d.ctl("bob lists users", &["--user", "bob:bpw", "user", "list"]);
    d.ctl(
        "bob adds a user",
        &[
            "--user",
            "bob:bpw",
            "user",
            "add",
            "eve",
            "--new-user-password=e",
            "--interactive=false",
        ],
    );
    d.ctl("bob disables auth", &["--user", "bob:bpw", "auth", "disable"]);
    d.ctl("alice gets herself", &["--user", "alice:apw", "user", "get", "alice"]);
    d.ctl("alice gets bob", &["--user", "alice:apw", "user", "get", "bob"]);
    d.ctl("alice gets her role", &["--user", "alice:apw", "role", "get", "reader"]);
    d.ctl("alice gets root's role", &["--user", "alice:apw", "role", "get", "root"]);

    d.ctl("user list", &["--user", ROOT, "user", "list"]);
    d.ctl("user list json", &["--user", ROOT, "user", "list", "-w", "json"]);
    d.ctl("role list", &["--user", ROOT, "role", "list"]);
    d.ctl("role get", &["--user", ROOT, "role", "get", "reader"]);
    d.ctl("role get json", &["--user", ROOT, "role", "get", "reader", "-w", "json"]);
    d.ctl("user get", &["--user", ROOT, "user", "get", "alice"]);
    d.ctl("user get json", &["--user", ROOT, "user", "get", "alice", "-w", "json"]);
    d.ctl("user get missing", &["--user", ROOT, "user", "get", "nobody"]);
    d.ctl("role get missing", &["--user", ROOT, "role", "get", "nobody"]);
    d.ctl(
        "user add twice",
        &["--user", ROOT, "user", "add", "bob", "--new-user-password=x", "--interactive=false"],
    );
    d.ctl("grant missing role", &["--user", ROOT, "user", "grant-role", "bob", "nobody"]);
    if etcd35 {
        d.ctl("auth status", &["--user", ROOT, "auth", "status"]);
        d.ctl("auth status json", &["--user", ROOT, "auth", "status", "-w", "json"]);
    }

    // Taking a permission away takes effect at once.
    d.ctl(
        "revoke read foo/",
        &["--user", ROOT, "role", "revoke-permission", "reader", "foo/", "--prefix"],
    );
    d.ctl("alice after the revoke", &["--user", "alice:apw", "get", "foo/a"]);
    d.ctl("revoke role", &["--user", ROOT, "user", "revoke-role", "alice", "reader"]);
    d.ctl("alice without her role", &["--user", "alice:apw", "get", "key1"]);
    d.ctl("grant bob", &["--user", ROOT, "role", "grant-permission", "reader", "read", "bar"]);
    d.ctl("grant reader to bob", &["--user", ROOT, "user", "grant-role", "bob", "reader"]);
    d.ctl("bob reads bar now", &["--user", "bob:bpw", "get", "bar"]);
    d.ctl("delete alice", &["--user", ROOT, "user", "delete", "alice"]);
    d.ctl("alice deleted", &["--user", "alice:apw", "get", "bar"]);
    if etcd35 {
        d.ctl("auth status after changes", &["--user", ROOT, "auth", "status", "-w", "json"]);
    }

    d.ctl("auth disable", &["--user", ROOT, "auth", "disable"]);
    d.ctl("anonymous get after disable", &["get", "foo/a", "-w", "json"]);
    d.ctl("anonymous put after disable", &["put", "foo/c", "3", "-w", "json"]);
    d.ctl("users kept after disable", &["user", "list"]);
    d.ctl("auth disable twice", &["auth", "disable"]);
    d.ctl("delete the root role while disabled", &["role", "delete", "root"]);
    d.ctl("enable again", &["auth", "enable"]);
    d.ctl("root after enabling again", &["--user", ROOT, "get", "bar"]);
}

#[test]
fn etcdctl_auth_against_etcd34() {
    let mut d = Differential::start();
    etcdctl_scenario(&mut d, false);
}

#[test]
fn etcdctl_auth_against_etcd35() {
    let mut d = Differential::start_against(Kind::Etcd35, Some(harness::etcdctl35_bin()), &[]);
    let version = std::process::Command::new(harness::etcd35_bin())
        .arg("--version")
        .output()
        .expect("run etcd 3.5.1 --version");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains(&format!("etcd Version: {}", harness::ETCD35_VERSION)), "{version}");
    etcdctl_scenario(&mut d, true);
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

fn get_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn del_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn txn_op(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(t)),
    }
}

fn version_is(key: &str, version: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Version as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::Version(version)),
    }
}

/// `inner` nested two levels deep.
fn nested_txn(inner: TxnRequest) -> TxnRequest {
    TxnRequest {
        compare: vec![],
        success: vec![txn_op(TxnRequest {
            compare: vec![],
            success: vec![txn_op(inner)],
            failure: vec![],
        })],
        failure: vec![],
    }
}

fn single_op_txn(op: RequestOp) -> TxnRequest {
    TxnRequest {
        compare: vec![],
        success: vec![op],
        failure: vec![],
    }
}

async fn txn(endpoint: &str, token: Option<&str>, t: TxnRequest) -> Value {
    let mut kv = KvClient::new(a::channel(endpoint).await);
    a::outcome(
        kv.txn(a::with_token(t, token)).await,
        |r| json!({ "succeeded": r.into_inner().succeeded }),
    )
}

/// The watch creates of [`grpc_session`].
async fn grpc_watches(ep: &str, root: Option<&str>, alice: Option<&str>, bob: Option<&str>, note: &mut impl FnMut(&str, Value)) {
    note("watch own key", a::watch_create(ep, alice, b"foo/a", b"").await);
    note("watch own prefix", a::watch_create(ep, alice, b"foo/", b"foo0").await);
    note("watch inside prefix", a::watch_create(ep, alice, b"foo/a", b"foo/b").await);
    note("watch beyond prefix", a::watch_create(ep, alice, b"foo/", b"foo1").await);
    note("watch other key", a::watch_create(ep, alice, b"bar", b"").await);
    note("watch write-only", a::watch_create(ep, alice, b"wo/x", b"").await);
    note("watch no role", a::watch_create(ep, bob, b"foo/a", b"").await);
    note("watch anonymous", a::watch_create(ep, None, b"foo/a", b"").await);
    note("watch bad token", a::watch_create(ep, Some("not-a-token"), b"foo/a", b"").await);
    note("watch root", a::watch_create(ep, root, b"", b"\0").await);
}

/// Nested txns, watches, leases and bad tokens, as raw gRPC calls whose
/// outcomes (values, or code and message) are compared.
async fn grpc_session(ep: String, etcd35: bool) -> Value {
    let root = a::token_of(&ep, "root", a::ROOT_PASSWORD).await;
    let alice = a::token_of(&ep, "alice", "apw").await;
    let bob = a::token_of(&ep, "bob", "bpw").await;
    let (root, alice, bob) = (Some(root.as_str()), Some(alice.as_str()), Some(bob.as_str()));
    let mut out = serde_json::Map::new();
    let mut note = |k: &str, v: Value| {
        out.insert(k.to_string(), v);
    };

    let read_lease = a::lease_grant(&ep, root, 600).await.expect("root grants a lease");
    let write_lease = a::lease_grant(&ep, root, 600).await.expect("root grants a lease");
    note("put foo/a", a::put(&ep, root, "foo/a", "1", read_lease).await);
    note("put wo/l", a::put(&ep, root, "wo/l", "w", write_lease).await);
    note("put bar", a::put(&ep, root, "bar", "b", 0).await);

    // Nested txns that stay within the caller's keys (etcd 3.4 checks no
    // deeper than the first level: the refusals are in the 3.6 checks).
    let (nested, only) = (nested_txn, single_op_txn);
    note("nested allowed", txn(&ep, alice, nested(only(get_op("foo/a")))).await);
    note("nested write allowed", txn(&ep, alice, nested(only(put_op("wo/n", "n")))).await);

    // Watches: READ on exactly the watched range. etcd 3.5.1 answers a
    // refused create with watch id 0, and anonymous or bad tokens as
    // permission denied; cairn answers as 3.4 (and 3.6) do.
    if !etcd35 {
        grpc_watches(&ep, root, alice, bob, &mut note).await;
    }

    // Leases: revoking needs WRITE on every attached key.
    note("ttl without keys", a::lease_time_to_live(&ep, alice, read_lease, false).await);
    note("revoke denied", a::lease_revoke(&ep, alice, read_lease).await);
    note("revoke no role", a::lease_revoke(&ep, bob, write_lease).await);
    note("key kept", a::get(&ep, root, "foo/a").await);
    note("revoke allowed", a::lease_revoke(&ep, alice, write_lease).await);
    note("key gone with its lease", a::get(&ep, root, "wo/l").await);

    // The Lock and Election services act with the caller's identity.
    let alice_lease = a::lease_grant(&ep, alice, 600).await.expect("alice grants a lease");
    note("lock denied", a::lock(&ep, alice, "foo/l", alice_lease).await);
    note("lock allowed", a::lock(&ep, alice, "lk/l", alice_lease).await);
    note("lock no role", a::lock(&ep, bob, "lk/l", 0).await);
    note("campaign denied", a::campaign(&ep, alice, "foo/e", alice_lease).await);
    note("campaign allowed", a::campaign(&ep, alice, "lk/e", alice_lease).await);
    note("campaign no role", a::campaign(&ep, bob, "lk/e", 0).await);
    note("lock anonymous", a::lock(&ep, None, "lk/l", 0).await);

    // Bad tokens.
    note("get bad token", a::get(&ep, Some("not-a-token"), "foo/a").await);
    note("put bad token", a::put(&ep, Some("not-a-token"), "wo/q", "q", 0).await);
    note(
        "authenticate wrong password",
        a::outcome(a::authenticate(&ep, "alice", "nope").await, |_| json!(true)),
    );
    note(
        "authenticate unknown user",
        a::outcome(a::authenticate(&ep, "nobody", "x").await, |_| json!(true)),
    );
    // None of that hurt: the member serves.
    note("served afterwards", a::get(&ep, root, "foo/a").await);
    note("alice served afterwards", a::get(&ep, alice, "foo/a").await);
    Value::Object(out)
}

#[test]
fn grpc_txns_watches_leases_against_etcd34() {
    let mut d = Differential::start();
    enable_auth(&mut d);
    d.compare_sessions("txns, watches, leases, bad tokens", |ep| grpc_session(ep, false));
}

#[test]
fn grpc_txns_watches_leases_against_etcd35() {
    let mut d = Differential::start_against(Kind::Etcd35, Some(harness::etcdctl35_bin()), &[]);
    enable_auth(&mut d);
    d.compare_sessions("txns, leases, bad tokens", |ep| grpc_session(ep, true));
}

/// Starts the system under test with auth on, or `None` (with a note) when
/// the target is etcd 3.4, which lacks the checks asserted next.
fn target_with_auth(args: &[&str]) -> Option<Server> {
    if target_kind() != Kind::Cairn {
        eprintln!("etcd 3.4 lacks the checks etcd 3.6 makes; this scenario asserts them against cairn only");
        return None;
    }
    let mut s = Server::start_with_args(Kind::Cairn, args);
    let ep = s.endpoint();
    for o in a::setup_users(|_, args| etcdctl(&ep, args)) {
        o.assert_ok();
    }
    s.set_probe_user(Some(ROOT));
    Some(s)
}

fn denied() -> Value {
    json!({ "error": { "code": "PermissionDenied", "message": "etcdserver: permission denied" } })
}

fn user_empty() -> Value {
    json!({ "error": { "code": "InvalidArgument", "message": "etcdserver: user name is empty" } })
}

/// etcd 3.4's maintenance server answers refused admin calls with the auth
/// store's own error, which gRPC reports as Unknown (3.4 and 3.5.1 agree).
fn maintenance_denied() -> Value {
    json!({ "error": { "code": "Unknown", "message": "auth: permission denied" } })
}

#[test]
fn checks_etcd34_missed_as_etcd36_makes_them() {
    let Some(server) = target_with_auth(&[]) else { return };
    let ep = server.endpoint();
    let rt = harness::runtime();
    rt.block_on(async {
        let root = a::token_of(&ep, "root", a::ROOT_PASSWORD).await;
        let alice = a::token_of(&ep, "alice", "apw").await;
        let bob = a::token_of(&ep, "bob", "bpw").await;
        let (root, alice, bob) = (Some(root.as_str()), Some(alice.as_str()), Some(bob.as_str()));
        let read_lease = a::lease_grant(&ep, root, 600).await.expect("grant");
        let write_lease = a::lease_grant(&ep, root, 600).await.expect("grant");
        assert_eq!(a::put(&ep, root, "foo/a", "1", read_lease).await, json!({"ok": true}));
        assert_eq!(a::put(&ep, root, "wo/l", "w", write_lease).await, json!({"ok": true}));

        // Txns nested at any depth are checked all the way down (etcd 3.4
        // and 3.5.1 check the first level only).
        let nested_denied = [
            nested_txn(single_op_txn(get_op("bar"))),
            nested_txn(single_op_txn(put_op("foo/z", "z"))),
            nested_txn(single_op_txn(del_op("foo/a"))),
            nested_txn(TxnRequest {
                compare: vec![version_is("bar", 1)],
                success: vec![],
                failure: vec![],
            }),
            nested_txn(TxnRequest {
                compare: vec![version_is("key1", 99)],
                success: vec![],
                failure: vec![txn_op(single_op_txn(put_op("bar", "x")))],
            }),
        ];
        for t in nested_denied {
            let what = format!("{t:?}");
            assert_eq!(txn(&ep, alice, t).await, denied(), "{what}");
        }
        assert_eq!(a::get(&ep, root, "foo/a").await, json!({"ok": ["1"]}), "nothing was deleted");

        // Watch from a key to the end of the keyspace: etcd 3.4 checks only
        // the first key of such a range; 3.6 (and cairn) the whole range.
        let refused = json!({
            "created": true,
            "canceled": true,
            "cancel_reason": "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
            "refused_id": true,
        });
        assert_eq!(a::watch_create(&ep, alice, b"foo/", b"\0").await, refused);
        assert_eq!(a::watch_create(&ep, alice, b"foo/a", b"\0").await, refused);
        let granted = json!({"created": true, "canceled": false, "cancel_reason": "", "refused_id": false});
        assert_eq!(a::watch_create(&ep, root, b"foo/", b"\0").await, granted);

        // KeepAlive: WRITE on every attached key (root may always).
        assert_eq!(a::lease_keep_alive_once(&ep, alice, read_lease).await, denied());
        assert_eq!(a::lease_keep_alive_once(&ep, bob, write_lease).await, denied());
        assert_eq!(a::lease_keep_alive_once(&ep, None, write_lease).await, user_empty());
        let renewed = json!({"ok": {"renewed": true}});
        assert_eq!(a::lease_keep_alive_once(&ep, alice, write_lease).await, renewed);
        assert_eq!(a::lease_keep_alive_once(&ep, root, read_lease).await, renewed);

        // TimeToLive with keys: READ on every attached key.
        assert_eq!(a::lease_time_to_live(&ep, alice, write_lease, true).await, denied());
        assert_eq!(
            a::lease_time_to_live(&ep, alice, read_lease, true).await,
            json!({"ok": {"granted_ttl": 600, "keys": ["foo/a"]}})
        );
        assert_eq!(
            a::lease_time_to_live(&ep, root, write_lease, true).await,
            json!({"ok": {"granted_ttl": 600, "keys": ["wo/l"]}})
        );
        assert_eq!(a::lease_time_to_live(&ep, None, read_lease, false).await, user_empty());

        // LeaseLeases: READ on every key of every lease.
        assert_eq!(a::lease_leases(&ep, alice).await, denied());
        assert_eq!(a::lease_leases(&ep, None).await, user_empty());
        assert_eq!(a::lease_leases(&ep, root).await, json!({"ok": 2}));

        // Root-only and logged-in-only calls.
        let ok = json!({"ok": true});
        let as_bob = a::privileged_calls(&ep, bob).await;
        let want_bob = json!({
            "status": ok,
            "member_list": ok,
            "lease_grant": ok,
            "hash_kv": maintenance_denied(),
            "defragment": maintenance_denied(),
            "alarm_deactivate": denied(),
            "move_leader": denied(),
            "compact": denied(),
        });
        assert_eq!(as_bob, want_bob, "calls as a user without roles");
        let anonymous = a::privileged_calls(&ep, None).await;
        for call in ["status", "member_list", "lease_grant", "alarm_deactivate", "move_leader", "compact"] {
            assert_eq!(anonymous[call], user_empty(), "anonymous {call}: {anonymous}");
        }
        let as_root = a::privileged_calls(&ep, root).await;
        for call in [
            "status",
            "member_list",
            "lease_grant",
            "hash_kv",
            "defragment",
            "alarm_deactivate",
            "compact",
        ] {
            assert_eq!(as_root[call], ok, "root {call}: {as_root}");
        }
        // A single member leads itself: a transfer to member 1 is refused
        // for what it is, not for permissions.
        assert_ne!(as_root["move_leader"], denied(), "{as_root}");
    });
    drop(rt);

    // Lock and election go through the caller's identity.
    let out = etcdctl(&ep, &["--user", "alice:apw", "lock", "foo/l", "echo", "held"]);
    out.fails_with(1, "etcdserver: permission denied");
    let out = etcdctl(&ep, &["--user", "alice:apw", "lock", "lk/l", "echo", "held"]);
    assert_eq!(out.assert_ok().stdout.lines().last(), Some("held"), "{out:?}");
    let out = etcdctl(&ep, &["--user", "bob:bpw", "elect", "foo/e", "v"]);
    out.fails_with(1, "etcdserver: permission denied");
    let out = etcdctl(&ep, &["--user", ROOT, "get", "lk/", "--prefix", "--keys-only"]);
    assert_eq!(out.assert_ok().stdout.trim(), "", "the lock was released: {out:?}");
    // The member still serves after every refusal.
    etcdctl(&ep, &["--user", ROOT, "put", "after", "ok"]).assert_ok();
}

/// Lock and Election against both references: the recipes' KV ops are the
/// caller's, so a user without WRITE on the name is refused.
#[test]
fn lock_and_election_follow_the_callers_keys() {
    let mut d = Differential::start();
    enable_auth(&mut d);
    d.ctl("lock denied", &["--user", "alice:apw", "lock", "foo/l", "echo", "held"]);
    d.ctl("lock allowed", &["--user", "alice:apw", "lock", "lk/l", "echo", "held"]);
    d.ctl("elect denied", &["--user", "bob:bpw", "elect", "foo/e", "v"]);
    d.ctl("lock keys released", &["--user", ROOT, "get", "lk/", "--prefix", "--keys-only"]);
}

#[test]
fn simple_token_expires() {
    // A short TTL: a token unused for longer is gone.
    let mut d = Differential::start_with_args(&["--auth-token-ttl=2"]);
    enable_auth(&mut d);
    d.compare_sessions("expired simple token", |ep| async move {
        let alice = a::token_of(&ep, "alice", "apw").await;
        let fresh = a::get(&ep, Some(&alice), "foo/a").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let replayed = a::get(&ep, Some(&alice), "foo/a").await;
        let watch = a::watch_create(&ep, Some(&alice), b"foo/a", b"").await;
        let again = a::token_of(&ep, "alice", "apw").await;
        let relogged = a::get(&ep, Some(&again), "foo/a").await;
        json!({ "fresh": fresh, "replayed": replayed, "watch": watch, "relogged": relogged })
    });
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run openssl {args:?}: {e}"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An RS256 key pair in `dir`; returns the `--auth-token` value using it.
fn jwt_flag(dir: &std::path::Path, name: &str) -> String {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let (private, public) = (private.display().to_string(), public.display().to_string());
    openssl(&["genrsa", "-out", &private, "2048"]);
    openssl(&["rsa", "-in", &private, "-pubout", "-out", &public]);
    format!("--auth-token=jwt,pub-key={public},priv-key={private},sign-method=RS256,ttl=10m")
}

#[test]
fn jwt_signed_by_another_key_is_refused() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (one, other) = (jwt_flag(keys.path(), "one"), jwt_flag(keys.path(), "other"));
    let kind = target_kind();
    // Two servers of each kind, each with a key of its own.
    let start = |k: Kind| {
        let mut servers = Vec::new();
        for flag in [&one, &other] {
            let s = Server::start_with_args(k, &[flag.as_str()]);
            let ep = s.endpoint();
            for o in a::setup_users(|_, args| etcdctl(&ep, args)) {
                o.assert_ok();
            }
            servers.push(s);
        }
        servers
    };
    let (reference, target) = both(|| start(Kind::Etcd), || start(kind));
    let session = |eps: Vec<String>| async move {
        let token = a::token_of(&eps[0], "alice", "apw").await;
        let looks_like_jwt = token.split('.').count() == 3;
        json!({
            "jwt": looks_like_jwt,
            "own key": a::get(&eps[0], Some(&token), "foo/a").await,
            "other key": a::get(&eps[1], Some(&token), "foo/a").await,
            "other key watch": a::watch_create(&eps[1], Some(&token), b"foo/a", b"").await,
            "other serves its own": a::get(&eps[1], Some(&a::token_of(&eps[1], "alice", "apw").await), "foo/a").await,
        })
    };
    let eps = |s: &Vec<Server>| s.iter().map(Server::endpoint).collect::<Vec<_>>();
    let (r, t) = both(
        || harness::runtime().block_on(session(eps(&reference))),
        || harness::runtime().block_on(session(eps(&target))),
    );
    assert_eq!(r["jwt"], json!(true), "etcd issued no JWT: {r}");
    assert_eq!(r, t, "etcd (left) and {kind:?} (right) differ");
}

/// Auth state as each member sees it, by serializable reads (answered from
/// the member's own auth store) and a token from member 0 used everywhere.
fn cluster_view(c: &Cluster) -> Value {
    let eps = c.endpoints();
    let mut view = Vec::new();
    let rt = harness::runtime();
    let token = rt.block_on(a::token_of(&eps[0], "alice", "apw"));
    for ep in &eps {
        let serial = |args: &[&str]| {
            let mut all = args.to_vec();
            all.push("--consistency=s");
            let o = etcdctl(ep, &all);
            json!({ "exit": o.status, "out": o.stdout, "err": o.error_lines() })
        };
        view.push(json!({
            "alice reads foo/a": serial(&["--user", "alice:apw", "get", "foo/a", "--print-value-only"]),
            "alice reads bar": serial(&["--user", "alice:apw", "get", "bar", "--print-value-only"]),
            "bob reads bar": serial(&["--user", "bob:bpw", "get", "bar", "--print-value-only"]),
            "users": etcdctl(ep, &["--user", ROOT, "user", "list"]).stdout,
            "reader": etcdctl(ep, &["--user", ROOT, "role", "get", "reader"]).stdout,
            "token from member 0": rt.block_on(a::get(ep, Some(&token), "foo/a")),
        }));
    }
    Value::Array(view)
}

#[test]
fn cluster_tokens_and_auth_state_on_every_member() {
    let kind = target_kind();
    let scenario = |k: Kind| {
        let mut c = Cluster::start_kind(k, 3, &[]);
        let ep0 = c.endpoints()[0].clone();
        for o in a::setup_users(|_, args| etcdctl(&ep0, args)) {
            o.assert_ok();
        }
        c.set_probe_user(Some(ROOT));
        etcdctl(&ep0, &["--user", ROOT, "put", "foo/a", "1"]).assert_ok();
        etcdctl(&ep0, &["--user", ROOT, "put", "bar", "b"]).assert_ok();
        c.assert_converged();
        let before = cluster_view(&c);
        c.restart(2);
        c.assert_converged();
        let after_restart = cluster_view(&c);
        c.restart_all();
        c.assert_converged();
        let after_restart_all = cluster_view(&c);
        json!({ "before": before, "after restart": after_restart, "after restart all": after_restart_all })
    };
    let (r, t) = both(|| scenario(Kind::Etcd), || scenario(kind));
    // Every member of the reference agrees with the first; so must ours.
    let first = &r["before"][0];
    for i in 0..3 {
        assert_eq!(&r["before"][i], first, "etcd's members disagree: {r}");
    }
    assert_eq!(r, t, "etcd (left) and {kind:?} (right) differ");
}

#[test]
fn auth_changes_reach_a_member_through_a_snapshot() {
    if target_kind() != Kind::Cairn {
        // etcd 3.4 keeps 5000 entries for catching up, fixed: no snapshot here.
        eprintln!("cairn only: the short log is cairn's --snapshot-count");
        return;
    }
    let mut c = Cluster::start_with_args(3, &["--snapshot-count=20"]);
    let ep0 = c.endpoints()[0].clone();
    for o in a::setup_users(|_, args| etcdctl(&ep0, args)) {
        o.assert_ok();
    }
    c.set_probe_user(Some(ROOT));
    etcdctl(&ep0, &["--user", ROOT, "put", "bar", "b"]).assert_ok();
    c.assert_converged();
    c.kill9(2);
    c.leader_among(&[0, 1]);
    // Auth changes while member 2 is down, then enough writes that the log
    // is compacted past them.
    etcdctl(&ep0, &["--user", ROOT, "role", "grant-permission", "reader", "read", "bar"]).assert_ok();
    etcdctl(
        &ep0,
        &[
            "--user",
            ROOT,
            "user",
            "add",
            "carol",
            "--new-user-password=cpw",
            "--interactive=false",
        ],
    )
    .assert_ok();
    etcdctl(&ep0, &["--user", ROOT, "user", "grant-role", "carol", "reader"]).assert_ok();
    etcdctl(&ep0, &["--user", ROOT, "user", "revoke-role", "alice", "reader"]).assert_ok();
    for i in 0..60 {
        etcdctl(&ep0, &["--user", ROOT, "put", &format!("fill/{i:02}"), "x"]).assert_ok();
    }
    c.restart(2);
    c.assert_converged();
    assert!(
        c.log_contains(2, "installing snapshot"),
        "member 2 did not catch up from a snapshot\n{}",
        c.log_tails()
    );
    let ep2 = c.endpoints()[2].clone();
    let carol = etcdctl(
        &ep2,
        &["--user", "carol:cpw", "get", "bar", "--print-value-only", "--consistency=s"],
    );
    assert_eq!(carol.assert_ok().stdout, "b\n");
    etcdctl(&ep2, &["--user", "alice:apw", "get", "bar", "--consistency=s"]).fails_with(1, "etcdserver: permission denied");
    let users = etcdctl(&ep2, &["--user", ROOT, "user", "list"]);
    assert_eq!(users.stdout, etcdctl(&ep0, &["--user", ROOT, "user", "list"]).stdout);
    // And it survives a restart of that member.
    c.restart(2);
    let carol = etcdctl(
        &ep2,
        &["--user", "carol:cpw", "get", "bar", "--print-value-only", "--consistency=s"],
    );
    assert_eq!(carol.assert_ok().stdout, "b\n");
    // None of the refusals hurt the member.
    let _ = etcdctl_stdin(&ep2, &["--user", "alice:apw", "txn"], txn_input(&[], &["get bar"], &[]).as_bytes());
    etcdctl(&ep2, &["--user", ROOT, "put", "after", "ok"]).assert_ok();
}
