//! The backend quota and the alarms, as on etcd: a cluster filled past a
//! small `--quota-backend-bytes` raises NOSPACE and refuses writes that add
//! data on every member while reads, deletes, compaction and
//! defragmentation still work; `alarm disarm` after those lets writes in
//! again, with nothing acknowledged lost. The Alarm RPC, `Status.errors`
//! and `/health` answer as etcd 3.4's do (the same script runs against
//! both). The corruption check finds a member whose state diverged (a
//! failpoint makes it apply puts differently), raises CORRUPT for it, and
//! a restart with the initial check refuses to serve.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmType, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, StatusRequest,
};
use harness::metrics::{http_get, sample, scrape};
use harness::{etcdctl, etcdctl_stdin, txn_input, Cluster, Kind, Server};
use tonic::transport::Channel;

const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";
const CORRUPT: &str = "etcdserver: corrupt cluster";
/// Small enough to fill in seconds, large enough that an empty member is
/// far below it (etcd 3.4's fresh bbolt file is 20 kB).
const QUOTA_BYTES: u64 = 4 << 20;
const VALUE_BYTES: usize = 48 << 10;

/// A value neither RocksDB's compression nor anything else shrinks much:
/// letters from a xorshift generator seeded by `seed`.
fn value(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..VALUE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

/// The alarms `etcdctl alarm list` prints through `ep`, as (member id,
/// alarm name), checking each line's form.
fn alarm_list(ep: &str) -> Vec<(u64, String)> {
    let out = etcdctl(ep, &["alarm", "list"]);
    out.assert_ok();
    parse_alarms(&out.stdout)
}

fn parse_alarms(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .map(|line| {
            let rest = line.strip_prefix("memberID:").unwrap_or_else(|| panic!("alarm line {line:?}"));
            let (id, alarm) = rest.split_once(" alarm:").unwrap_or_else(|| panic!("alarm line {line:?}"));
            assert!(alarm.ends_with(' '), "etcd prints a space after the alarm: {line:?}");
            (id.parse().expect("member id"), alarm.trim_end().to_string())
        })
        .collect()
}

/// Waits (bounded) until `ep` lists an alarm `name`, and returns the list.
fn wait_alarm(ep: &str, name: &str, timeout: Duration) -> Vec<(u64, String)> {
    let start = Instant::now();
    loop {
        let alarms = alarm_list(ep);
        if alarms.iter().any(|(_, a)| a == name) {
            return alarms;
        }
        assert!(start.elapsed() < timeout, "{ep} never listed {name}: {alarms:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn revision(ep: &str) -> i64 {
    etcdctl(ep, &["get", "any", "-w", "json"]).assert_ok().json()["header"]["revision"]
        .as_i64()
        .expect("revision")
}

/// Every key under `fill/` and its value, as `ep` reads them.
fn filled(ep: &str) -> BTreeMap<String, String> {
    let out = etcdctl(ep, &["get", "fill/", "--prefix"]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    lines.chunks(2).map(|kv| (kv[0].to_string(), kv[1].to_string())).collect()
}

/// Fills the cluster through all of `eps` in turn, each put a new key,
/// until a put is refused for space; returns what was acknowledged and the
/// key of the refused put.
fn fill_until_refused(eps: &[String]) -> (BTreeMap<String, String>, String) {
    let mut acked = BTreeMap::new();
    // Four times what the quota can hold: a quota that never trips fails.
    let most = 4 * QUOTA_BYTES as usize / VALUE_BYTES;
    for i in 0..most {
        let key = format!("fill/{i:04}");
        let v = value(i as u64);
        let out = etcdctl_stdin(&eps[i % eps.len()], &["put", &key], v.as_bytes());
        if out.status == Some(0) {
            acked.insert(key, v);
            continue;
        }
        out.fails_with(1, NOSPACE);
        return (acked, key);
    }
    panic!("{most} puts of {VALUE_BYTES} bytes never exceeded a quota of {QUOTA_BYTES} bytes");
}

/// What every member must do while NOSPACE is raised: refuse puts, txns
/// with puts and lease grants with etcd's error; serve reads, deletes and
/// txns without puts; report the alarm in `/health` and `Status.errors`.
fn check_capped(eps: &[String], acked: &mut BTreeMap<String, String>) {
    for (i, ep) in eps.iter().enumerate() {
        let alarms = wait_alarm(ep, "NOSPACE", Duration::from_secs(30));
        assert!(alarms.iter().all(|(_, a)| a == "NOSPACE"), "{alarms:?}");
        etcdctl(ep, &["put", "small", "v"]).fails_with(1, NOSPACE);
        let txn = txn_input(&[], &["put small v"], &[]);
        etcdctl_stdin(ep, &["txn"], txn.as_bytes()).fails_with(1, NOSPACE);
        etcdctl(ep, &["lease", "grant", "60"]).fails_with(1, &format!("failed to grant lease ({NOSPACE})"));
        // Reads, and deletes, which free space.
        let (key, v) = acked
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
            .expect("something was written");
        let got = etcdctl(ep, &["get", &key, "--print-value-only"]);
        assert_eq!(got.assert_ok().stdout.trim_end(), v);
        let victim = acked.keys().nth(i * 2).cloned().expect("enough keys");
        assert_eq!(etcdctl(ep, &["del", &victim]).assert_ok().stdout, "1\n");
        acked.remove(&victim);
        let read_only = txn_input(&[], &[&format!("get {key}")], &[]);
        etcdctl_stdin(ep, &["txn"], read_only.as_bytes()).assert_ok();

        let (status, body) = http_get(ep, "/health");
        assert_eq!((status, body.as_str()), (503, "{\"health\":\"false\"}\n"));
        let (status, body) = http_get(ep, "/health?exclude=NOSPACE");
        assert_eq!((status, body.as_str()), (200, "{\"health\":\"true\"}"));
        let status = etcdctl(ep, &["endpoint", "status", "-w", "json"]).assert_ok().json();
        let errors = status[0]["Status"]["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            errors.iter().any(|e| e.as_str().is_some_and(|e| e.ends_with(" alarm:NOSPACE "))),
            "{status}"
        );
    }
}

/// Frees space the way etcd's documentation says: delete, compact,
/// defragment every member, disarm; then writes are taken again on every
/// member and everything acknowledged is there. `refused` is the put that
/// ran out of space, which etcd may hold (its quota applier applies the
/// write that crosses the quota, then answers with the error) and Cairn
/// must not (it refuses such a write before proposing it).
fn recover(eps: &[String], acked: &mut BTreeMap<String, String>, refused: &str, refused_may_be_stored: bool) {
    // Half the data goes, so what stays fits well below the quota.
    let doomed: Vec<String> = acked.keys().step_by(2).cloned().collect();
    for key in &doomed {
        etcdctl(&eps[0], &["del", key]).assert_ok();
        acked.remove(key);
    }
    let rev = revision(&eps[0]);
    assert_eq!(
        etcdctl(&eps[0], &["compact", &rev.to_string(), "--physical"]).assert_ok().stdout,
        format!("compacted revision {rev}\n")
    );
    let all = eps.join(",");
    let out = etcdctl(&eps[0], &["--endpoints", &all, "defrag"]);
    for ep in eps {
        assert!(
            out.assert_ok()
                .stdout
                .contains(&format!("Finished defragmenting etcd member[{ep}]")),
            "{out:?}"
        );
    }
    let disarmed = etcdctl(&eps[0], &["alarm", "disarm"]);
    let disarmed = parse_alarms(&disarmed.assert_ok().stdout);
    assert!(!disarmed.is_empty() && disarmed.iter().all(|(_, a)| a == "NOSPACE"), "{disarmed:?}");
    for ep in eps {
        assert_eq!(alarm_list(ep), Vec::new());
    }
    for (i, ep) in eps.iter().enumerate() {
        let key = format!("fill/after-{i}");
        let v = value(10_000 + i as u64);
        etcdctl_stdin(ep, &["put", &key], v.as_bytes()).assert_ok();
        acked.insert(key, v);
    }
    for ep in eps {
        let mut held = filled(ep);
        let stored = held.remove(refused).is_some();
        assert!(!stored || refused_may_be_stored, "{ep} holds the refused {refused}");
        assert!(held == *acked, "{ep} does not hold exactly what was acknowledged");
        let (status, _) = http_get(ep, "/health");
        assert_eq!(status, 200);
    }
}

fn run_out_of_space(eps: &[String], refused_may_be_stored: bool) {
    let quota = QUOTA_BYTES as f64;
    for ep in eps {
        let metrics = scrape(ep);
        assert_eq!(
            sample(&metrics, "etcd_server_quota_backend_bytes", "etcd_server_quota_backend_bytes", &[]),
            quota
        );
        assert_eq!(alarm_list(ep), Vec::new());
    }
    let (mut acked, refused) = fill_until_refused(eps);
    assert!(acked.len() > 8, "refused after only {} puts", acked.len());
    check_capped(eps, &mut acked);
    recover(eps, &mut acked, &refused, refused_may_be_stored);
}

#[test]
fn three_members_run_out_of_space_and_recover() {
    let quota = format!("--quota-backend-bytes={QUOTA_BYTES}");
    let c = Cluster::start_with_args(3, &[&quota]);
    run_out_of_space(&c.endpoints(), false);
}

/// The same scenario on a real etcd 3.4 cluster: the script itself is
/// etcd's behaviour.
#[test]
fn three_etcd_members_run_out_of_space_and_recover() {
    let quota = format!("--quota-backend-bytes={QUOTA_BYTES}");
    let c = Cluster::start_kind(Kind::Etcd, 3, &[&quota]);
    run_out_of_space(&c.endpoints(), true);
}

#[test]
fn quota_flag_values_as_etcd() {
    for (flag, gauge) in [("0", 2147483648.0), ("-1", -1.0), ("10000000000", 10000000000.0)] {
        for kind in [Kind::Etcd, Kind::Cairn] {
            let srv = Server::start_with_args(kind, &[&format!("--quota-backend-bytes={flag}")]);
            let metrics = scrape(&srv.endpoint());
            let got = sample(&metrics, "etcd_server_quota_backend_bytes", "etcd_server_quota_backend_bytes", &[]);
            assert_eq!(got, gauge, "{kind:?} with --quota-backend-bytes={flag}");
        }
    }
}

/// One step of the alarm script: what an RPC answered, with the member's
/// own id written as 0 so both servers' answers compare.
#[derive(Debug, PartialEq)]
enum Step {
    /// The alarms answered, and whether the header names the member.
    Alarms(Vec<(u64, i32)>, bool),
    Refused(tonic::Code, String),
    Done,
    Errors(Vec<String>),
    Health(u16, String),
}

fn alarm_script(kind: Kind) -> Vec<Step> {
    let srv = Server::start(kind);
    let ep = srv.endpoint();
    harness::runtime().block_on(async {
        let channel = Channel::from_shared(ep.clone()).expect("endpoint").connect_lazy();
        let mut maintenance = MaintenanceClient::new(channel.clone());
        let mut kv = KvClient::new(channel.clone());
        let mut lease = LeaseClient::new(channel);
        let own = maintenance
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .header
            .expect("header")
            .member_id;
        let mut steps = Vec::new();
        let normalize = |(alarms, header_ok): (Vec<AlarmMember>, bool)| {
            Step::Alarms(
                alarms
                    .into_iter()
                    .map(|a| (if a.member_id == own { 0 } else { a.member_id }, a.alarm))
                    .collect(),
                header_ok,
            )
        };
        let alarm_client = maintenance.clone();
        let alarm = |action: AlarmAction, member_id: u64, alarm: AlarmType| {
            let mut maintenance = alarm_client.clone();
            async move {
                let resp = maintenance
                    .alarm(AlarmRequest {
                        action: action as i32,
                        member_id,
                        alarm: alarm as i32,
                    })
                    .await
                    .expect("alarm")
                    .into_inner();
                (resp.alarms, resp.header.is_some_and(|h| h.member_id == own && h.revision > 0))
            }
        };
        let put = |key: &str| PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        let outcome = |r: Result<(), tonic::Status>| match r {
            Ok(()) => Step::Done,
            Err(s) => Step::Refused(s.code(), s.message().to_string()),
        };

        kv.put(put("a")).await.expect("put before alarms");
        steps.push(normalize(alarm(AlarmAction::Get, 0, AlarmType::None).await));
        steps.push(normalize(alarm(AlarmAction::Activate, own, AlarmType::Nospace).await));
        steps.push(normalize(alarm(AlarmAction::Activate, own, AlarmType::Nospace).await));
        steps.push(normalize(alarm(AlarmAction::Get, 0, AlarmType::None).await));
        steps.push(outcome(kv.put(put("b")).await.map(drop)));
        steps.push(outcome(lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.map(drop)));
        steps.push(outcome(
            kv.range(RangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })
            .await
            .map(drop),
        ));
        steps.push(outcome(
            kv.delete_range(DeleteRangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })
            .await
            .map(drop),
        ));
        let status = maintenance.status(StatusRequest {}).await.expect("status").into_inner();
        steps.push(Step::Errors(
            status.errors.iter().map(|e| e.replace(&own.to_string(), "SELF")).collect(),
        ));
        let (code, body) = http_get(&ep, "/health");
        steps.push(Step::Health(code, body));
        let (code, body) = http_get(&ep, "/health?exclude=NOSPACE");
        steps.push(Step::Health(code, body));
        // CORRUPT for a member that does not exist: etcd takes any id.
        steps.push(normalize(alarm(AlarmAction::Activate, 12345, AlarmType::Corrupt).await));
        steps.push(normalize(alarm(AlarmAction::Get, 0, AlarmType::Corrupt).await));
        steps.push(outcome(kv.put(put("c")).await.map(drop)));
        steps.push(outcome(
            kv.delete_range(DeleteRangeRequest {
                key: b"c".to_vec(),
                ..Default::default()
            })
            .await
            .map(drop),
        ));
        steps.push(outcome(
            kv.range(RangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })
            .await
            .map(drop),
        ));
        let (code, body) = http_get(&ep, "/health?exclude=NOSPACE");
        steps.push(Step::Health(code, body));
        steps.push(normalize(alarm(AlarmAction::Deactivate, own, AlarmType::Nospace).await));
        steps.push(normalize(alarm(AlarmAction::Deactivate, own, AlarmType::Nospace).await));
        steps.push(normalize(alarm(AlarmAction::Deactivate, 12345, AlarmType::Corrupt).await));
        steps.push(normalize(alarm(AlarmAction::Get, 0, AlarmType::None).await));
        steps.push(outcome(kv.put(put("d")).await.map(drop)));
        let (code, body) = http_get(&ep, "/health");
        steps.push(Step::Health(code, body));
        steps
    })
}

#[test]
fn alarm_rpc_answers_as_etcd() {
    let etcd = alarm_script(Kind::Etcd);
    let cairn = alarm_script(Kind::Cairn);
    for (i, (e, c)) in etcd.iter().zip(&cairn).enumerate() {
        assert_eq!(c, e, "step {i}: cairn answered {c:?}, etcd {e:?}");
    }
    assert_eq!(etcd.len(), cairn.len());
    // The script must see what it is about, on etcd too.
    assert!(etcd.contains(&Step::Refused(tonic::Code::ResourceExhausted, NOSPACE.into())));
    assert!(etcd.contains(&Step::Refused(tonic::Code::DataLoss, CORRUPT.into())));
}

#[test]
fn a_member_that_applies_puts_differently_is_found_corrupt() {
    let mut c = Cluster::start_with_last_env(
        3,
        &["--experimental-corrupt-check-time=1s"],
        &[("CAIRN_FAILPOINT", "apply-put-differently")],
    );
    let eps = c.endpoints();
    let bad = c.member_id(2);
    let leader = c.leader();
    for i in 0..5 {
        etcdctl(&eps[i % 3], &["put", &format!("k{i}"), "v"]).assert_ok();
    }
    let alarms = wait_alarm(&eps[0], "CORRUPT", Duration::from_secs(60));
    let corrupt: Vec<u64> = alarms.iter().filter(|(_, a)| a == "CORRUPT").map(|(id, _)| *id).collect();
    assert_eq!(corrupt.len(), 1, "{alarms:?}");
    if leader != 2 {
        // A healthy leader names the member that diverged.
        assert_eq!(corrupt[0], bad, "{alarms:?}\n{}", c.log_tails());
    }
    for ep in &eps {
        wait_alarm(ep, "CORRUPT", Duration::from_secs(30));
        etcdctl(ep, &["put", "k0", "again"]).fails_with(1, CORRUPT);
        etcdctl(ep, &["del", "k0"]).fails_with(1, CORRUPT);
        // Reads are served, the diverged member's as it applied them.
        let want = if *ep == eps[2] { "v~\n" } else { "v\n" };
        assert_eq!(etcdctl(ep, &["get", "k1", "--print-value-only"]).assert_ok().stdout, want);
        let (status, body) = http_get(ep, "/readyz?verbose");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("[-]data_corruption failed"), "{body}");
        let (status, _) = http_get(ep, "/health?exclude=NOSPACE");
        assert_eq!(status, 503);
    }

    // At start-up the initial check compares the member with its peers
    // and refuses to serve a state that differs (etcd 3.6's spelling of the
    // flag here; the 3.4 one below).
    c.spawn_with_args(2, &["--feature-gates=InitialCorruptCheck=true"]);
    c.wait_exited(2);
    assert!(
        c.log_contains(2, "found data inconsistency with peers"),
        "{}",
        c.members[2].log_tail(30)
    );
    // A healthy member passes it.
    c.spawn_with_args(1, &["--experimental-initial-corrupt-check"]);
    c.wait_status(1);
    assert!(
        c.log_contains(1, "initial corruption checking passed"),
        "{}",
        c.members[1].log_tail(30)
    );
}
