//! Crash durability: acknowledged writes must survive `kill -9`.
//!
//! Several writer tasks put distinct keys in a loop; once enough puts have
//! been acknowledged the server is SIGKILLed while writes are still in
//! flight, then restarted on the same data dir.  Every acknowledged key must
//! be present with its value, no key may hold a value that was never
//! written, and the revision must account for every acknowledged put.
//! Repeated for several kill/restart cycles.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use harness::{connect, Server};

const WRITERS: usize = 8;
const CYCLES: usize = 5;
/// Acknowledged puts (per cycle) after which the server is killed.
const ACKS_BEFORE_KILL: usize = 150;
/// Hard cap of puts per writer per cycle, so that a cycle is bounded even
/// if something goes wrong with the kill.
const MAX_PUTS_PER_WRITER: usize = 2_000;
/// Hang guard (not a performance assertion).
const CYCLE_GUARD: Duration = Duration::from_secs(60);

fn key(cycle: usize, writer: usize, i: usize) -> String {
    format!("crash/c{cycle}/w{writer}/{i:06}")
}

fn value(cycle: usize, writer: usize, i: usize) -> String {
    format!("value-{cycle}-{writer}-{i}-{}", "x".repeat(i % 97))
}

fn parse_key(k: &str) -> (usize, usize, usize) {
    let parts: Vec<&str> = k.trim_start_matches("crash/").split('/').collect();
    assert_eq!(parts.len(), 3, "unexpected key {k:?}");
    (
        parts[0][1..].parse().unwrap(),
        parts[1][1..].parse().unwrap(),
        parts[2].parse().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill9() {
    let mut srv = Server::start_target();
    let mut acked: Vec<(String, String)> = Vec::new();

    for cycle in 0..CYCLES {
        let ep = srv.endpoint();
        let count = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let ep = ep.clone();
            let count = count.clone();
            let done = done.clone();
            tasks.spawn(async move {
                let mut c = connect(&ep).await;
                let mut mine = Vec::new();
                for i in 0..MAX_PUTS_PER_WRITER {
                    let (k, v) = (key(cycle, w, i), value(cycle, w, i));
                    match tokio::time::timeout(Duration::from_secs(15), c.put(k.clone(), v.clone(), None)).await {
                        Ok(Ok(_)) => {
                            mine.push((k, v));
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        // The server was killed (or the put timed out): stop.
                        _ => break,
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
                mine
            });
        }

        let start = Instant::now();
        while count.load(Ordering::SeqCst) < ACKS_BEFORE_KILL && done.load(Ordering::SeqCst) < WRITERS {
            assert!(
                start.elapsed() < CYCLE_GUARD,
                "cycle {cycle}: only {} puts acknowledged within {CYCLE_GUARD:?}\n{}",
                count.load(Ordering::SeqCst),
                srv.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Kill while the writers are still going.
        tokio::task::block_in_place(|| srv.kill9());

        let mut this_cycle = 0;
        let joined = tokio::time::timeout(CYCLE_GUARD, async {
            while let Some(r) = tasks.join_next().await {
                let mine = r.expect("writer task panicked");
                this_cycle += mine.len();
                acked.extend(mine);
            }
        })
        .await;
        assert!(joined.is_ok(), "cycle {cycle}: writers did not stop after the kill");
        assert!(this_cycle > 0, "cycle {cycle}: no write was acknowledged");

        tokio::task::block_in_place(|| srv.restart());

        // Verify.
        let mut c = connect(&srv.endpoint()).await;
        let r = c
            .get("crash/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("read after restart");
        let revision = r.header().unwrap().revision();
        let stored: BTreeMap<String, String> = r
            .kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string()))
            .collect();
        let mut missing = Vec::new();
        for (k, v) in &acked {
            match stored.get(k) {
                Some(got) if got == v => {}
                Some(got) => panic!("cycle {cycle}: acknowledged key {k} has value {got:?}, expected {v:?}"),
                None => missing.push(k.clone()),
            }
        }
        assert!(
            missing.is_empty(),
            "cycle {cycle}: {} acknowledged keys lost after kill -9, e.g. {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            srv.log_tail(40)
        );
        for (k, v) in &stored {
            let (c, w, i) = parse_key(k);
            assert_eq!(v, &value(c, w, i), "key {k} holds a value that was never written");
            assert_eq!(
                r.kvs().iter().find(|kv| kv.key() == k.as_bytes()).unwrap().version(),
                1,
                "key {k} was written once"
            );
        }
        assert!(
            revision > acked.len() as i64,
            "cycle {cycle}: revision {revision} < acknowledged puts {} + 1",
            acked.len()
        );
        // Unacknowledged but applied puts are allowed, so stored >= acked.
        assert!(stored.len() >= acked.len());
        assert!(
            revision > stored.len() as i64,
            "cycle {cycle}: revision {revision} < stored keys {} + 1",
            stored.len()
        );
        eprintln!(
            "cycle {cycle}: {this_cycle} acknowledged, {} stored in total, revision {revision}",
            stored.len()
        );
    }
}
