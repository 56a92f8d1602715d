//! The Ready loop: one thread owns the `RawNode`, its log store and the state
//! machine, in the discipline of raft-rs's examples. Everything else talks to
//! it through a [`NodeHandle`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, Snapshot};
use raft::{Config, RawNode, ReadOnlyOption, SnapshotStatus, StateRole};
use rocksdb::WriteBatch;
use tokio::sync::{oneshot, watch};

use super::LogStore;
use crate::error::{Error, Result};
use crate::storage::Database;

/// How often the Raft clock ticks; elections and heartbeats are counted in
/// ticks (etcd's defaults: 100 ms heartbeat, 1 s election timeout).
const TICK: Duration = Duration::from_millis(100);
const ELECTION_TICKS: usize = 10;
const HEARTBEAT_TICKS: usize = 1;
/// A ReadIndex request unanswered for this many ticks is asked again: Raft
/// drops them silently while a new leader has not yet committed in its term.
const READ_RETRY_TICKS: u32 = 5;
/// How long a request waits for an election to finish before it fails with
/// "no leader": two election timeouts, enough for one failed round.
const LEADER_WAIT: Duration = Duration::from_secs(2);

/// Applies committed entries. Implementations must be deterministic: every
/// member applies the same entries in the same order.
pub trait StateMachine: Send + 'static {
    /// Applies the entry at `index`; `data` is empty for entries that carry
    /// no request (leader no-ops, configuration changes).
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<()>;
    /// The last index applied, as persisted.
    fn applied_index(&self) -> u64;
    /// Applies a committed configuration change: the member it concerns and
    /// the context its proposer attached (the member's record).
    fn apply_conf_change(&mut self, index: u64, change: ConfChangeType, node_id: u64, context: &[u8]) -> Result<()> {
        let _ = (change, node_id, context);
        self.apply(index, &[])
    }
    /// Called after a snapshot replaced the state on disk, so in-memory
    /// caches can be reloaded.
    fn restored(&mut self, index: u64) -> Result<()>;
}

/// Delivers Raft messages to other members. Delivery is best effort; a sink
/// must never block the Ready loop.
pub trait MessageSink: Send + 'static {
    fn send(&mut self, messages: Vec<Message>);
}

/// Tuning of the Raft log's size.
#[derive(Clone, Copy, Debug)]
pub struct LogLimits {
    /// Applied entries kept in the log before it is compacted (etcd's
    /// `--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept behind the applied index on compaction so that a member
    /// that is slightly behind catches up from the log, not a snapshot.
    pub catch_up_entries: u64,
}

/// What the rest of the server can observe of Raft, refreshed every Ready.
#[derive(Default)]
pub struct RaftStatus {
    pub id: u64,
    leader: AtomicU64,
    term: AtomicU64,
    last_index: AtomicU64,
    commit: AtomicU64,
    applied: AtomicU64,
}

impl RaftStatus {
    pub fn leader(&self) -> u64 {
        self.leader.load(Ordering::Relaxed)
    }
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }
    pub fn commit_index(&self) -> u64 {
        self.commit.load(Ordering::Relaxed)
    }
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }
    pub fn last_index(&self) -> u64 {
        self.last_index.load(Ordering::Relaxed)
    }
    pub fn is_leader(&self) -> bool {
        self.id != 0 && self.leader() == self.id
    }
}

enum Command {
    Propose {
        data: Vec<u8>,
        ack: oneshot::Sender<Result<()>>,
    },
    ProposeConfChange {
        cc: ConfChangeV2,
        ack: oneshot::Sender<Result<()>>,
    },
    ReadIndex {
        ack: oneshot::Sender<u64>,
    },
    Step(Box<Message>),
    Unreachable(u64),
    SnapshotDone {
        to: u64,
        ok: bool,
    },
    TransferLeader(u64),
    /// How far a member and the leader have replicated; only the leader knows.
    Progress {
        id: u64,
        ack: oneshot::Sender<Option<(u64, u64)>>,
    },
    Stop,
}

/// A cheap, cloneable handle to the running node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    status: Arc<RaftStatus>,
    applied: watch::Receiver<u64>,
}

impl NodeHandle {
    /// Hands `data` to Raft (a follower forwards it to the leader). Success
    /// means the entry was accepted for replication, not that it committed.
    pub async fn propose(&self, data: Vec<u8>) -> Result<()> {
        self.wait_leader().await?;
        let (ack, rx) = oneshot::channel();
        self.tx.send(Command::Propose { data, ack }).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Proposes a membership change; `ConfChangeV2` so that a learner's
    /// promotion is one change like the others.
    pub async fn propose_conf_change(&self, cc: ConfChangeV2) -> Result<()> {
        self.wait_leader().await?;
        let (ack, rx) = oneshot::channel();
        self.tx.send(Command::ProposeConfChange { cc, ack }).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Waits (bounded) for an election in progress to finish, so requests
    /// arriving just after a leader died are not failed needlessly.
    async fn wait_leader(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        while self.status.leader() == 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Hands a message from another member to Raft.
    pub fn step(&self, message: Message) -> Result<()> {
        self.tx.send(Command::Step(Box::new(message))).map_err(|_| Error::Stopped)
    }

    /// Tells Raft a member could not be reached, so it stops streaming
    /// entries optimistically and probes instead.
    pub fn report_unreachable(&self, id: u64) {
        let _ = self.tx.send(Command::Unreachable(id));
    }

    /// Tells Raft whether a snapshot reached member `to`.
    pub fn report_snapshot(&self, to: u64, ok: bool) {
        let _ = self.tx.send(Command::SnapshotDone { to, ok });
    }

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leader(&self, to: u64) -> Result<()> {
        self.tx.send(Command::TransferLeader(to)).map_err(|_| Error::Stopped)
    }

    /// Fails unless this member leads and learner `id` has replicated at
    /// least 90% of the leader's log, etcd's bar for promotion.
    pub async fn check_learner_ready(&self, id: u64) -> Result<()> {
        let (ack, rx) = oneshot::channel();
        self.tx.send(Command::Progress { id, ack }).map_err(|_| Error::Stopped)?;
        let (learner, leader) = rx.await.map_err(|_| Error::Stopped)?.ok_or(Error::NotLeader)?;
        if (learner as f64) < (leader as f64) * 0.9 {
            return Err(Error::LearnerNotReady);
        }
        Ok(())
    }

    /// Waits until this member has applied everything committed when the
    /// call was made, confirmed by a quorum (Raft's ReadIndex). Reads served
    /// afterwards are linearizable.
    pub async fn linearizable_barrier(&self) -> Result<()> {
        self.wait_leader().await?;
        let (ack, rx) = oneshot::channel();
        self.tx.send(Command::ReadIndex { ack }).map_err(|_| Error::Stopped)?;
        let index = rx.await.map_err(|_| Error::Stopped)?;
        self.wait_applied(index).await
    }

    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        let mut applied = self.applied.clone();
        applied.wait_for(|a| *a >= index).await.map_err(|_| Error::Stopped)?;
        Ok(())
    }

    pub fn status(&self) -> &RaftStatus {
        &self.status
    }

    pub fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
    }
}

struct PendingRead {
    waiters: Vec<oneshot::Sender<u64>>,
    ticks: u32,
}

/// The Raft node and the state it drives.
pub struct Node<S: StateMachine> {
    raw: RawNode<LogStore>,
    engine: Arc<Database>,
    state_machine: S,
    rx: mpsc::Receiver<Command>,
    status: Arc<RaftStatus>,
    applied_tx: watch::Sender<u64>,
    sink: Box<dyn MessageSink>,
    limits: LogLimits,
    /// ReadIndex requests not yet handed to Raft; they share one request.
    queued_reads: Vec<oneshot::Sender<u64>>,
    reads_in_flight: HashMap<Vec<u8>, PendingRead>,
    next_read_ctx: u64,
}

impl<S: StateMachine> Node<S> {
    /// Starts the Ready loop on its own thread. `voters` bootstraps a new
    /// cluster (empty when joining an existing one); `sink` is built once the
    /// handle exists, so the transport can report back to Raft.
    pub fn start(
        id: u64,
        engine: Arc<Database>,
        voters: &[u64],
        limits: LogLimits,
        state_machine: S,
        sink: impl FnOnce(NodeHandle) -> Box<dyn MessageSink>,
    ) -> Result<(NodeHandle, JoinHandle<Result<()>>)> {
        let mut store = LogStore::open(engine.clone(), voters)?;
        let applied = state_machine.applied_index().max(store.first_index_before());
        store.set_applied(applied);
        // Apply may have reached disk before the hard state recording the
        // commit did; what was applied was committed.
        store.raise_commit(applied)?;
        let config = Config {
            id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            read_only_option: ReadOnlyOption::Safe,
            ..Default::default()
        };
        config.validate()?;
        let single_voter = store.conf_state().voters == [id] && store.conf_state().learners.is_empty();
        let logger = slog::Logger::root(TracingDrain, slog::o!());
        let mut raw = RawNode::new(&config, store, &logger)?;
        if single_voter {
            // Nobody to wait for: become leader now rather than after an
            // election timeout.
            raw.campaign()?;
        }
        let (tx, rx) = mpsc::channel();
        let (applied_tx, applied_rx) = watch::channel(applied);
        let status = Arc::new(RaftStatus { id, ..Default::default() });
        status.applied.store(applied, Ordering::Relaxed);
        let handle = NodeHandle {
            tx,
            status: status.clone(),
            applied: applied_rx,
        };
        let sink = sink(handle.clone());
        let node = Node {
            raw,
            engine,
            state_machine,
            rx,
            status,
            applied_tx,
            sink,
            limits,
            queued_reads: Vec::new(),
            reads_in_flight: HashMap::new(),
            next_read_ctx: 0,
        };
        let thread = std::thread::Builder::new().name("raft".into()).spawn(move || node.run())?;
        Ok((handle, thread))
    }

    fn run(mut self) -> Result<()> {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(timeout) {
                Ok(cmd) => {
                    if !self.handle(cmd) {
                        return Ok(());
                    }
                    // Take everything already queued so one Ready (and one
                    // fsync) covers a whole burst of proposals.
                    while let Ok(cmd) = self.rx.try_recv() {
                        if !self.handle(cmd) {
                            return Ok(());
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                self.raw.mut_store().expire_snapshot();
                self.age_reads();
                next_tick = Instant::now() + TICK;
            }
            self.issue_reads();
            self.on_ready()?;
        }
    }

    /// Returns false when the node must stop.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Propose { data, ack } => {
                let result = self.raw.propose(Vec::new(), data).map_err(|e| match e {
                    raft::Error::ProposalDropped => Error::NoLeader,
                    e => Error::Raft(e),
                });
                let _ = ack.send(result);
            }
            Command::ProposeConfChange { cc, ack } => {
                let result = self.raw.propose_conf_change(Vec::new(), cc).map_err(|e| match e {
                    raft::Error::ProposalDropped => Error::NoLeader,
                    e => Error::Raft(e),
                });
                let _ = ack.send(result);
            }
            Command::ReadIndex { ack } => self.queued_reads.push(ack),
            Command::Step(m) => {
                // Messages from members that were removed, or stale ones
                // from an old term, are refused by Raft; nothing to do.
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "raft message not stepped");
                }
            }
            Command::Unreachable(id) => self.raw.report_unreachable(id),
            Command::SnapshotDone { to, ok } => {
                let status = if ok { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
                self.raw.report_snapshot(to, status);
            }
            Command::TransferLeader(to) => self.raw.transfer_leader(to),
            Command::Progress { id, ack } => {
                let raft = &self.raw.raft;
                let progress = (raft.state == StateRole::Leader).then(|| {
                    let prs = raft.prs();
                    let member = prs.get(id).map_or(0, |p| p.matched);
                    let leader = prs.get(raft.id).map_or(0, |p| p.matched);
                    (member, leader)
                });
                let _ = ack.send(progress);
            }
            Command::Stop => return false,
        }
        true
    }

    fn issue_reads(&mut self) {
        if self.queued_reads.is_empty() {
            return;
        }
        self.next_read_ctx += 1;
        let ctx = self.next_read_ctx.to_be_bytes().to_vec();
        self.raw.read_index(ctx.clone());
        let waiters = std::mem::take(&mut self.queued_reads);
        self.reads_in_flight.insert(ctx, PendingRead { waiters, ticks: 0 });
    }

    fn age_reads(&mut self) {
        for (ctx, read) in self.reads_in_flight.iter_mut() {
            read.waiters.retain(|w| !w.is_closed());
            read.ticks += 1;
            if read.ticks >= READ_RETRY_TICKS {
                read.ticks = 0;
                self.raw.read_index(ctx.clone());
            }
        }
        self.reads_in_flight.retain(|_, r| !r.waiters.is_empty());
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone())?;
        }
        // Entries already committed are applied only after this Ready's new
        // entries are durable and acknowledged: applying first would hold
        // back the fsync and the follower's ack, and with them the commit of
        // the next batch.
        let committed = ready.take_committed_entries();

        let mut batch = WriteBatch::default();
        let mut dirty = false;
        if !ready.entries().is_empty() {
            self.raw.mut_store().stage_append(&mut batch, ready.entries())?;
            dirty = true;
        }
        if let Some(hs) = ready.hs() {
            self.raw.mut_store().stage_hard_state(&mut batch, hs)?;
            dirty = true;
        }
        if dirty {
            // The fsync that makes proposals durable before anyone is told
            // they committed.
            self.engine.write(batch, ready.must_sync())?;
            self.raw.mut_store().commit_staged();
        }
        if !ready.persisted_messages().is_empty() {
            self.send(ready.take_persisted_messages());
        }
        self.apply_entries(committed)?;
        for rs in ready.take_read_states() {
            if let Some(read) = self.reads_in_flight.remove(&rs.request_ctx) {
                for w in read.waiters {
                    let _ = w.send(rs.index);
                }
            }
        }

        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.store().hard_state().clone();
            hs.commit = commit;
            let mut batch = WriteBatch::default();
            self.raw.mut_store().stage_hard_state(&mut batch, &hs)?;
            self.engine.write(batch, false)?;
            self.raw.mut_store().commit_staged();
        }
        self.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_compact()?;
        self.publish_status();
        Ok(())
    }

    /// Replaces the state with a snapshot from the leader.
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        let index = snapshot.get_metadata().index;
        tracing::info!(
            index,
            term = snapshot.get_metadata().term,
            bytes = snapshot.data.len(),
            "installing snapshot"
        );
        self.raw.mut_store().install_snapshot(&snapshot)?;
        self.state_machine.restored(index)?;
        self.status.applied.store(index, Ordering::Relaxed);
        self.applied_tx.send_replace(index);
        Ok(())
    }

    /// Drops applied entries from the log once there are enough of them;
    /// members that fall further behind get a snapshot instead.
    fn maybe_compact(&mut self) -> Result<()> {
        let applied = self.state_machine.applied_index();
        let store = self.raw.mut_store();
        if applied < store.first_index_before() + self.limits.snapshot_count + self.limits.catch_up_entries {
            return Ok(());
        }
        store.compact_to(applied - self.limits.catch_up_entries)
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<()> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.state_machine.apply(entry.index, &entry.data)?,
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data).map_err(|e| Error::Corrupt(e.to_string()))?;
                    self.apply_conf_change(entry.index, &to_v2(cc))?;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| Error::Corrupt(e.to_string()))?;
                    self.apply_conf_change(entry.index, &cc)?;
                }
            }
        }
        self.raw.mut_store().set_applied(last);
        self.status.applied.store(last, Ordering::Relaxed);
        self.applied_tx.send_replace(last);
        Ok(())
    }

    fn apply_conf_change(&mut self, index: u64, cc: &ConfChangeV2) -> Result<()> {
        // A change Raft refuses (say, removing the last voter) is skipped
        // the same way on every member.
        match self.raw.apply_conf_change(cc) {
            Ok(cs) => {
                let mut batch = WriteBatch::default();
                self.raw.mut_store().stage_conf_state(&mut batch, &cs)?;
                self.engine.write(batch, false)?;
                for change in cc.get_changes() {
                    self.state_machine
                        .apply_conf_change(index, change.get_change_type(), change.node_id, &cc.context)?;
                }
                if cc.get_changes().is_empty() {
                    self.state_machine.apply(index, &[])?;
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(index, error = %e, "configuration change refused by raft");
                self.state_machine.apply(index, &[])
            }
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        if !messages.is_empty() {
            self.sink.send(messages);
        }
    }

    fn publish_status(&self) {
        let raft = &self.raw.raft;
        self.status.leader.store(raft.leader_id, Ordering::Relaxed);
        self.status.term.store(raft.term, Ordering::Relaxed);
        self.status.commit.store(raft.raft_log.committed, Ordering::Relaxed);
        self.status.last_index.store(raft.raft_log.last_index(), Ordering::Relaxed);
        if raft.state == StateRole::Leader && !self.reads_in_flight.is_empty() {
            tracing::trace!(reads = self.reads_in_flight.len(), "linearizable reads waiting");
        }
    }
}

/// A legacy single change in the form every change is applied in.
fn to_v2(cc: ConfChange) -> ConfChangeV2 {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(cc.get_change_type());
    single.node_id = cc.node_id;
    let mut v2 = ConfChangeV2::default();
    v2.set_changes(vec![single].into());
    v2.context = cc.context;
    v2
}

/// Forwards raft-rs's slog records to `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> std::result::Result<(), slog::Never> {
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{msg}"),
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}"),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{msg}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}"),
        }
        Ok(())
    }
}
