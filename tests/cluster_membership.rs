//! Membership changes: a learner added after the log was compacted catches
//! up through a snapshot and is promoted; a member is removed and stops.

use std::time::{Duration, Instant};

use harness::{etcdctl, Cluster};

#[test]
fn learner_joins_by_snapshot_is_promoted_and_a_member_is_removed() {
    // A short log, so that the new member cannot catch up from it.
    let mut c = Cluster::start_with_args(3, &["--snapshot-count=20"]);
    let eps = c.endpoints();
    for i in 0..120 {
        etcdctl(&eps[i % 3], &["put", &format!("m/{i:03}"), &format!("v{i}")]).assert_ok();
    }
    c.assert_converged();

    let leader = c.leader();
    let new = c.add_member(leader, true);
    let rev = c.assert_converged();
    assert!(rev >= 121);
    assert!(
        c.log_contains(new, "installing snapshot"),
        "the new member did not catch up from a snapshot\n{}",
        c.log_tails()
    );
    let out = etcdctl(
        &c.members[new].endpoint(),
        &["get", "m/000", "--print-value-only", "--consistency=s"],
    );
    assert_eq!(out.assert_ok().stdout, "v0\n");
    let listed = etcdctl(&eps[0], &["member", "list", "-w", "json"]).json();
    let learners: Vec<u64> = listed["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["isLearner"].as_bool() == Some(true))
        .map(|m| m["ID"].as_u64().unwrap())
        .collect();
    assert_eq!(learners.len(), 1, "{listed}");
    let new_id = format!("{:x}", learners[0]);

    // A second learner is refused while one exists, as etcd does.
    let out = etcdctl(&eps[0], &["member", "add", "extra", "--learner", "--peer-urls=http://127.0.0.1:1"]);
    assert!(out.stderr.contains("etcdserver: too many learner members in cluster"), "{out:?}");

    // Promote through a follower, which asks the leader whether the
    // learner is in sync, as etcd forwards promotions to its leader.
    let start = Instant::now();
    loop {
        let follower = (c.leader() + 1) % 3;
        let out = etcdctl(&c.members[follower].endpoint(), &["member", "promote", &new_id]);
        if out.status == Some(0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "promote kept failing: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = etcdctl(&eps[0], &["member", "promote", &new_id]);
    assert!(out.stderr.contains("etcdserver: can only promote a learner member"), "{out:?}");
    let listed = etcdctl(&eps[1], &["member", "list", "-w", "json"]).json();
    assert!(
        listed["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["isLearner"].as_bool() != Some(true)),
        "{listed}"
    );
    etcdctl(&c.members[new].endpoint(), &["put", "after/promote", "yes"]).assert_ok();

    // Remove a member that is not the leader; it stops, the rest serve on.
    let leader = c.leader();
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let victim_id = format!("{:x}", c.member_id(victim));
    etcdctl(&c.members[leader].endpoint(), &["member", "remove", &victim_id]).assert_ok();
    c.wait_exited(victim);
    let listed = etcdctl(&c.members[leader].endpoint(), &["member", "list", "-w", "json"]).json();
    assert_eq!(listed["members"].as_array().unwrap().len(), 3, "{listed}");
    let out = etcdctl(&c.members[leader].endpoint(), &["member", "remove", &victim_id]);
    assert!(out.stderr.contains("etcdserver: member not found"), "{out:?}");
    for i in (0..c.members.len()).filter(|i| *i != victim) {
        etcdctl(&c.members[i].endpoint(), &["put", &format!("after/remove/{i}"), "yes"]).assert_ok();
    }
    c.assert_converged();
}
