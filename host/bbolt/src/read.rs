//! Reading: pages fetched one at a time with positioned reads.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::layout::{
    u16_at, u32_at, u64_at, Meta, BRANCH_PAGE, BUCKET_HEADER, BUCKET_LEAF, DEFAULT_PAGE_SIZE, ELEMENT, LEAF_PAGE, PAGE_HEADER,
};
use crate::{Error, Result};

/// Deeper trees than this are a page cycle, not a database (a full tree of
/// 4 KiB pages is a handful of levels deep).
const MAX_DEPTH: usize = 32;

/// An open database file.
pub struct Db {
    file: File,
    /// Bytes of the file that belong to the database (a trailer that
    /// follows it, like etcd's checksum, is not read).
    len: u64,
    meta: Meta,
}

/// A key and its value in a bucket; `is_bucket` marks a nested bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub is_bucket: bool,
}

/// Where a bucket's tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bucket {
    Root(u64),
    /// The bucket's only page, stored in its parent's value.
    Inline(Vec<u8>),
}

impl Bucket {
    /// Decodes a bucket value (what a leaf element flagged as a bucket holds).
    pub fn from_value(value: &[u8]) -> Result<Bucket> {
        let root = u64_at(value, 0).map_err(|_| Error::Corrupt("bucket value shorter than its header".into()))?;
        if root != 0 {
            return Ok(Bucket::Root(root));
        }
        if value.len() < BUCKET_HEADER + PAGE_HEADER {
            return Err(Error::Corrupt("inline bucket shorter than a page header".into()));
        }
        Ok(Bucket::Inline(value[BUCKET_HEADER..].to_vec()))
    }
}

/// One page (with its overflow) and how it is read.
struct Page {
    bytes: Vec<u8>,
}

impl Page {
    fn flags(&self) -> Result<u16> {
        u16_at(&self.bytes, 8)
    }

    fn count(&self) -> Result<usize> {
        Ok(u16_at(&self.bytes, 10)? as usize)
    }

    fn element(&self, i: usize) -> Result<usize> {
        let at = PAGE_HEADER + i * ELEMENT;
        if at + ELEMENT > self.bytes.len() {
            return Err(Error::Corrupt("element table runs past its page".into()));
        }
        Ok(at)
    }

    fn slice(&self, from: usize, len: usize) -> Result<&[u8]> {
        from.checked_add(len)
            .and_then(|end| self.bytes.get(from..end))
            .ok_or_else(|| Error::Corrupt("an element's key or value runs past its page".into()))
    }

    fn leaf(&self, i: usize) -> Result<Entry> {
        let at = self.element(i)?;
        let flags = u32_at(&self.bytes, at)?;
        let pos = u32_at(&self.bytes, at + 4)? as usize;
        let ksize = u32_at(&self.bytes, at + 8)? as usize;
        let vsize = u32_at(&self.bytes, at + 12)? as usize;
        let key = self.slice(at + pos, ksize)?.to_vec();
        let value = self.slice(at + pos + ksize, vsize)?.to_vec();
        Ok(Entry {
            key,
            value,
            is_bucket: flags & BUCKET_LEAF != 0,
        })
    }

    fn branch_child(&self, i: usize) -> Result<u64> {
        let at = self.element(i)?;
        u64_at(&self.bytes, at + 8)
    }
}

impl Db {
    /// Opens the database in the first `len` bytes of `path` (the whole
    /// file when `None`), choosing the valid meta page with the higher
    /// transaction id.
    pub fn open(path: &Path, len: Option<u64>) -> Result<Db> {
        let file = File::open(path)?;
        let len = match len {
            Some(len) => len,
            None => file.metadata()?.len(),
        };
        let read_meta = |offset: u64| -> std::result::Result<Meta, String> {
            let mut page = vec![0u8; PAGE_HEADER + crate::layout::META];
            if offset + page.len() as u64 > len {
                return Err("file shorter than two meta pages".into());
            }
            file.read_exact_at(&mut page, offset).map_err(|e| e.to_string())?;
            Meta::parse(&page)
        };
        let first = read_meta(0);
        // The second meta page sits one page in; its size comes from the
        // first meta when that one is readable.
        let page_size = match &first {
            Ok(m) => m.page_size,
            Err(_) => DEFAULT_PAGE_SIZE,
        };
        let second = read_meta(page_size as u64);
        let meta = match (first, second) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => m,
            (Err(a), Err(_)) => return Err(Error::NotBolt(a)),
        };
        let db = Db { file, len, meta };
        if meta.pgid < 2 || meta.pgid.checked_mul(meta.page_size as u64).is_none_or(|end| end > len) {
            return Err(Error::Corrupt(format!(
                "the meta page counts {} pages of {} bytes, the file holds {len} bytes",
                meta.pgid, meta.page_size
            )));
        }
        Ok(db)
    }

    pub fn page_size(&self) -> u32 {
        self.meta.page_size
    }

    /// Pages the database uses; times the page size, its size in bytes.
    pub fn pages(&self) -> u64 {
        self.meta.pgid
    }

    pub fn txid(&self) -> u64 {
        self.meta.txid
    }

    fn read_page(&self, id: u64) -> Result<Page> {
        if id < 2 || id >= self.meta.pgid {
            return Err(Error::Corrupt(format!("page {id} is outside the database")));
        }
        let ps = self.meta.page_size as u64;
        let offset = id * ps;
        let mut header = [0u8; PAGE_HEADER];
        self.file.read_exact_at(&mut header, offset)?;
        let stored = u64_at(&header, 0)?;
        if stored != id {
            return Err(Error::Corrupt(format!("page {id} says it is page {stored}")));
        }
        let overflow = u32_at(&header, 12)? as u64;
        if id + overflow >= self.meta.pgid || offset + (overflow + 1) * ps > self.len {
            return Err(Error::Corrupt(format!("page {id} overflows past the database")));
        }
        let mut bytes = vec![0u8; ((overflow + 1) * ps) as usize];
        self.file.read_exact_at(&mut bytes, offset)?;
        Ok(Page { bytes })
    }

    /// The root bucket, which holds the top-level buckets.
    pub fn root(&self) -> Bucket {
        Bucket::Root(self.meta.root)
    }

    /// A cursor over `bucket`'s entries in key order.
    pub fn cursor(&self, bucket: &Bucket) -> Result<Cursor<'_>> {
        let page = match bucket {
            Bucket::Root(id) => self.read_page(*id)?,
            Bucket::Inline(bytes) => Page { bytes: bytes.clone() },
        };
        let mut cursor = Cursor {
            db: self,
            stack: Vec::new(),
            last: None,
        };
        cursor.push(page)?;
        Ok(cursor)
    }

    /// The top-level bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>> {
        let mut cursor = self.cursor(&self.root())?;
        while let Some(entry) = cursor.next_entry()? {
            if entry.key == name {
                if !entry.is_bucket {
                    return Err(Error::Corrupt(format!(
                        "{:?} is a key, not a bucket",
                        String::from_utf8_lossy(name)
                    )));
                }
                return Bucket::from_value(&entry.value).map(Some);
            }
            if entry.key.as_slice() > name {
                break;
            }
        }
        Ok(None)
    }

    /// The names of the top-level buckets, in order.
    pub fn bucket_names(&self) -> Result<Vec<Vec<u8>>> {
        let mut cursor = self.cursor(&self.root())?;
        let mut names = Vec::new();
        while let Some(entry) = cursor.next_entry()? {
            if entry.is_bucket {
                names.push(entry.key);
            }
        }
        Ok(names)
    }
}

/// Walks a bucket's tree depth first, holding one page per level, and
/// checks that keys come in strictly increasing order.
pub struct Cursor<'a> {
    db: &'a Db,
    stack: Vec<(Page, usize)>,
    last: Option<Vec<u8>>,
}

impl Cursor<'_> {
    fn push(&mut self, page: Page) -> Result<()> {
        let flags = page.flags()?;
        if flags & (BRANCH_PAGE | LEAF_PAGE) == 0 {
            return Err(Error::Corrupt(format!("a bucket's tree holds a page of type {flags:#x}")));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(Error::Corrupt("a bucket's tree is deeper than any bbolt builds".into()));
        }
        self.stack.push((page, 0));
        Ok(())
    }

    /// The next entry, or `None` after the last.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        loop {
            let Some((page, i)) = self.stack.last_mut() else {
                return Ok(None);
            };
            if *i >= page.count()? {
                self.stack.pop();
                continue;
            }
            let at = *i;
            *i += 1;
            if page.flags()? & BRANCH_PAGE != 0 {
                let child = page.branch_child(at)?;
                let child = self.db.read_page(child)?;
                self.push(child)?;
                continue;
            }
            let entry = page.leaf(at)?;
            if self.last.as_ref().is_some_and(|last| *last >= entry.key) {
                return Err(Error::Corrupt("keys out of order".into()));
            }
            self.last = Some(entry.key.clone());
            return Ok(Some(entry));
        }
    }
}
