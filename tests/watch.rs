//! Watch: differential tests of `etcdctl watch` and of the Watch stream
//! against a real etcd 3.4, and etcd's watch guarantees checked under
//! concurrent writers.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions, WatchResponse};
use harness::background::{json_events, simple_events, Background};
use harness::{both, Differential, Server};
use serde_json::{json, Value};

/// Hang guard for one watch message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(15);

async fn next(stream: &mut etcd_client::WatchStream) -> WatchResponse {
    tokio::time::timeout(MESSAGE_TIMEOUT, stream.message())
        .await
        .expect("watch message within the hang guard")
        .expect("watch stream error")
        .expect("watch stream ended")
}

/// History: puts, overwrites, a multi-key txn and deletes, revisions 2..=10.
fn seed(d: &mut Differential) {
    for (k, v) in [("foo/a", "1"), ("foo/b", "1"), ("foo/a", "2"), ("bar", "x")] {
        d.ctl(&format!("seed put {k}={v}"), &["put", k, v]);
    }
    d.ctl_stdin(
        "seed txn",
        &["txn"],
        harness::txn_input(&[], &["put foo/c 3", "put foo/d 4", "del foo/b"], &[]).as_bytes(),
    );
    d.ctl("seed del", &["del", "foo/a"]);
    d.ctl("seed put again", &["put", "foo/a", "3"]);
    d.ctl("seed del prefix", &["del", "foo/c", "--prefix"]);
    d.ctl("seed put zz", &["put", "foo/zz", "last"]);
}

/// Runs the same background watch on both servers until each printed
/// `events` events, and compares the normalised output.
fn compare_watch(d: &mut Differential, step: &str, args: &[&str], events: usize) {
    let json = args.windows(2).any(|w| w == ["-w", "json"]);
    let count = move |lines: &[String]| if json { json_events(lines) } else { simple_events(lines) };
    let (ep_ref, ep_tgt) = (d.reference.endpoint(), d.target.endpoint());
    let (r, t) = both(
        || {
            let mut b = Background::start(&ep_ref, args);
            b.wait_for(step, |l| count(l) >= events).to_vec()
        },
        || {
            let mut b = Background::start(&ep_tgt, args);
            b.wait_for(step, |l| count(l) >= events).to_vec()
        },
    );
    let r = d.nref.stdout(&r.join("\n"));
    let t = d.ntgt.stdout(&t.join("\n"));
    d.compare_json(step, &Value::Array(r), &Value::Array(t));
}

#[test]
fn etcdctl_watch_history_matches_etcd() {
    let mut d = Differential::start();
    seed(&mut d);
    compare_watch(&mut d, "watch prefix from 2", &["watch", "foo", "--prefix", "--rev", "2"], 10);
    compare_watch(
        &mut d,
        "watch prefix json",
        &["watch", "foo", "--prefix", "--rev", "2", "-w", "json"],
        10,
    );
    compare_watch(
        &mut d,
        "watch prev-kv",
        &["watch", "foo/", "--prefix", "--rev", "2", "--prev-kv"],
        10,
    );
    compare_watch(
        &mut d,
        "watch prev-kv json",
        &["watch", "foo/", "--prefix", "--rev", "4", "--prev-kv", "-w", "json"],
        8,
    );
    compare_watch(&mut d, "watch one key", &["watch", "foo/a", "--rev", "2", "-w", "json"], 4);
    compare_watch(&mut d, "watch range", &["watch", "foo/a", "foo/c", "--rev", "3", "-w", "json"], 5);
    compare_watch(
        &mut d,
        "watch from middle",
        &["watch", "foo", "--prefix", "--rev", "8", "-w", "json"],
        3,
    );
    compare_watch(&mut d, "watch wide range", &["watch", "a", "zzz", "--rev", "5", "-w", "json"], 8);

    // Live events: the watch starts at the next revision, so it sees the
    // same events however late it is created.
    let (ep_ref, ep_tgt) = (d.reference.endpoint(), d.target.endpoint());
    let args = ["watch", "live/", "--prefix", "--rev", "11", "--prev-kv", "-w", "json"];
    let mut wr = Background::start(&ep_ref, &args);
    let mut wt = Background::start(&ep_tgt, &args);
    d.ctl("live put", &["put", "live/1", "a"]);
    d.ctl("live overwrite", &["put", "live/1", "b"]);
    d.ctl_stdin(
        "live txn",
        &["txn"],
        harness::txn_input(&[], &["put live/2 c", "put live/3 d", "del live/1"], &[]).as_bytes(),
    );
    let r = wr.wait_for("live events", |l| json_events(l) >= 5).to_vec();
    let t = wt.wait_for("live events", |l| json_events(l) >= 5).to_vec();
    // How revisions group into responses depends on whether the watch was
    // created before the writes (one per revision) or after (one catch-up
    // batch), on etcd as on cairn; the events themselves may not differ.
    let (r, t) = (d.nref.stdout(&r.join("\n")), d.ntgt.stdout(&t.join("\n")));
    let events = |lines: Vec<Value>| -> Value {
        Value::Array(
            lines
                .iter()
                .flat_map(|l| l["Events"].as_array().cloned().unwrap_or_default())
                .collect(),
        )
    };
    d.compare_json("live watch", &events(r), &events(t));
}

#[test]
fn compacted_start_revision_cancels_the_watch_like_etcd() {
    let mut d = Differential::start();
    seed(&mut d);
    d.ctl("compact", &["compaction", "6"]);
    // etcdctl exits by itself when the server cancels the watch.
    d.ctl("watch below compaction", &["watch", "foo", "--prefix", "--rev", "3"]);
    d.ctl(
        "watch below compaction json",
        &["watch", "foo", "--prefix", "--rev", "5", "-w", "json"],
    );
    compare_watch(
        &mut d,
        "watch above compaction",
        &["watch", "foo", "--prefix", "--rev", "7", "-w", "json"],
        4,
    );
}

/// One watch stream's responses, as comparable JSON.
fn response_json(r: &WatchResponse) -> Value {
    let events: Vec<Value> = r
        .events()
        .iter()
        .map(|e| {
            json!({
                "type": format!("{:?}", e.event_type()),
                "kv": e.kv().map(harness::convert::kv),
                "prev_kv": e.prev_kv().map(harness::convert::kv),
            })
        })
        .collect();
    json!({
        "header": harness::convert::header(r.header()),
        "watch_id": r.watch_id(),
        "created": r.created(),
        "canceled": r.canceled(),
        "compact_revision": r.compact_revision(),
        "cancel_reason": r.cancel_reason(),
        "events": events,
    })
}

/// A scripted session on one watch stream: several watches with chosen
/// ids, filters, prev_kv, a duplicate id, an empty range, progress
/// requests and cancels.
async fn stream_session(endpoint: String) -> Vec<Value> {
    let mut c = harness::connect(&endpoint).await;
    for (k, v) in [("s/a", "1"), ("s/b", "1"), ("s/a", "2")] {
        c.put(k, v, None).await.unwrap();
    }
    c.delete("s/b", None).await.unwrap();
    let mut out = Vec::new();
    let mut s = c
        .watch(
            "s/",
            Some(WatchOptions::new().with_prefix().with_start_revision(2).with_watch_id(7)),
        )
        .await
        .unwrap();
    out.push(response_json(&next(&mut s).await)); // created 7
    out.push(response_json(&next(&mut s).await)); // history
    s.watch(
        "s/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_start_revision(2)
                .with_filters([WatchFilterType::NoPut])
                .with_prev_key(),
        ),
    )
    .await
    .unwrap();
    out.push(response_json(&next(&mut s).await)); // created 0 (auto)
    out.push(response_json(&next(&mut s).await)); // the delete, with prev_kv
    s.watch("s/", Some(WatchOptions::new().with_prefix().with_watch_id(7)))
        .await
        .unwrap();
    out.push(response_json(&next(&mut s).await)); // duplicate id
    s.watch("s/z", Some(WatchOptions::new().with_range("s/a"))).await.unwrap();
    out.push(response_json(&next(&mut s).await)); // empty range
    s.watch("s/a", Some(WatchOptions::new().with_filters([WatchFilterType::NoDelete])))
        .await
        .unwrap();
    out.push(response_json(&next(&mut s).await)); // created 1 (auto)
    s.request_progress().await.unwrap();
    out.push(response_json(&next(&mut s).await)); // progress, id -1
    s.cancel(0).await.unwrap();
    out.push(response_json(&next(&mut s).await)); // canceled 0
                                                  // One txn: watch 7 sees both events in one response; watch 1 sees the put.
    c.txn(Txn::new().and_then([TxnOp::put("s/a", "4", None), TxnOp::put("s/d", "y", None)]))
        .await
        .unwrap();
    let mut live: BTreeMap<i64, Value> = BTreeMap::new();
    while live.len() < 2 {
        let r = next(&mut s).await;
        live.insert(r.watch_id(), response_json(&r));
    }
    out.extend(live.into_values());
    s.cancel(7).await.unwrap();
    out.push(response_json(&next(&mut s).await));
    out
}

#[test]
fn watch_stream_control_messages_match_etcd() {
    let mut d = Differential::start();
    d.compare_sessions("watch stream session", stream_session);
}

/// What a writer did: each revision it made, with the keys it changed in
/// order and whether each change was a put.
type Writes = BTreeMap<i64, Vec<(String, bool)>>;

async fn writer(endpoint: String, id: usize, rounds: usize) -> Writes {
    let mut c = harness::connect(&endpoint).await;
    let mut done = Writes::new();
    for i in 0..rounds {
        let a = format!("g/{id}/a");
        let b = format!("g/{id}/b{}", i % 3);
        match i % 3 {
            0 => {
                let r = c.put(a.clone(), format!("{i}"), None).await.unwrap();
                done.insert(r.header().unwrap().revision(), vec![(a, true)]);
            }
            1 => {
                // A multi-key txn: its events must arrive together.
                let txn = Txn::new()
                    .when([Compare::version(a.clone(), CompareOp::Greater, 0)])
                    .and_then([TxnOp::put(a.clone(), format!("{i}"), None), TxnOp::put(b.clone(), "v", None)]);
                let r = c.txn(txn).await.unwrap();
                done.insert(r.header().unwrap().revision(), vec![(a, true), (b, true)]);
            }
            _ => {
                let r = c.delete(a.clone(), None).await.unwrap();
                done.insert(r.header().unwrap().revision(), vec![(a, false)]);
            }
        }
    }
    done
}

/// Reads a watch until `last` is seen; checks each response holds whole
/// revisions in order; returns the events and the last revision seen.
async fn collect(stream: &mut etcd_client::WatchStream, last: i64, into: &mut Writes) {
    collect_until(stream, into, |seen| seen.keys().next_back().is_some_and(|r| *r >= last)).await;
}

/// Reads a watch into `into` until `done(into)`, checking that responses
/// hold whole revisions in order.
async fn collect_until(stream: &mut etcd_client::WatchStream, into: &mut Writes, done: impl Fn(&Writes) -> bool) {
    let mut newest = into.keys().next_back().copied().unwrap_or(0);
    while !done(into) {
        let r = next(stream).await;
        assert!(!r.canceled(), "watch canceled: {}", r.cancel_reason());
        // Revisions of earlier responses never come again: a revision is
        // neither split between responses nor repeated.
        let before = newest;
        for e in r.events() {
            let kv = e.kv().unwrap();
            let rev = kv.mod_revision();
            assert!(
                rev > before,
                "event of revision {rev} after a response that reached revision {before}"
            );
            assert!(rev >= newest, "event of revision {rev} after revision {newest}");
            newest = rev;
            into.entry(rev)
                .or_default()
                .push((kv.key_str().unwrap().to_string(), e.event_type() == EventType::Put));
        }
    }
}

#[test]
fn watch_guarantees_under_concurrent_writers() {
    let server = Server::start_target();
    let ep = server.endpoint();
    harness::runtime().block_on(async move {
        let mut c = harness::connect(&ep).await;
        let start = c.put("g/start", "", None).await.unwrap().header().unwrap().revision() + 1;
        let mut watch = c
            .watch("g/", Some(WatchOptions::new().with_prefix().with_start_revision(start)))
            .await
            .unwrap();
        assert!(next(&mut watch).await.created());
        let writers: Vec<_> = (0..4).map(|id| tokio::spawn(writer(ep.clone(), id, 60))).collect();
        let mut expected = Writes::new();
        for w in writers {
            expected.extend(w.await.unwrap());
        }
        let last = *expected.keys().next_back().unwrap();
        // Read part of the feed, drop the watch, and resume from the
        // revision after the last one seen, as a reconnecting client does.
        let middle = expected.keys().nth(expected.len() / 2).copied().unwrap();
        let mut seen = Writes::new();
        collect(&mut watch, middle, &mut seen).await;
        drop(watch);
        let resume = seen.keys().next_back().unwrap() + 1;
        let mut c2 = harness::connect(&ep).await;
        let mut watch = c2
            .watch("g/", Some(WatchOptions::new().with_prefix().with_start_revision(resume)))
            .await
            .unwrap();
        assert!(next(&mut watch).await.created());
        collect(&mut watch, last, &mut seen).await;
        // Ordered, no duplicates, every txn whole, no gaps: exactly the
        // writes made, revision by revision.
        assert_eq!(seen, expected);
    });
}

#[test]
fn watch_guarantees_on_a_cluster_resuming_on_other_members() {
    let cluster = harness::Cluster::start(3);
    let endpoints = cluster.endpoints();
    harness::runtime().block_on(async move {
        let mut c = harness::connect(&endpoints[0]).await;
        let start = c.put("g/start", "", None).await.unwrap().header().unwrap().revision() + 1;
        let watch_from = |ep: String, from: i64| async move {
            let mut c = harness::connect(&ep).await;
            let mut w = c
                .watch("g/", Some(WatchOptions::new().with_prefix().with_start_revision(from)))
                .await
                .unwrap();
            assert!(next(&mut w).await.created());
            (c, w)
        };
        // Writers on every member, while the watch reads live.
        let (_c0, mut watch) = watch_from(endpoints[0].clone(), start).await;
        let writers: Vec<_> = (0..6).map(|id| tokio::spawn(writer(endpoints[id % 3].clone(), id, 30))).collect();
        let mut seen = Writes::new();
        // A third of the writes on the first member, then a reconnect to
        // the next member from the revision after the last one seen, and
        // so on, as a client whose member went away does.
        for (part, ep) in endpoints.iter().enumerate().skip(1) {
            collect_until(&mut watch, &mut seen, |s| s.len() >= part * 60).await;
            drop(watch);
            let resume = seen.keys().next_back().unwrap() + 1;
            watch = watch_from(ep.clone(), resume).await.1;
        }
        let mut expected = Writes::new();
        for w in writers {
            expected.extend(w.await.unwrap());
        }
        let last = *expected.keys().next_back().unwrap();
        collect(&mut watch, last, &mut seen).await;
        // Ordered, no duplicates, every txn whole, no gaps: exactly the
        // writes made, revision by revision, across three members.
        assert_eq!(seen, expected);
    });
}

#[test]
fn slow_watcher_does_not_block_writes_and_catches_up() {
    let server = Server::start_target();
    let ep = server.endpoint();
    harness::runtime().block_on(async move {
        let mut watch_client = harness::connect(&ep).await;
        let mut writes = harness::connect(&ep).await;
        let mut watch = watch_client.watch("slow/", Some(WatchOptions::new().with_prefix())).await.unwrap();
        assert!(next(&mut watch).await.created());
        // Far more than the stream's flow-control windows and the
        // watcher's buffer hold, while nobody reads the watch.
        let value = "v".repeat(16 * 1024);
        let mut expected = Writes::new();
        for i in 0..400 {
            let key = format!("slow/{}", i % 10);
            let r = tokio::time::timeout(MESSAGE_TIMEOUT, writes.put(key.clone(), value.clone(), None))
                .await
                .expect("a write was held up by a slow watcher")
                .unwrap();
            expected.insert(r.header().unwrap().revision(), vec![(key, true)]);
        }
        // Other watchers are not held up either.
        let first = *expected.keys().next().unwrap();
        let last = *expected.keys().next_back().unwrap();
        let mut other = writes
            .watch("slow/", Some(WatchOptions::new().with_prefix().with_start_revision(last)))
            .await
            .unwrap();
        assert!(next(&mut other).await.created());
        assert_eq!(next(&mut other).await.events()[0].kv().unwrap().mod_revision(), last);
        let mut seen = Writes::new();
        collect(&mut watch, last, &mut seen).await;
        assert_eq!(seen.keys().next().copied(), Some(first));
        assert_eq!(seen, expected);
    });
}

#[test]
fn live_prev_kv_matches_etcd() {
    // prev_kv of live events, including deletes and overwrites in txns.
    let mut d = Differential::start();
    let session = |endpoint: String| async move {
        let mut c: Client = harness::connect(&endpoint).await;
        let mut s = c.watch("p", Some(WatchOptions::new().with_prefix().with_prev_key())).await.unwrap();
        let mut out = vec![response_json(&next(&mut s).await)];
        c.put("p1", "a", None).await.unwrap();
        c.put("p1", "b", Some(PutOptions::new().with_prev_key())).await.unwrap();
        c.txn(Txn::new().and_then([TxnOp::put("p2", "c", None), TxnOp::delete("p1", None)]))
            .await
            .unwrap();
        for _ in 0..3 {
            out.push(response_json(&next(&mut s).await));
        }
        out
    };
    d.compare_sessions("prev_kv live", session);
}

/// A catch-up larger than etcd's response limit on a watch that asked for
/// fragments arrives in parts, split as etcd splits it.
async fn fragment_session(endpoint: String) -> Vec<Value> {
    let mut c = harness::connect(&endpoint).await;
    for i in 0..40 {
        c.put(format!("f/{i:02}"), "x".repeat(60 * 1024), None).await.unwrap();
    }
    let mut s = c
        .watch("f/", Some(WatchOptions::new().with_prefix().with_start_revision(2).with_fragment()))
        .await
        .unwrap();
    let mut out = vec![response_json(&next(&mut s).await)];
    let mut events = 0;
    while events < 40 {
        let r = next(&mut s).await;
        events += r.events().len();
        out.push(response_json(&r));
    }
    out
}

#[test]
fn fragmented_watch_responses_match_etcd() {
    // etcd fragments past `--max-request-bytes` plus 512 KiB of gRPC
    // allowance: 2.4 MB of history is more than that by default.
    let mut d = Differential::start();
    let (r, t) = d.sessions(fragment_session);
    let shape = |responses: Value| -> Value {
        Value::Array(
            responses
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let keys: Vec<Value> = r["events"].as_array().unwrap().iter().map(|e| e["kv"]["key"].clone()).collect();
                    json!({"header": r["header"], "created": r["created"], "keys": keys})
                })
                .collect(),
        )
    };
    let (r, t) = (shape(r), shape(t));
    assert!(r.as_array().unwrap().len() > 2, "the reference did not fragment: {r}");
    d.compare_json("fragmented catch-up", &r, &t);
}

/// Progress notifications on idle watches that asked for them, with the
/// interval shortened by etcd's experimental flag: each carries the
/// current revision, including revisions the watch had no events of.
async fn progress_notify_session(endpoint: String) -> Vec<Value> {
    let mut c = harness::connect(&endpoint).await;
    c.put("pn/a", "1", None).await.unwrap();
    let mut s = c
        .watch("pn/", Some(WatchOptions::new().with_prefix().with_progress_notify()))
        .await
        .unwrap();
    let mut out = vec![response_json(&next(&mut s).await)];
    out.push(response_json(&next(&mut s).await));
    let rev = c.put("elsewhere", "1", None).await.unwrap().header().unwrap().revision();
    // A notification may have been on its way while the put was applied;
    // a later one reports the put's revision.
    for _ in 0..10 {
        let r = next(&mut s).await;
        assert!(r.events().is_empty(), "events outside the watched prefix: {r:?}");
        if r.header().unwrap().revision() >= rev {
            out.push(response_json(&r));
            return out;
        }
    }
    panic!("no progress notification reached revision {rev}");
}

#[test]
fn progress_notify_on_idle_watches_matches_etcd() {
    let mut d = Differential::start_with_args(&["--experimental-watch-progress-notify-interval=300ms"]);
    let (r, t) = d.sessions(progress_notify_session);
    let revisions: Vec<&Value> = t.as_array().unwrap().iter().map(|r| &r["header"]["revision"]).collect();
    assert_eq!(revisions, [&json!(2), &json!(2), &json!(3)]);
    d.compare_json("progress notifications", &r, &t);
}
