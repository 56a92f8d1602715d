//! Several members in one process, wired by a [`MessageSink`] that can cut,
//! drop and delay messages between chosen members, so partitions are tested
//! without process clusters. The state machine records each entry's data
//! under its index, so members' states compare directly.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raft::eraftpb::{Message, MessageType};
use rocksdb::{IteratorMode, WriteBatch};

use super::{snapshot, LogLimits, MessageSink, Node, NodeHandle, StateMachine};
use crate::error::Result;
use crate::storage::schema::{META_APPLIED_INDEX, META_TEST_ENTRY_PREFIX};
use crate::storage::{Database, CF_META};

/// Long enough for any election or catch-up here to finish; the tests wait
/// for states, never for times.
const PATIENCE: Duration = Duration::from_secs(30);

/// Records every entry it applies; can be told to be slow.
struct Recorder {
    engine: Arc<Database>,
    applied: u64,
    delay_ms: Arc<AtomicU64>,
    restores: Arc<AtomicU64>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<()> {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let mut batch = WriteBatch::default();
        let meta = self.engine.cf(CF_META);
        if !data.is_empty() {
            batch.put_cf(meta, [META_TEST_ENTRY_PREFIX, &index.to_be_bytes()].concat(), data);
        }
        batch.put_cf(meta, META_APPLIED_INDEX, index.to_be_bytes());
        self.engine.write(batch, false)?;
        self.applied = index;
        Ok(())
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn restored(&mut self, index: u64) -> Result<()> {
        self.restores.fetch_add(1, Ordering::Relaxed);
        self.applied = index;
        Ok(())
    }
}

/// Which messages get through.
#[derive(Default)]
struct Links {
    handles: HashMap<u64, NodeHandle>,
    /// Each member's database: a snapshot's dump travels beside its
    /// message, from the sender's dump dir to the receiver's, as the peer
    /// transport carries it.
    databases: HashMap<u64, Arc<Database>>,
    /// Directed (from, to) pairs whose messages are lost.
    cut: HashSet<(u64, u64)>,
    /// Members whose messages, both ways, are lost one in `n`.
    lossy: HashMap<u64, u64>,
    /// Members whose messages, both ways, arrive late.
    slow: HashSet<u64>,
    sent: u64,
}

/// Late messages are delivered in order by one thread, all with one delay.
const LATE_BY: Duration = Duration::from_millis(40);

struct TestSink {
    from: u64,
    me: NodeHandle,
    links: Arc<Mutex<Links>>,
    late: mpsc::Sender<(Instant, NodeHandle, Message)>,
}

impl MessageSink for TestSink {
    fn send(&mut self, messages: Vec<Message>) {
        let mut links = self.links.lock();
        for m in messages {
            let to = m.to;
            links.sent += 1;
            let lost = links.cut.contains(&(self.from, to))
                || [self.from, to]
                    .iter()
                    .any(|id| links.lossy.get(id).is_some_and(|n| links.sent % n == 0));
            let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let target = links.handles.get(&to).cloned();
            match target {
                Some(target) if !lost => {
                    if is_snapshot {
                        snapshot::hand_over(&links.databases[&self.from], &links.databases[&to], m.get_snapshot());
                    }
                    if links.slow.contains(&self.from) || links.slow.contains(&to) {
                        let _ = self.late.send((Instant::now() + LATE_BY, target, m));
                    } else {
                        let _ = target.step(m);
                    }
                    if is_snapshot {
                        self.me.report_snapshot(to, true);
                    }
                }
                _ => {
                    self.me.report_unreachable(to);
                    if is_snapshot {
                        self.me.report_snapshot(to, false);
                    }
                }
            }
        }
    }
}

struct Member {
    handle: NodeHandle,
    thread: JoinHandle<Result<()>>,
    engine: Arc<Database>,
    delay_ms: Arc<AtomicU64>,
    restores: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

struct Cluster {
    members: HashMap<u64, Member>,
    links: Arc<Mutex<Links>>,
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn new(size: u64, limits: LogLimits) -> Cluster {
        let links = Arc::new(Mutex::new(Links::default()));
        let (late, late_rx) = mpsc::channel::<(Instant, NodeHandle, Message)>();
        std::thread::spawn(move || {
            for (at, target, m) in late_rx {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let _ = target.step(m);
            }
        });
        let voters: Vec<u64> = (1..=size).collect();
        let mut members = HashMap::new();
        for &id in &voters {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine = Database::open(dir.path()).expect("database");
            let delay_ms = Arc::new(AtomicU64::new(0));
            let restores = Arc::new(AtomicU64::new(0));
            let recorder = Recorder {
                engine: engine.clone(),
                applied: 0,
                delay_ms: delay_ms.clone(),
                restores: restores.clone(),
            };
            let (sink_links, late, sink_engine) = (links.clone(), late.clone(), engine.clone());
            let (handle, thread) = Node::start(id, engine.clone(), &voters, limits, recorder, |me| {
                let mut links = sink_links.lock();
                links.handles.insert(id, me.clone());
                links.databases.insert(id, sink_engine);
                drop(links);
                Box::new(TestSink {
                    from: id,
                    me,
                    links: sink_links.clone(),
                    late,
                })
            })
            .expect("start member");
            members.insert(
                id,
                Member {
                    handle,
                    thread,
                    engine,
                    delay_ms,
                    restores,
                    _dir: dir,
                },
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Cluster { members, links, runtime }
    }

    fn handle(&self, id: u64) -> &NodeHandle {
        &self.members[&id].handle
    }

    /// Waits until the members in `ids` agree on a leader among them.
    fn leader_of(&self, ids: &[u64]) -> u64 {
        wait_for("a leader", || {
            let leader = self.handle(ids[0]).status().leader();
            let agreed = ids.iter().all(|id| self.handle(*id).status().leader() == leader);
            (leader != 0 && ids.contains(&leader) && agreed && self.handle(leader).status().is_leader()).then_some(leader)
        })
    }

    fn propose(&self, via: u64, data: &str) {
        let handle = self.handle(via).clone();
        let data = data.as_bytes().to_vec();
        wait_for("the proposal to be accepted", || {
            self.runtime.block_on(handle.propose(data.clone())).ok()
        });
    }

    /// The entries member `id` has applied, by index.
    fn state(&self, id: u64) -> Vec<(u64, String)> {
        let engine = &self.members[&id].engine;
        let mut out = Vec::new();
        for item in engine.db().iterator_cf(engine.cf(CF_META), IteratorMode::Start) {
            let (k, v) = item.expect("read state");
            if let Some(index) = k.strip_prefix(META_TEST_ENTRY_PREFIX) {
                let index = u64::from_be_bytes(index.try_into().expect("index"));
                out.push((index, String::from_utf8(v.to_vec()).expect("utf8")));
            }
        }
        out
    }

    fn values(&self, id: u64) -> Vec<String> {
        self.state(id).into_iter().map(|(_, v)| v).collect()
    }

    /// Waits until every member in `ids` has applied exactly `values` (in
    /// whatever order the leader received them), and returns their state,
    /// which must be identical.
    fn converged(&self, ids: &[u64], values: &[String]) -> Vec<(u64, String)> {
        let mut expected = values.to_vec();
        expected.sort();
        wait_for("the members to converge", || {
            let first = self.state(ids[0]);
            let mut got: Vec<String> = first.iter().map(|(_, v)| v.clone()).collect();
            got.sort();
            (got == expected && ids.iter().all(|id| self.state(*id) == first)).then_some(first)
        })
    }

    /// Cuts every link between `a` and the members in `others`, both ways.
    fn isolate(&self, a: u64, others: &[u64]) {
        let mut links = self.links.lock();
        for &b in others {
            links.cut.insert((a, b));
            links.cut.insert((b, a));
        }
    }

    fn heal(&self) {
        let mut links = self.links.lock();
        links.cut.clear();
        links.lossy.clear();
        links.slow.clear();
    }

    fn stop(self) {
        for member in self.members.values() {
            member.handle.stop();
        }
        for (id, member) in self.members {
            let result = member.thread.join().expect("raft thread");
            assert!(result.is_ok(), "member {id} stopped with {result:?}");
        }
    }
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const ROOMY: LogLimits = LogLimits {
    snapshot_count: 10_000,
    catch_up_entries: 1_000,
};

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

#[test]
fn three_members_elect_one_leader() {
    let cluster = Cluster::new(3, ROOMY);
    let leader = cluster.leader_of(&[1, 2, 3]);
    let term = cluster.handle(leader).status().term();
    assert!(term >= 2, "an election happened (bootstrap term is 1), got term {term}");
    let leaders = [1, 2, 3].iter().filter(|id| cluster.handle(**id).status().is_leader()).count();
    assert_eq!(leaders, 1);
    cluster.stop();
}

#[test]
fn entries_replicate_through_lossy_and_slow_links() {
    let cluster = Cluster::new(3, ROOMY);
    let leader = cluster.leader_of(&[1, 2, 3]);
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let (lossy, slow) = (followers[0], followers[1]);
    {
        let mut links = cluster.links.lock();
        links.lossy.insert(lossy, 5);
        links.slow.insert(slow);
    }
    let values = numbered("v", 30);
    for (i, v) in values.iter().enumerate() {
        // Through a follower too, which forwards to the leader (not the
        // lossy one: a lost forward is a lost proposal, as with etcd).
        cluster.propose(if i % 2 == 0 { leader } else { slow }, v);
    }
    // A lost acknowledgement of the last entry leaves the leader unsure the
    // lossy member has it until the next append: heal, and write once more.
    cluster.converged(&[leader, slow], &values);
    cluster.heal();
    cluster.propose(leader, "last");
    let all: Vec<String> = values.iter().cloned().chain(["last".to_string()]).collect();
    cluster.converged(&[1, 2, 3], &all);
    cluster.stop();
}

#[test]
fn a_partitioned_leader_is_replaced_and_healing_converges() {
    let cluster = Cluster::new(3, ROOMY);
    let old = cluster.leader_of(&[1, 2, 3]);
    let old_term = cluster.handle(old).status().term();
    let before = numbered("before", 5);
    for v in &before {
        cluster.propose(old, v);
    }
    cluster.converged(&[1, 2, 3], &before);

    let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    cluster.isolate(old, &majority);
    let new = cluster.leader_of(&majority);
    assert_ne!(new, old);
    assert!(cluster.handle(new).status().term() > old_term);
    let during = numbered("during", 5);
    for v in &during {
        cluster.propose(new, v);
    }
    let all: Vec<String> = before.iter().chain(&during).cloned().collect();
    cluster.converged(&majority, &all);
    // Without a quorum the old leader steps down, and commits nothing new.
    wait_for("the old leader to step down", || {
        (!cluster.handle(old).status().is_leader()).then_some(())
    });
    assert_eq!(cluster.values(old), before);

    cluster.heal();
    let state = cluster.converged(&[1, 2, 3], &all);
    assert_eq!(state, cluster.state(old));
    assert_eq!(cluster.leader_of(&[1, 2, 3]), new, "the old leader rejoins as a follower");
    cluster.stop();
}

#[test]
fn a_lagging_follower_catches_up_by_snapshot_after_log_compaction() {
    let limits = LogLimits {
        snapshot_count: 10,
        catch_up_entries: 2,
    };
    let cluster = Cluster::new(3, limits);
    let leader = cluster.leader_of(&[1, 2, 3]);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let (lagging, up) = (others[0], others[1]);
    cluster.isolate(lagging, &[leader, up]);
    let values = numbered("v", 40);
    for v in &values {
        cluster.propose(leader, v);
    }
    cluster.converged(&[leader, up], &values);
    assert!(cluster.values(lagging).len() < values.len());
    assert_eq!(cluster.members[&lagging].restores.load(Ordering::Relaxed), 0);

    cluster.heal();
    let state = cluster.converged(&[1, 2, 3], &values);
    assert_eq!(state, cluster.state(lagging));
    assert!(
        cluster.members[&lagging].restores.load(Ordering::Relaxed) >= 1,
        "the log was compacted past the follower, so it took a snapshot"
    );
    // Writes after the snapshot are applied on top of it.
    cluster.propose(lagging, "after");
    let all: Vec<String> = values.iter().cloned().chain(["after".to_string()]).collect();
    cluster.converged(&[1, 2, 3], &all);
    cluster.stop();
}

#[test]
fn a_slow_state_machine_does_not_cost_the_leadership() {
    let cluster = Cluster::new(3, ROOMY);
    let leader = cluster.leader_of(&[1, 2, 3]);
    let term = cluster.handle(leader).status().term();
    // Applying these takes the leader several election timeouts while the
    // followers' clocks run on; its Ready loop keeps heartbeating meanwhile.
    cluster.members[&leader].delay_ms.store(50, Ordering::Relaxed);
    let values = numbered("slow", 60);
    for v in &values {
        cluster.propose(leader, v);
    }
    cluster.converged(&[1, 2, 3], &values);
    for id in [1, 2, 3] {
        assert_eq!(cluster.handle(id).status().term(), term, "member {id} saw no new election");
        assert_eq!(cluster.handle(id).status().leader(), leader);
    }
    cluster.stop();
}
