//! Backups: the file `Maintenance.Snapshot` streams (what `etcdctl snapshot
//! save` writes) and `cairnctl snapshot restore` turns into a data dir.
//!
//! A backup is the replicated state at one instant, read from a RocksDB
//! snapshot so that taking it never holds up Raft or apply:
//!
//! ```text
//! MAGIC (16 bytes)
//! records: cf-name-len u8 (> 0), cf-name, key-len u32, key, value-len u32, value
//! end marker: one 0 byte, then zeros up to a multiple of 512 bytes
//! sha256 of everything above (32 bytes)
//! ```
//!
//! The layout of the tail is etcd's: `etcdctl snapshot save` accepts a
//! stream only if its length is a multiple of 512 plus a 32-byte sha256.
//! The body is not a bbolt database, so etcdctl's `snapshot status` and
//! `snapshot restore` cannot read it.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use rocksdb::{IteratorMode, WriteBatch};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::mvcc::MvccStore;
use crate::raft::is_replicated;
use crate::storage::{state_column_families, Database, CF_META};

/// Identifies a Cairn backup and its format version.
pub const MAGIC: &[u8; 16] = b"cairn-backup-v1\n";
/// Bytes per message of the stream (etcd sends 32 KiB).
pub const CHUNK_BYTES: usize = 64 * 1024;
const ALIGN: u64 = 512;
const SHA_BYTES: u64 = 32;
/// Restored records are written in batches of about this size.
const RESTORE_BATCH_BYTES: usize = 4 << 20;

/// Meta records that a restored member must not inherit: its applied index
/// belongs to the old cluster's Raft log, and the member list is the new
/// cluster's, from the flags it is started with.
const NOT_RESTORED: [&[u8]; 2] = [crate::apply::META_APPLIED_INDEX, crate::membership::META_MEMBERS];

fn record_len(cf: &str, key: &[u8], value: &[u8]) -> u64 {
    (1 + cf.len() + 4 + key.len() + 4 + value.len()) as u64
}

/// Writes a backup of the state as of now, in chunks handed to `sink` along
/// with how many bytes of the backup are still to come (not counting the
/// checksum, as etcd counts). `sink` returns false when the reader is gone.
/// Blocking: call it off the async runtime.
pub fn write(engine: &Database, mut sink: impl FnMut(Vec<u8>, u64) -> bool) -> Result<()> {
    let db = engine.db();
    let snap = db.snapshot();
    // A first pass only sizes the body, so every chunk can tell how much
    // remains, as etcd's do; both passes read the same snapshot.
    let mut unpadded = MAGIC.len() as u64 + 1;
    for cf in state_column_families() {
        for item in snap.iterator_cf(engine.cf(cf), IteratorMode::Start) {
            let (k, v) = item?;
            if is_replicated(cf, &k) {
                unpadded += record_len(cf, &k, &v);
            }
        }
    }
    let total = unpadded.div_ceil(ALIGN) * ALIGN;
    let mut sent = 0u64;
    let mut hash = Sha256::new();
    let mut buf = Vec::with_capacity(CHUNK_BYTES + 1024);
    let mut emit = |buf: &mut Vec<u8>, sent: &mut u64| -> bool {
        let chunk = std::mem::replace(buf, Vec::with_capacity(CHUNK_BYTES + 1024));
        hash.update(&chunk);
        *sent += chunk.len() as u64;
        sink(chunk, total.saturating_sub(*sent))
    };
    buf.extend_from_slice(MAGIC);
    for cf in state_column_families() {
        for item in snap.iterator_cf(engine.cf(cf), IteratorMode::Start) {
            let (k, v) = item?;
            if !is_replicated(cf, &k) {
                continue;
            }
            buf.push(cf.len() as u8);
            buf.extend_from_slice(cf.as_bytes());
            buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
            buf.extend_from_slice(&k);
            buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
            buf.extend_from_slice(&v);
            if buf.len() >= CHUNK_BYTES && !emit(&mut buf, &mut sent) {
                return Ok(());
            }
        }
    }
    buf.push(0);
    if sent + buf.len() as u64 != unpadded {
        return Err(Error::Corrupt("two reads of one database snapshot differ".into()));
    }
    buf.resize((total - sent) as usize, 0);
    if !emit(&mut buf, &mut sent) {
        return Ok(());
    }
    let digest = std::mem::take(&mut hash).finalize().to_vec();
    sink(digest, 0);
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

/// Checks a backup file's checksum and writes its state into a new data
/// directory, which `cairn` then starts from as the first member of a new
/// cluster (its identity and members come from the flags it is started with,
/// as for any new cluster).
pub fn restore(file: &Path, data_dir: &Path) -> Result<Restored> {
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        return Err(Error::InvalidRequest(format!(
            "data dir {} exists and is not empty",
            data_dir.display()
        )));
    }
    let mut records = Records::open(file)?;
    let engine = Database::open(data_dir)?;
    let mut batch = WriteBatch::default();
    let mut count = 0;
    while let Some((cf, key, value)) = records.next_record()? {
        if !is_replicated(cf, &key) || (cf == CF_META && NOT_RESTORED.contains(&key.as_slice())) {
            continue;
        }
        batch.put_cf(engine.cf(cf), &key, &value);
        count += 1;
        if batch.size_in_bytes() >= RESTORE_BATCH_BYTES {
            engine.write(std::mem::take(&mut batch), false)?;
        }
    }
    engine.write(batch, true)?;
    engine.flush()?;
    Ok(Restored {
        records: count,
        revision: MvccStore::open(engine)?.current_revision(),
    })
}

/// Checks a backup file and tells what it holds.
pub fn summarize(file: &Path) -> Result<Summary> {
    let mut records = Records::open(file)?;
    let mut summary = Summary {
        records: 0,
        // What an empty store reports.
        revision: 1,
        bytes: std::fs::metadata(file)?.len(),
    };
    while let Some((cf, key, value)) = records.next_record()? {
        if cf == CF_META && key == crate::mvcc::META_CURRENT_REV {
            let raw: [u8; 8] = value.as_slice().try_into().map_err(|_| malformed("revision record"))?;
            summary.revision = u64::from_be_bytes(raw) as i64;
        }
        summary.records += 1;
    }
    Ok(summary)
}

/// One record: column family, key, value.
type Record = (&'static str, Vec<u8>, Vec<u8>);

/// The records of a backup file whose checksum and header were checked.
struct Records {
    body: std::io::Take<BufReader<File>>,
}

impl Records {
    fn open(file: &Path) -> Result<Records> {
        let mut f = File::open(file)?;
        let body_len = verify(&mut f)?;
        f.seek(SeekFrom::Start(0))?;
        let mut body = BufReader::new(f).take(body_len);
        let mut magic = [0u8; 16];
        body.read_exact(&mut magic).map_err(|_| malformed("too short"))?;
        if &magic != MAGIC {
            return Err(malformed("not a Cairn backup (etcd's bbolt snapshots cannot be read by Cairn)"));
        }
        Ok(Records { body })
    }

    /// The next record, or `None` after the end marker (once the padding
    /// after it was checked).
    fn next_record(&mut self) -> Result<Option<Record>> {
        let body = &mut self.body;
        let cf_len = read_u8(body)? as usize;
        if cf_len == 0 {
            let mut rest = Vec::new();
            body.read_to_end(&mut rest)?;
            if rest.iter().any(|b| *b != 0) {
                return Err(malformed("data after the end marker"));
            }
            return Ok(None);
        }
        let cf_name = read_exact(body, cf_len)?;
        let cf_name = std::str::from_utf8(&cf_name).map_err(|_| malformed("column family name"))?;
        let cf = state_column_families()
            .find(|c| *c == cf_name)
            .ok_or_else(|| malformed(&format!("unknown column family {cf_name:?}")))?;
        let key = read_sized(body)?;
        let value = read_sized(body)?;
        Ok(Some((cf, key, value)))
    }
}

/// Checks the trailing sha256 and returns the length of what it covers.
fn verify(f: &mut File) -> Result<u64> {
    let len = f.metadata()?.len();
    if len < MAGIC.len() as u64 + 1 + SHA_BYTES || (len - SHA_BYTES) % ALIGN != 0 {
        return Err(malformed("its length is not a multiple of 512 plus a sha256 checksum"));
    }
    let body_len = len - SHA_BYTES;
    let mut hash = Sha256::new();
    let mut reader = BufReader::new(&mut *f).take(body_len);
    std::io::copy(&mut reader, &mut hash)?;
    let mut want = [0u8; SHA_BYTES as usize];
    f.seek(SeekFrom::Start(body_len))?;
    f.read_exact(&mut want)?;
    if hash.finalize().as_slice() != want {
        return Err(malformed("sha256 checksum mismatch"));
    }
    Ok(body_len)
}

fn malformed(why: &str) -> Error {
    Error::Corrupt(format!("backup file: {why}"))
}

fn read_u8(r: &mut impl Read) -> Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).map_err(|_| malformed("truncated"))?;
    Ok(b[0])
}

fn read_exact(r: &mut impl Read, len: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; len];
    r.read_exact(&mut v).map_err(|_| malformed("truncated"))?;
    Ok(v)
}

fn read_sized(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|_| malformed("truncated"))?;
    read_exact(r, u32::from_be_bytes(len) as usize)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::storage::CF_KV_INDEX;

    /// Where the MVCC store keeps its revision.
    const CURRENT_REV: &[u8] = b"mvcc/current_rev";

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
            b.put_cf(src.cf(CF_KV_INDEX), format!("key-{i:05}"), vec![7u8; 100]);
        }
        b.put_cf(src.cf(CF_META), CURRENT_REV, 42u64.to_be_bytes());
        b.put_cf(src.cf(CF_META), crate::apply::META_APPLIED_INDEX, 9u64.to_be_bytes());
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
        assert_eq!(dst.db().get_cf(dst.cf(CF_KV_INDEX), b"key-02999").unwrap(), Some(vec![7u8; 100]));
        assert_eq!(dst.get_meta_u64(CURRENT_REV).unwrap(), Some(42));
        assert_eq!(dst.get_meta(crate::apply::META_APPLIED_INDEX).unwrap(), None);
        assert_eq!(dst.get_meta(b"raft/hard_state").unwrap(), None);
    }

    #[test]
    fn corrupt_or_foreign_files_and_used_data_dirs_are_refused() {
        let src_dir = tempfile::tempdir().unwrap();
        let src = Database::open(src_dir.path()).unwrap();
        let mut b = WriteBatch::default();
        b.put_cf(src.cf(CF_KV_INDEX), b"k", b"v");
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
