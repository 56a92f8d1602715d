//! The state machine's data as a Raft snapshot: every column family but the
//! Raft log, and the meta records that are not the member's own Raft
//! bookkeeping. The encoding is a flat list of records:
//! `cf-name-len u8, cf-name, key-len u32, key, value-len u32, value`.

use rocksdb::{IteratorMode, Snapshot, WriteBatch};

use crate::error::{Error, Result};
use crate::storage::{state_column_families, Database, CF_META};

/// Meta records that describe this member rather than the replicated state:
/// Raft's own log bookkeeping and the member's identity.
const LOCAL_META_PREFIXES: [&[u8]; 2] = [b"raft/", b"local/"];

/// Whether a record is replicated state rather than this member's own.
pub fn is_replicated(cf: &str, key: &[u8]) -> bool {
    cf != CF_META || !LOCAL_META_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Dumps the replicated state from a consistent RocksDB snapshot.
#[cfg(test)]
pub fn build(engine: &Database) -> Result<Vec<u8>> {
    build_from(engine, &engine.db().snapshot())
}

/// Dumps the replicated state as `snap` sees it.
pub fn build_from(engine: &Database, snap: &Snapshot<'_>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for cf in state_column_families() {
        for item in snap.iterator_cf(engine.cf(cf), IteratorMode::Start) {
            let (k, v) = item?;
            if !is_replicated(cf, &k) {
                continue;
            }
            out.push(cf.len() as u8);
            out.extend_from_slice(cf.as_bytes());
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(&k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(&v);
        }
    }
    Ok(out)
}

/// Stages into `batch` the replacement of the replicated state by `data`.
pub fn stage_install(engine: &Database, batch: &mut WriteBatch, data: &[u8]) -> Result<()> {
    let db = engine.db();
    for cf in state_column_families() {
        let handle = engine.cf(cf);
        for item in db.iterator_cf(handle, IteratorMode::Start) {
            let (k, _) = item?;
            if is_replicated(cf, &k) {
                batch.delete_cf(handle, k);
            }
        }
    }
    let mut rest = data;
    while !rest.is_empty() {
        let cf_len = *rest.first().ok_or_else(truncated)? as usize;
        let cf = take(&mut rest, cf_len)?;
        let cf = std::str::from_utf8(cf).map_err(|_| Error::Corrupt("snapshot column family name".into()))?;
        let cf = state_column_families()
            .find(|c| *c == cf)
            .ok_or_else(|| Error::Corrupt(format!("snapshot has unknown column family {cf:?}")))?;
        let key = take_sized(&mut rest)?;
        let value = take_sized(&mut rest)?;
        if is_replicated(cf, key) {
            batch.put_cf(engine.cf(cf), key, value);
        }
    }
    Ok(())
}

fn truncated() -> Error {
    Error::Corrupt("snapshot data is truncated".into())
}

/// Takes `len` bytes after a one-byte length prefix already read.
fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8]> {
    let body = rest.get(1..1 + len).ok_or_else(truncated)?;
    *rest = &rest[1 + len..];
    Ok(body)
}

fn take_sized<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len_bytes: [u8; 4] = rest.get(..4).ok_or_else(truncated)?.try_into().map_err(|_| truncated())?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let body = rest.get(4..4 + len).ok_or_else(truncated)?;
    *rest = &rest[4 + len..];
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CF_KV_INDEX, CF_KV_REV};

    #[test]
    fn round_trip_replaces_state_and_keeps_local_records() {
        let src_dir = tempfile::tempdir().unwrap();
        let dst_dir = tempfile::tempdir().unwrap();
        let src = Database::open(src_dir.path()).unwrap();
        let dst = Database::open(dst_dir.path()).unwrap();
        let mut b = WriteBatch::default();
        b.put_cf(src.cf(CF_KV_INDEX), b"a", b"1");
        b.put_cf(src.cf(CF_KV_REV), b"r", b"");
        b.put_cf(src.cf(CF_META), b"mvcc/current_rev", 7u64.to_be_bytes());
        b.put_cf(src.cf(CF_META), b"raft/hard_state", b"source's own");
        src.write(b, false).unwrap();
        let mut b = WriteBatch::default();
        b.put_cf(dst.cf(CF_KV_INDEX), b"stale", b"x");
        b.put_cf(dst.cf(CF_META), b"raft/hard_state", b"destination's own");
        b.put_cf(dst.cf(CF_META), b"local/member_id", b"me");
        dst.write(b, false).unwrap();

        let data = build(&src).unwrap();
        let mut batch = WriteBatch::default();
        stage_install(&dst, &mut batch, &data).unwrap();
        dst.write(batch, false).unwrap();

        let db = dst.db();
        assert_eq!(db.get_cf(dst.cf(CF_KV_INDEX), b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(db.get_cf(dst.cf(CF_KV_INDEX), b"stale").unwrap(), None);
        assert_eq!(db.get_cf(dst.cf(CF_KV_REV), b"r").unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(dst.get_meta_u64(b"mvcc/current_rev").unwrap(), Some(7));
        assert_eq!(
            dst.get_meta(b"raft/hard_state").unwrap().as_deref(),
            Some(&b"destination's own"[..])
        );
        assert_eq!(dst.get_meta(b"local/member_id").unwrap().as_deref(), Some(&b"me"[..]));
    }

    #[test]
    fn truncated_data_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Database::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        b.put_cf(engine.cf(CF_KV_INDEX), b"key", b"value");
        engine.write(b, false).unwrap();
        let data = build(&engine).unwrap();
        let mut batch = WriteBatch::default();
        assert!(stage_install(&engine, &mut batch, &data[..data.len() - 1]).is_err());
    }
}
