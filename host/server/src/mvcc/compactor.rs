//! Physical compaction, in the background. Applying a compaction only moves
//! the compaction mark (reads below it fail at once) and records the
//! scheduled revision; this thread then removes the versions nobody can read
//! any more, in bounded batches, and records when it is done. A compaction a
//! restart interrupted resumes from the last finished one, as etcd does.

use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::read::remove_compacted;
use crate::error::Result;
use crate::storage::Database;

pub(super) struct Compactor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    /// History is physically compacted up to here...
    done: i64,
    /// ...and is to be up to here.
    target: i64,
    /// Bumped when a snapshot replaced the data: a run started before it
    /// does not count.
    generation: u64,
    running: bool,
    stop: bool,
}

impl Compactor {
    pub fn start(engine: Arc<Database>, done: i64, target: i64) -> Result<Compactor> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                done,
                target,
                generation: 0,
                running: false,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mvcc-compact".into())
            .spawn(move || worker.run(&engine))?;
        Ok(Compactor {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for history up to `rev` to be removed.
    pub fn schedule(&self, rev: i64) {
        let mut state = self.shared.state.lock();
        state.target = state.target.max(rev);
        self.shared.wake.notify_all();
    }

    /// Starts over from what the disk now records (after a snapshot).
    pub fn reset(&self, done: i64, target: i64) {
        let mut state = self.shared.state.lock();
        state.done = done;
        state.target = target;
        state.generation += 1;
        self.shared.wake.notify_all();
    }

    /// Blocks until everything scheduled has been removed.
    #[cfg(test)]
    pub fn wait_idle(&self) {
        let mut state = self.shared.state.lock();
        while !state.stop && (state.running || state.done < state.target) {
            self.shared.wake.wait(&mut state);
        }
    }
}

impl Shared {
    fn run(&self, engine: &Database) {
        loop {
            let (from, to, generation) = {
                let mut state = self.state.lock();
                while !state.stop && state.done >= state.target {
                    self.wake.wait(&mut state);
                }
                if state.stop {
                    return;
                }
                state.running = true;
                (state.done, state.target, state.generation)
            };
            let result = remove_compacted(engine, from, to, || !self.state.lock().stop);
            let mut state = self.state.lock();
            state.running = false;
            self.wake.notify_all();
            match result {
                Ok(true) if state.generation == generation => state.done = state.done.max(to),
                Ok(_) => {}
                Err(e) => {
                    // The data stays readable (only garbage is left); the
                    // next start resumes from the last finished compaction.
                    tracing::error!(error = %e, from, to, "background compaction failed; it resumes on restart");
                    state.stop = true;
                    return;
                }
            }
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use rocksdb::{IteratorMode, WriteBatch};

    use super::super::{KeyRange, MvccStore};
    use crate::error::Error;
    use crate::storage::schema::META_SCHEDULED_COMPACT;
    use crate::storage::{Database, CF_KV_INDEX, CF_META};

    fn versions(engine: &Database) -> usize {
        engine.db().iterator_cf(engine.cf(CF_KV_INDEX), IteratorMode::Start).count()
    }

    #[test]
    fn old_versions_go_in_the_background_and_an_interrupted_compaction_resumes_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Database::open(dir.path()).expect("database");
        let store = MvccStore::open(engine.clone()).expect("store");
        for i in 0..5 {
            let mut txn = store.write_txn();
            txn.put(b"k", format!("v{i}").into_bytes(), 0).expect("put");
            txn.commit(|_| {}).expect("commit");
        }
        assert_eq!(store.current_revision(), 6);
        assert_eq!(versions(&engine), 5);
        store.compact(5, |_| {}).expect("compact");
        // Logically compacted at once, whatever the background has done.
        assert!(matches!(
            store.range(&KeyRange::Single(b"k".to_vec()), 4, 0, false),
            Err(Error::Compacted)
        ));
        store.wait_compacted();
        assert_eq!(versions(&engine), 2, "the newest version at or below 5 and the one above stay");

        // A crash right after applying a compaction leaves it scheduled and
        // unfinished.
        let mut batch = WriteBatch::default();
        batch.put_cf(engine.cf(CF_META), META_SCHEDULED_COMPACT, 6u64.to_be_bytes());
        engine.write(batch, false).expect("schedule");
        drop(store);
        let store = MvccStore::open(engine.clone()).expect("reopen");
        assert_eq!(store.compact_revision(), 6);
        store.wait_compacted();
        assert_eq!(versions(&engine), 1);
        let latest = store.range(&KeyRange::Single(b"k".to_vec()), 0, 0, false).expect("read");
        assert_eq!(latest.kvs[0].value, b"v4");
    }
}
