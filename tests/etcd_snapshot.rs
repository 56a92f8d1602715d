//! etcd's snapshot format both ways, against real etcd 3.4 and 3.5.1:
//! `etcdctl snapshot save` from etcd restored into Cairn with `cairnctl
//! snapshot restore`, and `etcdctl snapshot save` from Cairn read by
//! `etcdctl snapshot status` / `etcdutl snapshot status` and restored into
//! a real etcd with `etcdctl snapshot restore` / `etcdutl snapshot
//! restore`. Each side must then answer the same Range at every revision
//! the history keeps, the same lease TTLs and attached keys, the same users
//! and roles with auth on.

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{auth::ROOT, cairn_bin, etcdctl, etcdctl_with, etcdutl35_bin, Cluster, Kind, Output, Server, MEMBER_NAME};
use serde_json::Value;

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn cairnctl(args: &[&str]) -> std::process::Output {
    let bin = cairn_bin().with_file_name("cairnctl");
    Command::new(&bin).args(args).output().expect("run cairnctl")
}

fn run(bin: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(out.status.success(), "{} {args:?} failed: {out:?}", bin.display());
    out
}

/// etcdctl as `user` (or anonymously).
fn ctl(ep: &str, user: Option<&str>, args: &[&str]) -> Output {
    let flag = user.map(|u| format!("--user={u}"));
    let mut all: Vec<&str> = flag.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    etcdctl(ep, &all)
}

fn lease_grant(ep: &str, ttl: u32) -> String {
    let out = ctl(ep, None, &["lease", "grant", &ttl.to_string()]);
    // "lease 694d7f1a2b3c4d5e granted with TTL(600s)"
    out.assert_ok().stdout.split_whitespace().nth(1).expect("lease id").to_string()
}

/// What the data set made: the revision it compacted at, the newest one,
/// and its leases.
struct DataSet {
    compacted: i64,
    revision: i64,
    leases: Vec<String>,
}

/// Writes a history with several versions per key, deletions, a
/// compaction in the middle, leases with and without keys and, with
/// `auth`, users and roles with auth enabled at the end.
fn load(ep: &str, auth: bool) -> DataSet {
    for (k, v) in [("a", "1"), ("a", "2"), ("b", "1"), ("c", "1"), ("a", "3"), ("b", "2")] {
        ctl(ep, None, &["put", k, v]).assert_ok();
    }
    ctl(ep, None, &["del", "c"]).assert_ok();
    ctl(ep, None, &["put", "c", "again"]).assert_ok();
    ctl(ep, None, &["del", "b"]).assert_ok();
    let compacted = revision(ep, None) - 2;
    ctl(ep, None, &["compact", &compacted.to_string()]).assert_ok();
    let with_keys = lease_grant(ep, 600);
    let without_keys = lease_grant(ep, 900);
    for (k, v) in [("leased/1", "x"), ("leased/2", "y")] {
        ctl(ep, None, &["put", k, v, &format!("--lease={with_keys}")]).assert_ok();
    }
    for i in 0..40 {
        ctl(ep, None, &["put", &format!("many/{:02}", i % 8), &"v".repeat(i * 50)]).assert_ok();
    }
    ctl(ep, None, &["put", "a", "4"]).assert_ok();
    ctl(ep, None, &["del", "many/", "--prefix"]).assert_ok();
    ctl(ep, None, &["put", "many/03", "back"]).assert_ok();
    if auth {
        for args in [
            &["role", "add", "root"][..],
            &["user", "add", ROOT],
            &["user", "grant-role", "root", "root"],
            &["role", "add", "reader"],
            &["role", "grant-permission", "reader", "read", "a"],
            &["role", "grant-permission", "reader", "readwrite", "leased/", "--prefix"],
            &["user", "add", "alice:alicepw"],
            &["user", "grant-role", "alice", "reader"],
            &["auth", "enable"],
        ] {
            ctl(ep, None, args).assert_ok();
        }
    }
    let user = auth.then_some(ROOT);
    DataSet {
        compacted,
        revision: revision(ep, user),
        leases: vec![with_keys, without_keys],
    }
}

fn revision(ep: &str, user: Option<&str>) -> i64 {
    ctl(ep, user, &["endpoint", "status", "-w", "json"]).assert_ok().json()[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision")
}

/// Every key as a serializable read at `rev` returns it (with create and
/// mod revision, version, value and lease), or the error for a compacted
/// revision.
fn range_at(ep: &str, user: Option<&str>, rev: i64) -> Value {
    let rev = format!("--rev={rev}");
    let out = ctl(ep, user, &["get", "", "--from-key", "--consistency=s", &rev, "-w", "json"]);
    if out.status == Some(0) {
        let doc = out.json();
        serde_json::json!({"kvs": doc["kvs"], "count": doc["count"]})
    } else {
        Value::String(out.error_lines().join("\n"))
    }
}

/// Everything compared across two servers holding the same data set.
fn observe(ep: &str, user: Option<&str>, data: &DataSet, auth: bool) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    // Below the compaction too: both sides must refuse those alike.
    for rev in (data.compacted - 2).max(1)..=data.revision {
        seen.push((format!("range at {rev}"), range_at(ep, user, rev)));
    }
    seen.push(("range now".into(), range_at(ep, user, 0)));
    let mut ids = ctl(ep, user, &["lease", "list"]).assert_ok().stdout.clone();
    ids = ids
        .lines()
        .skip(1)
        .map(str::trim)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(",");
    seen.push(("lease ids".into(), Value::String(ids)));
    for id in &data.leases {
        let doc = ctl(ep, user, &["lease", "timetolive", id, "--keys", "-w", "json"])
            .assert_ok()
            .json();
        let granted = doc["granted-ttl"].as_i64().expect("granted TTL");
        let ttl = doc["ttl"].as_i64().expect("ttl");
        assert!(ttl > 0 && ttl <= granted, "lease {id} on {ep}: TTL {ttl} of {granted}");
        // etcd lists a lease's keys in no particular order.
        let mut keys: Vec<String> = doc["keys"].as_array().into_iter().flatten().map(|k| k.to_string()).collect();
        keys.sort();
        seen.push((format!("lease {id}"), serde_json::json!({"granted": granted, "keys": keys})));
    }
    if auth {
        for args in [
            &["user", "list"][..],
            &["role", "list"],
            &["user", "get", "alice"],
            &["role", "get", "reader"],
        ] {
            seen.push((args.join(" "), Value::String(ctl(ep, user, args).assert_ok().stdout.clone())));
        }
        let anonymous = ctl(ep, None, &["get", "a"]);
        seen.push(("anonymous get".into(), Value::String(anonymous.error_lines().join("\n"))));
        let alice = Some("alice:alicepw");
        seen.push(("alice reads a".into(), range_at(ep, alice, 0)));
        let own = ctl(ep, alice, &["get", "leased/", "--prefix", "-w", "json"]).assert_ok().json();
        seen.push(("alice reads leased/".into(), own["kvs"].clone()));
        let refused = ctl(ep, alice, &["put", "a", "no"]);
        seen.push(("alice writes a".into(), Value::String(refused.error_lines().join("\n"))));
        assert!(!refused.error_lines().is_empty(), "{refused:?}");
    }
    seen
}

#[track_caller]
fn assert_same(source: &[(String, Value)], restored: &[(String, Value)]) {
    assert_eq!(source.len(), restored.len());
    for ((what, want), (_, got)) in source.iter().zip(restored) {
        assert_eq!(got, want, "{what} differs after the restore");
    }
}

/// `etcdctl snapshot save` of `ep` with the given etcdctl, into `dir`.
fn save(etcdctl_bin: &Path, ep: &str, user: Option<&str>, dir: &Path) -> PathBuf {
    let file = dir.join("snapshot.db");
    let flag = user.map(|u| format!("--user={u}"));
    let mut args: Vec<&str> = flag.iter().map(String::as_str).collect();
    args.extend(["snapshot", "save", file.to_str().unwrap()]);
    etcdctl_with(etcdctl_bin, ep, &args, None, TIMEOUT).assert_ok();
    file
}

fn etcdctl35() -> PathBuf {
    harness::etcdctl35_bin()
}

fn etcdctl34() -> PathBuf {
    harness::etcdctl_bin().expect("etcdctl")
}

/// `cairnctl snapshot restore` for one member, with etcdutl's flags.
fn cairn_restore(file: &Path, data_dir: &Path, name: &str, initial_cluster: &str, peer_url: &str) {
    let out = cairnctl(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--name",
        name,
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-token",
        "cairn-test-cluster",
        "--initial-advertise-peer-urls",
        peer_url,
    ]);
    assert!(out.status.success(), "cairnctl snapshot restore failed: {out:?}");
}

fn etcd_to_cairn(kind: Kind, etcdctl_bin: &Path) {
    let source = Server::start(kind);
    let ep = source.endpoint();
    let data = load(&ep, true);
    let want = observe(&ep, Some(ROOT), &data, true);
    let dir = tempfile::tempdir().unwrap();
    let file = save(etcdctl_bin, &ep, Some(ROOT), dir.path());

    let status = cairnctl(&["snapshot", "status", file.to_str().unwrap()]);
    assert!(status.status.success(), "{status:?}");
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.starts_with(&format!("etcd snapshot: revision {},", data.revision)), "{text}");

    let cairn = Server::start_prepared(Kind::Cairn, Some(ROOT), |s| {
        let peer = s.peer_url();
        cairn_restore(&file, &s.data_dir(), MEMBER_NAME, &format!("{MEMBER_NAME}={peer}"), &peer);
    });
    assert_eq!(revision(&cairn.endpoint(), Some(ROOT)), data.revision);
    assert_same(&want, &observe(&cairn.endpoint(), Some(ROOT), &data, true));
    // The restored member is a working one: it writes on from there.
    ctl(&cairn.endpoint(), Some(ROOT), &["put", "after", "restore"]).assert_ok();
    assert_eq!(revision(&cairn.endpoint(), Some(ROOT)), data.revision + 1);
}

#[test]
fn an_etcd_34_snapshot_restores_into_cairn_with_its_history_leases_and_users() {
    etcd_to_cairn(Kind::Etcd, &etcdctl34());
}

#[test]
fn an_etcd_35_snapshot_restores_into_cairn_with_its_history_leases_and_users() {
    etcd_to_cairn(Kind::Etcd35, &etcdctl35());
}

/// Cairn → `etcdctl snapshot save` → etcd's status and restore → etcd.
fn cairn_to_etcd(kind: Kind) {
    let source = Server::start(Kind::Cairn);
    let ep = source.endpoint();
    let data = load(&ep, true);
    let want = observe(&ep, Some(ROOT), &data, true);
    let dir = tempfile::tempdir().unwrap();
    let file = save(&etcdctl34(), &ep, Some(ROOT), dir.path());
    let file_arg = file.to_str().unwrap();

    let (tool, status_args): (PathBuf, Vec<&str>) = match kind {
        Kind::Etcd => (etcdctl34(), vec!["snapshot", "status", file_arg, "-w", "json"]),
        _ => (etcdutl35_bin(), vec!["snapshot", "status", file_arg, "-w", "json"]),
    };
    let status: Value = serde_json::from_slice(&run(&tool, &status_args).stdout).expect("status JSON");
    assert_eq!(status["revision"].as_i64(), Some(data.revision), "{status}");
    assert!(status["totalKey"].as_i64().unwrap_or(0) > 20, "{status}");

    let etcd = Server::start_prepared(kind, Some(ROOT), |s| {
        let peer = s.peer_url();
        let data_dir = s.data_dir();
        let cluster = format!("{MEMBER_NAME}={peer}");
        run(
            &tool,
            &[
                "snapshot",
                "restore",
                file_arg,
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--name",
                MEMBER_NAME,
                "--initial-cluster",
                &cluster,
                "--initial-advertise-peer-urls",
                &peer,
            ],
        );
    });
    assert_eq!(revision(&etcd.endpoint(), Some(ROOT)), data.revision);
    assert_same(&want, &observe(&etcd.endpoint(), Some(ROOT), &data, true));
    ctl(&etcd.endpoint(), Some(ROOT), &["put", "after", "restore"]).assert_ok();
}

#[test]
fn a_cairn_snapshot_restores_into_etcd_34() {
    cairn_to_etcd(Kind::Etcd);
}

#[test]
fn a_cairn_snapshot_restores_into_etcd_35() {
    cairn_to_etcd(Kind::Etcd35);
}

#[test]
fn an_etcd_34_snapshot_restores_into_a_three_member_cairn_cluster() {
    let source = Server::start(Kind::Etcd);
    let ep = source.endpoint();
    let data = load(&ep, false);
    let want = observe(&ep, None, &data, false);
    let dir = tempfile::tempdir().unwrap();
    let file = save(&etcdctl34(), &ep, None, dir.path());
    let cluster = Cluster::start_prepared(Kind::Cairn, 3, &[], |m| {
        cairn_restore(&file, &m.data_dir(), &m.name, m.initial_cluster(), &m.peer_url());
    });
    for m in &cluster.members {
        assert_eq!(revision(&m.endpoint(), None), data.revision, "member {}", m.name);
        assert_same(&want, &observe(&m.endpoint(), None, &data, false));
    }
}

#[test]
fn corrupt_truncated_and_trailerless_etcd_snapshots() {
    let source = Server::start(Kind::Etcd);
    let ep = source.endpoint();
    let data = load(&ep, false);
    let dir = tempfile::tempdir().unwrap();
    let file = save(&etcdctl34(), &ep, None, dir.path());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() % 512, 32, "etcdctl appends a sha256");
    let try_restore = |name: &str, content: &[u8], extra: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let data_dir = dir.path().join(format!("{name}.data"));
        let mut args = vec![
            "snapshot",
            "restore",
            path.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = cairnctl(&args);
        (out, data_dir)
    };

    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    let (out, data_dir) = try_restore("flipped", &flipped, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sha256 checksum mismatch"), "{out:?}");
    assert!(!data_dir.exists(), "a refused file leaves no data dir");

    // Cut inside the database: no trailer by etcd's rule, and pages missing.
    let (out, data_dir) = try_restore("truncated", &bytes[..bytes.len() - 32 - 4096], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupt data: etcd snapshot"),
        "{out:?}"
    );
    assert!(!data_dir.exists());

    let (out, _) = try_restore("junk", &[0x5au8; 8192], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // The database alone, as copied from a data dir, restores.
    let bare = dir.path().join("bare.db");
    std::fs::write(&bare, &bytes[..bytes.len() - 32]).unwrap();
    let cairn = Server::start_prepared(Kind::Cairn, None, |s| {
        let peer = s.peer_url();
        cairn_restore(&bare, &s.data_dir(), MEMBER_NAME, &format!("{MEMBER_NAME}={peer}"), &peer);
    });
    assert_eq!(revision(&cairn.endpoint(), None), data.revision);
    assert_same(&observe(&ep, None, &data, false), &observe(&cairn.endpoint(), None, &data, false));

    // A member not in --initial-cluster is refused, as etcdutl refuses it.
    let (out, _) = try_restore("named", &bytes, &["--name", "m9", "--initial-cluster", "m1=http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not name this member"),
        "{out:?}"
    );
}

/// Key → value of every current key, revisions aside (a mirror writes at
/// its own revisions).
fn values(ep: &str) -> Vec<(Value, Value)> {
    let doc = ctl(ep, None, &["get", "", "--from-key", "-w", "json"]).assert_ok().json();
    doc["kvs"]
        .as_array()
        .map(|kvs| kvs.iter().map(|kv| (kv["key"].clone(), kv["value"].clone())).collect())
        .unwrap_or_default()
}

/// The zero-downtime route: `etcdctl make-mirror` from a live etcd into
/// Cairn copies the current keys, then follows etcd's writes.
#[test]
fn etcdctl_make_mirror_from_etcd_into_cairn_follows_live_writes() {
    let source = Server::start(Kind::Etcd);
    let dest = Server::start(Kind::Cairn);
    let (src, dst) = (source.endpoint(), dest.endpoint());
    load(&src, false);
    let mut mirror = Command::new(etcdctl34())
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints={src}"), "make-mirror", &dst])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn etcdctl make-mirror");
    for i in 0..50 {
        ctl(&src, None, &["put", &format!("live/{i:03}"), &format!("v{i}")]).assert_ok();
    }
    ctl(&src, None, &["del", "live/01", "--prefix"]).assert_ok();
    ctl(&src, None, &["put", "a", "last"]).assert_ok();
    let want = values(&src);
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut got = values(&dst);
    while got != want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        got = values(&dst);
    }
    let exited = mirror.try_wait().expect("try_wait");
    let _ = mirror.kill();
    let _ = mirror.wait();
    assert_eq!(exited, None, "make-mirror stopped by itself");
    assert_eq!(got, want, "the mirror did not catch up");
}
