//! Backups: the file `Maintenance.Snapshot` streams (what `etcdctl snapshot
//! save` writes) and `cairnctl snapshot restore` turns into a data dir.
//!
//! A backup is etcd's snapshot format (see `etcd_format`): a bbolt
//! database with etcd's buckets, followed by its sha256, so that etcd's
//! own tools read it and a real etcd can be restored from it. It is built
//! from a RocksDB snapshot, so taking it never holds up Raft or apply, into
//! a file under the data dir that is unlinked as soon as it is open for
//! streaming. A restore reads that format from etcd 3.4, 3.5 and 3.6 as
//! well as Cairn's own dump format (which Raft snapshots use, and older
//! Cairn backups hold): an etcd file is converted into a dump first, so
//! both go through the one install path.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::etcd_format::{self, import::Imported};
use crate::mvcc::MvccStore;
use crate::storage::dump::{self, Install, CHUNK_BYTES};
use crate::storage::schema::META_CURRENT_REV;
use crate::storage::{Database, CF_META};

/// Backups being built start with this in the dump dir, then the process id.
const TEMP_PREFIX: &str = "backup-";

/// A backup file being built; removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes the files of backups a previous process left half-built.
fn remove_stale_backups(dir: &Path) {
    let own = format!("{TEMP_PREFIX}{}-", std::process::id());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) && !name.starts_with(&own) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Writes a backup of the state as of now, in chunks handed to `sink` along
/// with how many bytes of the backup are still to come (not counting the
/// checksum, as etcd counts). `sink` returns false when the reader is gone.
/// Blocking: call it off the async runtime.
pub fn write(engine: &Database, mut sink: impl FnMut(Vec<u8>, u64) -> bool) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = engine.dump_dir();
    std::fs::create_dir_all(&dir)?;
    remove_stale_backups(&dir);
    let temp = TempFile(dir.join(format!(
        "{TEMP_PREFIX}{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )));
    let exported = {
        let snap = engine.db().snapshot();
        etcd_format::export::write(engine, &snap, &temp.0, bbolt::DEFAULT_PAGE_SIZE)?
    };
    let mut file = File::open(&temp.0)?;
    // The open file is all the stream needs; the name goes now, so that a
    // slow or vanished reader leaves nothing behind.
    drop(temp);
    let total = exported.len;
    let mut sent = 0u64;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    while sent < total {
        let want = (total - sent).min(CHUNK_BYTES as u64) as usize;
        file.read_exact(&mut buf[..want])?;
        hash.update(&buf[..want]);
        sent += want as u64;
        if !sink(buf[..want].to_vec(), total - sent) {
            return Ok(());
        }
    }
    sink(hash.finalize().to_vec(), 0);
    Ok(())
}

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub records: u64,
    /// The store's revision in the backup.
    pub revision: i64,
    /// What the file held, when it was an etcd snapshot.
    pub etcd: Option<Imported>,
}

/// Which format a backup file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// etcd's snapshot format (bbolt), what `etcdctl snapshot save` writes.
    Etcd,
    /// Cairn's dump format.
    Cairn,
}

/// What a backup holds, as `cairnctl snapshot status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub format: Format,
    /// Records (Cairn's format) or keys in all buckets (etcd's).
    pub records: u64,
    pub revision: i64,
    pub bytes: u64,
}

/// The format of `file`, found from its first bytes.
pub fn format_of(file: &Path) -> Result<Format> {
    Ok(if etcd_format::is_bbolt(file)? {
        Format::Etcd
    } else {
        Format::Cairn
    })
}

/// Checks a backup file and writes its state into a new data directory,
/// which `cairn` then starts from as a member of a new cluster. The old
/// cluster's applied index and members are left out (the schema classes
/// them as not restored): its identity and members come from the flags it
/// is started with, as for any new cluster. An etcd snapshot's trailing
/// sha256 is checked when present, unless `check_hash` is false; Cairn's
/// own format is always checked in full.
pub fn restore(file: &Path, data_dir: &Path, check_hash: bool) -> Result<Restored> {
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        return Err(Error::InvalidRequest(format!(
            "data dir {} exists and is not empty",
            data_dir.display()
        )));
    }
    match format_of(file)? {
        Format::Cairn => {
            // Refused before the data dir is created.
            dump::verify(file)?;
            install(file, data_dir, None)
        }
        Format::Etcd => {
            let snap = etcd_format::open(file, check_hash)?;
            let created = !data_dir.exists();
            let result = (|| {
                let staged = TempFile(data_dir.join("snap").join("etcd-import.dump"));
                std::fs::create_dir_all(data_dir.join("snap"))?;
                let imported = etcd_format::import::to_dump(&snap, &staged.0)?;
                install(&staged.0, data_dir, Some(imported))
            })();
            if result.is_err() {
                // Leave the directory as it was found, not half restored.
                let _ = if created {
                    std::fs::remove_dir_all(data_dir)
                } else {
                    std::fs::read_dir(data_dir).and_then(|entries| {
                        entries
                            .flatten()
                            .try_for_each(|e| std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path())))
                    })
                };
            }
            result
        }
    }
}

fn install(dump_file: &Path, data_dir: &Path, etcd: Option<Imported>) -> Result<Restored> {
    let engine = Database::open(data_dir)?;
    let records = dump::install(&engine, dump_file, Install::Restore, &[])?;
    engine.flush()?;
    Ok(Restored {
        records,
        revision: MvccStore::open(engine)?.current_revision(),
        etcd,
    })
}

/// Checks a backup file and tells what it holds.
pub fn summarize(file: &Path) -> Result<Summary> {
    let bytes = std::fs::metadata(file)?.len();
    if format_of(file)? == Format::Etcd {
        let status = etcd_format::status(file)?;
        return Ok(Summary {
            format: Format::Etcd,
            records: status.total_keys,
            revision: status.revision,
            bytes,
        });
    }
    let mut records = dump::open_file(file)?;
    let mut summary = Summary {
        format: Format::Cairn,
        records: 0,
        // What an empty store reports.
        revision: 1,
        bytes,
    };
    while let Some(entry) = records.next_record()? {
        if entry.cf == CF_META && entry.key == META_CURRENT_REV {
            let raw: [u8; 8] = entry
                .value
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("backup file: revision record".into()))?;
            summary.revision = u64::from_be_bytes(raw) as i64;
        }
        summary.records += 1;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use rocksdb::WriteBatch;

    use super::*;
    use crate::proto::mvccpb::KeyValue;
    use crate::storage::encoding::{encode_rev_value, index_key, IndexValue, Revision};
    use crate::storage::schema::{
        META_APPLIED_INDEX, META_FINISHED_COMPACT, META_HARD_STATE, META_LEASE_PREFIX, META_PLUGIN_BINDING_PREFIX, META_SCHEDULED_COMPACT,
    };
    use crate::storage::{CF_KV_INDEX, CF_KV_REV};

    /// A store with `n` keys written one revision each (from revision 2),
    /// the last one deleted, a lease, a plugin binding, a compaction mark
    /// and records of the old cluster.
    fn source(n: i64) -> (tempfile::TempDir, std::sync::Arc<Database>) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Database::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for i in 0..n {
            let rev = Revision::new(i + 2, 0);
            let key = format!("key-{i:05}").into_bytes();
            let kv = KeyValue {
                key: key.clone(),
                create_revision: rev.main,
                mod_revision: rev.main,
                version: 1,
                value: vec![7u8; 100],
                lease: 0,
            };
            b.put_cf(engine.cf(CF_KV_INDEX), index_key(&key, rev), IndexValue::Live(kv).encode());
            b.put_cf(engine.cf(CF_KV_REV), rev.to_bytes(), encode_rev_value(&key, false));
        }
        let last = Revision::new(n + 2, 0);
        b.put_cf(
            engine.cf(CF_KV_INDEX),
            index_key(b"key-00000", last),
            IndexValue::Tombstone.encode(),
        );
        b.put_cf(engine.cf(CF_KV_REV), last.to_bytes(), encode_rev_value(b"key-00000", true));
        b.put_cf(engine.cf(CF_META), META_CURRENT_REV, (last.main as u64).to_be_bytes());
        b.put_cf(engine.cf(CF_META), META_SCHEDULED_COMPACT, 1u64.to_be_bytes());
        b.put_cf(engine.cf(CF_META), META_FINISHED_COMPACT, 1u64.to_be_bytes());
        let lease = [META_LEASE_PREFIX, &0x1234u64.to_be_bytes()].concat();
        b.put_cf(engine.cf(CF_META), &lease, [30i64.to_be_bytes(), 12i64.to_be_bytes()].concat());
        b.put_cf(engine.cf(CF_META), [META_PLUGIN_BINDING_PREFIX, b"b1"].concat(), b"binding");
        b.put_cf(engine.cf(CF_META), META_APPLIED_INDEX, 9u64.to_be_bytes());
        b.put_cf(engine.cf(CF_META), META_HARD_STATE, b"old cluster's");
        engine.write(b, false).unwrap();
        (dir, engine)
    }

    fn backup_of(engine: &Database) -> Vec<u8> {
        let mut out = Vec::new();
        let mut last_remaining = Vec::new();
        write(engine, |chunk, remaining| {
            out.extend_from_slice(&chunk);
            last_remaining.push(remaining);
            true
        })
        .unwrap();
        assert_eq!(last_remaining.last(), Some(&0));
        assert!(
            std::fs::read_dir(engine.dump_dir()).unwrap().next().is_none(),
            "the backup's file is gone"
        );
        out
    }

    type Record = (Box<[u8]>, Box<[u8]>);

    fn same_replicated_state(a: &Database, b: &Database) {
        for cf in [CF_KV_INDEX, CF_KV_REV] {
            let all = |db: &Database| -> Vec<Record> {
                db.db()
                    .iterator_cf(db.cf(cf), rocksdb::IteratorMode::Start)
                    .map(|r| r.unwrap())
                    .collect()
            };
            assert_eq!(all(a), all(b), "{cf}");
        }
    }

    #[test]
    fn an_etcd_format_backup_restores_the_state_but_not_the_members_or_raft_records() {
        let (_src_dir, src) = source(3000);
        let bytes = backup_of(&src);
        assert_eq!(bytes.len() as u64 % 512, 32, "etcd's length rule");
        let file_dir = tempfile::tempdir().unwrap();
        let file = file_dir.path().join("backup.db");
        File::create(&file).unwrap().write_all(&bytes).unwrap();
        assert_eq!(format_of(&file).unwrap(), Format::Etcd);
        let summary = summarize(&file).unwrap();
        assert_eq!((summary.revision, summary.bytes), (3002, bytes.len() as u64));

        let dst_dir = tempfile::tempdir().unwrap();
        let data = dst_dir.path().join("member");
        let restored = restore(&file, &data, true).unwrap();
        assert_eq!(restored.revision, 3002);
        let imported = restored.etcd.unwrap();
        assert_eq!((imported.revisions, imported.leases, imported.compacted), (3001, 1, 1));
        let dst = Database::open(&data).unwrap();
        same_replicated_state(&src, &dst);
        assert_eq!(dst.get_meta_u64(META_CURRENT_REV).unwrap(), Some(3002));
        assert_eq!(dst.get_meta_u64(META_FINISHED_COMPACT).unwrap(), Some(1));
        let lease = [META_LEASE_PREFIX, &0x1234u64.to_be_bytes()].concat();
        assert_eq!(dst.get_meta(&lease).unwrap(), src.get_meta(&lease).unwrap());
        assert_eq!(
            dst.get_meta(&[META_PLUGIN_BINDING_PREFIX, b"b1"].concat()).unwrap().as_deref(),
            Some(&b"binding"[..])
        );
        assert_eq!(dst.get_meta(META_APPLIED_INDEX).unwrap(), None);
        assert_eq!(dst.get_meta(META_HARD_STATE).unwrap(), None);
        assert!(!data.join("snap").join("etcd-import.dump").exists());
    }

    #[test]
    fn a_cairn_format_backup_still_restores() {
        let (_src_dir, src) = source(10);
        let mut bytes = Vec::new();
        dump::write(&src, &src.db().snapshot(), |chunk, _| {
            bytes.extend_from_slice(&chunk);
            Ok(true)
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backup.dump");
        File::create(&file).unwrap().write_all(&bytes).unwrap();
        assert_eq!(summarize(&file).unwrap().format, Format::Cairn);
        let restored = restore(&file, &dir.path().join("member"), true).unwrap();
        assert_eq!((restored.revision, restored.etcd), (12, None));
        same_replicated_state(&src, &Database::open(&dir.path().join("member")).unwrap());
    }

    #[test]
    fn corrupt_or_foreign_files_and_used_data_dirs_are_refused() {
        let (_src_dir, src) = source(50);
        let mut bytes = backup_of(&src);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backup.db");

        let n = bytes.len();
        bytes[n / 2] ^= 1;
        File::create(&file).unwrap().write_all(&bytes).unwrap();
        let err = restore(&file, &dir.path().join("a"), true).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(!dir.path().join("a").exists());

        File::create(&file).unwrap().write_all(&bytes[..n - 4096]).unwrap();
        let err = restore(&file, &dir.path().join("b"), true).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
        assert!(!dir.path().join("b").exists(), "a failed restore leaves no data dir");

        bytes[n / 2] ^= 1;
        File::create(&file).unwrap().write_all(&bytes).unwrap();
        let used = dir.path().join("used");
        std::fs::create_dir_all(used.join("db")).unwrap();
        assert!(restore(&file, &used, true).unwrap_err().to_string().contains("not empty"));
        assert_eq!(restore(&file, &dir.path().join("c"), true).unwrap().revision, 52);
    }
}
