//! Leases: the `etcdctl lease` flows and the Lease RPCs compared with a real
//! etcd 3.4, and expiry, revocation and restart behaviour of keys attached
//! to leases.

use std::time::Duration;

use etcd_client::{EventType, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions};
use harness::background::{json_events, Background};
use harness::{both, convert, Differential, Server};
use serde_json::{json, Value};

/// Hang guard for waiting on a lease to expire (TTLs here are 2-3 s).
const EXPIRY_TIMEOUT: Duration = Duration::from_secs(20);

fn lease_id(out: &harness::Output) -> String {
    let id = out.json()["ID"].as_i64().unwrap_or_else(|| panic!("no lease ID in {out:?}"));
    format!("{id:x}")
}

/// `remaining(Ns)` and `"TTL":N` count down on their own clock; the
/// granted TTL and everything else are compared exactly.
fn mask_remaining(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .map(|v| match v {
            Value::String(s) => match (s.find("remaining("), s.rfind("s)")) {
                (Some(a), Some(b)) if b > a => Value::String(format!("{}remaining(<n>){}", &s[..a], &s[b + 2..])),
                _ => v.clone(),
            },
            Value::Object(m) => {
                let mut m = m.clone();
                if let Some(ttl) = m.get("ttl").and_then(Value::as_i64) {
                    let granted = m.get("granted-ttl").and_then(Value::as_i64).unwrap_or(ttl);
                    assert!(ttl <= granted, "remaining TTL {ttl} above the granted {granted}");
                    m.insert("ttl".into(), json!(if ttl > 0 { "<remaining>".into() } else { ttl.to_string() }));
                }
                // etcdctl names the lease `id` here; the command named it.
                if m.get("id").and_then(Value::as_i64).is_some_and(|id| id != 0) {
                    m.insert("id".into(), json!("<lease>"));
                }
                Value::Object(m)
            }
            other => other.clone(),
        })
        .collect()
}

#[test]
fn etcdctl_lease_flows_match_etcd() {
    let mut d = Differential::start();
    let (ep_ref, ep_tgt) = (d.reference.endpoint(), d.target.endpoint());
    let (r, t) = d.ctl("grant", &["lease", "grant", "100", "-w", "json"]);
    let (lr, lt) = (lease_id(&r), lease_id(&t));
    let (r2, t2) = d.ctl("grant second", &["lease", "grant", "200", "-w", "json"]);
    let (lr2, lt2) = (lease_id(&r2), lease_id(&t2));
    d.ctl("grant third", &["lease", "grant", "50", "-w", "json"]);

    d.ctl_each(
        "put with lease",
        &["put", "k1", "v1", "--lease", &lr],
        &["put", "k1", "v1", "--lease", &lt],
        None,
    );
    d.ctl_each(
        "put with lease 2",
        &["put", "k2", "v2", "--lease", &lr],
        &["put", "k2", "v2", "--lease", &lt],
        None,
    );
    d.ctl_each(
        "put moves key to lease 2",
        &["put", "k3", "v3", "--lease", &lr2],
        &["put", "k3", "v3", "--lease", &lt2],
        None,
    );
    d.ctl_each(
        "re-put moves key",
        &["put", "k2", "v2b", "--lease", &lr2],
        &["put", "k2", "v2b", "--lease", &lt2],
        None,
    );
    d.ctl("get leased keys", &["get", "k", "--prefix", "-w", "json"]);
    d.ctl("put with unknown lease", &["put", "k9", "v", "--lease", "1234abcd"]);
    d.ctl_stdin(
        "txn put with unknown lease",
        &["txn"],
        harness::txn_input(&[], &["put k9 v --lease=1234abcd"], &[]).as_bytes(),
    );

    let ttl = |d: &mut Differential, step: &str, extra: &[&str]| {
        let mut ar = vec!["lease", "timetolive", &lr];
        let mut at = vec!["lease", "timetolive", &lt];
        ar.extend(extra);
        at.extend(extra);
        let (r, t) = both(|| harness::etcdctl(&ep_ref, &ar), || harness::etcdctl(&ep_tgt, &at));
        let (r, t) = (mask_remaining(&d.nref.stdout(&r.stdout)), mask_remaining(&d.ntgt.stdout(&t.stdout)));
        d.compare_json(step, &Value::Array(r), &Value::Array(t));
    };
    ttl(&mut d, "timetolive", &[]);
    ttl(&mut d, "timetolive keys", &["--keys"]);
    ttl(&mut d, "timetolive keys json", &["--keys", "-w", "json"]);

    // Listed soonest expiry first, on both. etcdctl names them `id`, which
    // the normaliser does not know, so they are mapped here.
    let (r, t) = both(
        || harness::etcdctl(&ep_ref, &["lease", "list", "-w", "json"]),
        || harness::etcdctl(&ep_tgt, &["lease", "list", "-w", "json"]),
    );
    let listed = |n: &mut harness::Normalizer, out: &harness::Output| -> Value {
        let ids: Vec<String> = out.json()["leases"]
            .as_array()
            .expect("leases")
            .iter()
            .map(|l| n.lease(l["id"].as_i64().expect("id")))
            .collect();
        json!(ids)
    };
    let (lr_list, lt_list) = (listed(&mut d.nref, &r), listed(&mut d.ntgt, &t));
    d.compare_json("list json", &lr_list, &lt_list);
    d.ctl_each(
        "keep-alive once",
        &["lease", "keep-alive", "--once", &lr],
        &["lease", "keep-alive", "--once", &lt],
        None,
    );

    // Revoking deletes every attached key in one revision; a watcher sees
    // the deletes together.
    let args = ["watch", "k", "--prefix", "--rev", "6", "-w", "json"];
    let mut wr = Background::start(&ep_ref, &args);
    let mut wt = Background::start(&ep_tgt, &args);
    d.ctl_each("revoke", &["lease", "revoke", &lr2], &["lease", "revoke", &lt2], None);
    let r = wr.wait_for("revoke deletes", |l| json_events(l) >= 2).to_vec();
    let t = wt.wait_for("revoke deletes", |l| json_events(l) >= 2).to_vec();
    let (r, t) = (d.nref.stdout(&r.join("\n")), d.ntgt.stdout(&t.join("\n")));
    d.compare_json("revoke events", &Value::Array(r), &Value::Array(t));
    d.ctl("keys after revoke", &["get", "k", "--prefix", "-w", "json"]);
    d.ctl_each("revoke again", &["lease", "revoke", &lr2], &["lease", "revoke", &lt2], None);
    d.ctl_each(
        "timetolive revoked",
        &["lease", "timetolive", &lr2],
        &["lease", "timetolive", &lt2],
        None,
    );
    d.ctl_each(
        "keep-alive revoked",
        &["lease", "keep-alive", "--once", &lr2],
        &["lease", "keep-alive", "--once", &lt2],
        None,
    );
    d.ctl("revoke unknown", &["lease", "revoke", "1234abcd"]);
}

/// Lease RPCs through etcd-client: chosen ids, duplicate ids, TTL bounds.
async fn rpc_session(endpoint: String) -> Vec<Value> {
    let mut c = harness::connect(&endpoint).await;
    let mut out = Vec::new();
    let grant = |r: &etcd_client::LeaseGrantResponse| json!({"id": r.id(), "ttl": r.ttl(), "header": convert::header(r.header())});
    out.push(convert::result(
        &c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234))).await,
        grant,
    ));
    out.push(convert::result(
        &c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234))).await,
        grant,
    ));
    out.push(convert::result(&c.lease_grant(9_000_000_001, None).await, grant));
    // A TTL below the minimum is raised to it.
    out.push(convert::result(
        &c.lease_grant(1, Some(LeaseGrantOptions::new().with_id(7))).await,
        grant,
    ));
    out.push(convert::result(&c.lease_revoke(7).await, |r| convert::header(r.header())));
    c.put("a", "1", Some(PutOptions::new().with_lease(0x1234))).await.unwrap();
    let ttl = c
        .lease_time_to_live(0x1234, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    out.push(json!({"id": ttl.id(), "granted": ttl.granted_ttl(), "keys": ttl.keys(), "header": convert::header(ttl.header())}));
    let missing = c.lease_time_to_live(99, None).await.unwrap();
    out.push(json!({"id": missing.id(), "ttl": missing.ttl(), "granted": missing.granted_ttl()}));
    let (mut keeper, mut stream) = c.lease_keep_alive(0x1234).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let k = stream.message().await.unwrap().unwrap();
    out.push(json!({"id": k.id(), "ttl": k.ttl(), "header": convert::header(k.header())}));
    let mut ids: Vec<i64> = c.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
    ids.sort();
    out.push(json!(ids));
    out.push(convert::result(&c.lease_revoke(0x1234).await, |r| convert::header(r.header())));
    out.push(convert::result(&c.lease_revoke(0x1234).await, |r| convert::header(r.header())));
    out.push(convert::get(&c.get("a", None).await.unwrap()));
    out
}

#[test]
fn lease_rpcs_match_etcd() {
    let mut d = Differential::start();
    d.compare_sessions("lease rpc session", rpc_session);
}

#[test]
fn expiry_deletes_attached_keys_in_one_revision() {
    let server = Server::start_target();
    let ep = server.endpoint();
    harness::runtime().block_on(async move {
        let mut c = harness::connect(&ep).await;
        let short = c.lease_grant(2, None).await.unwrap().id();
        let long = c.lease_grant(60, None).await.unwrap().id();
        for k in ["e/1", "e/2", "e/3"] {
            c.put(k, "v", Some(PutOptions::new().with_lease(short))).await.unwrap();
        }
        c.put("e/keep", "v", Some(PutOptions::new().with_lease(long))).await.unwrap();
        let mut w = c.watch("e/", Some(WatchOptions::new().with_prefix())).await.unwrap();
        assert!(w.message().await.unwrap().unwrap().created());
        let r = tokio::time::timeout(EXPIRY_TIMEOUT, w.message())
            .await
            .expect("the short lease expired within the hang guard")
            .unwrap()
            .unwrap();
        let deleted: Vec<&str> = r.events().iter().map(|e| e.kv().unwrap().key_str().unwrap()).collect();
        assert_eq!(deleted, ["e/1", "e/2", "e/3"]);
        assert!(r.events().iter().all(|e| e.event_type() == EventType::Delete));
        let revs: Vec<i64> = r.events().iter().map(|e| e.kv().unwrap().mod_revision()).collect();
        assert!(
            revs.iter().all(|rev| *rev == revs[0]),
            "expiry deletes split over revisions {revs:?}"
        );
        let left = c.get("e/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
        let keys: Vec<&str> = left.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        assert_eq!(keys, ["e/keep"]);
        assert_eq!(c.lease_time_to_live(short, None).await.unwrap().ttl(), -1);
        let ids: Vec<i64> = c.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
        assert_eq!(ids, [long]);
    });
}

#[test]
fn keep_alive_holds_a_lease_past_its_ttl() {
    let server = Server::start_target();
    let ep = server.endpoint();
    harness::runtime().block_on(async move {
        let mut c = harness::connect(&ep).await;
        let id = c.lease_grant(2, None).await.unwrap().id();
        c.put("ka", "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
        let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
        // Renew for three TTLs' worth of time.
        for _ in 0..12 {
            keeper.keep_alive().await.unwrap();
            assert_eq!(stream.message().await.unwrap().unwrap().ttl(), 2);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(c.get("ka", None).await.unwrap().kvs().len(), 1);
        assert!(c.lease_time_to_live(id, None).await.unwrap().ttl() >= 0);
    });
}

#[test]
fn leases_and_attachments_survive_restart() {
    let mut server = Server::start_target();
    let ep = server.endpoint();
    let (a, b) = harness::runtime().block_on(async {
        let mut c = harness::connect(&ep).await;
        let a = c.lease_grant(600, None).await.unwrap().id();
        let b = c.lease_grant(600, None).await.unwrap().id();
        c.put("r/1", "v", Some(PutOptions::new().with_lease(a))).await.unwrap();
        c.put("r/2", "v", Some(PutOptions::new().with_lease(a))).await.unwrap();
        c.put("r/3", "v", Some(PutOptions::new().with_lease(b))).await.unwrap();
        // Moved to lease b, then detached by a delete.
        c.put("r/2", "w", Some(PutOptions::new().with_lease(b))).await.unwrap();
        c.put("r/4", "v", Some(PutOptions::new().with_lease(a))).await.unwrap();
        c.delete("r/4", None).await.unwrap();
        (a, b)
    });
    server.restart();
    harness::runtime().block_on(async {
        let mut c = harness::connect(&ep).await;
        let mut ids: Vec<i64> = c.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
        ids.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(ids, want);
        let keys = |r: etcd_client::LeaseTimeToLiveResponse| -> Vec<String> {
            r.keys().iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect()
        };
        let with_keys = || Some(LeaseTimeToLiveOptions::new().with_keys());
        assert_eq!(keys(c.lease_time_to_live(a, with_keys()).await.unwrap()), ["r/1"]);
        assert_eq!(keys(c.lease_time_to_live(b, with_keys()).await.unwrap()), ["r/2", "r/3"]);
        assert_eq!(c.lease_time_to_live(a, None).await.unwrap().granted_ttl(), 600);
        c.lease_revoke(b).await.unwrap();
        let left = c.get("r/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
        let keys: Vec<&str> = left.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        assert_eq!(keys, ["r/1"]);
    });
}

// ---- on a 3-member cluster ----

/// Hang guard for one keep-alive answer, which may wait out an election.
const RENEW_TIMEOUT: Duration = Duration::from_secs(20);

async fn renew(keeper: &mut etcd_client::LeaseKeeper, stream: &mut etcd_client::LeaseKeepAliveStream) -> i64 {
    keeper.keep_alive().await.expect("send a keep-alive");
    tokio::time::timeout(RENEW_TIMEOUT, stream.message())
        .await
        .expect("a keep-alive answer within the hang guard")
        .expect("keep-alive stream error")
        .expect("keep-alive stream ended")
        .ttl()
}

/// Index of a member that does not lead.
fn follower(cluster: &mut harness::Cluster) -> usize {
    let leader = cluster.leader();
    (leader + 1) % cluster.members.len()
}

#[test]
fn lease_rpcs_through_a_follower() {
    let mut cluster = harness::Cluster::start(3);
    let via = follower(&mut cluster);
    let ep = cluster.members[via].endpoint();
    harness::runtime().block_on(async move {
        let mut c = harness::connect(&ep).await;
        let id = c.lease_grant(3, None).await.unwrap().id();
        c.put("f/1", "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
        let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
        // Renewed through the follower for more than its TTL.
        for _ in 0..10 {
            assert_eq!(renew(&mut keeper, &mut stream).await, 3);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(c.get("f/1", None).await.unwrap().kvs().len(), 1);
        let ttl = c
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert_eq!((ttl.id(), ttl.granted_ttl(), ttl.keys()), (id, 3, &[b"f/1".to_vec()][..]));
        assert!((0..=3).contains(&ttl.ttl()), "remaining TTL {} of a 3 s lease", ttl.ttl());
        assert_eq!(c.lease_time_to_live(id + 1, None).await.unwrap().ttl(), -1);
        let ids: Vec<i64> = c.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
        assert_eq!(ids, [id]);
        // And with etcdctl, through the same member.
        let hex = format!("{id:016x}");
        let out = harness::etcdctl(&ep, &["lease", "keep-alive", "--once", &hex]);
        assert_eq!(out.stdout.trim(), format!("lease {hex} keepalived with TTL(3)"), "{out:?}");
        let out = harness::etcdctl(&ep, &["lease", "timetolive", "--keys", &hex]);
        let prefix = format!("lease {hex} granted with TTL(3s), remaining(");
        assert!(
            out.stdout.starts_with(&prefix) && out.stdout.trim_end().ends_with("s), attached keys([f/1])"),
            "{out:?}"
        );
        c.lease_revoke(id).await.unwrap();
        // A revoked lease renews to a TTL of 0, as on etcd.
        assert_eq!(renew(&mut keeper, &mut stream).await, 0);
        assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
        assert!(c.get("f/1", None).await.unwrap().kvs().is_empty());
    });
}

/// Reads a watch until a delete of `key` arrives; returns every response.
async fn until_deleted(w: &mut etcd_client::WatchStream, key: &str) -> Vec<etcd_client::WatchResponse> {
    let mut seen = Vec::new();
    loop {
        let r = tokio::time::timeout(EXPIRY_TIMEOUT, w.message())
            .await
            .unwrap_or_else(|_| panic!("no delete of {key} within the hang guard"))
            .expect("watch stream error")
            .expect("watch stream ended");
        let done = r
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete && e.kv().is_some_and(|kv| kv.key() == key.as_bytes()));
        seen.push(r);
        if done {
            return seen;
        }
    }
}

#[test]
fn lease_expiry_deletes_keys_on_every_member() {
    let cluster = harness::Cluster::start(3);
    let endpoints = cluster.endpoints();
    harness::runtime().block_on(async move {
        let mut watches = Vec::new();
        for ep in &endpoints {
            let mut c = harness::connect(ep).await;
            let w = c.watch("x/", Some(WatchOptions::new().with_prefix())).await.unwrap();
            watches.push((c, w));
        }
        for (_, w) in &mut watches {
            assert!(w.message().await.unwrap().unwrap().created());
        }
        let mut c = harness::connect(&endpoints[1]).await;
        let id = c.lease_grant(2, None).await.unwrap().id();
        for k in ["x/1", "x/2", "x/3"] {
            c.put(k, "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
        }
        let mut deletes = Vec::new();
        for (_, w) in &mut watches {
            let responses = until_deleted(w, "x/3").await;
            let last = responses.last().unwrap();
            // All three deletes in one response, at one revision.
            let deleted: Vec<(&[u8], EventType, i64)> = last
                .events()
                .iter()
                .map(|e| (e.kv().unwrap().key(), e.event_type(), e.kv().unwrap().mod_revision()))
                .collect();
            assert_eq!(deleted.len(), 3, "{deleted:?}");
            assert!(deleted.iter().all(|(_, t, rev)| *t == EventType::Delete && *rev == deleted[0].2));
            deletes.push(json!(deleted
                .iter()
                .map(|(k, _, rev)| json!([String::from_utf8_lossy(k), rev]))
                .collect::<Vec<_>>()));
        }
        // Every member reports the same deletes at the same revision.
        assert!(deletes.iter().all(|d| *d == deletes[0]), "{deletes:?}");
        for ep in &endpoints {
            let mut c = harness::connect(ep).await;
            let left = c.get("x/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
            assert!(left.kvs().is_empty());
            assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
        }
    });
}

#[test]
fn leader_failover_keeps_renewed_leases_and_expires_the_rest() {
    let mut cluster = harness::Cluster::start(3);
    let leader = cluster.leader();
    let via = (leader + 1) % 3;
    let ep = cluster.members[via].endpoint();
    let rt = harness::runtime();
    let mut c = rt.block_on(harness::connect(&ep));
    let (kept, (mut keeper, mut stream), dropped, mut watch) = rt.block_on(async {
        let kept = c.lease_grant(3, None).await.unwrap().id();
        let dropped = c.lease_grant(4, None).await.unwrap().id();
        c.put("fo/kept", "v", Some(PutOptions::new().with_lease(kept))).await.unwrap();
        let put = c.put("fo/dropped", "v", Some(PutOptions::new().with_lease(dropped))).await.unwrap();
        let from = put.header().unwrap().revision() + 1;
        let mut watch = c
            .watch("fo/", Some(WatchOptions::new().with_prefix().with_start_revision(from)))
            .await
            .unwrap();
        assert!(watch.message().await.unwrap().unwrap().created());
        let mut keep = c.lease_keep_alive(kept).await.unwrap();
        assert_eq!(renew(&mut keep.0, &mut keep.1).await, 3);
        (kept, keep, dropped, watch)
    });
    cluster.kill9(leader);
    rt.block_on(async {
        // Renewals through the same follower reach whoever leads next.
        assert_eq!(renew(&mut keeper, &mut stream).await, 3);
        // The new leader restarted every lease's clock from its full TTL,
        // so the lease nobody renews has not run out either.
        let left = c.lease_time_to_live(dropped, None).await.unwrap().ttl();
        assert!(left > 0, "the new leader let the unrenewed lease run out at once (ttl {left})");
        // Three TTLs of the renewed lease; the other one expires meanwhile.
        for _ in 0..18 {
            assert_eq!(renew(&mut keeper, &mut stream).await, 3);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let events: Vec<(String, EventType)> = until_deleted(&mut watch, "fo/dropped")
            .await
            .iter()
            .flat_map(|r| r.events().to_vec())
            .map(|e| (e.kv().unwrap().key_str().unwrap().to_string(), e.event_type()))
            .collect();
        assert_eq!(events, [("fo/dropped".to_string(), EventType::Delete)]);
        assert_eq!(c.get("fo/kept", None).await.unwrap().kvs().len(), 1);
        assert!(c.get("fo/dropped", None).await.unwrap().kvs().is_empty());
        let ttl = c.lease_time_to_live(kept, None).await.unwrap();
        assert_eq!(ttl.granted_ttl(), 3);
        assert!(ttl.ttl() > 0);
        assert_eq!(c.lease_time_to_live(dropped, None).await.unwrap().ttl(), -1);
    });
}

/// Whom member `endpoint` believes leads (0: nobody).
fn leader_seen_by(endpoint: &str) -> u64 {
    let out = harness::etcdctl_timeout(endpoint, &["endpoint", "status", "-w", "json"], None, Duration::from_secs(10));
    out.json()[0]["Status"]["leader"].as_u64().unwrap_or(0)
}

#[test]
fn lease_requests_on_a_member_without_leader_fail_like_etcd() {
    let mut cluster = harness::Cluster::start(3);
    let via = follower(&mut cluster);
    let ep = cluster.members[via].endpoint();
    let rt = harness::runtime();
    let mut c = rt.block_on(harness::connect(&ep));
    let id = rt.block_on(c.lease_grant(60, None)).unwrap().id();
    cluster.members[via].isolate();
    // Bounded: the member gives up on its leader after an election timeout.
    let start = std::time::Instant::now();
    while leader_seen_by(&ep) != 0 {
        assert!(start.elapsed() < EXPIRY_TIMEOUT, "the cut-off member still follows a leader");
        std::thread::sleep(Duration::from_millis(100));
    }
    rt.block_on(async {
        let mut c2 = c.clone();
        let (ttl, renewed) = tokio::join!(c.lease_time_to_live(id, None), async move {
            let (mut keeper, mut stream) = c2.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            stream.message().await
        });
        for err in [ttl.map(|_| ()).unwrap_err(), renewed.map(|_| ()).unwrap_err()] {
            let status = harness::grpc_status(&err);
            assert_eq!(
                (status.code(), status.message()),
                (tonic::Code::Unavailable, "etcdserver: no leader")
            );
        }
    });
    cluster.members[via].heal();
    rt.block_on(async {
        let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
        assert_eq!(renew(&mut keeper, &mut stream).await, 60);
    });
}
