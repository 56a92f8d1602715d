//! `etcdctl snapshot save` against a cairn member under write load, and
//! `cairnctl snapshot restore` of the file into every member of a new
//! cluster, which must hold exactly what the source held at the backup's
//! revision.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;
use harness::{cairn_bin, etcdctl, etcdctl_timeout, Cluster, Kind};

const WRITERS: usize = 3;
/// Puts each writer makes at most (a bound, not a target).
const PUTS_PER_WRITER: usize = 2_000;

fn cairnctl(args: &[&str]) -> std::process::Output {
    let bin = cairn_bin().with_file_name("cairnctl");
    std::process::Command::new(&bin).args(args).output().expect("run cairnctl")
}

/// Every key with its value, create/mod revision and version, as a
/// serializable read at `rev` (0: the current one) returns them.
fn all_keys(ep: &str, rev: i64) -> serde_json::Value {
    let rev = format!("--rev={rev}");
    let out = etcdctl(ep, &["get", "", "--from-key", "--consistency=s", &rev, "-w", "json"]);
    out.assert_ok().json()["kvs"].clone()
}

fn hashkv(ep: &str, rev: i64) -> u64 {
    let out = etcdctl(ep, &["endpoint", "hashkv", &format!("--rev={rev}"), "-w", "json"]);
    out.assert_ok().json()[0]["HashKV"]["hash"].as_u64().expect("hash")
}

fn revision(ep: &str) -> i64 {
    let out = etcdctl(ep, &["endpoint", "status", "-w", "json"]);
    out.assert_ok().json()[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision")
}

#[test]
fn snapshot_saved_under_writes_restores_into_a_new_cluster() {
    let source = Cluster::start(3);
    let eps = source.endpoints();
    let rt = harness::runtime();
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (ep, acked, stop) = (eps[w % eps.len()].clone(), acked.clone(), stop.clone());
            rt.spawn(async move {
                let mut client = harness::connect(&ep).await;
                for i in 0..PUTS_PER_WRITER {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let (key, value) = (format!("w{w}/{i:05}"), format!("value-{w}-{i}"));
                    client.put(key.clone(), value.clone(), None).await.expect("put");
                    acked.lock().unwrap().insert(key, value);
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 300 {
        std::thread::sleep(Duration::from_millis(20));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.db");
    let before: BTreeMap<String, String> = acked.lock().unwrap().clone();
    // A backup is of the member's own state, as on etcd: a linearizable read
    // first makes sure the member has applied what was acknowledged so far.
    etcdctl(&eps[1], &["get", "w0/00000"]).assert_ok();
    let out = etcdctl_timeout(
        &eps[1],
        &["snapshot", "save", file.to_str().unwrap()],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(out.assert_ok().stdout, format!("Snapshot saved at {}\n", file.display()));
    let acked_during = acked.lock().unwrap().len();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        rt.block_on(w).expect("writer");
    }
    assert!(acked_during > before.len(), "no write was acknowledged while the backup was taken");
    let len = std::fs::metadata(&file).expect("backup file").len();
    assert_eq!(len % 512, 32, "etcd's layout: a multiple of 512 bytes, then a sha256");

    let out = cairnctl(&["snapshot", "status", file.to_str().unwrap()]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && status.ends_with(&format!(", {len} bytes, checksum ok\n")),
        "{out:?}"
    );

    let mut restored = Cluster::start_prepared(Kind::Cairn, 3, &[], |m| restore(&file, &m.data_dir()));
    let ep = restored.members[0].endpoint();
    let rev = revision(&ep);
    assert!(
        status.starts_with(&format!("etcd snapshot: revision {rev}, ")),
        "status {status:?}, restored at {rev}"
    );
    assert!(rev > before.len() as i64, "backup revision {rev} predates acknowledged writes");

    // What was acknowledged before the backup began is in it.
    let keys = all_keys(&ep, 0);
    let restored_keys: BTreeMap<String, String> = rt.block_on(async {
        let mut client = harness::connect(&ep).await;
        let all = client.get("", Some(GetOptions::new().with_from_key())).await.expect("get");
        all.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect()
    });
    for (k, v) in &before {
        assert_eq!(restored_keys.get(k), Some(v), "acknowledged {k} missing from the backup");
    }
    // And it is exactly the source's state, and history, at that revision.
    assert_eq!(keys, all_keys(&eps[0], rev), "keys differ from the source at revision {rev}");
    assert_eq!(hashkv(&ep, rev), hashkv(&eps[1], rev), "HashKV differs at revision {rev}");

    // The restored cluster is a working one, whose members agree.
    etcdctl(&ep, &["put", "after/restore", "yes"]).assert_ok();
    assert_eq!(restored.assert_converged(), rev + 1);

    // A file that is not a backup, or a used data dir, is refused.
    let out = cairnctl(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored.members[0].data_dir().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    std::fs::write(dir.path().join("junk.db"), vec![1u8; 544]).unwrap();
    let out = cairnctl(&[
        "snapshot",
        "restore",
        dir.path().join("junk.db").to_str().unwrap(),
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"), "{out:?}");
    let out = cairnctl(&["snapshot", "status", dir.path().join("junk.db").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

fn restore(file: &Path, data_dir: &Path) {
    let out = cairnctl(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "cairnctl snapshot restore failed: {out:?}");
}
