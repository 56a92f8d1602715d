//! Raft snapshots are dumps (`storage::dump`) moved out of band, as etcd
//! sends its database after the Raft message: the raft-rs `Snapshot` keeps
//! its metadata and carries in `data` only a [`DumpRef`] naming the dump.
//! The leader writes the dump to a file under the data dir, the peer
//! transport streams that file after the message, and the receiver stages
//! it under its own data dir and checks it in full before Raft sees the
//! message; installing then reads it from there. No step holds the state in
//! memory.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use raft::eraftpb::Snapshot;
use rocksdb::Snapshot as DbSnapshot;

use crate::error::{Error, Result};
use crate::storage::dump::{self, Install, SHA_BYTES};
use crate::storage::schema::{META_CONF_STATE, META_HARD_STATE, META_TRUNCATED};
use crate::storage::Database;

/// What a Raft snapshot message carries in place of the state: which dump,
/// and what it must be, so the receiver can tell a dump that arrived whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpRef {
    pub index: u64,
    pub len: u64,
    pub sha256: [u8; 32],
}

const REF_TAG: &[u8; 8] = b"cairnref";
const REF_BYTES: usize = 8 + 8 + 8 + 32;

impl DumpRef {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REF_BYTES);
        out.extend_from_slice(REF_TAG);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.sha256);
        out
    }

    pub fn decode(data: &[u8]) -> Result<DumpRef> {
        let bad = || Error::Corrupt("raft snapshot does not name a dump".into());
        if data.len() != REF_BYTES || !data.starts_with(REF_TAG) {
            return Err(bad());
        }
        let u64_at = |at: usize| data.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
        Ok(DumpRef {
            index: u64_at(8).ok_or_else(bad)?,
            len: u64_at(16).ok_or_else(bad)?,
            sha256: data.get(24..).and_then(|b| b.try_into().ok()).ok_or_else(bad)?,
        })
    }
}

/// Where a leader keeps the dump it sends.
pub fn outgoing_path(dumps: &Path, index: u64) -> PathBuf {
    dumps.join(format!("out-{index:016x}.dump"))
}

/// Where a received dump waits, checked, for Raft to install it.
pub fn incoming_path(dumps: &Path, index: u64) -> PathBuf {
    dumps.join(format!("in-{index:016x}.dump"))
}

/// Where a dump being received is written until it is checked.
pub fn partial_path(dumps: &Path, index: u64) -> PathBuf {
    dumps.join(format!("in-{index:016x}.partial"))
}

/// Writes the dump of what `snap` sees, as of applied `index`, to the
/// outgoing file.
pub fn build_to_file(engine: &Database, snap: &DbSnapshot<'_>, index: u64) -> Result<(DumpRef, PathBuf)> {
    let dumps = engine.dump_dir();
    std::fs::create_dir_all(&dumps)?;
    let path = outgoing_path(&dumps, index);
    let partial = path.with_extension("partial");
    let mut out = BufWriter::new(File::create(&partial)?);
    let written = dump::write(engine, snap, |chunk, _| {
        out.write_all(&chunk)?;
        Ok(true)
    })?
    .ok_or_else(|| Error::Corrupt("dump write stopped".into()))?;
    out.into_inner().map_err(|e| Error::Io(e.into_error()))?.sync_all()?;
    std::fs::rename(&partial, &path)?;
    let reference = DumpRef {
        index,
        len: written.len,
        sha256: written.sha256,
    };
    Ok((reference, path))
}

/// Checks a received dump in full against the message's reference and
/// moves it to where [`install`] finds it. Blocking.
pub fn accept_received(dumps: &Path, reference: &DumpRef) -> Result<()> {
    let partial = partial_path(dumps, reference.index);
    let checked = dump::verify(&partial).and_then(|written| {
        if written.len == reference.len && written.sha256 == reference.sha256 {
            Ok(())
        } else {
            Err(Error::Corrupt("received dump is not the one the snapshot names".into()))
        }
    });
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, incoming_path(dumps, reference.index))?;
    Ok(())
}

/// Removes received dumps other than the one of `index`: left over from
/// transfers Raft did not take.
pub fn remove_stale_received(dumps: &Path, index: u64) {
    let keep = [incoming_path(dumps, index), partial_path(dumps, index)];
    let Ok(entries) = std::fs::read_dir(dumps) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("in-") && !keep.contains(&path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Replaces the replicated state with the received dump `snapshot` names
/// and resets the log to start after it; `hard_state` is written with the
/// last write. Durable when it returns.
pub fn install(engine: &Database, snapshot: &Snapshot, hard_state: &raft::eraftpb::HardState) -> Result<()> {
    let meta = snapshot.get_metadata();
    let reference = DumpRef::decode(&snapshot.data)?;
    if reference.index != meta.index {
        return Err(Error::Corrupt("raft snapshot names the dump of another index".into()));
    }
    let path = incoming_path(&engine.dump_dir(), reference.index);
    let mut f = File::open(&path)?;
    let len = f.metadata()?.len();
    let mut sha256 = [0u8; SHA_BYTES as usize];
    f.seek(SeekFrom::Start(len.saturating_sub(SHA_BYTES)))?;
    f.read_exact(&mut sha256)?;
    if len != reference.len || sha256 != reference.sha256 {
        return Err(Error::Corrupt("staged dump is not the one the snapshot names".into()));
    }
    let mut truncated = meta.index.to_be_bytes().to_vec();
    truncated.extend_from_slice(&meta.term.to_be_bytes());
    let finish = [
        (META_TRUNCATED, truncated),
        (META_CONF_STATE, encode(meta.get_conf_state())?),
        (META_HARD_STATE, encode(hard_state)?),
    ];
    dump::install(engine, &path, Install::Snapshot, &finish)?;
    Ok(())
}

fn encode(m: &impl protobuf::Message) -> Result<Vec<u8>> {
    m.write_to_bytes().map_err(|e| Error::Corrupt(e.to_string()))
}

/// Hands the leader's dump for `snapshot` to `dst` as the transport would.
#[cfg(test)]
pub fn hand_over(src: &Database, dst: &Database, snapshot: &Snapshot) {
    let reference = DumpRef::decode(&snapshot.data).unwrap();
    std::fs::create_dir_all(dst.dump_dir()).unwrap();
    std::fs::copy(
        outgoing_path(&src.dump_dir(), reference.index),
        partial_path(&dst.dump_dir(), reference.index),
    )
    .unwrap();
    accept_received(&dst.dump_dir(), &reference).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_anything_else_is_refused() {
        let r = DumpRef {
            index: 7,
            len: 1056,
            sha256: [3; 32],
        };
        assert_eq!(DumpRef::decode(&r.encode()).unwrap(), r);
        assert!(DumpRef::decode(&r.encode()[1..]).is_err());
        assert!(DumpRef::decode(b"").is_err());
        let mut other = r.encode();
        other[0] ^= 1;
        assert!(DumpRef::decode(&other).is_err());
    }

    #[test]
    fn a_received_dump_that_differs_from_its_reference_is_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Database::open(dir.path()).unwrap();
        let (reference, path) = build_to_file(&engine, &engine.db().snapshot(), 4).unwrap();
        let dumps = dir.path().join("receiver");
        std::fs::create_dir_all(&dumps).unwrap();
        std::fs::copy(&path, partial_path(&dumps, 4)).unwrap();
        let wrong = DumpRef {
            sha256: [0; 32],
            ..reference
        };
        assert!(accept_received(&dumps, &wrong).is_err());
        assert!(!partial_path(&dumps, 4).exists());
        std::fs::copy(&path, partial_path(&dumps, 4)).unwrap();
        accept_received(&dumps, &reference).unwrap();
        assert!(incoming_path(&dumps, 4).exists());
    }
}
