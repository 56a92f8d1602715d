//! The store handle and its read path.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions, WriteBatch, DB};

use super::compactor::Compactor;
use crate::error::{Error, Result};
use crate::proto::mvccpb::KeyValue;
use crate::storage::encoding::{self, IndexValue, Revision};
use crate::storage::schema::{META_CURRENT_REV, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT};
use crate::storage::{Database, CF_KV_INDEX, CF_KV_REV, CF_META};
use prost::Message;

/// How many keys compaction handles per RocksDB write.
const COMPACTION_CHUNK: usize = 10_000;

/// The keys a request addresses, decoded from etcd's `key` and `range_end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly one key (`range_end` empty).
    Single(Vec<u8>),
    /// `[start, end)`, or every key `>= start` when `end` is `None`
    /// (`range_end` is the single byte `\0`).
    Span { start: Vec<u8>, end: Option<Vec<u8>> },
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::Span {
                start: key.to_vec(),
                end: None,
            },
            end => KeyRange::Span {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k == key,
            KeyRange::Span { start, end } => key >= start.as_slice() && end.as_deref().is_none_or(|e| key < e),
        }
    }
}

/// Result of a range read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Number of keys in the range at the revision, regardless of `limit`.
    pub count: i64,
    /// The store's revision when the read was served.
    pub rev: i64,
}

/// Handle to the MVCC state. Reads may come from any thread; writes come only
/// from the apply loop through [`WriteTxn`](super::WriteTxn).
pub struct MvccStore {
    pub(super) engine: Arc<Database>,
    pub(super) current_rev: AtomicI64,
    pub(super) compact_rev: AtomicI64,
    compactor: Compactor,
    key_count: KeyCount,
}

/// The background count of live keys behind the key-count gauge.
#[derive(Default)]
struct KeyCount {
    /// Bumped by every (re)count and when the store closes: a count that was
    /// overtaken stops, and must not add its stale total.
    generation: Arc<AtomicU64>,
    /// Held while the gauge is reset or a finished count added to it.
    gauge: Arc<Mutex<()>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl KeyCount {
    /// Stops the running count, if any, and returns the next generation.
    fn restart(&self) -> u64 {
        let generation = {
            let _gauge = self.gauge.lock();
            crate::metrics::metrics().keys_total.set(0);
            self.generation.fetch_add(1, Ordering::SeqCst) + 1
        };
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
        generation
    }
}

impl Drop for MvccStore {
    fn drop(&mut self) {
        // The count holds the database open: it must end with the store.
        self.key_count.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(thread) = self.key_count.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl MvccStore {
    /// Opens the store; a compaction that a restart interrupted resumes in
    /// the background.
    pub fn open(engine: Arc<Database>) -> Result<Self> {
        // A fresh store starts at revision 1, and nothing is compacted yet.
        let current = engine.get_meta_u64(META_CURRENT_REV)?.map_or(1, |v| v as i64);
        let (finished, scheduled) = compaction_marks(&engine)?;
        if finished < scheduled {
            tracing::info!(rev = scheduled, "resuming interrupted compaction");
        }
        let compactor = Compactor::start(engine.clone(), finished, scheduled)?;
        let store = MvccStore {
            engine,
            current_rev: AtomicI64::new(current),
            compact_rev: AtomicI64::new(scheduled),
            compactor,
            key_count: KeyCount::default(),
        };
        store.count_keys();
        Ok(store)
    }

    /// Sets the key-count gauge, which writes keep up to date. Counting
    /// reads every key with its value, so it runs beside the member rather
    /// than before it serves: a restart with more data than memory must not
    /// read all of it first. Writes applied meanwhile move the gauge from
    /// zero; the count of the keys live at the current revision is added
    /// when done. Only a metric: a failed count is logged.
    fn count_keys(&self) {
        let generation = self.key_count.restart();
        let (engine, at) = (self.engine.clone(), self.current_revision());
        let (latest, gauge) = (self.key_count.generation.clone(), self.key_count.gauge.clone());
        let counting = std::thread::Builder::new().name("mvcc-count-keys".into()).spawn(move || {
            let mut opts = ReadOptions::default();
            // A pass over everything once must not evict what clients read.
            opts.fill_cache(false);
            let mut keys = 0;
            let everything = KeyRange::new(&[0], &[0]);
            let counted = scan(engine.db(), engine.cf(CF_KV_INDEX), opts, &everything, at, |_| {
                keys += 1;
                Ok(latest.load(Ordering::Relaxed) == generation)
            });
            match counted {
                Ok(()) => {
                    let _gauge = gauge.lock();
                    if latest.load(Ordering::SeqCst) == generation {
                        crate::metrics::metrics().keys_total.add(keys);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "counting keys for etcd_debugging_mvcc_keys_total failed"),
            }
        });
        match counting {
            Ok(thread) => *self.key_count.thread.lock() = Some(thread),
            Err(e) => tracing::warn!(error = %e, "cannot start counting keys for etcd_debugging_mvcc_keys_total"),
        }
    }

    /// Re-reads the revisions after a snapshot replaced the data on disk.
    pub fn reload(&self) -> Result<()> {
        let current = self.engine.get_meta_u64(META_CURRENT_REV)?.map_or(1, |v| v as i64);
        let (finished, scheduled) = compaction_marks(&self.engine)?;
        self.current_rev.store(current, Ordering::SeqCst);
        self.compact_rev.store(scheduled, Ordering::SeqCst);
        self.compactor.reset(finished, scheduled);
        self.count_keys();
        Ok(())
    }

    /// Blocks until the background compaction has caught up.
    #[cfg(test)]
    pub fn wait_compacted(&self) {
        self.compactor.wait_idle();
    }

    pub fn current_revision(&self) -> i64 {
        self.current_rev.load(Ordering::SeqCst)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_rev.load(Ordering::SeqCst)
    }

    /// A consistent read-only view of the latest committed state.
    pub fn read_view(&self) -> ReadView<'_> {
        // Read the revision before taking the snapshot: a revision is
        // published only after its data is written, so the snapshot holds
        // all of it. (The compaction mark is checked later, at read time:
        // it is published before any data is removed.)
        let rev = self.current_revision();
        let snapshot = self.engine.db().snapshot();
        ReadView {
            store: self,
            snapshot,
            rev,
        }
    }

    /// Reads `range` as of `rev` (0 = latest). `limit` 0 means no limit.
    pub fn range(&self, range: &KeyRange, rev: i64, limit: usize, count_only: bool) -> Result<RangeResult> {
        self.read_view().range(range, rev, limit, count_only)
    }

    /// Validates a requested read revision against the store's window and
    /// resolves 0 to `current`.
    pub(super) fn check_read_rev(&self, rev: i64, current: i64) -> Result<i64> {
        if rev > current {
            return Err(Error::FutureRev);
        }
        let at = if rev <= 0 { current } else { rev };
        if at < self.compact_revision() {
            return Err(Error::Compacted);
        }
        Ok(at)
    }

    /// Calls `visit` with the newest version of every live key, in key
    /// order, without collecting them: for start-up scans over the whole
    /// keyspace, whose results need not fit in memory at once.
    pub fn for_each_live(&self, mut visit: impl FnMut(KeyValue)) -> Result<()> {
        let view = self.read_view();
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&view.snapshot);
        let engine = &self.engine;
        let everything = KeyRange::new(&[0], &[0]);
        scan(engine.db(), engine.cf(CF_KV_INDEX), opts, &everything, view.rev, |raw| {
            visit(KeyValue::decode(raw)?);
            Ok(true)
        })
    }

    /// A checksum of every version at or below `rev` (0 = latest), equal on
    /// members with equal history. Returns (hash, compact revision, current
    /// revision).
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64)> {
        let current = self.current_revision();
        let snapshot = self.engine.db().snapshot();
        let compact = self.compact_revision();
        if rev > 0 && rev <= compact {
            return Err(Error::Compacted);
        }
        if rev > current {
            return Err(Error::FutureRev);
        }
        let at = if rev <= 0 { current } else { rev };
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&snapshot);
        let mut it = self.engine.db().raw_iterator_cf_opt(self.engine.cf(CF_KV_INDEX), opts);
        it.seek_to_first();
        let mut hash = 0u32;
        // Versions at or below the compaction mark count only if compaction
        // keeps them, so the hash does not depend on how far the background
        // removal has got. A key's versions sort newest first.
        let mut key_seen: Option<Vec<u8>> = None;
        let mut kept_below_mark = false;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (_, r) = encoding::decode_index_key(k)?;
            let prefix = encoding::index_key_prefix(k);
            if key_seen.as_deref() != Some(prefix) {
                key_seen = Some(prefix.to_vec());
                kept_below_mark = false;
            }
            let counts = if r.main > compact {
                true
            } else {
                let first_below = !kept_below_mark;
                kept_below_mark = true;
                first_below && !matches!(IndexValue::decode(v)?, IndexValue::Tombstone)
            };
            if r.main <= at && counts {
                hash = crc32c::crc32c_append(hash, k);
                hash = crc32c::crc32c_append(hash, v);
            }
            it.next();
        }
        it.status()?;
        Ok((hash, compact, current))
    }

    /// Checks that a compaction to `rev` is allowed, as etcd does before
    /// accepting one.
    pub fn check_compact(&self, rev: i64) -> Result<()> {
        if rev <= self.compact_revision() {
            return Err(Error::Compacted);
        }
        if rev > self.current_revision() {
            return Err(Error::FutureRev);
        }
        Ok(())
    }

    /// Compacts history up to `rev`: reads below it fail from now on, and in
    /// the background all but the latest version at or below `rev` of each
    /// live key are removed. `extra` adds records (the applied index) to the
    /// batch that makes the compaction durable, so a crash either replays it
    /// or resumes it.
    pub fn compact(&self, rev: i64, extra: impl FnOnce(&mut WriteBatch)) -> Result<()> {
        self.check_compact(rev)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.engine.cf(CF_META), META_SCHEDULED_COMPACT, (rev as u64).to_be_bytes());
        extra(&mut batch);
        self.engine.write(batch, false)?;
        // Published before any data goes, so readers check it after taking
        // their snapshot and never see a half-compacted revision.
        self.compact_rev.store(rev, Ordering::SeqCst);
        self.compactor.schedule(rev);
        Ok(())
    }
}

/// The (finished, scheduled) compaction revisions the disk records; -1 for
/// none.
fn compaction_marks(engine: &Database) -> Result<(i64, i64)> {
    let scheduled = engine.get_meta_u64(META_SCHEDULED_COMPACT)?.map_or(-1, |v| v as i64);
    let finished = engine.get_meta_u64(META_FINISHED_COMPACT)?.map_or(-1, |v| v as i64);
    Ok((finished.min(scheduled), scheduled))
}

/// Removes versions made obsolete by compacting to `rev`, one bounded batch
/// at a time while `keep_going` says so. Only keys changed after the
/// `previous` compaction can have such versions, so the revision log tells
/// which keys to visit. Returns whether it got to the end.
pub(super) fn remove_compacted(engine: &Database, previous: i64, rev: i64, keep_going: impl Fn() -> bool) -> Result<bool> {
    let db = engine.db();
    let index_cf = engine.cf(CF_KV_INDEX);
    let rev_cf = engine.cf(CF_KV_REV);
    let mut from = Revision::new(previous.max(0) + 1, 0).to_bytes().to_vec();
    let upper = Revision::new(rev + 1, 0).to_bytes().to_vec();
    loop {
        if !keep_going() {
            return Ok(false);
        }
        let mut keys = BTreeSet::new();
        let mut next_from = None;
        {
            let mut opts = ReadOptions::default();
            opts.set_iterate_upper_bound(upper.clone());
            let mut it = db.raw_iterator_cf_opt(rev_cf, opts);
            it.seek(&from);
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if keys.len() >= COMPACTION_CHUNK {
                    next_from = Some(k.to_vec());
                    break;
                }
                let (_, key) = encoding::decode_rev_value(v)?;
                keys.insert(key.to_vec());
                it.next();
            }
            it.status()?;
        }
        let mut batch = WriteBatch::default();
        for key in &keys {
            let mut it = db.raw_iterator_cf(index_cf);
            it.seek(encoding::index_key(key, Revision::new(rev, i64::MAX)));
            let prefix = encoding::index_key(key, Revision::default());
            let prefix = encoding::index_key_prefix(&prefix);
            let mut newest = true;
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if encoding::index_key_prefix(k) != prefix {
                    break;
                }
                // The newest version at or below `rev` stays, unless it
                // is a deletion: nobody can read below `rev` any more.
                let keep = newest && !matches!(IndexValue::decode(v)?, IndexValue::Tombstone);
                newest = false;
                if !keep {
                    let (_, r) = encoding::decode_index_key(k)?;
                    batch.delete_cf(index_cf, k);
                    batch.delete_cf(rev_cf, r.to_bytes());
                }
                it.next();
            }
            it.status()?;
        }
        let done = next_from.is_none();
        if done {
            batch.put_cf(engine.cf(CF_META), META_FINISHED_COMPACT, (rev as u64).to_be_bytes());
        }
        engine.write(batch, false)?;
        match next_from {
            Some(k) => from = k,
            None => return Ok(true),
        }
    }
}

/// Read access shared by consistent views and write transactions, so that
/// request semantics (ranges, compares) are written once.
pub trait Reader {
    /// The revision reads at "latest" observe.
    fn rev(&self) -> i64;
    /// Reads `range` as of `rev` (0 = latest). `limit` 0 means no limit.
    fn range(&self, range: &KeyRange, rev: i64, limit: usize, count_only: bool) -> Result<RangeResult>;
}

/// A snapshot of the store at one revision.
pub struct ReadView<'a> {
    store: &'a MvccStore,
    snapshot: rocksdb::SnapshotWithThreadMode<'a, DB>,
    rev: i64,
}

impl Reader for ReadView<'_> {
    fn rev(&self) -> i64 {
        self.rev
    }

    fn range(&self, range: &KeyRange, rev: i64, limit: usize, count_only: bool) -> Result<RangeResult> {
        let at = self.store.check_read_rev(rev, self.rev)?;
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        let mut kvs = Vec::new();
        let mut count = 0i64;
        let engine = &self.store.engine;
        scan(engine.db(), engine.cf(CF_KV_INDEX), opts, range, at, |raw| {
            count += 1;
            if !count_only && (limit == 0 || kvs.len() < limit) {
                kvs.push(KeyValue::decode(raw)?);
            }
            Ok(true)
        })?;
        Ok(RangeResult { kvs, count, rev: self.rev })
    }
}

/// Visits, in key order, the newest version at or below `rev` of every live
/// key in `range`, as the encoded `KeyValue`. The visitor returns whether to
/// go on.
pub(super) fn scan(
    db: &DB,
    cf: &rocksdb::ColumnFamily,
    mut opts: ReadOptions,
    range: &KeyRange,
    rev: i64,
    mut visit: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<()> {
    let (start, upper) = match range {
        KeyRange::Single(key) => (
            encoding::index_key(key, Revision::new(rev, i64::MAX)),
            Some(encoding::index_key_end(key)),
        ),
        KeyRange::Span { start, end } => {
            if let Some(end) = end {
                if end.as_slice() <= start.as_slice() {
                    return Ok(());
                }
            }
            (encoding::index_lower_bound(start), end.as_deref().map(encoding::index_upper_bound))
        }
    };
    if let Some(upper) = upper {
        opts.set_iterate_upper_bound(upper);
    }
    let mut it = db.raw_iterator_cf_opt(cf, opts);
    it.seek(&start);
    while it.valid() {
        let (prefix, main) = match it.key() {
            Some(k) => (encoding::index_key_prefix(k).to_vec(), decode_main(k)?),
            None => break,
        };
        if main > rev {
            // Newer than asked for: jump to this key's newest version <= rev.
            let mut target = prefix;
            target.extend_from_slice(&(!(rev as u64)).to_be_bytes());
            target.extend_from_slice(&(!(i64::MAX as u64)).to_be_bytes());
            it.seek(&target);
            continue;
        }
        let value = it.value().unwrap_or_default();
        if let IndexValue::Live(_) = peek_kind(value)? {
            if !visit(&value[1..])? {
                return Ok(());
            }
        }
        skip_key(&mut it, &prefix);
    }
    it.status()?;
    Ok(())
}

/// The main revision of an index key, read without decoding the user key.
fn decode_main(index_key: &[u8]) -> Result<i64> {
    let n = index_key.len();
    let bytes: [u8; 8] = n
        .checked_sub(16)
        .and_then(|at| index_key.get(at..at + 8))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Corrupt(format!("kv_index key of {n} bytes has no revision")))?;
    Ok(!u64::from_be_bytes(bytes) as i64)
}

/// Tells live from tombstone without decoding the value.
fn peek_kind(value: &[u8]) -> Result<IndexValue> {
    match value.first() {
        Some(b'L') => Ok(IndexValue::Live(KeyValue::default())),
        Some(b'T') => Ok(IndexValue::Tombstone),
        _ => Err(Error::Corrupt("malformed index value".into())),
    }
}

/// Moves past the remaining (older) versions of the key `prefix` belongs to.
fn skip_key(it: &mut DBRawIteratorWithThreadMode<'_, DB>, prefix: &[u8]) {
    // Most keys have few versions: stepping is cheaper than seeking then.
    for _ in 0..4 {
        it.next();
        match it.key() {
            Some(k) if encoding::index_key_prefix(k) == prefix => {}
            _ => return,
        }
    }
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last = 0x01;
    }
    it.seek(&end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_index_keys_are_corrupt_not_a_panic() {
        for n in 0..16 {
            assert!(matches!(decode_main(&vec![0xAB; n]), Err(Error::Corrupt(_))), "{n} bytes");
        }
        let key = encoding::index_key(b"k", Revision::new(42, 0));
        assert_eq!(decode_main(&key).unwrap(), 42);
    }

    #[test]
    fn a_scan_over_a_short_stored_key_fails_with_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Database::open(dir.path()).unwrap();
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(engine.cf(CF_KV_INDEX), b"short", b"L");
        engine.write(batch, false).unwrap();
        let range = KeyRange::Span {
            start: Vec::new(),
            end: None,
        };
        let result = scan(engine.db(), engine.cf(CF_KV_INDEX), ReadOptions::default(), &range, 10, |_| {
            Ok(true)
        });
        assert!(matches!(result, Err(Error::Corrupt(_))), "{result:?}");
    }
}
