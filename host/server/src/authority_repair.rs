//! Repairs the `:authority` pseudo-header that etcd's own Go clients send.
//!
//! etcd's Go clients put things that are not an RFC 3986 authority into
//! `:authority`: etcdctl 3.4 sends the whole endpoint URL
//! (`http://127.0.0.1:2379`) for `endpoint status` and `endpoint hashkv`, and
//! clientv3 3.5 sends `#initially=[http://…]` on every request. Go's gRPC
//! server ignores the header; the Rust HTTP/2 stack under tonic rejects such a
//! request with a stream reset. To accept these clients unchanged, client
//! connections are read through [`AuthorityRepair`], which rewrites an invalid
//! authority into a valid placeholder of the same length before the HTTP/2
//! server sees it. Nothing reads the authority, so its value does not matter.
//!
//! Keeping the length keeps the HPACK dynamic table in step: the table's
//! eviction depends on entry sizes, and an entry inserted with the
//! placeholder is then referred to by index exactly as the client intends.
//! Everything else on the connection passes through untouched.
//!
//! A header block is buffered until its last CONTINUATION frame arrives, so
//! a client could otherwise make it grow without end; a block beyond
//! [`MAX_HEADER_BLOCK`] ends the connection instead.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use hpack::huffman::HuffmanDecoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The smallest frame size every HTTP/2 peer must accept.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// The HPACK table size in force until a client changes it (RFC 7541).
const DEFAULT_TABLE_SIZE: usize = 4_096;
const READ_CHUNK: usize = 16 * 1024;
/// The most header-block bytes buffered for one HEADERS frame and its
/// CONTINUATIONs. The HTTP/2 server behind refuses header lists far smaller
/// than this, so no request it would serve comes near it.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// HPACK's static table names (RFC 7541, appendix A), index 1 first. Only
/// the names matter here: their lengths count towards dynamic entries that
/// reuse them.
const STATIC_NAMES: [&str; 61] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

#[derive(Debug)]
struct Malformed;

/// The client's HPACK dynamic table as far as it matters here: names (to
/// recognise `:authority`) and entry sizes (to follow evictions).
struct HeaderTable {
    /// (is `:authority`, name length, entry size), newest first, as HPACK
    /// indexes them.
    entries: std::collections::VecDeque<(bool, usize, usize)>,
    size: usize,
    max_size: usize,
    huffman: HuffmanDecoder,
}

/// One decoded string literal: where its encoding sits in the block, and
/// its decoded bytes.
struct StringLiteral {
    start: usize,
    end: usize,
    value: Vec<u8>,
}

impl HeaderTable {
    fn new() -> Self {
        HeaderTable {
            entries: Default::default(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            huffman: HuffmanDecoder::new(),
        }
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some((_, _, size)) => self.size -= size,
                None => break,
            }
        }
    }

    fn insert(&mut self, is_authority: bool, name_len: usize, size: usize) {
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.entries.push_front((is_authority, name_len, size));
        self.size += size;
    }

    /// (is `:authority`, name length) of the entry at HPACK index `index`.
    fn name(&self, index: usize) -> Result<(bool, usize), Malformed> {
        match index {
            0 => Err(Malformed),
            1..=61 => Ok((index == 1, STATIC_NAMES[index - 1].len())),
            _ => {
                let &(is_authority, name_len, _) = self.entries.get(index - 62).ok_or(Malformed)?;
                Ok((is_authority, name_len))
            }
        }
    }

    fn read_int(block: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<usize, Malformed> {
        let mask = (1u16 << prefix_bits) as usize - 1;
        let first = *block.get(*pos).ok_or(Malformed)? as usize & mask;
        *pos += 1;
        if first < mask {
            return Ok(first);
        }
        let mut value = mask;
        let mut shift = 0u32;
        loop {
            let b = *block.get(*pos).ok_or(Malformed)?;
            *pos += 1;
            value = value
                .checked_add(((b & 0x7F) as usize).checked_shl(shift).ok_or(Malformed)?)
                .ok_or(Malformed)?;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 28 {
                return Err(Malformed);
            }
        }
    }

    fn read_string(&mut self, block: &[u8], pos: &mut usize) -> Result<StringLiteral, Malformed> {
        let start = *pos;
        let huffman = *block.get(*pos).ok_or(Malformed)? & 0x80 != 0;
        let len = Self::read_int(block, pos, 7)?;
        let end = pos.checked_add(len).filter(|&e| e <= block.len()).ok_or(Malformed)?;
        let raw = &block[*pos..end];
        let value = if huffman {
            self.huffman.decode(raw).map_err(|_| Malformed)?
        } else {
            raw.to_vec()
        };
        *pos = end;
        Ok(StringLiteral { start, end, value })
    }

    /// Walks one header block, keeping the table in step, and returns the
    /// block with every invalid authority replaced, or `None` when the block
    /// needs no change.
    fn repair_block(&mut self, block: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
        let mut fixes: Vec<(usize, usize, usize)> = Vec::new();
        let mut pos = 0;
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                // Indexed field: refers to an entry already repaired.
                Self::read_int(block, &mut pos, 7)?;
                continue;
            }
            if b & 0xE0 == 0x20 {
                let size = Self::read_int(block, &mut pos, 5)?;
                self.max_size = size;
                self.evict_to(size);
                continue;
            }
            let (indexing, prefix) = if b & 0xC0 == 0x40 { (true, 6) } else { (false, 4) };
            let index = Self::read_int(block, &mut pos, prefix)?;
            let (is_authority, name_len) = if index == 0 {
                let name = self.read_string(block, &mut pos)?;
                (name.value == b":authority", name.value.len())
            } else {
                self.name(index)?
            };
            let value = self.read_string(block, &mut pos)?;
            if is_authority && !value.value.is_empty() && http::uri::Authority::try_from(value.value.as_slice()).is_err() {
                fixes.push((value.start, value.end, value.value.len()));
            }
            if indexing {
                self.insert(is_authority, name_len, 32 + name_len + value.value.len());
            }
        }
        if fixes.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(block.len() + 8);
        let mut copied = 0;
        for (start, end, len) in fixes {
            out.extend_from_slice(&block[copied..start]);
            write_int(&mut out, len, 7, 0x00);
            out.resize(out.len() + len, b'a');
            copied = end;
        }
        out.extend_from_slice(&block[copied..]);
        Ok(Some(out))
    }
}

fn write_int(out: &mut Vec<u8>, value: usize, prefix_bits: u8, flags: u8) {
    let mask = (1usize << prefix_bits) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7F) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

enum Mode {
    Preface,
    Frames,
    /// Not HTTP/2 as expected, or a block could not be parsed: hand bytes
    /// over untouched and let the HTTP/2 server judge them.
    Passthrough,
}

/// A HEADERS frame waiting for its CONTINUATION frames.
struct PendingBlock {
    frames: BytesMut,
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// A client connection whose incoming HTTP/2 header blocks get their
/// `:authority` repaired. Writes pass straight through.
pub struct AuthorityRepair<S> {
    inner: S,
    incoming: BytesMut,
    ready: BytesMut,
    /// Bytes of a non-header frame still to hand over unexamined.
    passing: usize,
    mode: Mode,
    table: HeaderTable,
    pending: Option<PendingBlock>,
    eof: bool,
    /// A header block outgrew [`MAX_HEADER_BLOCK`]: the connection ends once
    /// the bytes before it have been handed over.
    refused: bool,
}

impl<S> AuthorityRepair<S> {
    pub fn new(inner: S) -> Self {
        AuthorityRepair {
            inner,
            incoming: BytesMut::with_capacity(READ_CHUNK),
            ready: BytesMut::new(),
            passing: 0,
            mode: Mode::Preface,
            table: HeaderTable::new(),
            pending: None,
            eof: false,
            refused: false,
        }
    }

    fn hand_over(&mut self, n: usize) {
        let bytes = self.incoming.split_to(n);
        self.ready.unsplit(bytes);
    }

    /// Moves every complete unit of `incoming` to `ready`.
    fn process(&mut self) {
        loop {
            if self.passing > 0 {
                let n = self.passing.min(self.incoming.len());
                if n == 0 {
                    return;
                }
                self.hand_over(n);
                self.passing -= n;
                continue;
            }
            match self.mode {
                Mode::Passthrough => {
                    let n = self.incoming.len();
                    if n > 0 {
                        self.hand_over(n);
                    }
                    return;
                }
                Mode::Preface => {
                    let n = self.incoming.len().min(PREFACE.len());
                    if self.incoming[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.hand_over(PREFACE.len());
                    self.mode = Mode::Frames;
                }
                Mode::Frames => {
                    if self.incoming.len() < FRAME_HEADER_LEN {
                        return;
                    }
                    let h = &self.incoming[..FRAME_HEADER_LEN];
                    let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
                    let kind = h[3];
                    if kind != TYPE_HEADERS && kind != TYPE_CONTINUATION && self.pending.is_none() {
                        self.hand_over(FRAME_HEADER_LEN);
                        self.passing = len;
                        continue;
                    }
                    if kind != TYPE_CONTINUATION {
                        if let Some(p) = self.pending.take() {
                            // A block cut short by another frame is the
                            // server's protocol error to report.
                            self.ready.unsplit(p.frames);
                            self.mode = Mode::Passthrough;
                            continue;
                        }
                    }
                    // Checked before the frame is buffered, so neither it
                    // nor the block can outgrow the bound.
                    let buffered = self.pending.as_ref().map_or(0, |p| p.block.len());
                    if buffered + len > MAX_HEADER_BLOCK {
                        self.pending = None;
                        self.refused = true;
                        return;
                    }
                    if self.incoming.len() < FRAME_HEADER_LEN + len {
                        return;
                    }
                    let frame = self.incoming.split_to(FRAME_HEADER_LEN + len);
                    if self.header_frame(frame).is_err() {
                        self.mode = Mode::Passthrough;
                    }
                }
            }
        }
    }

    /// Takes one HEADERS or CONTINUATION frame (or, while a block is open,
    /// any frame). On error the frames seen so far have been handed over.
    fn header_frame(&mut self, frame: BytesMut) -> Result<(), Malformed> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7FFF_FFFF;
        let payload = &frame[FRAME_HEADER_LEN..];
        let mut pending = match (kind, self.pending.take()) {
            (TYPE_HEADERS, None) => {
                let mut body = payload;
                let mut pad = 0;
                if flags & FLAG_PADDED != 0 {
                    pad = *body.first().ok_or(Malformed)? as usize;
                    body = &body[1..];
                }
                let mut priority = None;
                if flags & FLAG_PRIORITY != 0 {
                    let p: [u8; 5] = body.get(..5).and_then(|p| p.try_into().ok()).ok_or(Malformed)?;
                    priority = Some(p);
                    body = &body[5..];
                }
                let end = body.len().checked_sub(pad).ok_or(Malformed)?;
                PendingBlock {
                    block: body[..end].to_vec(),
                    frames: BytesMut::new(),
                    stream_id,
                    flags,
                    priority,
                }
            }
            (TYPE_CONTINUATION, Some(mut p)) if p.stream_id == stream_id => {
                p.block.extend_from_slice(payload);
                p
            }
            (_, pending) => {
                if let Some(p) = pending {
                    self.ready.unsplit(p.frames);
                }
                self.ready.unsplit(frame);
                return Err(Malformed);
            }
        };
        pending.frames.unsplit(frame);
        if flags & FLAG_END_HEADERS == 0 {
            self.pending = Some(pending);
            return Ok(());
        }
        match self.table.repair_block(&pending.block) {
            Ok(None) => self.ready.unsplit(pending.frames),
            Ok(Some(block)) => self.emit_block(&pending, &block),
            Err(e) => {
                self.ready.unsplit(pending.frames);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes a repaired header block as HEADERS plus CONTINUATION frames.
    fn emit_block(&mut self, original: &PendingBlock, block: &[u8]) {
        let mut payload = Vec::with_capacity(block.len() + 5);
        if let Some(p) = original.priority {
            payload.extend_from_slice(&p);
        }
        payload.extend_from_slice(block);
        let mut chunks = payload.chunks(MAX_FRAME_PAYLOAD).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let (kind, mut flags) = if first {
                (TYPE_HEADERS, original.flags & (FLAG_END_STREAM | FLAG_PRIORITY))
            } else {
                (TYPE_CONTINUATION, 0)
            };
            if last {
                flags |= FLAG_END_HEADERS;
            }
            let len = chunk.len();
            self.ready.reserve(FRAME_HEADER_LEN + len);
            self.ready.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
            self.ready.put_u32(original.stream_id);
            self.ready.put_slice(chunk);
            first = false;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRepair<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.refused {
                let message = format!("HTTP/2 header block larger than {MAX_HEADER_BLOCK} bytes");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, message)));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // The common case, a large DATA frame: read straight into the
            // caller's buffer.
            if this.passing > 0 && this.incoming.is_empty() {
                let limit = this.passing.min(buf.remaining());
                let mut direct = buf.take(limit);
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut direct))?;
                let n = direct.filled().len();
                if n == 0 {
                    this.eof = true;
                    continue;
                }
                // SAFETY: `direct` borrowed the unfilled part of `buf` and its
                // first `n` bytes were just initialised by the read.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                this.passing -= n;
                return Poll::Ready(Ok(()));
            }
            this.incoming.reserve(READ_CHUNK);
            let spare = this.incoming.spare_capacity_mut();
            let mut chunk = ReadBuf::uninit(spare);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            let n = chunk.filled().len();
            if n == 0 {
                // Whatever is left is incomplete: the server reports it.
                this.eof = true;
                if let Some(p) = this.pending.take() {
                    this.ready.unsplit(p.frames);
                }
                let rest = this.incoming.split();
                this.ready.unsplit(rest);
                continue;
            }
            // SAFETY: the read initialised `n` bytes of the spare capacity.
            unsafe { this.incoming.set_len(this.incoming.len() + n) };
            this.process();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityRepair<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A literal with incremental indexing and a literal name, no Huffman.
    fn literal_indexed(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x40];
        write_int(&mut out, name.len(), 7, 0);
        out.extend_from_slice(name);
        write_int(&mut out, value.len(), 7, 0);
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn invalid_authority_is_replaced_with_same_length() {
        let mut table = HeaderTable::new();
        let mut block = literal_indexed(b":authority", b"http://127.0.0.1:2379");
        block.push(0x82); // :method GET, indexed
        let fixed = table.repair_block(&block).unwrap().expect("repaired");
        let mut expected = literal_indexed(b":authority", b"aaaaaaaaaaaaaaaaaaaaa");
        expected.push(0x82);
        assert_eq!(fixed, expected);
        assert_eq!(table.size, 32 + 10 + 21);
    }

    #[test]
    fn valid_authority_is_left_alone() {
        let mut table = HeaderTable::new();
        let block = literal_indexed(b":authority", b"127.0.0.1:2379");
        assert_eq!(table.repair_block(&block).unwrap(), None);
        // Static-name reference (index 1) with a literal value, no indexing.
        let mut block = vec![0x01];
        write_int(&mut block, 9, 7, 0);
        block.extend_from_slice(b"#initial]");
        let fixed = table.repair_block(&block).unwrap().expect("repaired");
        assert_eq!(&fixed[2..], b"aaaaaaaaa");
    }

    #[test]
    fn table_follows_evictions() {
        let mut table = HeaderTable::new();
        let big = vec![b'x'; 3000];
        table.repair_block(&literal_indexed(b"a", &big)).unwrap();
        table.repair_block(&literal_indexed(b"b", &big)).unwrap();
        assert_eq!(table.entries.len(), 1);
        assert_eq!(table.size, 32 + 1 + 3000);
        // Size update to zero empties the table.
        table.repair_block(&[0x20]).unwrap();
        assert_eq!(table.size, 0);
    }

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A connection carrying one header block of `total` bytes (a header
    /// with a long value), split into frames of at most 16 KiB.
    fn connection(total: usize) -> Vec<u8> {
        let head = literal_indexed(b"x-big", &vec![b'v'; total]);
        let block = &head[..total];
        let mut bytes = PREFACE.to_vec();
        let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME_PAYLOAD).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let kind = if i == 0 { TYPE_HEADERS } else { TYPE_CONTINUATION };
            let flags = if i + 1 == chunks.len() { FLAG_END_HEADERS } else { 0 };
            bytes.extend(frame(kind, flags, 1, chunk));
        }
        bytes
    }

    async fn read_all(bytes: &[u8]) -> (Vec<u8>, io::Result<usize>) {
        use tokio::io::AsyncReadExt;
        let mut conn = AuthorityRepair::new(bytes);
        let mut out = Vec::new();
        let result = conn.read_to_end(&mut out).await;
        (out, result)
    }

    #[tokio::test]
    async fn header_blocks_are_capped() {
        // A block that fits passes through unchanged (it needs no repair,
        // even though its truncated value does not parse as a whole block).
        let fits = connection(MAX_HEADER_BLOCK);
        let (out, result) = read_all(&fits).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, fits);

        // One byte more refuses the connection after the preface, before
        // the block is handed on or buffered further.
        let (out, result) = read_all(&connection(MAX_HEADER_BLOCK + 1)).await;
        let err = result.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(out, PREFACE, "nothing of the oversized block is passed on");
    }

    #[tokio::test]
    async fn a_block_cut_short_by_another_frame_is_handed_on() {
        let mut bytes = PREFACE.to_vec();
        let headers = frame(TYPE_HEADERS, 0, 1, &literal_indexed(b"a", b"b"));
        let ping = frame(0x6, 0, 0, &[0; 8]);
        bytes.extend(&headers);
        bytes.extend(&ping);
        let (out, result) = read_all(&bytes).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, bytes);
    }

    #[test]
    fn malformed_blocks_are_reported() {
        let mut table = HeaderTable::new();
        assert!(table.repair_block(&[0x40, 0x85, b'a']).is_err());
        // A name from a dynamic entry that does not exist.
        assert!(table.repair_block(&[0x7E]).is_err());
    }
}
