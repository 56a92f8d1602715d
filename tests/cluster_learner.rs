//! A learner serves what an etcd 3.4 learner serves, and refuses the rest
//! with the same error, side by side with a real etcd learner; promoted, it
//! serves everything.

use std::time::{Duration, Instant};

use harness::{both, connect, etcdctl, grpc_status, Cluster, Kind};

/// A one-voter cluster of `kind` with a learner (member 1) added and
/// caught up with the key `k`.
fn cluster_with_learner(kind: Kind) -> Cluster {
    let mut c = Cluster::start_kind(kind, 1, &[]);
    etcdctl(&c.members[0].endpoint(), &["put", "k", "v"]).assert_ok();
    let learner = c.add_member(0, true);
    let start = Instant::now();
    loop {
        let out = etcdctl(
            &c.members[learner].endpoint(),
            &["get", "k", "--print-value-only", "--consistency=s"],
        );
        if out.status == Some(0) && out.stdout == "v\n" {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{kind:?} learner never caught up: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn learner_id(c: &Cluster) -> String {
    format!("{:x}", c.member_id(1))
}

#[test]
fn learner_serves_and_refuses_what_an_etcd_learner_does() {
    let (mut etcd, mut cairn) = both(|| cluster_with_learner(Kind::Etcd), || cluster_with_learner(Kind::Cairn));
    let (etcd_ep, cairn_ep) = (etcd.members[1].endpoint(), cairn.members[1].endpoint());

    let commands: &[&[&str]] = &[
        &["get", "k", "--consistency=s", "--print-value-only"],
        &["get", "k"],
        &["put", "k", "x"],
        &["del", "k"],
        &["txn"],
        &["compaction", "1"],
        &["lease", "grant", "10"],
        &["member", "list"],
        &["endpoint", "hashkv"],
        &["endpoint", "health"],
        &["alarm", "list"],
    ];
    for args in commands {
        let (r, t) = both(|| etcdctl(&etcd_ep, args), || etcdctl(&cairn_ep, args));
        assert_eq!(r.status, t.status, "etcdctl {args:?}\netcd: {r:#?}\ncairn: {t:#?}");
        assert_eq!(r.error_lines(), t.error_lines(), "etcdctl {args:?}\netcd: {r:#?}\ncairn: {t:#?}");
        if r.status == Some(0) {
            assert_eq!(r.stdout, t.stdout, "etcdctl {args:?}");
        }
    }
    let status = etcdctl(&cairn_ep, &["endpoint", "status", "-w", "json"]).json();
    assert_eq!(status[0]["Status"]["isLearner"].as_bool(), Some(true), "{status}");

    // Stream calls are refused outright, with etcd's code and message.
    let rt = harness::runtime();
    for ep in [&etcd_ep, &cairn_ep] {
        rt.block_on(async {
            let mut client = connect(ep).await;
            let err = client
                .watch("k", None)
                .await
                .err()
                .unwrap_or_else(|| panic!("watch on the learner at {ep} was accepted"));
            let status = grpc_status(&err);
            assert_eq!(status.code(), tonic::Code::Unavailable, "{ep}: {status:?}");
            assert_eq!(status.message(), "etcdserver: rpc not supported for learner", "{ep}");
        });
    }

    // The learner's data agrees with the voter's (a learner has no HashKV).
    cairn.assert_converged();

    // Promoted, the member serves linearizable reads and writes.
    for c in [&mut etcd, &mut cairn] {
        let id = learner_id(c);
        etcdctl(&c.members[0].endpoint(), &["member", "promote", &id]).assert_ok();
        let ep = c.members[1].endpoint();
        let start = Instant::now();
        loop {
            let out = etcdctl(&ep, &["put", "after/promote", "yes"]);
            if out.status == Some(0) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "promoted member refuses writes: {out:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = etcdctl(&ep, &["get", "after/promote", "--print-value-only"]);
        assert_eq!(out.assert_ok().stdout, "yes\n");
    }
    cairn.assert_converged();
}
