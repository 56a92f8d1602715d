//! The one RocksDB instance a member keeps in its data directory.
//!
//! The Raft log and the MVCC state share the database so that a single
//! fsync'd WAL write makes a Ready's log entries durable, and so that apply
//! can commit a state change together with the applied index atomically.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteBufferManager, WriteOptions, DB};

use super::memory::MemoryBudget;
use super::schema::{CF_META, COLUMN_FAMILIES};
use crate::error::{Error, Result};

const MAX_TOTAL_WAL_BYTES: u64 = 128 << 20;

/// Shared handle to the member's database.
pub struct Database {
    db: DB,
    dir: PathBuf,
}

impl Database {
    pub fn open(dir: &Path) -> Result<Arc<Database>> {
        std::fs::create_dir_all(dir)?;
        let (budget, available) = MemoryBudget::detect();
        tracing::info!(
            ?available,
            block_cache = budget.block_cache,
            memtables = budget.memtables,
            "RocksDB memory"
        );
        // Memtables are charged to the cache, so one capacity bounds both.
        let cache = Cache::new_lru_cache((budget.block_cache + budget.memtables) as usize);
        // Writers stall while memtables are over budget, until flushes free
        // them: under a memory limit, slower writes rather than a kill.
        let memtables = WriteBufferManager::new_write_buffer_manager_with_cache(budget.memtables as usize, true, cache.clone());
        let mut opts = Options::default();
        opts.set_write_buffer_manager(&memtables);
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        // The meta column family takes a few bytes per request and would
        // rarely fill a memtable, pinning every WAL file since its last
        // flush: start-up then replays the whole write history. Past this
        // size RocksDB flushes the column families holding old WAL files.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        let cfs = COLUMN_FAMILIES.iter().map(|name| {
            let mut cf_opts = Options::default();
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(10.0, false);
            table.set_cache_index_and_filter_blocks(true);
            cf_opts.set_block_based_table_factory(&table);
            cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
            cf_opts.set_write_buffer_size(64 << 20);
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs)?;
        let database = Database {
            db,
            dir: dir.to_path_buf(),
        };
        super::dump::finish_interrupted_install(&database)?;
        Ok(Arc::new(database))
    }

    /// Where dumps are staged: snapshots being sent or received.
    pub fn dump_dir(&self) -> PathBuf {
        self.dir.join("snap")
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn cf(&self, name: &str) -> &ColumnFamily {
        // Every column family is created in `open`; a missing one is a bug.
        self.db.cf_handle(name).expect("column family opened at start")
    }

    /// Writes a batch atomically. With `sync`, the call returns only after the
    /// WAL is on stable storage (and so is everything written before it).
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(Error::from)
    }

    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_META), key)?)
    }

    pub fn get_meta_u64(&self, key: &[u8]) -> Result<Option<u64>> {
        match self.get_meta(key)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt(format!("meta {:?} is not a u64", String::from_utf8_lossy(key))))?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }

    /// Approximate bytes the database occupies, as etcd's `dbSize` reports.
    pub fn size_bytes(&self) -> u64 {
        self.sum_property("rocksdb.total-sst-files-size") + self.sum_property("rocksdb.cur-size-all-mem-tables")
    }

    /// Approximate bytes of the replicated state (key-values, their history
    /// and the records beside them), without the Raft log: what the quota
    /// measures, as etcd's measures its backend and not its WAL. Memtables
    /// count, so the figure moves with every write and not only at flushes.
    pub fn state_size_bytes(&self) -> u64 {
        super::schema::carried_column_families()
            .map(|cf| {
                let cf = self.cf(cf);
                ["rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"]
                    .iter()
                    .filter_map(|p| self.db.property_int_value_cf(cf, *p).ok().flatten())
                    .sum::<u64>()
            })
            .sum()
    }

    /// Approximate bytes of live data, as etcd's `dbSizeInUse` reports.
    pub fn size_in_use_bytes(&self) -> u64 {
        self.sum_property("rocksdb.estimate-live-data-size") + self.sum_property("rocksdb.cur-size-all-mem-tables")
    }

    fn sum_property(&self, name: &str) -> u64 {
        COLUMN_FAMILIES
            .iter()
            .filter_map(|cf| self.db.property_int_value_cf(self.cf(cf), name).ok().flatten())
            .sum()
    }
}

impl Database {
    /// Writes every memtable out, so that the next start has no WAL to
    /// replay; called on clean shutdown.
    pub fn flush(&self) -> Result<()> {
        for name in COLUMN_FAMILIES {
            self.db.flush_cf(self.cf(name))?;
        }
        Ok(())
    }

    /// Rewrites every column family to drop deleted data, etcd's defrag.
    pub fn compact_all(&self) -> Result<()> {
        for name in COLUMN_FAMILIES {
            self.db.compact_range_cf(self.cf(name), None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }
}
