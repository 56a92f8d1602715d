//! The sending side of the peer protocol: one task per peer with a bounded
//! queue. Raft retransmits anything lost, so a full queue drops messages
//! rather than blocking the Ready loop, and a slow or dead peer costs the
//! others nothing.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_stream::wrappers::ReceiverStream;

use super::{connect, PeerActivity, MAX_PEER_MESSAGE_BYTES};
use crate::membership::MemberTable;
use crate::proto::cairnpb::{peer_client::PeerClient, MembersRequest, RaftBatch, SnapshotChunk};
use crate::raft::snapshot::{outgoing_path, DumpRef};
use crate::raft::{MessageSink, NodeHandle};
use crate::tls::PeerDialer;

/// Messages waiting for one peer; beyond this they are dropped.
const QUEUE_LEN: usize = 4096;
/// A batch is closed at this many bytes of encoded messages.
const BATCH_BYTES: usize = 2 << 20;
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Snapshot chunks read ahead of the stream; with the chunk size, what a
/// transfer holds in memory.
const SNAPSHOT_CHUNKS_AHEAD: usize = 4;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often the transport makes sure it keeps a connection to every member,
/// not only to those Raft happens to talk to, so that the connectivity the
/// reconfiguration checks rely on is known for all.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What every peer task needs.
struct Shared {
    local_id: u64,
    cluster_id: u64,
    members: Arc<MemberTable>,
    node: NodeHandle,
    activity: Arc<PeerActivity>,
    /// Where the snapshot builder leaves the dumps to send.
    dumps: PathBuf,
    dialer: PeerDialer,
}

pub struct Transport {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    peers: HashMap<u64, mpsc::Sender<Message>>,
    last_sweep: Option<Instant>,
}

impl Transport {
    /// Must be called inside the Tokio runtime the peer tasks will run on.
    /// Peer connectivity is recorded in `activity`.
    pub fn new(
        local_id: u64,
        cluster_id: u64,
        members: Arc<MemberTable>,
        activity: Arc<PeerActivity>,
        node: NodeHandle,
        dumps: PathBuf,
        dialer: PeerDialer,
    ) -> Transport {
        Transport {
            shared: Arc::new(Shared {
                local_id,
                cluster_id,
                members,
                node,
                activity,
                dumps,
                dialer,
            }),
            runtime: tokio::runtime::Handle::current(),
            peers: HashMap::new(),
            last_sweep: None,
        }
    }

    fn connect_all(&mut self) {
        if self.last_sweep.is_some_and(|t| t.elapsed() < SWEEP_INTERVAL) {
            return;
        }
        self.last_sweep = Some(Instant::now());
        for member in self.shared.members.list() {
            if member.id != self.shared.local_id {
                self.queue(member.id);
            }
        }
    }

    fn queue(&mut self, to: u64) -> &mpsc::Sender<Message> {
        let alive = self.peers.get(&to).is_some_and(|q| !q.is_closed());
        if !alive {
            let (tx, rx) = mpsc::channel(QUEUE_LEN);
            self.runtime.spawn(run_peer(self.shared.clone(), to, rx));
            self.peers.insert(to, tx);
        }
        &self.peers[&to]
    }
}

impl MessageSink for Transport {
    fn send(&mut self, messages: Vec<Message>) {
        self.connect_all();
        for message in messages {
            let to = message.to;
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.runtime.spawn(send_snapshot(self.shared.clone(), message));
                continue;
            }
            match self.queue(to).try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => tracing::debug!(to = %format!("{to:x}"), "peer queue full; raft message dropped"),
                // The peer's task ended (member removed); a later message
                // starts a new one if the member is back.
                Err(TrySendError::Closed(_)) => {
                    self.peers.remove(&to);
                }
            }
        }
    }
}

/// Streams messages to one peer for as long as it is a member, reconnecting
/// with backoff.
async fn run_peer(shared: Arc<Shared>, to: u64, mut queue: mpsc::Receiver<Message>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(url) = shared.members.peer_url(to) else {
            tracing::debug!(to = %format!("{to:x}"), "not a member any more; peer sender stops");
            shared.activity.deactivate(to);
            return;
        };
        match connect(&shared.dialer, &url).await {
            Ok(channel) => {
                let mut client = PeerClient::new(channel).max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
                match answers(&mut client).await {
                    Ok(()) => {
                        backoff = MIN_BACKOFF;
                        shared.activity.activate(to);
                        match stream_to(&shared, client, &mut queue).await {
                            StreamEnd::QueueClosed => {
                                shared.activity.deactivate(to);
                                return;
                            }
                            StreamEnd::Broken(why) => {
                                tracing::debug!(to = %format!("{to:x}"), %url, error = %why, "peer stream broken")
                            }
                        }
                    }
                    Err(why) => tracing::debug!(to = %format!("{to:x}"), %url, error = %why, "peer does not answer"),
                }
            }
            Err(e) => tracing::debug!(to = %format!("{to:x}"), %url, error = %e, "cannot connect to peer"),
        }
        shared.activity.deactivate(to);
        shared.node.report_unreachable(to);
        // What queued up meanwhile is stale; Raft will send afresh.
        while queue.try_recv().is_ok() {}
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether the peer itself answers. Something in between (a proxy, a load
/// balancer) may accept a connection with nobody behind it, so only an
/// answer shows that the peer is up and may be counted as connected.
async fn answers(client: &mut PeerClient<tonic::transport::Channel>) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, client.members(MembersRequest {})).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("timed out".to_string()),
    }
}

enum StreamEnd {
    QueueClosed,
    Broken(String),
}

async fn stream_to(shared: &Shared, mut client: PeerClient<tonic::transport::Channel>, queue: &mut mpsc::Receiver<Message>) -> StreamEnd {
    let (batch_tx, batch_rx) = mpsc::channel::<RaftBatch>(4);
    let mut call = tokio::spawn(async move { client.stream(ReceiverStream::new(batch_rx)).await });
    let end = loop {
        tokio::select! {
            result = &mut call => {
                break StreamEnd::Broken(match result {
                    Ok(Ok(_)) => "peer ended the stream".to_string(),
                    Ok(Err(status)) => {
                        if status.code() == tonic::Code::PermissionDenied && status.message() == super::REMOVED_MESSAGE {
                            shared.members.learn_removed();
                        }
                        status.to_string()
                    }
                    Err(e) => e.to_string(),
                });
            }
            first = queue.recv() => {
                let Some(first) = first else { break StreamEnd::QueueClosed };
                let mut batch = RaftBatch { cluster_id: shared.cluster_id, from: shared.local_id, messages: Vec::new() };
                let mut bytes = 0;
                let mut next = Some(first);
                while let Some(message) = next.take() {
                    match message.write_to_bytes() {
                        Ok(raw) => {
                            bytes += raw.len();
                            batch.messages.push(raw);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot encode raft message"),
                    }
                    if bytes < BATCH_BYTES {
                        next = queue.try_recv().ok();
                    }
                }
                if batch_tx.send(batch).await.is_err() {
                    break StreamEnd::Broken("stream closed".to_string());
                }
            }
        }
    };
    call.abort();
    end
}

/// Sends one snapshot on its own call: first the Raft message, which names
/// the dump, then the dump file in chunks. Reports the outcome to Raft,
/// which holds back the peer until it knows.
async fn send_snapshot(shared: Arc<Shared>, message: Message) {
    let to = message.to;
    let ok = match try_send_snapshot(&shared, &message).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(to = %format!("{to:x}"), error = %e, "sending snapshot failed");
            false
        }
    };
    shared.node.report_snapshot(to, ok);
}

async fn try_send_snapshot(shared: &Shared, message: &Message) -> anyhow::Result<()> {
    let url = shared.members.peer_url(message.to).ok_or_else(|| anyhow::anyhow!("not a member"))?;
    let reference = DumpRef::decode(&message.get_snapshot().data)?;
    // Opened before the call: the builder may drop the file meanwhile, and
    // an open file stays readable.
    let file = std::fs::File::open(outgoing_path(&shared.dumps, reference.index))?;
    let (cluster_id, from) = (shared.cluster_id, shared.local_id);
    let chunk = move |data: Vec<u8>| SnapshotChunk { cluster_id, from, data };
    let (tx, rx) = mpsc::channel(SNAPSHOT_CHUNKS_AHEAD);
    tx.send(chunk(message.write_to_bytes()?)).await?;
    let reader = tokio::task::spawn_blocking(move || read_chunks(file, |data| tx.blocking_send(chunk(data)).is_ok()));
    let channel = connect(&shared.dialer, &url).await?;
    let mut client = PeerClient::new(channel).max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    // No deadline for the whole transfer, which grows with the data set: a
    // dead peer is noticed by the connection's keep-alive.
    let sent = client.snapshot(ReceiverStream::new(rx)).await;
    let read = reader.await?;
    sent?;
    let read = read?;
    anyhow::ensure!(
        read == reference.len,
        "dump file has {read} bytes, the snapshot names {}",
        reference.len
    );
    Ok(())
}

/// Reads `file` in chunks into `send` until the end or until `send` refuses;
/// returns how many bytes went out.
fn read_chunks(mut file: std::fs::File, mut send: impl FnMut(Vec<u8>) -> bool) -> std::io::Result<u64> {
    let mut sent = 0;
    loop {
        let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
        (&mut file).take(SNAPSHOT_CHUNK_BYTES as u64).read_to_end(&mut buf)?;
        if buf.is_empty() {
            return Ok(sent);
        }
        sent += buf.len() as u64;
        if !send(buf) {
            return Ok(sent);
        }
    }
}
