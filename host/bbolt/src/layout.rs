//! Byte layout of pages, elements and meta records (bbolt's version 2).

use crate::{Error, Result};

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
/// etcd runs on hosts with 4 KiB pages; bbolt uses the OS page size.
pub const DEFAULT_PAGE_SIZE: u32 = 4096;

/// id u64, flags u16, count u16, overflow u32.
pub const PAGE_HEADER: usize = 16;
/// Leaf: flags u32, pos u32, ksize u32, vsize u32. Branch: pos u32,
/// ksize u32, pgid u64. `pos` counts from the element itself.
pub const ELEMENT: usize = 16;
/// A bucket's value: root pgid u64 (0 when inline), sequence u64.
pub const BUCKET_HEADER: usize = 16;
/// magic, version, page size, flags (u32 each), root bucket (16), freelist,
/// high-water pgid, txid, checksum (u64 each).
pub const META: usize = 64;
/// The checksum covers the meta record up to itself.
pub const META_CHECKED: usize = 56;

pub const BRANCH_PAGE: u16 = 0x01;
pub const LEAF_PAGE: u16 = 0x02;
pub const META_PAGE: u16 = 0x04;
pub const FREELIST_PAGE: u16 = 0x10;
/// A leaf element whose value is a bucket.
pub const BUCKET_LEAF: u32 = 0x01;

/// bbolt's limits on what one element may hold.
pub const MAX_KEY: usize = 32768;
pub const MAX_VALUE: usize = (1 << 31) - 2;

/// 64-bit FNV-1a, bbolt's meta checksum.
pub fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub fn u16_at(b: &[u8], off: usize) -> Result<u16> {
    let raw = b.get(off..off + 2).ok_or_else(|| short(off))?;
    Ok(u16::from_le_bytes([raw[0], raw[1]]))
}

pub fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    let raw: [u8; 4] = b.get(off..off + 4).and_then(|r| r.try_into().ok()).ok_or_else(|| short(off))?;
    Ok(u32::from_le_bytes(raw))
}

pub fn u64_at(b: &[u8], off: usize) -> Result<u64> {
    let raw: [u8; 8] = b.get(off..off + 8).and_then(|r| r.try_into().ok()).ok_or_else(|| short(off))?;
    Ok(u64::from_le_bytes(raw))
}

fn short(off: usize) -> Error {
    Error::Corrupt(format!("a field at byte {off} lies outside its page"))
}

/// A meta record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    pub root: u64,
    pub root_sequence: u64,
    pub freelist: u64,
    /// Pages in use: every page id is below it.
    pub pgid: u64,
    pub txid: u64,
}

impl Meta {
    /// Parses the meta record of a meta page (`page` starts at the page
    /// header), checking magic, version and checksum.
    pub fn parse(page: &[u8]) -> std::result::Result<Meta, String> {
        let m = page.get(PAGE_HEADER..PAGE_HEADER + META).ok_or("file shorter than a meta page")?;
        let field = |off: usize| u64_at(m, off).map_err(|e| e.to_string());
        let word = |off: usize| u32_at(m, off).map_err(|e| e.to_string());
        if word(0)? != MAGIC {
            return Err("magic number mismatch".into());
        }
        let version = word(4)?;
        if version != VERSION {
            return Err(format!("version {version}, not {VERSION}"));
        }
        if field(META_CHECKED)? != fnv64a(&m[..META_CHECKED]) {
            return Err("meta checksum mismatch".into());
        }
        let meta = Meta {
            page_size: word(8)?,
            flags: word(12)?,
            root: field(16)?,
            root_sequence: field(24)?,
            freelist: field(32)?,
            pgid: field(40)?,
            txid: field(48)?,
        };
        if !meta.page_size.is_power_of_two() || meta.page_size < 512 {
            return Err(format!("page size {}", meta.page_size));
        }
        Ok(meta)
    }

    /// The meta record's bytes, checksum included.
    pub fn encode(&self) -> [u8; META] {
        let mut m = [0u8; META];
        m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        m[4..8].copy_from_slice(&VERSION.to_le_bytes());
        m[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        m[12..16].copy_from_slice(&self.flags.to_le_bytes());
        m[16..24].copy_from_slice(&self.root.to_le_bytes());
        m[24..32].copy_from_slice(&self.root_sequence.to_le_bytes());
        m[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        m[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        m[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv64a(&m[..META_CHECKED]);
        m[56..64].copy_from_slice(&sum.to_le_bytes());
        m
    }
}

/// A page header's bytes.
pub fn page_header(id: u64, flags: u16, count: u16, overflow: u32) -> [u8; PAGE_HEADER] {
    let mut h = [0u8; PAGE_HEADER];
    h[0..8].copy_from_slice(&id.to_le_bytes());
    h[8..10].copy_from_slice(&flags.to_le_bytes());
    h[10..12].copy_from_slice(&count.to_le_bytes());
    h[12..16].copy_from_slice(&overflow.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv64a_matches_the_reference_values() {
        assert_eq!(fnv64a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn meta_round_trips_and_a_flipped_bit_is_caught() {
        let meta = Meta {
            page_size: 4096,
            flags: 0,
            root: 3,
            root_sequence: 0,
            freelist: 2,
            pgid: 9,
            txid: 7,
        };
        let mut page = vec![0u8; 4096];
        page[PAGE_HEADER..PAGE_HEADER + META].copy_from_slice(&meta.encode());
        assert_eq!(Meta::parse(&page), Ok(meta));
        page[PAGE_HEADER + 20] ^= 1;
        assert_eq!(Meta::parse(&page), Err("meta checksum mismatch".to_string()));
    }
}
