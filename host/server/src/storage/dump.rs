//! The one dump format: what a Raft snapshot moves to a member and what a
//! backup (`Maintenance.Snapshot`, `etcdctl snapshot save`) holds.
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
//! A dump holds the records the schema classes as carried, read from one
//! RocksDB snapshot. Both directions stream: the writer hands out chunks of
//! about [`CHUNK_BYTES`], the reader holds one record at a time, and an
//! install writes in batches of bounded size, so no side ever holds the
//! whole state.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, Snapshot, WriteBatch};
use sha2::{Digest, Sha256};

use super::encoding;
use super::schema::{self, Class, CF_KV_INDEX, CF_KV_REV, CF_META, CF_RAFT_LOG, META_DUMP_INSTALL};
use super::Database;
use crate::error::{Error, Result};

/// Identifies a Cairn dump and its format version.
pub const MAGIC: &[u8; 16] = b"cairn-backup-v1\n";
/// Bytes per chunk the writer hands out (etcd sends 32 KiB).
pub const CHUNK_BYTES: usize = 64 * 1024;
pub const ALIGN: u64 = 512;
pub const SHA_BYTES: u64 = 32;
/// Largest key or value a dump may hold: bounds what one corrupt length
/// field can make the reader allocate.
const MAX_FIELD_BYTES: u64 = 256 << 20;
/// Installed records are written in batches of about this size.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// What a finished write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes of the whole dump, checksum included.
    pub len: u64,
    pub sha256: [u8; 32],
    pub records: u64,
}

fn record_len(cf: &str, key: &[u8], value: &[u8]) -> u64 {
    (1 + cf.len() + 4 + key.len() + 4 + value.len()) as u64
}

/// Calls `visit` with every carried record `snap` sees, in dump order.
fn carried_records(
    engine: &Database,
    snap: &Snapshot<'_>,
    mut visit: impl FnMut(&'static str, &[u8], &[u8]) -> Result<bool>,
) -> Result<bool> {
    for cf in schema::carried_column_families() {
        for item in snap.iterator_cf(engine.cf(cf), IteratorMode::Start) {
            let (k, v) = item?;
            match schema::class_of(cf, &k) {
                Some(class) if class.is_carried() => {
                    if !visit(cf, &k, &v)? {
                        return Ok(false);
                    }
                }
                Some(_) => {}
                None => return Err(unknown_record(cf, &k)),
            }
        }
    }
    Ok(true)
}

fn unknown_record(cf: &str, key: &[u8]) -> Error {
    Error::Corrupt(format!(
        "record {cf}/{:?} is not in the storage schema",
        String::from_utf8_lossy(key)
    ))
}

/// Writes the dump of what `snap` sees, in chunks handed to `sink` along with
/// how many bytes are still to come (not counting the checksum, as etcd
/// counts). `sink` returns false when the reader is gone; the write then
/// stops and returns `None`. Blocking: call it off the async runtime.
pub fn write(engine: &Database, snap: &Snapshot<'_>, mut sink: impl FnMut(Vec<u8>, u64) -> Result<bool>) -> Result<Option<Written>> {
    // A first pass only sizes the body, so every chunk can tell how much
    // remains, as etcd's do; both passes read the same snapshot.
    let mut unpadded = MAGIC.len() as u64 + 1;
    let mut records = 0u64;
    carried_records(engine, snap, |cf, k, v| {
        unpadded += record_len(cf, k, v);
        records += 1;
        Ok(true)
    })?;
    let total = unpadded.div_ceil(ALIGN) * ALIGN;
    let mut sent = 0u64;
    let mut hash = Sha256::new();
    let mut buf = Vec::with_capacity(CHUNK_BYTES + 1024);
    let mut emit = |buf: &mut Vec<u8>, sent: &mut u64| -> Result<bool> {
        let chunk = std::mem::replace(buf, Vec::with_capacity(CHUNK_BYTES + 1024));
        hash.update(&chunk);
        *sent += chunk.len() as u64;
        sink(chunk, total.saturating_sub(*sent))
    };
    buf.extend_from_slice(MAGIC);
    let finished = carried_records(engine, snap, |cf, k, v| {
        buf.push(cf.len() as u8);
        buf.extend_from_slice(cf.as_bytes());
        buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
        buf.extend_from_slice(k);
        buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
        buf.extend_from_slice(v);
        if buf.len() >= CHUNK_BYTES {
            return emit(&mut buf, &mut sent);
        }
        Ok(true)
    })?;
    if !finished {
        return Ok(None);
    }
    buf.push(0);
    if sent + buf.len() as u64 != unpadded {
        return Err(Error::Corrupt("two reads of one database snapshot differ".into()));
    }
    buf.resize((total - sent) as usize, 0);
    if !emit(&mut buf, &mut sent)? {
        return Ok(None);
    }
    let sha256: [u8; 32] = std::mem::take(&mut hash).finalize().into();
    if !sink(sha256.to_vec(), 0)? {
        return Ok(None);
    }
    Ok(Some(Written {
        len: total + SHA_BYTES,
        sha256,
        records,
    }))
}

/// Writes a dump to a file from records handed over one at a time, in any
/// order (a conversion from another format, which has no RocksDB snapshot
/// to read twice). Each record is checked as [`Reader`] checks it.
pub struct FileWriter {
    out: std::io::BufWriter<File>,
    hash: Sha256,
    written: u64,
    records: u64,
}

impl FileWriter {
    pub fn create(path: &Path) -> Result<FileWriter> {
        let mut writer = FileWriter {
            out: std::io::BufWriter::with_capacity(CHUNK_BYTES, File::create(path)?),
            hash: Sha256::new(),
            written: 0,
            records: 0,
        };
        writer.emit(MAGIC)?;
        Ok(writer)
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<()> {
        std::io::Write::write_all(&mut self.out, bytes)?;
        self.hash.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn put(&mut self, cf: &'static str, key: &[u8], value: &[u8]) -> Result<()> {
        check_record(cf, key)?;
        if key.len() as u64 > MAX_FIELD_BYTES || value.len() as u64 > MAX_FIELD_BYTES {
            return Err(corrupt("record larger than any Cairn stores"));
        }
        self.emit(&[cf.len() as u8])?;
        self.emit(cf.as_bytes())?;
        self.emit(&(key.len() as u32).to_be_bytes())?;
        self.emit(key)?;
        self.emit(&(value.len() as u32).to_be_bytes())?;
        self.emit(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end marker, the padding and the checksum, and syncs.
    pub fn finish(mut self) -> Result<Written> {
        self.emit(&[0])?;
        let padding = self.written.div_ceil(ALIGN) * ALIGN - self.written;
        self.emit(&vec![0u8; padding as usize])?;
        let sha256: [u8; 32] = std::mem::take(&mut self.hash).finalize().into();
        std::io::Write::write_all(&mut self.out, &sha256)?;
        let file = self.out.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        file.sync_all()?;
        Ok(Written {
            len: self.written + SHA_BYTES,
            sha256,
            records: self.records,
        })
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub cf: &'static str,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub class: Class,
}

/// Reads a dump record by record, checking each against the schema and,
/// at the end, the padding, the checksum and that nothing follows.
pub struct Reader<R: Read> {
    inner: R,
    hash: Sha256,
    read: u64,
    finished: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Result<Reader<R>> {
        let mut reader = Reader {
            inner,
            hash: Sha256::new(),
            read: 0,
            finished: false,
        };
        let magic = reader.take(MAGIC.len() as u64)?;
        if magic != MAGIC {
            return Err(corrupt("not a Cairn dump"));
        }
        Ok(reader)
    }

    /// Reads `len` hashed bytes.
    fn take(&mut self, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.inner).take(len).read_to_end(&mut out)?;
        if out.len() as u64 != len {
            return Err(corrupt("truncated"));
        }
        self.hash.update(&out);
        self.read += len;
        Ok(out)
    }

    fn take_sized(&mut self) -> Result<Vec<u8>> {
        let raw: [u8; 4] = self.take(4)?.try_into().map_err(|_| corrupt("truncated"))?;
        let len = u32::from_be_bytes(raw) as u64;
        if len > MAX_FIELD_BYTES {
            return Err(corrupt("record larger than any Cairn stores"));
        }
        self.take(len)
    }

    /// The next record, or `None` once the end marker, the padding and the
    /// checksum were read and checked.
    pub fn next_record(&mut self) -> Result<Option<Entry>> {
        if self.finished {
            return Ok(None);
        }
        let cf_len = self.take(1)?[0] as u64;
        if cf_len == 0 {
            self.finish()?;
            return Ok(None);
        }
        let name = self.take(cf_len)?;
        let cf = std::str::from_utf8(&name)
            .ok()
            .and_then(schema::column_family)
            .ok_or_else(|| corrupt(&format!("unknown column family {:?}", String::from_utf8_lossy(&name))))?;
        let key = self.take_sized()?;
        let value = self.take_sized()?;
        let class = check_record(cf, &key)?;
        Ok(Some(Entry { cf, key, value, class }))
    }

    fn finish(&mut self) -> Result<()> {
        let padding = self.read.div_ceil(ALIGN) * ALIGN - self.read;
        if self.take(padding)?.iter().any(|b| *b != 0) {
            return Err(corrupt("data after the end marker"));
        }
        let want: [u8; 32] = std::mem::take(&mut self.hash).finalize().into();
        let mut got = [0u8; SHA_BYTES as usize];
        self.inner.read_exact(&mut got).map_err(|_| corrupt("truncated"))?;
        if got != want {
            return Err(corrupt("sha256 checksum mismatch"));
        }
        let mut extra = [0u8; 1];
        if self.inner.read(&mut extra)? != 0 {
            return Err(corrupt("data after the checksum"));
        }
        self.finished = true;
        Ok(())
    }
}

/// Refuses what no dump may carry: records outside the schema, a member's
/// own records, and keys the MVCC store could not decode.
fn check_record(cf: &'static str, key: &[u8]) -> Result<Class> {
    let class = match schema::class_of(cf, key) {
        Some(class) if class.is_carried() => class,
        Some(_) => return Err(corrupt(&format!("member-local record {cf}/{:?}", String::from_utf8_lossy(key)))),
        None => return Err(corrupt(&format!("foreign record {cf}/{:?}", String::from_utf8_lossy(key)))),
    };
    if cf == CF_KV_INDEX {
        encoding::decode_index_key(key).map_err(|_| corrupt("malformed kv_index key"))?;
    } else if cf == CF_KV_REV {
        encoding::Revision::from_bytes(key).map_err(|_| corrupt("malformed kv_rev key"))?;
    }
    Ok(class)
}

fn corrupt(why: &str) -> Error {
    Error::Corrupt(format!("dump: {why}"))
}

/// Opens a dump file after checking its length rule and checksum, so that a
/// damaged file is refused as such before any record is looked at.
pub fn open_file(path: &Path) -> Result<Reader<BufReader<File>>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len < MAGIC.len() as u64 + 1 + SHA_BYTES || (len - SHA_BYTES) % ALIGN != 0 {
        return Err(corrupt("its length is not a multiple of 512 plus a sha256 checksum"));
    }
    let body_len = len - SHA_BYTES;
    let mut hash = Sha256::new();
    std::io::copy(&mut BufReader::new(&mut f).take(body_len), &mut hash)?;
    let mut want = [0u8; SHA_BYTES as usize];
    f.seek(SeekFrom::Start(body_len))?;
    f.read_exact(&mut want)?;
    if hash.finalize().as_slice() != want {
        return Err(corrupt("sha256 checksum mismatch"));
    }
    f.seek(SeekFrom::Start(0))?;
    Reader::new(BufReader::new(f))
}

/// Reads a whole dump file, checking every record, and tells what it holds.
pub fn verify(path: &Path) -> Result<Written> {
    let mut reader = open_file(path)?;
    let mut records = 0;
    while reader.next_record()?.is_some() {
        records += 1;
    }
    let mut sha256 = [0u8; 32];
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len - SHA_BYTES))?;
    f.read_exact(&mut sha256)?;
    Ok(Written { len, sha256, records })
}

/// Which records an install takes from a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// A Raft snapshot: everything the dump carries. The staged dump is
    /// removed once installed.
    Snapshot,
    /// A backup restored into a new data dir: not the records of the old
    /// cluster's log and members. The file is the operator's and stays.
    Restore,
}

impl Install {
    fn takes(self, class: Class) -> bool {
        self == Install::Snapshot || class == Class::Replicated
    }
}

/// Replaces the carried state with the dump in `file`, which is checked in
/// full first. The install takes several writes; a marker written first
/// names the dump, so that a member that stops halfway finishes the install
/// when its database is opened again. `finish` holds meta records written
/// with the last write. This member's Raft log, which describes the
/// replaced state, is dropped. Returns how many records were installed.
pub fn install(engine: &Database, file: &Path, mode: Install, finish: &[(&[u8], Vec<u8>)]) -> Result<u64> {
    verify(file)?;
    let marker = encode_marker(file, mode, finish);
    let mut batch = WriteBatch::default();
    batch.put_cf(engine.cf(CF_META), META_DUMP_INSTALL, marker);
    engine.write(batch, true)?;
    replace(engine, file, mode, finish)
}

/// Finishes an install a stop interrupted; called when the database opens.
pub(super) fn finish_interrupted_install(engine: &Database) -> Result<()> {
    let Some(marker) = engine.get_meta(META_DUMP_INSTALL)? else {
        return Ok(());
    };
    let (file, mode, finish) = decode_marker(&marker)?;
    tracing::warn!(dump = %file.display(), "finishing an install of a dump that was interrupted");
    let finish: Vec<(&[u8], Vec<u8>)> = finish.iter().map(|(k, v)| (k.as_slice(), v.clone())).collect();
    replace(engine, &file, mode, &finish)?;
    Ok(())
}

fn replace(engine: &Database, file: &Path, mode: Install, finish: &[(&[u8], Vec<u8>)]) -> Result<u64> {
    let db = engine.db();
    let mut batch = WriteBatch::default();
    let flush_full = |batch: &mut WriteBatch| -> Result<()> {
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            engine.write(std::mem::take(batch), false)?;
        }
        Ok(())
    };
    for cf in schema::carried_column_families() {
        let handle = engine.cf(cf);
        for item in db.iterator_cf(handle, IteratorMode::Start) {
            let (k, _) = item?;
            if schema::class_of(cf, &k).is_some_and(Class::is_carried) {
                batch.delete_cf(handle, k);
                flush_full(&mut batch)?;
            }
        }
    }
    // Checked in full before the first write; this pass checks as it goes.
    let mut reader = Reader::new(BufReader::new(File::open(file)?))?;
    let mut installed = 0;
    while let Some(entry) = reader.next_record()? {
        if mode.takes(entry.class) {
            batch.put_cf(engine.cf(entry.cf), &entry.key, &entry.value);
            installed += 1;
            flush_full(&mut batch)?;
        }
    }
    let meta = engine.cf(CF_META);
    for (key, value) in finish {
        batch.put_cf(meta, key, value);
    }
    let log = engine.cf(CF_RAFT_LOG);
    batch.delete_range_cf(log, 0u64.to_be_bytes(), u64::MAX.to_be_bytes());
    batch.delete_cf(log, u64::MAX.to_be_bytes());
    batch.delete_cf(meta, META_DUMP_INSTALL);
    engine.write(batch, true)?;
    if mode == Install::Snapshot {
        if let Err(e) = std::fs::remove_file(file) {
            tracing::warn!(dump = %file.display(), error = %e, "installed dump not removed");
        }
    }
    Ok(installed)
}

fn put_sized(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn encode_marker(file: &Path, mode: Install, finish: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![match mode {
        Install::Snapshot => 0,
        Install::Restore => 1,
    }];
    put_sized(&mut out, file.as_os_str().as_bytes());
    for (key, value) in finish {
        put_sized(&mut out, key);
        put_sized(&mut out, value);
    }
    out
}

type Marker = (PathBuf, Install, Vec<(Vec<u8>, Vec<u8>)>);

fn decode_marker(raw: &[u8]) -> Result<Marker> {
    let bad = || Error::Corrupt("dump install marker".into());
    let (mode, mut rest) = raw.split_first().ok_or_else(bad)?;
    let mode = match mode {
        0 => Install::Snapshot,
        1 => Install::Restore,
        _ => return Err(bad()),
    };
    let sized = |rest: &mut &[u8]| -> Result<Vec<u8>> {
        let len: [u8; 4] = rest.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
        let len = u32::from_be_bytes(len) as usize;
        let body = rest.get(4..4 + len).ok_or_else(bad)?.to_vec();
        *rest = &rest[4 + len..];
        Ok(body)
    };
    let file = PathBuf::from(OsStr::from_bytes(&sized(&mut rest)?));
    let mut finish = Vec::new();
    while !rest.is_empty() {
        let key = sized(&mut rest)?;
        finish.push((key, sized(&mut rest)?));
    }
    Ok((file, mode, finish))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::storage::encoding::{index_key, Revision};
    use crate::storage::schema::{META_APPLIED_INDEX, META_CURRENT_REV, META_HARD_STATE, META_LOCAL_ID};

    fn dump_of(engine: &Database) -> Vec<u8> {
        let mut out = Vec::new();
        let mut remaining = Vec::new();
        let written = write(engine, &engine.db().snapshot(), |chunk, left| {
            out.extend_from_slice(&chunk);
            remaining.push(left);
            Ok(true)
        })
        .unwrap()
        .unwrap();
        assert_eq!(remaining.last(), Some(&0));
        assert_eq!(written.len, out.len() as u64);
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Entry>> {
        let mut reader = Reader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(e) = reader.next_record()? {
            out.push(e);
        }
        Ok(out)
    }

    fn source() -> (tempfile::TempDir, std::sync::Arc<Database>) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Database::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for i in 0..2000i64 {
            b.put_cf(
                engine.cf(CF_KV_INDEX),
                index_key(format!("key-{i:05}").as_bytes(), Revision::new(i + 2, 0)),
                vec![7u8; 100],
            );
            b.put_cf(engine.cf(CF_KV_REV), Revision::new(i + 2, 0).to_bytes(), b"Lk");
        }
        b.put_cf(engine.cf(CF_META), META_CURRENT_REV, 2001u64.to_be_bytes());
        b.put_cf(engine.cf(CF_META), META_APPLIED_INDEX, 9u64.to_be_bytes());
        b.put_cf(engine.cf(CF_META), META_HARD_STATE, b"source's own");
        b.put_cf(engine.cf(CF_RAFT_LOG), 5u64.to_be_bytes(), b"entry");
        engine.write(b, false).unwrap();
        (dir, engine)
    }

    /// A dump with one record appended by hand, checksum made right.
    fn with_record(cf: &str, key: &[u8]) -> Vec<u8> {
        let mut body = MAGIC.to_vec();
        body.push(cf.len() as u8);
        body.extend_from_slice(cf.as_bytes());
        put_sized(&mut body, key);
        put_sized(&mut body, b"v");
        body.push(0);
        body.resize(body.len().div_ceil(ALIGN as usize) * ALIGN as usize, 0);
        let sha = Sha256::digest(&body);
        body.extend_from_slice(&sha);
        body
    }

    #[test]
    fn round_trip_carries_replicated_records_only() {
        let (_dir, src) = source();
        let bytes = dump_of(&src);
        assert_eq!((bytes.len() as u64 - SHA_BYTES) % ALIGN, 0, "etcdctl's length rule");
        let entries = read_all(&bytes).unwrap();
        assert_eq!(entries.len(), 4002);
        assert!(entries.iter().all(|e| e.cf != CF_RAFT_LOG && e.key != META_HARD_STATE));
        let applied = entries.iter().find(|e| e.key == META_APPLIED_INDEX).unwrap();
        assert_eq!(applied.class, Class::NotRestored);
        assert_eq!(applied.value, 9u64.to_be_bytes());
    }

    #[test]
    fn a_file_writer_dump_reads_back_and_refuses_foreign_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.dump");
        let mut w = FileWriter::create(&path).unwrap();
        w.put(CF_KV_REV, &Revision::new(3, 0).to_bytes(), b"Lk").unwrap();
        w.put(CF_META, META_CURRENT_REV, &3u64.to_be_bytes()).unwrap();
        assert!(w.put(CF_META, META_LOCAL_ID, b"me").is_err());
        let written = w.finish().unwrap();
        assert_eq!(verify(&path).unwrap(), written);
        assert_eq!(written.records, 2);
    }

    #[test]
    fn truncated_and_corrupted_dumps_are_refused() {
        let (_dir, src) = source();
        let bytes = dump_of(&src);
        for cut in [1, 32, 33, bytes.len() / 2, bytes.len() - 17] {
            assert!(read_all(&bytes[..bytes.len() - cut]).is_err(), "cut {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 3] ^= 1;
        assert!(read_all(&flipped).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read_all(&longer).unwrap_err().to_string().contains("after the checksum"));
    }

    #[test]
    fn foreign_local_and_undecodable_records_are_refused_without_panic() {
        let good = index_key(b"k", Revision::new(3, 0));
        assert_eq!(read_all(&with_record(CF_KV_INDEX, &good)).unwrap().len(), 1);
        for (cf, key) in [
            (CF_META, b"local/member_id".as_slice()),
            (CF_META, b"someone/else's".as_slice()),
            (CF_RAFT_LOG, 1u64.to_be_bytes().as_slice()),
            ("nowhere", b"k".as_slice()),
            (CF_KV_INDEX, b"short".as_slice()),
            (CF_KV_INDEX, &good[..good.len() - 1]),
            (CF_KV_REV, b"0123456".as_slice()),
        ] {
            let err = read_all(&with_record(cf, key)).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{cf} {key:?}: {err}");
        }
    }

    #[test]
    fn install_replaces_carried_state_and_keeps_local_records() {
        let (_src_dir, src) = source();
        let dst_dir = tempfile::tempdir().unwrap();
        let dst = Database::open(dst_dir.path()).unwrap();
        let mut b = WriteBatch::default();
        b.put_cf(dst.cf(CF_KV_INDEX), index_key(b"stale", Revision::new(9, 0)), b"x");
        b.put_cf(dst.cf(CF_META), META_LOCAL_ID, b"me");
        b.put_cf(dst.cf(CF_RAFT_LOG), 3u64.to_be_bytes(), b"old entry");
        dst.write(b, false).unwrap();
        std::fs::create_dir_all(dst.dump_dir()).unwrap();
        let file = dst.dump_dir().join("in.dump");
        File::create(&file).unwrap().write_all(&dump_of(&src)).unwrap();

        let installed = install(&dst, &file, Install::Snapshot, &[(META_HARD_STATE, b"new".to_vec())]).unwrap();
        assert_eq!(installed, 4002);
        let db = dst.db();
        assert_eq!(
            db.get_cf(dst.cf(CF_KV_INDEX), index_key(b"stale", Revision::new(9, 0))).unwrap(),
            None
        );
        assert_eq!(
            db.get_cf(dst.cf(CF_KV_INDEX), index_key(b"key-01999", Revision::new(2001, 0)))
                .unwrap(),
            Some(vec![7u8; 100])
        );
        assert_eq!(dst.get_meta_u64(META_APPLIED_INDEX).unwrap(), Some(9));
        assert_eq!(dst.get_meta(META_LOCAL_ID).unwrap().as_deref(), Some(&b"me"[..]));
        assert_eq!(dst.get_meta(META_HARD_STATE).unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(db.get_cf(dst.cf(CF_RAFT_LOG), 3u64.to_be_bytes()).unwrap(), None);
        assert_eq!(dst.get_meta(META_DUMP_INSTALL).unwrap(), None);
        assert!(!file.exists(), "an installed snapshot dump is removed");
    }

    #[test]
    fn an_interrupted_install_is_finished_on_open() {
        let (_src_dir, src) = source();
        let dst_dir = tempfile::tempdir().unwrap();
        let file = dst_dir.path().join("in.dump");
        File::create(&file).unwrap().write_all(&dump_of(&src)).unwrap();
        {
            let dst = Database::open(&dst_dir.path().join("member")).unwrap();
            let mut b = WriteBatch::default();
            // What the first write of an install leaves, and a stale record.
            b.put_cf(dst.cf(CF_META), META_DUMP_INSTALL, encode_marker(&file, Install::Restore, &[]));
            b.put_cf(dst.cf(CF_KV_INDEX), index_key(b"stale", Revision::new(9, 0)), b"x");
            dst.write(b, true).unwrap();
        }
        let dst = Database::open(&dst_dir.path().join("member")).unwrap();
        assert_eq!(dst.get_meta(META_DUMP_INSTALL).unwrap(), None);
        assert_eq!(dst.get_meta_u64(META_CURRENT_REV).unwrap(), Some(2001));
        assert_eq!(
            dst.get_meta(META_APPLIED_INDEX).unwrap(),
            None,
            "a restore does not take the old applied index"
        );
        assert_eq!(
            dst.db()
                .get_cf(dst.cf(CF_KV_INDEX), index_key(b"stale", Revision::new(9, 0)))
                .unwrap(),
            None
        );
        assert!(file.exists(), "a restored backup file stays");
    }
}
