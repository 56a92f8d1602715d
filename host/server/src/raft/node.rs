//! The Ready loop: one thread owns the `RawNode` and its log store, in the
//! discipline of raft-rs's examples; a second thread owns the state machine
//! and applies committed entries in log order, reporting back how far it got
//! (`advance_apply_to`), so ticks, heartbeats and the next fsync never wait
//! for apply. Everything else talks to the loop through a [`NodeHandle`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{Config, RawNode, ReadOnlyOption, SnapshotStatus, StateRole};
use rocksdb::WriteBatch;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::read_gate::{read_gate, ReadRounds, ReadTickets};
use super::LogStore;
use crate::error::{Error, Result};
use crate::storage::Database;

/// How often the Raft clock ticks; elections and heartbeats are counted in
/// ticks (etcd's defaults: 100 ms heartbeat, 1 s election timeout).
const TICK: Duration = Duration::from_millis(100);
const ELECTION_TICKS: usize = 10;
const HEARTBEAT_TICKS: usize = 1;
/// How long a follower waits to hear from a leader before it stands for
/// election (at least; raft-rs randomises it up to twice that).
pub const ELECTION_TIMEOUT: Duration = TICK.saturating_mul(ELECTION_TICKS as u32);
/// A ReadIndex request unanswered for this many ticks is asked again: Raft
/// drops them silently while a new leader has not yet committed in its term.
const READ_RETRY_TICKS: u32 = 5;
/// How long a request waits for an election to finish before it fails with
/// "no leader": two election timeouts, enough for one failed round.
const LEADER_WAIT: Duration = Duration::from_secs(2);
/// Client requests (proposals, ReadIndex) queued for the loop; callers
/// beyond it wait for room rather than grow the queue.
const PROPOSAL_QUEUE: usize = 1024;
/// Messages from peers queued for the loop; beyond it they are dropped,
/// which Raft tolerates (it resends).
const STEP_QUEUE: usize = 4096;
/// Committed entries handed to the apply thread but not yet applied beyond
/// which new proposals are held back, so a slow state machine slows
/// clients down instead of piling entries up in memory.
const APPLY_BACKLOG: u64 = 8192;
/// The most entry bytes one Ready hands to the apply thread.
const MAX_COMMITTED_PER_READY: u64 = 4 << 20;

/// Applies committed entries, on the apply thread. Implementations must be
/// deterministic: every member applies the same entries in the same order.
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

/// What the rest of the server can observe of Raft, refreshed every Ready
/// (the applied index as the apply thread advances).
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
        _room: OwnedSemaphorePermit,
    },
    ProposeConfChange {
        cc: ConfChangeV2,
        ack: oneshot::Sender<Result<()>>,
        _room: OwnedSemaphorePermit,
    },
    /// Linearizable reads are waiting (see `read_gate`).
    ReadIndex,
    Step(Box<Message>, OwnedSemaphorePermit),
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
    /// The apply thread applied everything up to this index.
    Applied(u64),
    /// The apply thread stopped on an error; the member stops with it.
    ApplyFailed,
    Stop,
}

/// A cheap, cloneable handle to the running node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    /// Room in the loop's queue for client requests and for peer messages:
    /// the queue itself is unbounded, these bound it.
    proposal_room: Arc<Semaphore>,
    step_room: Arc<Semaphore>,
    status: Arc<RaftStatus>,
    applied: watch::Receiver<u64>,
    reads: ReadTickets,
}

impl NodeHandle {
    /// Hands `data` to Raft (a follower forwards it to the leader). Success
    /// means the entry was accepted for replication, not that it committed.
    pub async fn propose(&self, data: Vec<u8>) -> Result<()> {
        let pending = &crate::metrics::metrics().proposals_pending;
        pending.inc();
        let result = self.propose_entry(data).await;
        pending.dec();
        if result.is_err() {
            crate::metrics::metrics().proposals_failed.inc();
        }
        result
    }

    async fn propose_entry(&self, data: Vec<u8>) -> Result<()> {
        self.wait_leader().await?;
        let _room = self.proposal_room().await?;
        let (ack, rx) = oneshot::channel();
        self.tx.send(Command::Propose { data, ack, _room }).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Proposes a membership change; `ConfChangeV2` so that a learner's
    /// promotion is one change like the others.
    pub async fn propose_conf_change(&self, cc: ConfChangeV2) -> Result<()> {
        self.wait_leader().await?;
        let _room = self.proposal_room().await?;
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Command::ProposeConfChange { cc, ack, _room })
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Waits for room in the loop's queue: backpressure on clients.
    async fn proposal_room(&self) -> Result<OwnedSemaphorePermit> {
        self.proposal_room.clone().acquire_owned().await.map_err(|_| Error::Stopped)
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

    /// Hands a message from another member to Raft. When the loop is this
    /// far behind the message is dropped; the sender retries as Raft does.
    pub fn step(&self, message: Message) -> Result<()> {
        let Ok(room) = self.step_room.clone().try_acquire_owned() else {
            tracing::debug!(from = message.from, "raft message dropped: the loop is behind");
            return Ok(());
        };
        self.tx.send(Command::Step(Box::new(message), room)).map_err(|_| Error::Stopped)
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
        let ticket = self.reads.take();
        if ticket.wake_loop {
            self.tx.send(Command::ReadIndex).map_err(|_| Error::Stopped)?;
        }
        let index = ticket.wait().await.ok_or(Error::Stopped)?;
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

/// The ReadIndex round in flight: at most one at a time.
struct ReadRound {
    ctx: Vec<u8>,
    /// The last reader's ticket it answers.
    covers: u64,
    ticks: u32,
}

/// A committed entry as the apply thread sees it. Configuration changes
/// reach the `RawNode` on the loop as they are handed over (Raft needs them
/// at once); the state machine gets them here, in log order with the rest.
enum Committed {
    Normal {
        index: u64,
        data: Vec<u8>,
    },
    ConfChange {
        index: u64,
        cc: ConfChangeV2,
        /// The configuration after the change, or `None` when Raft refused
        /// it (say, removing the last voter): then only the index moves on,
        /// the same way on every member.
        conf_state: Option<ConfState>,
    },
}

enum ApplyTask {
    Entries(Vec<Committed>),
    /// A snapshot replaced the state on disk at this index: caches reload.
    Restored(u64),
    /// Answered once everything handed over before it is applied.
    Drain(mpsc::SyncSender<()>),
}

/// The Raft node and the state it drives.
pub struct Node {
    raw: RawNode<LogStore>,
    engine: Arc<Database>,
    rx: mpsc::Receiver<Command>,
    status: Arc<RaftStatus>,
    sink: Box<dyn MessageSink>,
    limits: LogLimits,
    reads: ReadRounds,
    read_round: Option<ReadRound>,
    /// The last reader's ticket answered.
    reads_answered: u64,
    next_read_ctx: u64,
    apply_tx: Option<mpsc::Sender<ApplyTask>>,
    apply_thread: Option<JoinHandle<Result<()>>>,
    /// The last index handed to the apply thread, and the last it reported.
    handed_out: u64,
    applied: u64,
    /// Proposals held back while the apply thread is too far behind, in
    /// arrival order; bounded by the proposal queue's room they still hold.
    held_back: VecDeque<Command>,
}

impl Node {
    /// Starts the Ready loop and the apply thread. `voters` bootstraps a new
    /// cluster (empty when joining an existing one); `sink` is built once the
    /// handle exists, so the transport can report back to Raft. The returned
    /// thread ends when the member stops, with the apply thread's error if
    /// that is why.
    pub fn start<S: StateMachine>(
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
            max_committed_size_per_ready: MAX_COMMITTED_PER_READY,
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
        let (read_tickets, read_rounds) = read_gate();
        let status = Arc::new(RaftStatus { id, ..Default::default() });
        status.applied.store(applied, Ordering::Relaxed);
        let handle = NodeHandle {
            tx: tx.clone(),
            proposal_room: Arc::new(Semaphore::new(PROPOSAL_QUEUE)),
            step_room: Arc::new(Semaphore::new(STEP_QUEUE)),
            status: status.clone(),
            applied: applied_rx,
            reads: read_tickets,
        };
        let sink = sink(handle.clone());
        let (apply_tx, apply_rx) = mpsc::channel();
        let applier = ApplyLoop {
            state_machine,
            engine: engine.clone(),
            status: status.clone(),
            applied_tx,
            report: tx,
        };
        let apply_thread = std::thread::Builder::new()
            .name("apply".into())
            .spawn(move || applier.run(apply_rx))?;
        let node = Node {
            raw,
            engine,
            rx,
            status,
            sink,
            limits,
            reads: read_rounds,
            read_round: None,
            reads_answered: 0,
            next_read_ctx: 0,
            apply_tx: Some(apply_tx),
            apply_thread: Some(apply_thread),
            handed_out: applied,
            applied,
            held_back: VecDeque::new(),
        };
        let thread = std::thread::Builder::new().name("raft".into()).spawn(move || node.run())?;
        Ok((handle, thread))
    }

    fn run(mut self) -> Result<()> {
        let result = self.run_loop();
        // The apply thread finishes what it was handed, then ends; its error,
        // if it had one, is why the member stops.
        self.apply_tx = None;
        let applied = match self.apply_thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Corrupt("the apply thread panicked".into())),
            None => Ok(()),
        };
        applied.and(result)
    }

    fn run_loop(&mut self) -> Result<()> {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(timeout) {
                Ok(cmd) => {
                    if !self.handle(cmd)? {
                        return Ok(());
                    }
                    // Take everything already queued so one Ready (and one
                    // fsync) covers a whole burst of proposals.
                    while let Ok(cmd) = self.rx.try_recv() {
                        if !self.handle(cmd)? {
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
            // The Ready may have answered the round in flight: readers that
            // came during it get theirs now rather than at the next wake-up.
            if self.read_round.is_none() {
                self.issue_reads();
                self.on_ready()?;
            }
        }
    }

    fn apply_behind(&self) -> bool {
        self.handed_out.saturating_sub(self.applied) > APPLY_BACKLOG
    }

    /// Returns false when the node must stop.
    fn handle(&mut self, cmd: Command) -> Result<bool> {
        match cmd {
            cmd @ (Command::Propose { .. } | Command::ProposeConfChange { .. }) => {
                if self.apply_behind() || !self.held_back.is_empty() {
                    self.held_back.push_back(cmd);
                } else {
                    self.propose(cmd);
                }
            }
            // `issue_reads` runs after every batch of commands.
            Command::ReadIndex => {}
            Command::Step(m, _room) => {
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
            Command::Applied(index) => self.on_applied(index)?,
            Command::ApplyFailed => return Ok(false),
            Command::Stop => return Ok(false),
        }
        Ok(true)
    }

    fn propose(&mut self, cmd: Command) {
        let (result, ack) = match cmd {
            Command::Propose { data, ack, .. } => (self.raw.propose(Vec::new(), data), ack),
            Command::ProposeConfChange { cc, ack, .. } => (self.raw.propose_conf_change(Vec::new(), cc), ack),
            _ => return,
        };
        let _ = ack.send(result.map_err(|e| match e {
            raft::Error::ProposalDropped => Error::NoLeader,
            e => Error::Raft(e),
        }));
    }

    /// The apply thread's progress: Raft learns it, the log may shrink, and
    /// proposals held back may go.
    fn on_applied(&mut self, index: u64) -> Result<()> {
        // Reports from before a snapshot install arrive after it.
        if index <= self.applied {
            return Ok(());
        }
        self.applied = index;
        if index > self.raw.raft.raft_log.applied {
            self.raw.advance_apply_to(index);
        }
        self.raw.mut_store().set_applied(index);
        self.maybe_compact()?;
        while !self.apply_behind() {
            let Some(cmd) = self.held_back.pop_front() else { break };
            self.propose(cmd);
        }
        Ok(())
    }

    /// Starts a ReadIndex round for the readers waiting, unless one is in
    /// flight: readers arriving meanwhile share the next.
    fn issue_reads(&mut self) {
        if self.read_round.is_some() {
            return;
        }
        let Some(covers) = self.reads.start_round(self.reads_answered) else {
            return;
        };
        self.next_read_ctx += 1;
        let ctx = self.next_read_ctx.to_be_bytes().to_vec();
        self.raw.read_index(ctx.clone());
        self.read_round = Some(ReadRound { ctx, covers, ticks: 0 });
    }

    fn age_reads(&mut self) {
        let Some(round) = &mut self.read_round else {
            return;
        };
        round.ticks += 1;
        if round.ticks >= READ_RETRY_TICKS {
            // Raft dropped the request (say, a new leader had not yet
            // committed in its term): ask again under a new context, since
            // a late answer to the old one may predate readers the new round
            // covers.
            self.read_round = None;
            self.issue_reads();
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        let snapshot_index = (!ready.snapshot().is_empty()).then(|| ready.snapshot().get_metadata().index);
        if snapshot_index.is_some() {
            self.install_snapshot(ready.snapshot().clone())?;
        }
        // Entries already committed go to the apply thread only after this
        // Ready's new entries are durable and acknowledged: the fsync and
        // the follower's ack, and with them the next commit, come first.
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
            let started = std::time::Instant::now();
            self.engine.write(batch, ready.must_sync())?;
            if ready.must_sync() {
                crate::metrics::metrics().wal_fsync_seconds.observe(started.elapsed().as_secs_f64());
            }
            self.raw.mut_store().commit_staged();
        }
        if !ready.persisted_messages().is_empty() {
            self.send(ready.take_persisted_messages());
        }
        self.hand_over(committed)?;
        for rs in ready.take_read_states() {
            if let Some(round) = self.read_round.take_if(|round| round.ctx == rs.request_ctx) {
                self.reads.answer(round.covers, rs.index);
                self.reads_answered = round.covers;
            }
        }

        let mut light = self.raw.advance_append(ready);
        if let Some(index) = snapshot_index {
            // The snapshot is applied as far as Raft is concerned; the state
            // machine's reload is queued behind it and reports when done.
            self.raw.advance_apply_to(index);
        }
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.store().hard_state().clone();
            hs.commit = commit;
            let mut batch = WriteBatch::default();
            self.raw.mut_store().stage_hard_state(&mut batch, &hs)?;
            self.engine.write(batch, false)?;
            self.raw.mut_store().commit_staged();
        }
        self.send(light.take_messages());
        self.hand_over(light.take_committed_entries())?;
        self.publish_status();
        Ok(())
    }

    /// Replaces the state with a snapshot from the leader, once the apply
    /// thread has applied everything before it; reloading the state
    /// machine's caches is left to the apply thread.
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        let index = snapshot.get_metadata().index;
        tracing::info!(
            index,
            term = snapshot.get_metadata().term,
            bytes = snapshot.data.len(),
            "installing snapshot"
        );
        let (drained_tx, drained_rx) = mpsc::sync_channel(1);
        self.hand_to_apply(ApplyTask::Drain(drained_tx))?;
        drained_rx.recv().map_err(|_| Error::Stopped)?;
        self.raw.mut_store().install_snapshot(&snapshot)?;
        self.handed_out = index;
        self.hand_to_apply(ApplyTask::Restored(index))
    }

    /// Drops applied entries from the log once there are enough of them;
    /// members that fall further behind get a snapshot instead.
    fn maybe_compact(&mut self) -> Result<()> {
        let applied = self.applied;
        let store = self.raw.mut_store();
        if applied < store.first_index_before() + self.limits.snapshot_count + self.limits.catch_up_entries {
            return Ok(());
        }
        store.compact_to(applied - self.limits.catch_up_entries)
    }

    /// Hands committed entries to the apply thread, applying configuration
    /// changes to the `RawNode` on the way.
    fn hand_over(&mut self, entries: Vec<Entry>) -> Result<()> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        let mut committed = Vec::with_capacity(entries.len());
        for entry in entries {
            let index = entry.index;
            let cc = match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    committed.push(Committed::Normal {
                        index,
                        data: entry.data.to_vec(),
                    });
                    continue;
                }
                EntryType::EntryConfChange => to_v2(ConfChange::parse_from_bytes(&entry.data).map_err(|e| Error::Corrupt(e.to_string()))?),
                EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| Error::Corrupt(e.to_string()))?,
            };
            let conf_state = match self.raw.apply_conf_change(&cc) {
                Ok(cs) => {
                    self.raw.mut_store().set_conf_state(&cs);
                    Some(cs)
                }
                Err(e) => {
                    tracing::warn!(index, error = %e, "configuration change refused by raft");
                    None
                }
            };
            committed.push(Committed::ConfChange { index, cc, conf_state });
        }
        self.handed_out = last;
        self.hand_to_apply(ApplyTask::Entries(committed))
    }

    fn hand_to_apply(&mut self, task: ApplyTask) -> Result<()> {
        match &self.apply_tx {
            Some(tx) if tx.send(task).is_ok() => Ok(()),
            // The apply thread is gone: it failed, and `run` reports why.
            _ => Err(Error::Stopped),
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        if !messages.is_empty() {
            self.sink.send(messages);
        }
    }

    fn publish_status(&self) {
        let raft = &self.raw.raft;
        let previous = self.status.leader.swap(raft.leader_id, Ordering::Relaxed);
        if previous != raft.leader_id && raft.leader_id != 0 {
            crate::metrics::metrics().leader_changes.inc();
        }
        self.status.term.store(raft.term, Ordering::Relaxed);
        self.status.commit.store(raft.raft_log.committed, Ordering::Relaxed);
        self.status.last_index.store(raft.raft_log.last_index(), Ordering::Relaxed);
        if raft.state == StateRole::Leader && self.read_round.is_some() {
            tracing::trace!("a ReadIndex round is in flight");
        }
    }
}

/// The apply thread: owns the state machine and publishes the applied index
/// as it advances.
struct ApplyLoop<S: StateMachine> {
    state_machine: S,
    engine: Arc<Database>,
    status: Arc<RaftStatus>,
    applied_tx: watch::Sender<u64>,
    /// Wakes the Ready loop with progress.
    report: mpsc::Sender<Command>,
}

impl<S: StateMachine> ApplyLoop<S> {
    fn run(mut self, tasks: mpsc::Receiver<ApplyTask>) -> Result<()> {
        for task in tasks {
            let result = match task {
                ApplyTask::Entries(entries) => self.apply(entries),
                ApplyTask::Restored(index) => self.state_machine.restored(index).map(|()| Some(index)),
                ApplyTask::Drain(done) => {
                    let _ = done.send(());
                    Ok(None)
                }
            };
            match result {
                Ok(Some(index)) => {
                    self.status.applied.store(index, Ordering::Relaxed);
                    self.applied_tx.send_replace(index);
                    let _ = self.report.send(Command::Applied(index));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "apply failed; the member stops");
                    let _ = self.report.send(Command::ApplyFailed);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Committed>) -> Result<Option<u64>> {
        let mut last = None;
        for entry in entries {
            match entry {
                Committed::Normal { index, data } => {
                    let started = std::time::Instant::now();
                    self.state_machine.apply(index, &data)?;
                    let took = started.elapsed();
                    let m = crate::metrics::metrics();
                    // The apply is the backend's commit of this entry.
                    m.backend_commit_seconds.observe(took.as_secs_f64());
                    if took > crate::metrics::SLOW_APPLY {
                        m.slow_apply.inc();
                    }
                    last = Some(index);
                }
                Committed::ConfChange { index, cc, conf_state } => {
                    self.apply_conf_change(index, &cc, conf_state.as_ref())?;
                    last = Some(index);
                }
            }
        }
        Ok(last)
    }

    fn apply_conf_change(&mut self, index: u64, cc: &ConfChangeV2, conf_state: Option<&ConfState>) -> Result<()> {
        let Some(cs) = conf_state else {
            return self.state_machine.apply(index, &[]);
        };
        // Recorded here, in log order with the data, so a snapshot's
        // configuration matches the applied index it is taken at.
        LogStore::persist_conf_state(&self.engine, cs)?;
        for change in cc.get_changes() {
            self.state_machine
                .apply_conf_change(index, change.get_change_type(), change.node_id, &cc.context)?;
        }
        if cc.get_changes().is_empty() {
            self.state_machine.apply(index, &[])?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle whose loop never runs: what it queues stays in `rx`.
    fn idle_handle() -> (NodeHandle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel();
        let (_, applied) = watch::channel(0);
        let status = Arc::new(RaftStatus {
            id: 1,
            ..Default::default()
        });
        status.leader.store(1, Ordering::Relaxed);
        let handle = NodeHandle {
            tx,
            proposal_room: Arc::new(Semaphore::new(PROPOSAL_QUEUE)),
            step_room: Arc::new(Semaphore::new(STEP_QUEUE)),
            status,
            applied,
            reads: read_gate().0,
        };
        (handle, rx)
    }

    #[test]
    fn peer_messages_beyond_the_queue_are_dropped() {
        let (handle, rx) = idle_handle();
        for _ in 0..STEP_QUEUE + 10 {
            handle.step(Message::default()).expect("step");
        }
        assert_eq!(rx.try_iter().count(), STEP_QUEUE);
        // Taken by the loop, they make room again.
        handle.step(Message::default()).expect("step");
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn proposals_wait_for_room_in_the_queue() {
        let (handle, rx) = idle_handle();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            for _ in 0..=PROPOSAL_QUEUE {
                let handle = handle.clone();
                tokio::spawn(async move { handle.propose(vec![1]).await });
            }
            // Every proposal runs until it is queued or waits for room.
            let mut queued = Vec::new();
            for _ in 0..100 {
                tokio::task::yield_now().await;
                queued.extend(rx.try_iter());
            }
            assert_eq!(queued.len(), PROPOSAL_QUEUE, "one proposal waits for room");
            // The loop taking one lets the waiting one in.
            queued.pop();
            for _ in 0..100 {
                tokio::task::yield_now().await;
                queued.extend(rx.try_iter());
            }
            assert_eq!(queued.len(), PROPOSAL_QUEUE);
        });
    }
}
