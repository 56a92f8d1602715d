//! Fault tolerance of a 3-member cluster: the leader killed under write
//! load, a member cut off from the others, the whole cluster killed and
//! restarted. Each test ends by checking that every acknowledged write is
//! on every member and that all members' HashKV agree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use harness::{connect, etcdctl, Cluster};

/// Kill cycles of the leader-kill test.
const KILL_CYCLES: usize = 2;
const WRITERS: usize = 6;
/// Acknowledged puts before the kill, and after it (proof writes resumed).
const ACKS_BEFORE_KILL: usize = 100;
const ACKS_AFTER_KILL: usize = 100;
/// Hang guard per phase (not a performance assertion).
const PHASE_GUARD: Duration = Duration::from_secs(90);

fn value_of(key: &str) -> String {
    format!("value-of-{key}")
}

type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Writers that spread distinct keys over all members, moving on to the next
/// member whenever one fails, and record what was acknowledged.
fn spawn_writers(
    rt: &tokio::runtime::Runtime,
    endpoints: Vec<String>,
    prefix: &str,
    acked: Acked,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (endpoints, acked, count, stop) = (endpoints.clone(), acked.clone(), count.clone(), stop.clone());
            let prefix = prefix.to_string();
            rt.spawn(async move {
                let mut target = w % endpoints.len();
                let mut client = None;
                for i in 0..100_000usize {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if client.is_none() {
                        let opts = etcd_client::ConnectOptions::new()
                            .with_connect_timeout(Duration::from_secs(1))
                            .with_timeout(Duration::from_secs(10));
                        client = etcd_client::Client::connect([endpoints[target].as_str()], Some(opts)).await.ok();
                    }
                    let key = format!("{prefix}/w{w}/{i:06}");
                    let ok = match client.as_mut() {
                        Some(c) => c.put(key.clone(), value_of(&key), None).await.is_ok(),
                        None => false,
                    };
                    if ok {
                        acked.lock().unwrap().insert(key.clone(), value_of(&key));
                        count.fetch_add(1, Ordering::SeqCst);
                    } else {
                        client = None;
                        target = (target + 1) % endpoints.len();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect()
}

fn wait_count(count: &AtomicUsize, at_least: usize, c: &Cluster, what: &str) {
    let start = Instant::now();
    while count.load(Ordering::SeqCst) < at_least {
        if start.elapsed() > PHASE_GUARD {
            panic!(
                "{what}: only {} acknowledged writes\n{}",
                count.load(Ordering::SeqCst),
                c.log_tails()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every acknowledged write is on every member with its value, and every
/// key under `prefix` holds the value its writer would have written.
fn check_acked(rt: &tokio::runtime::Runtime, c: &Cluster, prefix: &str, acked: &BTreeMap<String, String>) {
    for ep in c.endpoints() {
        let found: BTreeMap<String, String> = rt.block_on(async {
            let mut client = connect(&ep).await;
            let resp = client.get(prefix, Some(GetOptions::new().with_prefix())).await.expect("range");
            resp.kvs()
                .iter()
                .map(|kv| (kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string()))
                .collect()
        });
        for (k, v) in &found {
            assert_eq!(v, &value_of(k), "{ep}: {k} holds a value never written");
        }
        for (k, v) in acked {
            assert_eq!(found.get(k), Some(v), "{ep}: acknowledged write {k} missing");
        }
    }
}

#[test]
fn leader_killed_under_write_load() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Cluster::start(3);
    let acked: Acked = Arc::default();
    for cycle in 0..KILL_CYCLES {
        let prefix = format!("kill/c{cycle}");
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writers = spawn_writers(&rt, c.endpoints(), &prefix, acked.clone(), count.clone(), stop.clone());
        wait_count(&count, ACKS_BEFORE_KILL, &c, "before the kill");
        let leader = c.leader();
        c.kill9(leader);
        let at_kill = count.load(Ordering::SeqCst);
        wait_count(&count, at_kill + ACKS_AFTER_KILL, &c, "after the leader was killed");
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            rt.block_on(w).unwrap();
        }
        c.restart(leader);
        c.assert_converged();
        let acked = acked.lock().unwrap().clone();
        check_acked(&rt, &c, "kill/", &acked);
    }
}

#[test]
fn whole_cluster_restarts_from_disk() {
    let rt = harness::runtime();
    let mut c = Cluster::start(3);
    let eps = c.endpoints();
    let mut acked = BTreeMap::new();
    for i in 0..30 {
        let key = format!("restart/{i:03}");
        etcdctl(&eps[i % 3], &["put", &key, &value_of(&key)]).assert_ok();
        acked.insert(key.clone(), value_of(&key));
    }
    let before = c.assert_converged();
    c.restart_all();
    let after = c.assert_converged();
    assert_eq!(before, after, "revision changed across a restart");
    check_acked(&rt, &c, "restart/", &acked);
    // And the restarted cluster takes writes through any member.
    for (i, ep) in eps.iter().enumerate() {
        let key = format!("restart/after/{i}");
        etcdctl(ep, &["put", &key, &value_of(&key)]).assert_ok();
        acked.insert(key.clone(), value_of(&key));
    }
    c.assert_converged();
    check_acked(&rt, &c, "restart/", &acked);
}

/// Writes one key through each member of `rest` (the majority side of a
/// cut) and records it as acknowledged.
fn write_on_majority(c: &Cluster, rest: &[usize], prefix: &str, cycle: usize, acked: &mut BTreeMap<String, String>) {
    for (n, &i) in rest.iter().enumerate() {
        let key = format!("{prefix}c{cycle}/{n}");
        etcdctl(&c.members[i].endpoint(), &["put", &key, &value_of(&key)]).assert_ok();
        acked.insert(key.clone(), value_of(&key));
    }
}

/// Once member `cut` has noticed it is cut off (it knows no leader), it
/// refuses linearizable reads and writes with etcd's errors, within the
/// client's deadline, and does not think it leads.
fn assert_cut_off_member_refuses(c: &Cluster, cut: usize, prefix: &str) {
    let ep = c.members[cut].endpoint();
    let start = Instant::now();
    // (etcdctl's JSON omits a zero leader.)
    while etcdctl(&ep, &["endpoint", "status", "-w", "json"]).json()[0]["Status"]["leader"]
        .as_u64()
        .unwrap_or(0)
        != 0
    {
        assert!(
            start.elapsed() < PHASE_GUARD,
            "cut-off member still follows or is a leader\n{}",
            c.log_tails()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (get_key, never_key) = (format!("{prefix}x"), format!("{prefix}never"));
    for args in [vec!["get", get_key.as_str()], vec!["put", never_key.as_str(), "x"]] {
        let out = etcdctl(&ep, &args);
        assert_ne!(out.status, Some(0), "cut-off member served {args:?}: {out:?}");
        assert!(
            out.stderr.contains("etcdserver: no leader") || out.stderr.contains("etcdserver: request timed out"),
            "unexpected error from the cut-off member: {out:?}"
        );
    }
    let j = etcdctl(&ep, &["endpoint", "status", "-w", "json"]).json();
    assert_ne!(j[0]["Status"]["header"]["member_id"].as_u64(), Some(0));
    assert_ne!(j[0]["Status"]["leader"].as_u64(), Some(c.member_id(cut)));
}

#[test]
fn isolated_member_refuses_then_converges() {
    let rt = harness::runtime();
    let mut c = Cluster::start(3);
    let mut acked = BTreeMap::new();
    // Cut off the leader first (it must lose leadership), then a follower.
    for cycle in 0..2 {
        let cut = if cycle == 0 { c.leader() } else { (c.leader() + 1) % 3 };
        let rest: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
        c.members[cut].isolate();

        // The majority elects a leader among itself and keeps serving.
        let new_leader = c.leader_among(&rest);
        assert_ne!(new_leader, cut);
        write_on_majority(&c, &rest, "part/", cycle, &mut acked);
        assert_cut_off_member_refuses(&c, cut, "part/");

        c.members[cut].heal();
        c.assert_converged();
        check_acked(&rt, &c, "part/", &acked);
        let out = etcdctl(&c.members[cut].endpoint(), &["get", "part/never"]);
        assert_eq!(out.assert_ok().stdout, "", "a refused write was applied");
    }
}

#[test]
fn member_partitioned_both_ways_refuses_then_converges() {
    let rt = harness::runtime();
    let mut c = Cluster::start(3);
    let mut acked = BTreeMap::new();
    // The leader first (it must step down on its own: check-quorum), then a
    // follower; neither can send to the others nor hear from them.
    for cycle in 0..2 {
        let cut = if cycle == 0 { c.leader() } else { (c.leader() + 1) % 3 };
        let rest: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
        let refused_before = c.refused_outbound(cut);
        let pid = c.partition(cut);

        let new_leader = c.leader_among(&rest);
        assert_ne!(new_leader, cut);
        write_on_majority(&c, &rest, "both/", cycle, &mut acked);
        assert_cut_off_member_refuses(&c, cut, "both/");
        // Its own attempts to reach the others were refused: the cut was
        // not only inbound.
        let start = Instant::now();
        while c.refused_outbound(cut) == refused_before {
            assert!(
                start.elapsed() < PHASE_GUARD,
                "the partitioned member never tried to reach the others"
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        c.heal_partition(cut, pid);
        c.assert_converged();
        check_acked(&rt, &c, "both/", &acked);
        let out = etcdctl(&c.members[cut].endpoint(), &["get", "both/never"]);
        assert_eq!(out.assert_ok().stdout, "", "a refused write was applied");
    }
}
