//! Writing: pages appended in id order as they fill; the meta pages, which
//! name the root, are written last at the front of the file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::layout::{
    page_header, Meta, BRANCH_PAGE, BUCKET_HEADER, BUCKET_LEAF, ELEMENT, FREELIST_PAGE, LEAF_PAGE, MAX_KEY, MAX_VALUE, META_PAGE,
    PAGE_HEADER,
};
use crate::{Error, Result};

/// Where pages go: the file, and the next free page id.
struct Pages {
    out: BufWriter<File>,
    page_size: usize,
    next: u64,
}

impl Pages {
    /// Writes one page (more than one page long when it overflows) made of
    /// a header and `body`, and returns its id.
    fn write(&mut self, flags: u16, count: usize, body: &[u8]) -> Result<u64> {
        let count = u16::try_from(count).map_err(|_| Error::Invalid("more elements than one page can count".into()))?;
        let pages = (PAGE_HEADER + body.len()).div_ceil(self.page_size);
        let overflow = u32::try_from(pages - 1).map_err(|_| Error::Invalid("page too large".into()))?;
        let id = self.next;
        self.out.write_all(&page_header(id, flags, count, overflow))?;
        self.out.write_all(body)?;
        let padding = pages * self.page_size - PAGE_HEADER - body.len();
        self.out.write_all(&vec![0u8; padding])?;
        self.next += pages as u64;
        Ok(id)
    }
}

/// Elements of the page being filled.
#[derive(Default)]
struct Pending {
    /// (flags or child pgid, key, value); a branch's value is empty.
    elements: Vec<(u64, Vec<u8>, Vec<u8>)>,
    bytes: usize,
}

impl Pending {
    fn size_with(&self, key: usize, value: usize) -> usize {
        PAGE_HEADER + (self.elements.len() + 1) * ELEMENT + self.bytes + key + value
    }

    fn push(&mut self, tag: u64, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.elements.push((tag, key, value));
    }

    /// Writes the pending elements as one page; returns its first key and id.
    fn flush(&mut self, pages: &mut Pages, branch: bool) -> Result<(Vec<u8>, u64)> {
        let elements = std::mem::take(&mut self.elements);
        self.bytes = 0;
        let n = elements.len();
        let mut table = Vec::with_capacity(n * ELEMENT);
        let mut data = Vec::new();
        for (i, (tag, key, value)) in elements.iter().enumerate() {
            // From this element to its key: the rest of the table, then
            // the data written so far.
            let pos = u32::try_from((n - i) * ELEMENT + data.len()).map_err(|_| Error::Invalid("page too large".into()))?;
            if branch {
                table.extend_from_slice(&pos.to_le_bytes());
                table.extend_from_slice(&(key.len() as u32).to_le_bytes());
                table.extend_from_slice(&tag.to_le_bytes());
            } else {
                table.extend_from_slice(&(*tag as u32).to_le_bytes());
                table.extend_from_slice(&pos.to_le_bytes());
                table.extend_from_slice(&(key.len() as u32).to_le_bytes());
                table.extend_from_slice(&(value.len() as u32).to_le_bytes());
            }
            data.extend_from_slice(key);
            data.extend_from_slice(value);
        }
        table.extend_from_slice(&data);
        let id = pages.write(if branch { BRANCH_PAGE } else { LEAF_PAGE }, n, &table)?;
        let first = elements.into_iter().next().map(|(_, k, _)| k).unwrap_or_default();
        Ok((first, id))
    }
}

/// One B+tree being written: its current leaf and the leaves written.
#[derive(Default)]
struct Tree {
    leaf: Pending,
    /// (first key, page id) of every leaf written so far.
    leaves: Vec<(Vec<u8>, u64)>,
    last: Option<Vec<u8>>,
}

impl Tree {
    fn put(&mut self, pages: &mut Pages, flags: u32, key: &[u8], value: &[u8]) -> Result<()> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(Error::Invalid(format!("key of {} bytes", key.len())));
        }
        if value.len() > MAX_VALUE {
            return Err(Error::Invalid(format!("value of {} bytes", value.len())));
        }
        if self.last.as_deref().is_some_and(|last| last >= key) {
            return Err(Error::Invalid("keys must be put in increasing order".into()));
        }
        self.last = Some(key.to_vec());
        if !self.leaf.elements.is_empty() && self.leaf.size_with(key.len(), value.len()) > pages.page_size {
            let written = self.leaf.flush(pages, false)?;
            self.leaves.push(written);
        }
        self.leaf.push(flags as u64, key.to_vec(), value.to_vec());
        Ok(())
    }

    /// Writes what is pending and the branch levels; returns the root's id.
    fn finish(mut self, pages: &mut Pages) -> Result<u64> {
        if !self.leaf.elements.is_empty() || self.leaves.is_empty() {
            let written = self.leaf.flush(pages, false)?;
            self.leaves.push(written);
        }
        let mut level = self.leaves;
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut branch = Pending::default();
            for (key, child) in level {
                if !branch.elements.is_empty() && branch.size_with(key.len(), 0) > pages.page_size {
                    next.push(branch.flush(pages, true)?);
                }
                branch.push(child, key, Vec::new());
            }
            next.push(branch.flush(pages, true)?);
            level = next;
        }
        Ok(level[0].1)
    }
}

/// Writes a new database file bucket by bucket.
pub struct Writer {
    pages: Pages,
    file: File,
    /// (name, root page) of every top-level bucket written.
    buckets: Vec<(Vec<u8>, u64)>,
}

impl Writer {
    /// Creates (or truncates) `path`; pages are `page_size` bytes.
    pub fn create(path: &Path, page_size: u32) -> Result<Writer> {
        if !page_size.is_power_of_two() || page_size < 1024 {
            return Err(Error::Invalid(format!("page size {page_size}")));
        }
        let file = File::create(path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file.try_clone()?);
        // The meta pages' place; they are written once the root is known.
        out.write_all(&vec![0u8; 2 * page_size as usize])?;
        Ok(Writer {
            pages: Pages {
                out,
                page_size: page_size as usize,
                next: 2,
            },
            file,
            buckets: Vec::new(),
        })
    }

    /// Starts the top-level bucket `name`; names must come in increasing
    /// order, and a bucket must be finished before the next one starts.
    pub fn bucket(&mut self, name: &[u8]) -> Result<BucketWriter<'_>> {
        if self.buckets.last().is_some_and(|(last, _)| last.as_slice() >= name) {
            return Err(Error::Invalid("buckets must be written in increasing name order".into()));
        }
        if name.is_empty() || name.len() > MAX_KEY {
            return Err(Error::Invalid(format!("bucket name of {} bytes", name.len())));
        }
        Ok(BucketWriter {
            writer: self,
            name: name.to_vec(),
            tree: Tree::default(),
        })
    }

    /// Writes the root bucket, an empty freelist and the meta pages, syncs,
    /// and returns the file's length.
    pub fn finish(mut self) -> Result<u64> {
        let mut root = Tree::default();
        for (name, page) in std::mem::take(&mut self.buckets) {
            let mut value = [0u8; BUCKET_HEADER];
            value[..8].copy_from_slice(&page.to_le_bytes());
            root.put(&mut self.pages, BUCKET_LEAF, &name, &value)?;
        }
        let root = root.finish(&mut self.pages)?;
        let freelist = self.pages.write(FREELIST_PAGE, 0, &[])?;
        self.pages.out.flush()?;
        let page_size = self.pages.page_size;
        for id in 0..2u64 {
            let meta = Meta {
                page_size: page_size as u32,
                flags: 0,
                root,
                root_sequence: 0,
                freelist,
                pgid: self.pages.next,
                // bbolt writes transaction t's meta to page t % 2.
                txid: 2 - id,
            };
            let mut page = vec![0u8; page_size];
            page[..PAGE_HEADER].copy_from_slice(&page_header(id, META_PAGE, 0, 0));
            page[PAGE_HEADER..PAGE_HEADER + crate::layout::META].copy_from_slice(&meta.encode());
            self.file.write_all_at(&page, id * page_size as u64)?;
        }
        self.file.sync_all()?;
        Ok(self.pages.next * page_size as u64)
    }
}

/// Takes one bucket's entries in increasing key order.
pub struct BucketWriter<'a> {
    writer: &'a mut Writer,
    name: Vec<u8>,
    tree: Tree,
}

impl BucketWriter<'_> {
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.put(&mut self.writer.pages, 0, key, value)
    }

    /// Writes the bucket's last pages; it is in the database from now on.
    pub fn finish(self) -> Result<()> {
        let root = self.tree.finish(&mut self.writer.pages)?;
        self.writer.buckets.push((self.name, root));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bucket, Db};

    fn entries(db: &Db, bucket: &Bucket) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut c = db.cursor(bucket).unwrap();
        let mut out = Vec::new();
        while let Some(e) = c.next_entry().unwrap() {
            out.push((e.key, e.value));
        }
        out
    }

    #[test]
    fn written_buckets_read_back_in_order_with_large_values_and_deep_trees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut w = Writer::create(&path, 4096).unwrap();
        w.bucket(b"empty").unwrap().finish().unwrap();
        let mut keys = w.bucket(b"key").unwrap();
        let mut want = Vec::new();
        for i in 0..60_000u32 {
            let value = if i % 10_000 == 7 {
                vec![i as u8; 3 * 4096 + 5]
            } else {
                i.to_be_bytes().repeat(3)
            };
            keys.put(format!("k{i:08}").as_bytes(), &value).unwrap();
            want.push((format!("k{i:08}").into_bytes(), value));
        }
        keys.finish().unwrap();
        w.bucket(b"meta").unwrap().finish().unwrap();
        let len = w.finish().unwrap();
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());
        assert_eq!(len % 4096, 0);

        let db = Db::open(&path, None).unwrap();
        assert_eq!(
            db.bucket_names().unwrap(),
            vec![b"empty".to_vec(), b"key".to_vec(), b"meta".to_vec()]
        );
        assert_eq!(entries(&db, &db.bucket(b"key").unwrap().unwrap()), want);
        assert!(entries(&db, &db.bucket(b"empty").unwrap().unwrap()).is_empty());
        assert_eq!(db.bucket(b"nothing").unwrap(), None);
    }

    #[test]
    fn keys_and_buckets_out_of_order_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::create(&dir.path().join("db"), 4096).unwrap();
        let mut b = w.bucket(b"b").unwrap();
        b.put(b"2", b"").unwrap();
        assert!(b.put(b"1", b"").is_err());
        assert!(b.put(b"2", b"").is_err());
        assert!(b.put(b"", b"").is_err());
        b.finish().unwrap();
        assert!(w.bucket(b"a").is_err());
    }

    #[test]
    fn damaged_files_are_refused_without_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut w = Writer::create(&path, 4096).unwrap();
        let mut b = w.bucket(b"key").unwrap();
        for i in 0..5000u32 {
            b.put(&i.to_be_bytes(), b"value").unwrap();
        }
        b.finish().unwrap();
        w.finish().unwrap();
        let good = std::fs::read(&path).unwrap();
        let read_all = |bytes: &[u8]| -> crate::Result<usize> {
            std::fs::write(dir.path().join("bad"), bytes).unwrap();
            let db = Db::open(&dir.path().join("bad"), None)?;
            let mut c = db.cursor(&db.bucket(b"key")?.ok_or(crate::Error::Corrupt("gone".into()))?)?;
            let mut n = 0;
            while c.next_entry()?.is_some() {
                n += 1;
            }
            Ok(n)
        };
        assert_eq!(read_all(&good).unwrap(), 5000);
        assert!(matches!(read_all(&good[..good.len() / 2]), Err(crate::Error::Corrupt(_))));
        assert!(matches!(read_all(&[7u8; 10_000]), Err(crate::Error::NotBolt(_))));
        // Every byte of the tree flipped in turn: an error or a different
        // reading, never a panic.
        for at in (2 * 4096..good.len()).step_by(97) {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            let _ = read_all(&bad);
        }
    }
}
