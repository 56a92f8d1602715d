//! Backups: the file `Maintenance.Snapshot` streams (what `etcdctl snapshot
//! save` writes) and `cairnctl snapshot restore` turns into a data dir.
//!
//! A backup is the replicated state at one instant in the dump format
//! Raft snapshots use too (`storage::dump`: etcd's length rule and sha256
//! trailer around Cairn's own records), read from a RocksDB snapshot so
//! that taking it never holds up Raft or apply. The body is not a bbolt
//! database, so etcdctl's `snapshot status` and `snapshot restore` cannot
//! read it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::mvcc::MvccStore;
use crate::storage::dump::{self, Install};
use crate::storage::schema::META_CURRENT_REV;
use crate::storage::{Database, CF_META};

/// Writes a backup of the state as of now, in chunks handed to `sink` along
/// with how many bytes of the backup are still to come (not counting the
/// checksum, as etcd counts). `sink` returns false when the reader is gone.
/// Blocking: call it off the async runtime.
pub fn write(engine: &Database, mut sink: impl FnMut(Vec<u8>, u64) -> bool) -> Result<()> {
    dump::write(engine, &engine.db().snapshot(), |chunk, remaining| Ok(sink(chunk, remaining)))?;
    Ok(())
}

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub records: u64,
    /// The store's revision in the backup.
    pub revision: i64,
}

/// What a backup holds, as `cairnctl snapshot status` shows it (etcdctl's
/// `snapshot status` reads only bbolt files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub revision: i64,
    pub bytes: u64,
}

/// Checks a backup file in full and writes its state into a new data
/// directory, which `cairn` then starts from as the first member of a new
/// cluster. The old cluster's applied index and members are left out (the
/// schema classes them as not restored): its identity and members come
/// from the flags it is started with, as for any new cluster.
pub fn restore(file: &Path, data_dir: &Path) -> Result<Restored> {
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        return Err(Error::InvalidRequest(format!(
            "data dir {} exists and is not empty",
            data_dir.display()
        )));
    }
    // Refused before the data dir is created.
    dump::verify(file)?;
    let engine = Database::open(data_dir)?;
    let records = dump::install(&engine, file, Install::Restore, &[])?;
    engine.flush()?;
    Ok(Restored {
        records,
        revision: MvccStore::open(engine)?.current_revision(),
    })
}

/// Checks a backup file and tells what it holds.
pub fn summarize(file: &Path) -> Result<Summary> {
    let mut records = dump::open_file(file)?;
    let mut summary = Summary {
        records: 0,
        // What an empty store reports.
        revision: 1,
        bytes: std::fs::metadata(file)?.len(),
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
    use crate::storage::dump::{ALIGN, SHA_BYTES};
    use crate::storage::encoding::{index_key, Revision};
    use crate::storage::schema::META_APPLIED_INDEX;
    use crate::storage::CF_KV_INDEX;

    /// Where the MVCC store keeps its revision.
    const CURRENT_REV: &[u8] = META_CURRENT_REV;

    /// An index key as the MVCC store writes them (dumps refuse others).
    fn key(user_key: &str) -> Vec<u8> {
        index_key(user_key.as_bytes(), Revision::new(2, 0))
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
        out
    }

    #[test]
    fn backup_restores_the_state_but_not_the_members_or_raft_records() {
        let src_dir = tempfile::tempdir().unwrap();
        let src = Database::open(src_dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for i in 0..3000u32 {
            b.put_cf(src.cf(CF_KV_INDEX), key(&format!("key-{i:05}")), vec![7u8; 100]);
        }
        b.put_cf(src.cf(CF_META), CURRENT_REV, 42u64.to_be_bytes());
        b.put_cf(src.cf(CF_META), META_APPLIED_INDEX, 9u64.to_be_bytes());
        b.put_cf(src.cf(CF_META), b"raft/hard_state", b"old cluster's");
        src.write(b, false).unwrap();

        let bytes = backup_of(&src);
        assert_eq!((bytes.len() as u64 - SHA_BYTES) % ALIGN, 0, "etcdctl's length rule");
        let file_dir = tempfile::tempdir().unwrap();
        let file = file_dir.path().join("backup.db");
        File::create(&file).unwrap().write_all(&bytes).unwrap();

        let dst_dir = tempfile::tempdir().unwrap();
        let data = dst_dir.path().join("member");
        let restored = restore(&file, &data).unwrap();
        assert_eq!(
            restored,
            Restored {
                records: 3001,
                revision: 42
            }
        );
        let dst = Database::open(&data).unwrap();
        assert_eq!(
            dst.db().get_cf(dst.cf(CF_KV_INDEX), key("key-02999")).unwrap(),
            Some(vec![7u8; 100])
        );
        assert_eq!(dst.get_meta_u64(CURRENT_REV).unwrap(), Some(42));
        assert_eq!(dst.get_meta(META_APPLIED_INDEX).unwrap(), None);
        assert_eq!(dst.get_meta(b"raft/hard_state").unwrap(), None);
    }

    #[test]
    fn corrupt_or_foreign_files_and_used_data_dirs_are_refused() {
        let src_dir = tempfile::tempdir().unwrap();
        let src = Database::open(src_dir.path()).unwrap();
        let mut b = WriteBatch::default();
        b.put_cf(src.cf(CF_KV_INDEX), key("k"), b"v");
        src.write(b, false).unwrap();
        let mut bytes = backup_of(&src);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backup.db");

        let n = bytes.len();
        bytes[n / 2] ^= 1;
        File::create(&file).unwrap().write_all(&bytes).unwrap();
        let err = restore(&file, &dir.path().join("a")).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");

        File::create(&file).unwrap().write_all(&bytes[..n - 1]).unwrap();
        assert!(restore(&file, &dir.path().join("b")).is_err());

        bytes[n / 2] ^= 1;
        File::create(&file).unwrap().write_all(&bytes).unwrap();
        let used = dir.path().join("used");
        std::fs::create_dir_all(used.join("db")).unwrap();
        assert!(restore(&file, &used).unwrap_err().to_string().contains("not empty"));
        assert_eq!(restore(&file, &dir.path().join("c")).unwrap().records, 1);
    }
}
