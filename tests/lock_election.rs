//! Lock and Election: mutual exclusion under contention, leader election
//! with contenders through the v3lock/v3election services, and the
//! client-side recipes of `etcdctl lock` and `etcdctl elect`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LockOptions, ProclaimOptions, ResignOptions};
use harness::background::Background;
use harness::{Differential, Server};
use serde_json::{json, Value};

/// Hang guard for one lock or campaign.
const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
}

#[test]
fn lock_is_mutually_exclusive_under_contention() {
    let server = Server::start_target();
    let ep = server.endpoint();
    harness::runtime().block_on(async move {
        let holders = Arc::new(AtomicUsize::new(0));
        let entries = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let (ep, holders, entries) = (ep.clone(), holders.clone(), entries.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = harness::connect(&ep).await;
                let lease = c.lease_grant(60, None).await.unwrap().id();
                for round in 0..5 {
                    let key = within("lock", c.lock("mutex", Some(LockOptions::new().with_lease(lease))))
                        .await
                        .unwrap()
                        .key()
                        .to_vec();
                    assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders of the lock at once");
                    // Work inside the critical section that takes Raft round trips.
                    let counter = c
                        .get("counter", None)
                        .await
                        .unwrap()
                        .kvs()
                        .first()
                        .map_or(0, |kv| kv.value_str().unwrap().parse::<u64>().unwrap());
                    c.put("counter", (counter + 1).to_string(), None).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5 * (worker + round) as u64 % 20)).await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    entries.fetch_add(1, Ordering::SeqCst);
                    c.unlock(key).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(entries.load(Ordering::SeqCst), 20);
        // Increments made under the lock were never lost.
        let mut c = harness::connect(&ep).await;
        assert_eq!(c.get("counter", None).await.unwrap().kvs()[0].value_str().unwrap(), "20");
        // Every lock key is gone.
        let left = c.get("mutex/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
        assert!(left.kvs().is_empty());
    });
}

#[test]
fn lock_waits_for_the_holder_and_dies_with_its_lease() {
    let server = Server::start_target();
    let ep = server.endpoint();
    harness::runtime().block_on(async move {
        let mut a = harness::connect(&ep).await;
        let mut b = harness::connect(&ep).await;
        let la = a.lease_grant(2, None).await.unwrap().id();
        let lb = b.lease_grant(60, None).await.unwrap().id();
        let held = a.lock("m", Some(LockOptions::new().with_lease(la))).await.unwrap();
        assert_eq!(held.key(), format!("m/{la:x}").as_bytes());
        // b waits until a's lease expires (a never renews it).
        let got = within(
            "lock after the holder's lease expired",
            b.lock("m", Some(LockOptions::new().with_lease(lb))),
        )
        .await
        .unwrap();
        assert_eq!(got.key(), format!("m/{lb:x}").as_bytes());
        assert!(a.get(held.key(), None).await.unwrap().kvs().is_empty());
    });
}

#[test]
fn election_with_contenders() {
    let server = Server::start_target();
    let ep = server.endpoint();
    harness::runtime().block_on(async move {
        let mut c = harness::connect(&ep).await;
        let err = c.leader("e").await.unwrap_err();
        assert_eq!(harness::grpc_status(&err).message(), "election: no leader");

        let mut contenders: Vec<(Client, i64)> = Vec::new();
        for _ in 0..3 {
            let mut cl = harness::connect(&ep).await;
            let lease = cl.lease_grant(60, None).await.unwrap().id();
            contenders.push((cl, lease));
        }
        let (first, l1) = &mut contenders[0];
        let leader1 = within("first campaign", first.campaign("e", "one", *l1))
            .await
            .unwrap()
            .leader()
            .unwrap()
            .clone();
        assert_eq!(leader1.key(), format!("e/{l1:x}").as_bytes());
        // etcd answers an Observe only once there is a leader to report.
        let mut observe = c.observe("e").await.unwrap();
        let seen = within("observe", observe.message()).await.unwrap().unwrap();
        assert_eq!(seen.kv().unwrap().value(), b"one");

        // The others campaign in the background and wait.
        let mut waiting = Vec::new();
        for (i, (mut cl, lease)) in contenders.drain(1..).enumerate() {
            waiting.push(tokio::spawn(async move {
                let r = within("campaign", cl.campaign("e", format!("next{i}"), lease)).await.unwrap();
                (r.leader().unwrap().clone(), cl)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            waiting.iter().all(|w| !w.is_finished()),
            "a contender won while the leader held office"
        );
        assert_eq!(c.leader("e").await.unwrap().kv().unwrap().value(), b"one");

        // Proclaim a new value; observers see it.
        let first = &mut contenders[0].0;
        first
            .proclaim("uno", Some(ProclaimOptions::new().with_leader(leader1.clone())))
            .await
            .unwrap();
        assert_eq!(
            within("observe proclaim", observe.message())
                .await
                .unwrap()
                .unwrap()
                .kv()
                .unwrap()
                .value(),
            b"uno"
        );
        // A stale leader key may not proclaim.
        let stale = etcd_client::LeaderKey::new()
            .with_name("e")
            .with_key(leader1.key())
            .with_rev(leader1.rev() + 1000)
            .with_lease(leader1.lease());
        let err = first
            .proclaim("x", Some(ProclaimOptions::new().with_leader(stale)))
            .await
            .unwrap_err();
        assert_eq!(harness::grpc_status(&err).message(), "election: not leader");

        // Resign: the contender that campaigned first takes over.
        first.resign(Some(ResignOptions::new().with_leader(leader1))).await.unwrap();
        let (winner, _) = within("next leader", async {
            loop {
                if let Some(i) = waiting.iter().position(|w| w.is_finished()) {
                    return waiting.remove(i).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let now = c.leader("e").await.unwrap();
        assert_eq!(now.kv().unwrap().key(), winner.key());
        let seen = within("observe new leader", observe.message()).await.unwrap().unwrap();
        assert_eq!(seen.kv().unwrap().key(), winner.key());
        assert!(waiting.iter().all(|w| !w.is_finished()), "two contenders lead at once");
    });
}

#[test]
fn etcdctl_lock_and_elect_behave_like_etcd() {
    let mut d = Differential::start();
    // With a command, etcdctl holds the lock while the command runs.
    d.ctl("lock and run", &["lock", "mylock", "echo", "locked"]);
    d.ctl("keys after lock", &["get", "mylock", "--prefix", "-w", "json"]);

    // A second etcdctl lock waits while another client holds the lock.
    let contend = |ep: String| {
        std::future::ready({
            let mut holder = Background::start(&ep, &["lock", "busy"]);
            let lines = holder.wait_for("the held lock's key", |l| !l.is_empty()).to_vec();
            let mut waiter = Background::start(&ep, &["lock", "busy", "echo", "second"]);
            std::thread::sleep(Duration::from_millis(500));
            let waited = !waiter.exited();
            // Interrupted, etcdctl unlocks before it exits.
            holder.interrupt();
            let out = waiter
                .wait_for("the waiter's command output", |l| l.iter().any(|x| x == "second"))
                .to_vec();
            json!([lines[0].starts_with("busy/"), waited, out])
        })
    };
    d.compare_sessions("lock contention", contend);

    // etcdctl elect prints the winning key and proposal; an observer
    // (`elect -l`) prints the leader's.
    let elect = |ep: String| {
        std::future::ready({
            let mut leader = Background::start(&ep, &["elect", "myelection", "p1"]);
            let won = leader.wait_for("elected", |l| l.len() >= 2).to_vec();
            let mut observer = Background::start(&ep, &["elect", "-l", "myelection"]);
            let seen = observer.wait_for("observed leader", |l| l.len() >= 2).to_vec();
            let mut second = Background::start(&ep, &["elect", "myelection", "p2"]);
            std::thread::sleep(Duration::from_millis(500));
            let waited = !second.exited() && second.wait_for("nothing", |_| true).is_empty();
            vec![
                json!(won[0].starts_with("myelection/")),
                json!(won[1]),
                json!(seen[0] == won[0]),
                json!(seen[1]),
                json!(waited),
            ]
        })
    };
    d.compare_sessions("elect", elect);
}

/// A lease's id, granted TTL, whether it has time left, and its keys.
async fn describe(c: &mut Client, lease: i64) -> Value {
    let ttl = c
        .lease_time_to_live(lease, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    let keys: Vec<Value> = ttl.keys().iter().map(|k| recipe_key(k)).collect();
    json!({"id": ttl.id(), "granted": ttl.granted_ttl(), "alive": ttl.ttl() > 0, "keys": keys})
}

/// A recipe key `<prefix><lease in hex>` as its prefix and lease, so the
/// lease is normalised like any other (its hex has no fixed width).
fn recipe_key(key: &[u8]) -> Value {
    let key = String::from_utf8_lossy(key);
    let prefix = &key[..key.rfind('/').map_or(0, |i| i + 1)];
    json!({"prefix": prefix, "lease": lease_in(key.as_bytes(), prefix)})
}

/// The lease a recipe key `<prefix><lease in hex>` names.
fn lease_in(key: &[u8], prefix: &str) -> i64 {
    let hex = std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix(prefix));
    hex.and_then(|h| i64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("{:?} is not {prefix}<lease in hex>", String::from_utf8_lossy(key)))
}

/// Lock, Campaign, Proclaim and Resign naming no lease: the server grants
/// a 60 s lease of its own for each and never renews it, as etcd's lock
/// and election servers do with their orphaned sessions.
async fn lease_zero_session(endpoint: String) -> Vec<Value> {
    let mut c = harness::connect(&endpoint).await;
    let mut out = Vec::new();
    let locked = c.lock("l0", None).await.unwrap();
    let lock_lease = lease_in(locked.key(), "l0/");
    out.push(json!({"lock": harness::convert::header(locked.header()), "lease": lock_lease}));
    out.push(describe(&mut c, lock_lease).await);

    let campaign = c.campaign("e0", "v", 0).await.unwrap();
    let leader = campaign.leader().unwrap().clone();
    assert_eq!(lease_in(leader.key(), "e0/"), leader.lease());
    out.push(json!({
        "campaign": harness::convert::header(campaign.header()),
        "name": harness::convert::bytes(leader.name()),
        "rev": leader.rev(),
        "lease": leader.lease(),
    }));
    out.push(describe(&mut c, leader.lease()).await);

    // A leader key without its lease: the proclaimed value is attached to
    // a lease granted for the call.
    let unleased = etcd_client::LeaderKey::new()
        .with_name("e0")
        .with_key(leader.key())
        .with_rev(leader.rev());
    let proclaimed = c
        .proclaim("w", Some(ProclaimOptions::new().with_leader(unleased.clone())))
        .await
        .unwrap();
    out.push(harness::convert::header(proclaimed.header()));
    let now = c.get("e0/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    let mut got = harness::convert::get(&now);
    for (kv, raw) in got["kvs"].as_array_mut().unwrap().iter_mut().zip(now.kvs()) {
        kv["key"] = recipe_key(raw.key());
    }
    out.push(got);
    out.push(describe(&mut c, now.kvs()[0].lease()).await);
    let resigned = c.resign(Some(ResignOptions::new().with_leader(unleased))).await.unwrap();
    out.push(harness::convert::header(resigned.header()));
    out.push(json!({"leases": c.leases().await.unwrap().leases().len()}));
    c.unlock(locked.key()).await.unwrap();
    out.push(harness::convert::get(
        &c.get("", Some(etcd_client::GetOptions::new().with_all_keys())).await.unwrap(),
    ));
    out
}

#[test]
fn lock_and_campaign_without_a_lease_match_etcd() {
    let mut d = Differential::start();
    d.compare_sessions("lease 0 session", lease_zero_session);
}
