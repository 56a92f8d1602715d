//! `etcdserverpb.Watch`: one bidirectional stream carries many watches.
//!
//! The stream task reads requests and answers control messages (created,
//! canceled, progress). Each watch runs as its own task that catches up from
//! MVCC history, then follows the live feed of the [`WatchHub`], falling back
//! to history whenever it lags; all of them write into the stream's one
//! outbound channel, so a slow client only ever holds up its own watches.
//! A progress request briefly holds them all ([`progress`]).

mod progress;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Perm;
use crate::client_identity::ClientIdentity;
use crate::error::Error;
use crate::member::{self, Member};
use crate::mvcc::KeyRange;
use crate::plugin::Hook;
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::proto::mvccpb::{event::EventType, Event};
use crate::watch::{RevisionEvents, Subscription};
use progress::{GateMember, ProgressGate};

/// The watch id etcd answers with when a watch could not be created, and
/// which stream-wide progress responses carry.
const INVALID_WATCH_ID: i64 = -1;
/// How many revisions one catch-up response may span (etcd's
/// `watchBatchMaxRevs`).
const CATCH_UP_MAX_REVISIONS: usize = 1000;
/// etcd's default `--experimental-watch-progress-notify-interval`.
const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// The shortest interval etcd accepts; shorter ones are raised to it.
const MIN_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_millis(100);
/// etcd lets watch responses exceed `--max-request-bytes` by the same gRPC
/// allowance requests get before it fragments them.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// Responses queued for one stream before watch tasks wait for the client.
const OUTBOUND_BUFFER: usize = 64;

const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

type Outbound = mpsc::Sender<Result<WatchResponse, Status>>;

pub struct WatchService {
    member: Arc<Member>,
    progress_interval: Duration,
}

impl WatchService {
    pub fn new(member: Arc<Member>) -> Self {
        WatchService {
            member,
            progress_interval: PROGRESS_NOTIFY_INTERVAL,
        }
    }

    /// Sets how often idle watches that asked for it get a progress
    /// notification; zero keeps the default, as in etcd.
    pub fn with_progress_notify_interval(mut self, interval: Duration) -> Self {
        if interval.is_zero() {
            return self;
        }
        if interval < MIN_PROGRESS_NOTIFY_INTERVAL {
            tracing::warn!(
                requested = ?interval,
                minimum = ?MIN_PROGRESS_NOTIFY_INTERVAL,
                "adjusting the watch progress notify interval to the minimum"
            );
        }
        self.progress_interval = interval.max(MIN_PROGRESS_NOTIFY_INTERVAL);
        self
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        // Who opened the stream is judged again at each create, as etcd
        // does: a token may expire, or permissions change, while it is open.
        let metadata = request.metadata().clone();
        let identity = ClientIdentity::of(&request).cloned();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let stream = WatchStream {
            member: self.member.clone(),
            progress_interval: self.progress_interval,
            out: tx,
            watches: HashMap::new(),
            gate: ProgressGate::new(),
            next_auto_id: 0,
            metadata,
            identity,
        };
        tokio::spawn(stream.serve(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What one watch asked for.
#[derive(Clone)]
struct WatchSpec {
    id: i64,
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
}

impl WatchSpec {
    /// The events of `events` this watch reports, shaped as it asked.
    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| self.range.contains(&kv.key)))
            .filter(|e| {
                if e.r#type == EventType::Put as i32 {
                    !self.no_put
                } else {
                    !self.no_delete
                }
            })
            .map(|e| {
                let mut e = e.clone();
                let create = e.r#type == EventType::Put as i32 && e.kv.as_ref().is_some_and(|kv| kv.create_revision == kv.mod_revision);
                if !self.prev_kv || create {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

struct WatchStream {
    member: Arc<Member>,
    progress_interval: Duration,
    out: Outbound,
    watches: HashMap<i64, JoinHandle<()>>,
    gate: Arc<ProgressGate>,
    next_auto_id: i64,
    /// The stream's request metadata (its token) and connection.
    metadata: MetadataMap,
    identity: Option<ClientIdentity>,
}

/// Why etcd refuses a watch create, as its `cancel_reason`: the token's
/// own errors as they are, every other refusal as permission denied, in
/// the text of a Go gRPC error (as etcd 3.4 writes it).
fn refusal_reason(e: Error) -> String {
    let e = match e {
        Error::InvalidAuthToken | Error::AuthOldRevision | Error::AuthUserEmpty => e,
        _ => Error::PermissionDenied,
    };
    super::grpc_error::go_error_text(e)
}

impl WatchStream {
    /// READ on exactly the range to watch (a range to the end of the
    /// keyspace is checked whole, where etcd 3.4 checked its first key).
    fn permit(&self, key: &[u8], range_end: &[u8]) -> Result<(), Error> {
        let auth = self.member.auth();
        let caller = auth.authorize_metadata(&self.metadata, self.identity.as_ref())?;
        auth.check_range(&caller, key, range_end, Perm::Read)
    }

    async fn serve(mut self, mut inbound: Streaming<WatchRequest>) {
        loop {
            let request = tokio::select! {
                r = inbound.message() => r,
                // The client went away: nothing left to deliver.
                _ = self.out.closed() => break,
                _ = self.gate.settled(), if self.gate.holding() => {
                    if !self.answer_progress().await {
                        break;
                    }
                    continue;
                }
            };
            match request {
                Ok(Some(r)) => {
                    if !self.handle(r).await {
                        break;
                    }
                }
                // A half-closed stream still delivers events, as in etcd,
                // and still answers the progress request it made.
                Ok(None) => {
                    loop {
                        tokio::select! {
                            _ = self.out.closed() => break,
                            _ = self.gate.settled(), if self.gate.holding() => {
                                if !self.answer_progress().await {
                                    break;
                                }
                            }
                        }
                    }
                    break;
                }
                Err(status) => {
                    tracing::debug!(%status, "watch stream receive failed");
                    break;
                }
            }
        }
        for (_, task) in self.watches.drain() {
            task.abort();
        }
    }

    /// Returns false once the client can no longer be answered.
    async fn handle(&mut self, request: WatchRequest) -> bool {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                let Some(task) = self.watches.remove(&cancel.watch_id) else {
                    // etcd ignores cancels of unknown watches.
                    return true;
                };
                // Wait for the task to stop, so nothing of this watch
                // follows the canceled response.
                task.abort();
                let _ = task.await;
                let resp = WatchResponse {
                    header: Some(self.member.current_header()),
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..Default::default()
                };
                self.out.send(Ok(resp)).await.is_ok()
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.gate.begin(self.member.watch_hub());
                self.answer_progress().await
            }
            None => true,
        }
    }

    /// Sends the stream-wide progress response once every watch has reached
    /// the hold's revision; returns false once the client can no longer be
    /// answered.
    async fn answer_progress(&mut self) -> bool {
        let Some(revision) = self.gate.reached() else {
            return true;
        };
        let resp = WatchResponse {
            header: Some(self.member.header(revision)),
            watch_id: INVALID_WATCH_ID,
            ..Default::default()
        };
        let sent = self.out.send(Ok(resp)).await.is_ok();
        self.gate.release();
        sent
    }

    async fn create(&mut self, create: WatchCreateRequest) -> bool {
        // etcd's reading of key and range_end: an empty key is "\0", the
        // smallest key; a range end of "\0" means every key from `key` on.
        let key = if create.key.is_empty() { vec![0] } else { create.key.clone() };
        let range = KeyRange::new(&key, &create.range_end);
        let last_published = self.member.watch_hub().last_published();
        let refused = |reason: &str| WatchResponse {
            header: Some(self.member.header(last_published)),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        if let Err(e) = self.permit(&key, &create.range_end) {
            return self.out.send(Ok(refused(&refusal_reason(e)))).await.is_ok();
        }
        let bounded = create.range_end.len() > 1 || create.range_end.first().is_some_and(|b| *b != 0);
        if bounded && key >= create.range_end {
            return self.out.send(Ok(refused(ERR_EMPTY_RANGE))).await.is_ok();
        }
        let id = if create.watch_id == 0 {
            while self.watches.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        } else if self.watches.contains_key(&create.watch_id) {
            return self.out.send(Ok(refused(ERR_DUPLICATE_ID))).await.is_ok();
        } else {
            create.watch_id
        };
        let filters: Vec<FilterType> = create.filters.iter().filter_map(|f| FilterType::try_from(*f).ok()).collect();
        let spec = WatchSpec {
            id,
            range,
            no_put: filters.contains(&FilterType::Noput),
            no_delete: filters.contains(&FilterType::Nodelete),
            prev_kv: create.prev_kv,
            fragment: create.fragment,
            progress_notify: create.progress_notify,
        };
        let start = if create.start_revision == 0 {
            last_published + 1
        } else {
            create.start_revision
        };
        let created = WatchResponse {
            header: Some(self.member.header(last_published)),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        // Sent before the task starts, so it precedes every event.
        if self.out.send(Ok(created)).await.is_err() {
            return false;
        }
        let watcher = Watcher {
            member: self.member.clone(),
            progress_interval: self.progress_interval,
            gate: self.gate.join(id),
            spec,
            out: self.out.clone(),
        };
        self.watches.insert(id, tokio::spawn(watcher.run(start)));
        true
    }
}

/// One watch's delivery loop.
struct Watcher {
    member: Arc<Member>,
    progress_interval: Duration,
    gate: GateMember,
    spec: WatchSpec,
    out: Outbound,
}

/// Why a watcher stopped delivering.
enum Stop {
    /// The client is gone.
    Disconnected,
    /// The watch was answered with a final (compacted) response.
    Ended,
}

impl Watcher {
    async fn run(mut self, start: i64) {
        let mut next = start;
        loop {
            let mut sub = loop {
                match self.member.watch_hub().subscribe(&self.spec.range, next) {
                    Ok(sub) => break sub,
                    Err(upto) => {
                        // The hold is read after `upto`: with none on, any
                        // later hold's revision is at least `upto`.
                        let hold = self.gate.hold();
                        let upto = hold.map_or(upto, |h| upto.min(h.revision));
                        if next > upto {
                            // Through the hold's revision already: wait it out.
                            if let Some(h) = hold {
                                self.gate.reached(h);
                            }
                            self.gate.changed().await;
                            continue;
                        }
                        match self.catch_up(next, upto).await {
                            Ok(n) => next = n,
                            Err(_) => return,
                        }
                    }
                }
            };
            // Back to history when the feed dropped this watch.
            if self.follow(&mut sub, &mut next).await.is_err() {
                return;
            }
        }
    }

    /// Delivers from the live feed until it drops this watch (`Ok`), or
    /// the watch stops.
    async fn follow(&mut self, sub: &mut Subscription, next: &mut i64) -> Result<(), Stop> {
        // Up to a tenth more, as etcd jitters it, so watches created
        // together are not all notified at once.
        let jitter = rand::random_range(0..=self.progress_interval.as_millis() as u64 / 10);
        let period = self.progress_interval + Duration::from_millis(jitter);
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut sent_since_progress = false;
        // A batch received but past the hold's revision, sent once it ends.
        let mut held: Option<Arc<RevisionEvents>> = None;
        loop {
            let hold = self.gate.hold();
            if let Some(batch) = held.take() {
                if hold.is_some_and(|h| batch.revision > h.revision) {
                    held = Some(batch);
                } else {
                    sent_since_progress |= self.deliver_live(&batch).await?;
                    continue;
                }
            }
            if let Some(h) = hold.filter(|h| !self.gate.has_reached(*h)) {
                if held.is_none() && !self.drain(sub, next, h.revision, &mut held, &mut sent_since_progress).await? {
                    return Ok(());
                }
                self.gate.reached(h);
            }
            tokio::select! {
                batch = sub.recv(), if held.is_none() => match batch {
                    Some(batch) => {
                        if batch.revision >= *next {
                            *next = batch.revision + 1;
                            held = Some(batch);
                        }
                    }
                    // Fell behind: back to history from `next`.
                    None => return Ok(()),
                },
                _ = self.gate.changed() => {}
                _ = progress.tick(), if self.spec.progress_notify => {
                    if !sent_since_progress && held.is_none() {
                        // What is published by now, but within a hold
                        // (read after, as in `run`).
                        let mut at = self.member.watch_hub().last_published();
                        if let Some(h) = self.gate.hold() {
                            at = at.min(h.revision);
                        }
                        if !self.drain(sub, next, at, &mut held, &mut sent_since_progress).await? {
                            return Ok(());
                        }
                        if !sent_since_progress {
                            self.send(self.response(at, Vec::new())).await?;
                        }
                    }
                    sent_since_progress = false;
                }
            }
        }
    }

    /// Sends what the feed has buffered through revision `through`, keeping
    /// the first later batch in `held`. Everything published through
    /// `through` is buffered by now, so once this returns all of it has
    /// been sent. Returns false when the feed dropped this watch.
    async fn drain(
        &self,
        sub: &mut Subscription,
        next: &mut i64,
        through: i64,
        held: &mut Option<Arc<RevisionEvents>>,
        sent: &mut bool,
    ) -> Result<bool, Stop> {
        loop {
            match sub.try_recv() {
                Ok(batch) if batch.revision < *next => {}
                Ok(batch) => {
                    *next = batch.revision + 1;
                    if batch.revision > through {
                        *held = Some(batch);
                        return Ok(true);
                    }
                    *sent |= self.deliver_live(&batch).await?;
                }
                Err(mpsc::error::TryRecvError::Empty) => return Ok(true),
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(false),
            }
        }
    }

    /// Delivers history from `next` through `upto`; returns the revision to
    /// continue from.
    async fn catch_up(&self, next: i64, upto: i64) -> Result<i64, Stop> {
        let mut next = next;
        while next <= upto {
            // History is read off the async workers: a catch-up may read
            // many revisions.
            let (range, prev_kv) = (self.spec.range.clone(), self.spec.prev_kv);
            let changes = match self
                .member
                .read_blocking(move |store| store.changes(&range, next, upto, CATCH_UP_MAX_REVISIONS, prev_kv))
                .await
            {
                Ok(c) => c,
                Err(Error::Compacted) => {
                    // etcd's compacted response carries no header revision.
                    let resp = WatchResponse {
                        header: Some(self.member.header(0)),
                        watch_id: self.spec.id,
                        compact_revision: self.member.store().compact_revision(),
                        canceled: true,
                        ..Default::default()
                    };
                    let _ = self.out.send(Ok(resp)).await;
                    return Err(Stop::Ended);
                }
                Err(e) => {
                    tracing::error!(error = %e, watch_id = self.spec.id, "reading watch history failed");
                    let resp = WatchResponse {
                        header: Some(self.member.header(0)),
                        watch_id: self.spec.id,
                        canceled: true,
                        cancel_reason: e.to_string(),
                        ..Default::default()
                    };
                    let _ = self.out.send(Ok(resp)).await;
                    return Err(Stop::Ended);
                }
            };
            let events = self.transform(self.spec.select(&changes.events)).await?;
            // A watch that takes fragments gets etcd's shape: one batch, split
            // by `send`; others get whole revisions in responses of bounded size.
            let budget = if self.spec.fragment {
                usize::MAX
            } else {
                self.max_response_bytes()
            };
            for part in whole_revisions_within(events, budget) {
                self.send(self.response(upto, part)).await?;
            }
            next = changes.through + 1;
        }
        Ok(next)
    }

    /// Returns whether anything was sent.
    async fn deliver_live(&self, batch: &RevisionEvents) -> Result<bool, Stop> {
        let events = self.transform(self.spec.select(&batch.events)).await?;
        if events.is_empty() {
            return Ok(false);
        }
        self.send(self.response(batch.revision, events)).await?;
        Ok(true)
    }

    /// Runs the watch plugins over `events`; plugin calls run on a blocking
    /// thread, as they may take as long as their fuel allows.
    async fn transform(&self, events: Vec<Event>) -> Result<Vec<Event>, Stop> {
        let plugins = self.member.plugins();
        if events.is_empty() || plugins.current().of(Hook::Watch).next().is_none() {
            return Ok(events);
        }
        let plugins = plugins.clone();
        member::run_blocking(move || Ok(plugins.transform(events))).await.map_err(|e| {
            tracing::error!(error = %e, watch_id = self.spec.id, "running watch plugins failed");
            Stop::Ended
        })
    }

    fn response(&self, revision: i64, events: Vec<Event>) -> WatchResponse {
        WatchResponse {
            header: Some(self.member.header(revision)),
            watch_id: self.spec.id,
            events,
            ..Default::default()
        }
    }

    fn max_response_bytes(&self) -> usize {
        self.member.limits().max_request_bytes + GRPC_OVERHEAD_BYTES
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Stop> {
        let parts = if self.spec.fragment {
            fragments(resp, self.max_response_bytes())
        } else {
            vec![resp]
        };
        for part in parts {
            self.out.send(Ok(part)).await.map_err(|_| Stop::Disconnected)?;
        }
        Ok(())
    }
}

/// Groups history events into responses of about `max_bytes` at most,
/// never splitting a revision, so a long catch-up stays within what
/// clients accept per message.
fn whole_revisions_within(events: Vec<Event>, max_bytes: usize) -> Vec<Vec<Event>> {
    let mut parts: Vec<Vec<Event>> = Vec::new();
    let mut current: Vec<Event> = Vec::new();
    let mut size = 0;
    let revision = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    for event in events {
        let starts_revision = current.last().is_none_or(|last| revision(last) != revision(&event));
        if starts_revision && !current.is_empty() && size + event.encoded_len() > max_bytes {
            parts.push(std::mem::take(&mut current));
            size = 0;
        }
        size += event.encoded_len();
        current.push(event);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// Splits a response whose encoding reaches `max_bytes` into parts that
/// stay under it (but at least one event each), marked `fragment` except
/// the last, as etcd's `sendFragments` does.
fn fragments(resp: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() < max_bytes || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut template = resp.clone();
    template.events.clear();
    template.fragment = true;
    let mut parts = Vec::new();
    let mut current = template.clone();
    for event in resp.events {
        current.events.push(event);
        if current.events.len() > 1 && current.encoded_len() >= max_bytes {
            let overflow = current.events.pop();
            parts.push(std::mem::replace(&mut current, template.clone()));
            current.events.extend(overflow);
        }
    }
    current.fragment = false;
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn event(key: &str, value_len: usize) -> Event {
        Event {
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'x'; value_len],
                mod_revision: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn history_parts_keep_revisions_whole() {
        let mut events: Vec<Event> = (0..6).map(|i| event(&format!("k{i}"), 100)).collect();
        for (i, e) in events.iter_mut().enumerate() {
            e.kv.as_mut().unwrap().mod_revision = 2 + (i as i64) / 2;
        }
        let parts = whole_revisions_within(events.clone(), 250);
        assert_eq!(parts.len(), 3);
        assert!(parts
            .iter()
            .all(|p| p.len() == 2 && p[0].kv.as_ref().unwrap().mod_revision == p[1].kv.as_ref().unwrap().mod_revision));
        assert_eq!(parts.concat(), events);
        assert_eq!(whole_revisions_within(events.clone(), 1 << 20), vec![events]);
    }

    #[test]
    fn fragments_keep_every_event_once_in_order_under_the_limit() {
        let resp = WatchResponse {
            watch_id: 3,
            events: (0..10).map(|i| event(&format!("k{i}"), 100)).collect(),
            ..Default::default()
        };
        let parts = fragments(resp.clone(), 350);
        assert!(parts.len() > 1);
        let (last, rest) = parts.split_last().unwrap();
        assert!(!last.fragment);
        assert!(rest.iter().all(|p| p.fragment && p.encoded_len() < 350));
        let rejoined: Vec<Event> = parts.iter().flat_map(|p| p.events.clone()).collect();
        assert_eq!(rejoined, resp.events);
        assert_eq!(fragments(resp.clone(), 1 << 20), vec![resp]);
    }
}
