//! Strict reconfiguration checks (etcd's default `--strict-reconfig-check`):
//! membership changes the cluster could not carry are refused up front. Each
//! scenario runs on cairn and on a real etcd cluster side by side, and the
//! outcomes of every step must match.

use std::time::{Duration, Instant};

use harness::{both, etcdctl, Cluster, Kind, Output};

/// One step's outcome: exit code and etcdctl's `Error:` lines.
type Step = (&'static str, Option<i32>, Vec<String>);

fn step(name: &'static str, out: &Output) -> Step {
    (name, out.status, out.error_lines().iter().map(|l| l.to_string()).collect())
}

/// The id `member add` printed.
fn added_id(out: &Output) -> String {
    out.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("member add printed no id: {out:?}"))
        .to_string()
}

/// A peer URL nothing listens on: the added member never starts.
fn nowhere() -> String {
    format!("--peer-urls=http://127.0.0.1:{}", harness::server::free_port())
}

/// Three members; one is killed. While it is down, adding a member and
/// removing a live one are refused as unhealthy; removing the dead one (how
/// a member is replaced) is allowed. Before that, a learner that never
/// started cannot be promoted.
fn dead_member_scenario(kind: Kind) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut c = Cluster::start_kind(kind, 3, &[]);
    let leader = c.leader();
    let ep = c.members[leader].endpoint();

    // A learner is accepted once the leader has been connected to every
    // voter for a while (right after start it may not have been yet).
    let start = Instant::now();
    let added = loop {
        let out = etcdctl(&ep, &["member", "add", "idle", "--learner", &nowhere()]);
        if out.status == Some(0) {
            break out;
        }
        assert!(out.stderr.contains("etcdserver: unhealthy cluster"), "{kind:?}: {out:?}");
        assert!(start.elapsed() < Duration::from_secs(60), "{kind:?}: never healthy: {out:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let learner = added_id(&added);
    let out = etcdctl(&ep, &["member", "promote", &learner]);
    out.fails_with(1, "etcdserver: can only promote a learner member which is in sync with leader");
    steps.push(step("promote a learner that never started", &out));
    let out = etcdctl(&ep, &["member", "remove", &learner]);
    steps.push(step("remove the learner", out.assert_ok()));

    let victim = (0..3).find(|i| *i != leader).expect("a follower");
    let survivor = (0..3).find(|i| *i != leader && *i != victim).expect("another follower");
    let victim_id = format!("{:x}", c.member_id(victim));
    let survivor_id = format!("{:x}", c.member_id(survivor));
    c.kill9(victim);

    // The leader notices the dead connection within moments; until then a
    // learner could still be added (and is removed again).
    let start = Instant::now();
    let out = loop {
        let out = etcdctl(&ep, &["member", "add", "probe", "--learner", &nowhere()]);
        if out.status != Some(0) {
            break out;
        }
        etcdctl(&ep, &["member", "remove", &added_id(&out)]).assert_ok();
        assert!(start.elapsed() < Duration::from_secs(30), "{kind:?}: dead member never noticed");
        std::thread::sleep(Duration::from_millis(500));
    };
    out.fails_with(1, "etcdserver: unhealthy cluster");
    steps.push(step("add a learner with a member down", &out));
    let out = etcdctl(&ep, &["member", "add", "voter", &nowhere()]);
    out.fails_with(1, "etcdserver: unhealthy cluster");
    steps.push(step("add a voter with a member down", &out));
    let out = etcdctl(&ep, &["member", "remove", &survivor_id]);
    out.fails_with(1, "etcdserver: unhealthy cluster");
    steps.push(step("remove a live member with another down", &out));

    let out = etcdctl(&ep, &["member", "remove", &victim_id]);
    steps.push(step("remove the dead member", out.assert_ok()));
    etcdctl(&c.members[survivor].endpoint(), &["put", "after/remove", "yes"]).assert_ok();
    let listed = etcdctl(&ep, &["member", "list", "-w", "json"]).json();
    assert_eq!(listed["members"].as_array().map(Vec::len), Some(2), "{kind:?}: {listed}");
    c.assert_converged();
    steps
}

/// One member, plus a voter that never starts: a further voter, or the
/// removal of the only started member, would leave no started quorum.
fn unstarted_member_scenario(kind: Kind) -> Vec<Step> {
    let mut steps = Vec::new();
    let c = Cluster::start_kind(kind, 1, &[]);
    let ep = c.members[0].endpoint();
    let own_id = format!("{:x}", c.member_id(0));
    let out = etcdctl(&ep, &["member", "add", "second", &nowhere()]);
    steps.push(step("grow a single member by a voter", out.assert_ok()));
    let out = etcdctl(&ep, &["member", "add", "third", &nowhere()]);
    out.fails_with(1, "etcdserver: re-configuration failed due to not enough started members");
    steps.push(step("add a voter without a started quorum", &out));
    let out = etcdctl(&ep, &["member", "remove", &own_id]);
    out.fails_with(1, "etcdserver: re-configuration failed due to not enough started members");
    steps.push(step("remove the only started member", &out));
    steps
}

/// With `--strict-reconfig-check=false` nothing is checked up front: a
/// learner is added at once, although a member is down.
fn unchecked_scenario(kind: Kind) -> Vec<Step> {
    let mut c = Cluster::start_kind(kind, 3, &["--strict-reconfig-check=false"]);
    let leader = c.leader();
    let victim = (0..3).find(|i| *i != leader).expect("a follower");
    c.kill9(victim);
    let out = etcdctl(&c.members[leader].endpoint(), &["member", "add", "idle", "--learner", &nowhere()]);
    vec![step("add a learner with a member down, unchecked", out.assert_ok())]
}

#[test]
fn membership_changes_the_cluster_cannot_carry_are_refused_as_by_etcd() {
    let (etcd, cairn) = both(|| unchecked_scenario(Kind::Etcd), || unchecked_scenario(Kind::Cairn));
    assert_eq!(etcd, cairn);
    let (etcd, cairn) = both(|| unstarted_member_scenario(Kind::Etcd), || unstarted_member_scenario(Kind::Cairn));
    assert_eq!(etcd, cairn);
    let (etcd, cairn) = both(|| dead_member_scenario(Kind::Etcd), || dead_member_scenario(Kind::Cairn));
    assert_eq!(etcd, cairn);
}
