//! Watch fan-out: watchers on one prefix, writers putting under it. Each
//! value starts with the moment its put was sent, so every watcher can
//! measure delivery latency on its own, without shared bookkeeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::Conn;
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::args::{Common, WatchArgs};
use super::driver::{run_workers, Budget, Worker};
use super::keys::{value, KeyGen};
use super::report::{latency_json, new_histogram, record, Report};
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::watch_client::WatchClient;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
use crate::proto::mvccpb::event::EventType;
use crate::proto::prefix_end;

const PREFIX: &[u8] = b"w/";
/// The first bytes of every value: nanoseconds from the run's epoch.
const STAMP_BYTES: usize = 8;
/// How long watchers may lag behind the last put before the run gives up
/// on the missing events.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

struct StampedPutWorker {
    kv: KvClient<Conn>,
    keys: KeyGen,
    filler: Vec<u8>,
    epoch: Instant,
}

impl Worker for StampedPutWorker {
    async fn step(&mut self) -> Result<(), tonic::Status> {
        let mut value = Vec::with_capacity(STAMP_BYTES + self.filler.len());
        value.extend_from_slice(&(self.epoch.elapsed().as_nanos() as u64).to_be_bytes());
        value.extend_from_slice(&self.filler);
        let req = PutRequest {
            key: self.keys.next_key(),
            value,
            ..Default::default()
        };
        self.kv.put(req).await.map(|_| ())
    }
}

struct StreamResult {
    latency: Histogram<u64>,
    last_event: Option<Instant>,
}

/// Opens one watch stream carrying `watchers` watchers on the prefix and
/// returns once the server confirmed all of them.
async fn open_stream(
    channel: Conn,
    watchers: usize,
) -> anyhow::Result<(
    mpsc::Sender<WatchRequest>,
    tonic::Streaming<crate::proto::etcdserverpb::WatchResponse>,
)> {
    let (tx, rx) = mpsc::channel(watchers + 1);
    for _ in 0..watchers {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: PREFIX.to_vec(),
                range_end: prefix_end(PREFIX),
                ..Default::default()
            })),
        };
        tx.send(create).await.context("queueing watch create request")?;
    }
    // Servers may hold back response headers until the first message, so
    // the create requests are queued before the call.
    let mut stream = WatchClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .watch(ReceiverStream::new(rx))
        .await
        .context("opening watch stream")?
        .into_inner();
    let mut created = 0;
    while created < watchers {
        match stream.message().await.context("waiting for watch creation")? {
            Some(resp) if resp.canceled => bail!("watch creation refused: {}", resp.cancel_reason),
            Some(resp) if resp.created => created += 1,
            Some(_) => {}
            None => bail!("watch stream closed before all watchers were created"),
        }
    }
    Ok((tx, stream))
}

pub async fn run(common: &Common, channels: &[Conn], args: &WatchArgs) -> anyhow::Result<Report> {
    if args.watchers == 0 {
        bail!("--watchers must be at least 1");
    }
    let streams = args.streams.clamp(1, args.watchers);
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut readers = Vec::with_capacity(streams);
    for s in 0..streams {
        let on_stream = args.watchers / streams + usize::from(s < args.watchers % streams);
        let (requests, mut stream) = open_stream(channels[s % channels.len()].clone(), on_stream).await?;
        let received = received.clone();
        let mut stop = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            // Keeps the request side open: closing it would end the watchers.
            let _requests = requests;
            let mut r = StreamResult {
                latency: new_histogram(),
                last_event: None,
            };
            loop {
                let msg = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    msg = stream.message() => msg,
                };
                let Ok(Some(resp)) = msg else { break };
                let now = Instant::now();
                let since_epoch = now.duration_since(epoch).as_nanos() as u64;
                let mut n = 0;
                for ev in &resp.events {
                    if ev.r#type != EventType::Put as i32 {
                        continue;
                    }
                    let Some(kv) = &ev.kv else { continue };
                    let Some(stamp) = kv.value.get(..STAMP_BYTES).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                        continue;
                    };
                    let sent = u64::from_be_bytes(stamp);
                    record(&mut r.latency, Duration::from_nanos(since_epoch.saturating_sub(sent)));
                    n += 1;
                }
                if n > 0 {
                    r.last_event = Some(now);
                    received.fetch_add(n, Ordering::Relaxed);
                }
            }
            r
        }));
    }

    let filler = value(common.val_size.saturating_sub(STAMP_BYTES), 0);
    let keys = KeyGen::new(PREFIX, common.key_size, common.key_space, common.sequential_keys)?;
    let writers = (0..common.clients)
        .map(|i| {
            Ok(StampedPutWorker {
                kv: KvClient::new(channels[i % channels.len()].clone()),
                keys: keys.for_client(i as u64 * 7919 + 1),
                filler: filler.clone(),
                epoch,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now();
    let puts = run_workers("watch-put", common, writers, Budget::from_common(common)).await?;

    let expected = puts.requests * args.watchers as u64;
    let drain_deadline = Instant::now() + DRAIN_GRACE;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);

    let mut latency = new_histogram();
    let mut last_event = None;
    for r in readers {
        let r = r.await?;
        let _ = latency.add(&r.latency);
        last_event = last_event.max(r.last_event);
    }
    let events = latency.len();
    let elapsed = last_event.map_or(puts.elapsed, |t| t.duration_since(start).max(puts.elapsed));
    let missing = expected.saturating_sub(events);
    Ok(Report {
        workload: "watch".into(),
        requests: events,
        errors: missing,
        first_error: (missing > 0).then(|| format!("{missing} of {expected} events not delivered within {DRAIN_GRACE:?}")),
        elapsed,
        latency,
        extra: vec![
            ("watchers".into(), Value::from(args.watchers)),
            ("streams".into(), Value::from(streams)),
            ("puts".into(), Value::from(puts.requests)),
            ("put_errors".into(), Value::from(puts.errors)),
            ("put_first_error".into(), Value::from(puts.first_error.clone())),
            ("events_expected".into(), Value::from(expected)),
            ("put_throughput".into(), Value::from(puts.throughput())),
            ("put_latency_ms".into(), latency_json(&puts.latency)),
        ],
    })
}
