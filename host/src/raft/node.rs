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
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message};
use raft::{Config, RawNode, ReadOnlyOption, StateRole};
use rocksdb::WriteBatch;
use tokio::sync::{oneshot, watch};

use super::LogStore;
use crate::error::{Error, Result};
use crate::storage::Engine;

/// How often the Raft clock ticks; elections and heartbeats are counted in
/// ticks (etcd's defaults: 100 ms heartbeat, 1 s election timeout).
const TICK: Duration = Duration::from_millis(100);
const ELECTION_TICKS: usize = 10;
const HEARTBEAT_TICKS: usize = 1;
/// A ReadIndex request unanswered for this many ticks is asked again: Raft
/// drops them silently while a new leader has not yet committed in its term.
const READ_RETRY_TICKS: u32 = 5;

/// Applies committed entries. Implementations must be deterministic: every
/// member applies the same entries in the same order.
pub trait StateMachine: Send + 'static {
    /// Applies the entry at `index`; `data` is empty for entries that carry
    /// no request (leader no-ops, configuration changes).
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<()>;
    /// The last index applied, as persisted.
    fn applied_index(&self) -> u64;
}

/// What the rest of the server can observe of Raft, refreshed every Ready.
#[derive(Default)]
pub struct RaftStatus {
    pub id: u64,
    leader: AtomicU64,
    term: AtomicU64,
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
}

enum Command {
    Propose { data: Vec<u8>, ack: oneshot::Sender<Result<()>> },
    ReadIndex { ack: oneshot::Sender<u64> },
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
    /// Hands `data` to Raft. Success means the entry was accepted for
    /// replication, not that it committed.
    pub async fn propose(&self, data: Vec<u8>) -> Result<()> {
        let (ack, rx) = oneshot::channel();
        self.tx.send(Command::Propose { data, ack }).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Waits until this member has applied everything committed when the
    /// call was made, confirmed by a quorum (Raft's ReadIndex). Reads served
    /// afterwards are linearizable.
    pub async fn linearizable_barrier(&self) -> Result<()> {
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
    engine: Arc<Engine>,
    state_machine: S,
    rx: mpsc::Receiver<Command>,
    status: Arc<RaftStatus>,
    applied_tx: watch::Sender<u64>,
    /// ReadIndex requests not yet handed to Raft; they share one request.
    queued_reads: Vec<oneshot::Sender<u64>>,
    reads_in_flight: HashMap<Vec<u8>, PendingRead>,
    next_read_ctx: u64,
}

impl<S: StateMachine> Node<S> {
    /// Starts the Ready loop on its own thread.
    pub fn start(id: u64, engine: Arc<Engine>, voters: &[u64], state_machine: S) -> Result<(NodeHandle, JoinHandle<Result<()>>)> {
        let store = LogStore::open(engine.clone(), voters)?;
        let applied = state_machine.applied_index();
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
        let node = Node {
            raw,
            engine,
            state_machine,
            rx,
            status: status.clone(),
            applied_tx,
            queued_reads: Vec::new(),
            reads_in_flight: HashMap::new(),
            next_read_ctx: 0,
        };
        let thread = std::thread::Builder::new().name("raft".into()).spawn(move || node.run())?;
        Ok((
            NodeHandle {
                tx,
                status,
                applied: applied_rx,
            },
            thread,
        ))
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
            Command::ReadIndex { ack } => self.queued_reads.push(ack),
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
        self.apply_entries(ready.take_committed_entries())?;

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
        self.publish_status();
        Ok(())
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
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.persist_conf_state(entry.index, &cs)?;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| Error::Corrupt(e.to_string()))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.persist_conf_state(entry.index, &cs)?;
                }
            }
        }
        self.status.applied.store(last, Ordering::Relaxed);
        self.applied_tx.send_replace(last);
        Ok(())
    }

    /// Records the configuration a conf change produced; the entry itself
    /// carries no request for the state machine.
    fn persist_conf_state(&mut self, index: u64, cs: &ConfState) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.raw.mut_store().stage_conf_state(&mut batch, cs)?;
        self.engine.write(batch, false)?;
        self.state_machine.apply(index, &[])
    }

    fn send(&mut self, messages: Vec<Message>) {
        // A single member has nobody to talk to; peers arrive with the
        // cluster transport.
        if !messages.is_empty() {
            tracing::trace!(count = messages.len(), "dropping raft messages: no peer transport");
        }
    }

    fn publish_status(&self) {
        let raft = &self.raw.raft;
        self.status.leader.store(raft.leader_id, Ordering::Relaxed);
        self.status.term.store(raft.term, Ordering::Relaxed);
        self.status.commit.store(raft.raft_log.committed, Ordering::Relaxed);
        if raft.state == StateRole::Leader && !self.reads_in_flight.is_empty() {
            tracing::trace!(reads = self.reads_in_flight.len(), "linearizable reads waiting");
        }
    }
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
