//! A statically bootstrapped cluster: every member serves reads and writes,
//! writes replicate everywhere, and the members know each other.

use harness::{etcdctl, Cluster};

#[test]
fn three_members_replicate_and_all_serve() {
    let mut c = Cluster::start(3);
    let eps = c.endpoints();

    // A write through each member (followers forward to the leader) is
    // visible through every member, linearizably and, once converged,
    // serializably.
    for (i, ep) in eps.iter().enumerate() {
        etcdctl(ep, &["put", &format!("k{i}"), &format!("v{i}")]).assert_ok();
    }
    for ep in &eps {
        for i in 0..eps.len() {
            let out = etcdctl(ep, &["get", &format!("k{i}"), "--print-value-only"]);
            assert_eq!(out.assert_ok().stdout, format!("v{i}\n"), "linearizable read of k{i} via {ep}");
        }
    }
    let rev = c.assert_converged();
    assert_eq!(rev, 1 + eps.len() as i64);
    for ep in &eps {
        let out = etcdctl(ep, &["get", "k0", "--print-value-only", "--consistency=s"]);
        assert_eq!(out.assert_ok().stdout, "v0\n");
    }

    // Every member lists all three, with their client URLs.
    for ep in &eps {
        let j = etcdctl(ep, &["member", "list", "-w", "json"]).json();
        let mut urls: Vec<String> = j["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["clientURLs"][0].as_str().unwrap_or("").to_string())
            .collect();
        urls.sort();
        let mut want = eps.clone();
        want.sort();
        assert_eq!(urls, want, "member list via {ep}");
    }

    // endpoint status --cluster reaches every member; they agree on one leader
    // and each reports the term and applied index.
    let out = etcdctl(&eps[0], &["endpoint", "status", "--cluster", "-w", "json"]);
    let statuses = out.json();
    let statuses = statuses.as_array().unwrap();
    assert_eq!(statuses.len(), 3, "{out:?}");
    let leader = statuses[0]["Status"]["leader"].as_u64().unwrap();
    assert_ne!(leader, 0);
    let ids: Vec<u64> = statuses
        .iter()
        .map(|s| s["Status"]["header"]["member_id"].as_u64().unwrap())
        .collect();
    assert!(ids.contains(&leader));
    for s in statuses {
        assert_eq!(s["Status"]["leader"].as_u64(), Some(leader));
        assert!(s["Status"]["raftTerm"].as_u64().unwrap() >= 2);
        assert!(s["Status"]["raftAppliedIndex"].as_u64().unwrap() >= rev as u64);
    }
    let l = c.leader();
    assert_eq!(c.member_id(l), leader);
}

#[test]
fn five_members_bootstrap_and_replicate() {
    let mut c = Cluster::start(5);
    let eps = c.endpoints();
    etcdctl(&eps[4], &["put", "five", "members"]).assert_ok();
    for ep in &eps {
        assert_eq!(etcdctl(ep, &["get", "five", "--print-value-only"]).assert_ok().stdout, "members\n");
    }
    c.assert_converged();
}

#[test]
fn move_leader_hands_over() {
    let mut c = Cluster::start(3);
    let l = c.leader();
    let target = (l + 1) % 3;
    let target_id = format!("{:x}", c.member_id(target));
    // etcdctl looks for the leader among the endpoints it is given.
    let out = etcdctl(&c.members[target].endpoint(), &["move-leader", &target_id]);
    assert_ne!(out.status, Some(0));
    assert!(out.stderr.contains("no leader endpoint given"), "{out:?}");
    let out = etcdctl(&c.members[l].endpoint(), &["move-leader", &target_id]);
    out.assert_ok();
    assert_eq!(c.leader(), target);
    etcdctl(&c.members[l].endpoint(), &["put", "after", "move"]).assert_ok();
    c.assert_converged();
}

#[test]
fn members_killed_in_their_first_start_restart_cleanly() {
    // Killed right after recording who they are, before their Raft log
    // exists: a lone member, and a whole cluster at once.
    for n in [1, 3] {
        let mut c = Cluster::start_after_first_start_crash(n, "after-identity-persisted");
        for (i, ep) in c.endpoints().iter().enumerate() {
            etcdctl(ep, &["put", &format!("first/{i}"), "v"]).assert_ok();
        }
        assert_eq!(c.assert_converged(), 1 + n as i64);
    }
}
