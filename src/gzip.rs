//! Gzip-compressed SSE bodies: every chunk compressed and flushed at once, a few KiB of state per connection.
//!
//! [`GzipStream`] wraps a body — an [`SseStream`](crate::sse::SseStream), or
//! any stream of [`Bytes`] — into a `Content-Encoding: gzip` body. Each chunk
//! is compressed and sync-flushed on its own, so the browser decodes every
//! event as soon as it arrives; nothing waits for the end of the stream.
//!
//! # What a connection costs
//!
//! A deflate compressor holds a window and hash tables: zlib documents
//! `(1 << (windowBits + 2)) + (1 << (memLevel + 9))` bytes, 256 KiB with its
//! defaults. One per open connection would cost far more than the connection
//! itself (10,000 streams: gigabytes). Instead, one compressor per thread does the
//! work, and a stream keeps only the last
//! [`DEFAULT_HISTORY`](GzipStream::DEFAULT_HISTORY) bytes it sent: before
//! each chunk the compressor is reset and handed those bytes as its
//! dictionary, so the new chunk can refer back to the frames before it, which
//! the browser's decoder still holds in its window. The compressed bytes are
//! one valid deflate stream. Between chunks a stream holds that history, a
//! CRC and a length.
//!
//! # When it pays
//!
//! Off unless you wrap the body, and wrap it only when the request's
//! `Accept-Encoding` allows it ([`accepts_gzip`]). SSE frames are small and
//! each is flushed alone, so a frame compresses only against the history:
//! it pays on bandwidth-bound links and repetitive payloads, and costs CPU
//! on every chunk of every connection (a broadcast is compressed once per
//! connection, where the plain frame is encoded once for all). Measure with
//! the bench's `http` scenario before turning it on.
//!
//! # Examples
//!
//! ```
//! use std::io::Read;
//! use bytes::Bytes;
//! use futures::{StreamExt, executor::block_on, stream};
//! use ssehub::gzip::{self, GzipStream};
//!
//! // From the request: `Accept-Encoding: gzip, deflate, br` (what a browser sends).
//! assert!(gzip::accepts_gzip(Some(b"gzip, deflate, br")));
//!
//! let frames = ["retry: 3000\n\n", "event: a\ndata: {\"n\":1}\n\n", "event: a\ndata: {\"n\":2}\n\n"];
//! let body = GzipStream::new(stream::iter(frames.map(Bytes::from)));
//! // ...send it with `Content-Encoding: gzip` (gzip::CONTENT_ENCODING) and `Vary: Accept-Encoding`.
//! let chunks: Vec<Bytes> = block_on(body.collect());
//! assert_eq!(chunks.len(), 4, "one per frame, and the gzip trailer when the body ends");
//!
//! let compressed: Vec<u8> = chunks.concat();
//! let mut text = String::new();
//! flate2::read::GzDecoder::new(&compressed[..]).read_to_string(&mut text).unwrap();
//! assert_eq!(text, frames.concat());
//! ```

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use futures_core::Stream;

/// The `Content-Encoding` of a [`GzipStream`] body.
pub const CONTENT_ENCODING: &str = "gzip";

/// The `Vary` header to send with a body that is compressed for some requests only.
pub const VARY: &str = "accept-encoding";

/// The gzip member header: deflate, no name or time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// An empty final deflate block (fixed Huffman codes, just the end-of-block code).
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// Whether an `Accept-Encoding` header value accepts gzip.
///
/// As RFC 9110 (12.5.3) reads it: `gzip` (or `x-gzip`) named with a weight
/// above 0 accepts it, named with `q=0` refuses it, whatever `*` says; not
/// named, `*` with a weight above 0 accepts it. No header at all is false: a
/// client that did not ask gets plain text.
///
/// # Examples
///
/// ```
/// use ssehub::gzip::accepts_gzip;
///
/// assert!(accepts_gzip(Some(b"gzip, deflate, br, zstd")));
/// assert!(accepts_gzip(Some(b"br;q=1.0, GZIP;q=0.5")));
/// assert!(!accepts_gzip(Some(b"gzip;q=0, br")));
/// assert!(!accepts_gzip(Some(b"gzip;q=0, *")));
/// assert!(accepts_gzip(Some(b"br, *;q=0.1")));
/// assert!(!accepts_gzip(Some(b"br, *;q=0")));
/// assert!(!accepts_gzip(Some(b"identity")));
/// assert!(!accepts_gzip(None));
/// ```
pub fn accepts_gzip(accept_encoding: Option<&[u8]>) -> bool {
    let Some(value) = accept_encoding else { return false };
    let Ok(value) = std::str::from_utf8(value) else { return false };
    // The weight of gzip where named, and of `*`: the named one wins.
    let (mut named, mut any) = (None::<bool>, None::<bool>);
    for entry in value.split(',') {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let refused = parts.any(|parameter| {
            let parameter = parameter.trim();
            parameter
                .strip_prefix("q=")
                .or_else(|| parameter.strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            // Named twice: accepted if either names it acceptably.
            named = Some(named.unwrap_or(false) || !refused);
        } else if coding == "*" {
            any = Some(any.unwrap_or(false) || !refused);
        }
    }
    named.or(any).unwrap_or(false)
}

thread_local! {
    /// The compressor of this thread, shared by every stream it polls (reset before each chunk).
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// A `Content-Encoding: gzip` body: each chunk of `body` compressed and flushed as it comes.
///
/// See the [module docs](self). It never fails: should compression fail, the
/// body ends (an SSE client reconnects), as it does when `body` ends, after the gzip trailer.
pub struct GzipStream<S> {
    body: S,
    level: Compression,
    history_limit: usize,
    /// The last `history_limit` uncompressed bytes sent: the next chunk's dictionary.
    history: Vec<u8>,
    crc: Crc,
    started: bool,
    finished: bool,
}

impl<S> GzipStream<S> {
    /// How many of the last bytes sent a chunk may refer back to, by default: 2 KiB, about
    /// 15 typical frames.
    pub const DEFAULT_HISTORY: usize = 2048;

    /// The largest history: the deflate window (32 KiB), beyond which the browser cannot refer back.
    pub const MAX_HISTORY: usize = 32 * 1024;

    /// `body`, compressed at level 6 with the default history.
    pub fn new(body: S) -> Self {
        Self::with_settings(body, 6, Self::DEFAULT_HISTORY)
    }

    /// `body`, compressed at `level` (0-9; higher are lowered to 9) with `history` bytes of
    /// history (at most [`MAX_HISTORY`](Self::MAX_HISTORY); 0: each chunk compressed alone).
    pub fn with_settings(body: S, level: u32, history: usize) -> Self {
        Self {
            body,
            level: Compression::new(level.min(9)),
            history_limit: history.min(Self::MAX_HISTORY),
            history: Vec::new(),
            crc: Crc::new(),
            started: false,
            finished: false,
        }
    }

    /// Compresses `chunk` into a sync-flushed piece of the deflate stream (after the gzip header, first).
    fn compress(&mut self, chunk: &[u8]) -> Option<Bytes> {
        let mut out =
            Vec::with_capacity(chunk.len() / 2 + 64 + if self.started { 0 } else { GZIP_HEADER.len() });
        if !self.started {
            out.extend_from_slice(&GZIP_HEADER);
            self.started = true;
        }
        let (level, history) = (self.level, &self.history);
        let compressed = COMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            // Streams polled by one thread may ask for different levels: made again on a change.
            let compressor = match &mut *cell {
                Some((made_at, compressor)) if *made_at == level.level() => {
                    compressor.reset();
                    compressor
                }
                slot => &mut slot.insert((level.level(), Compress::new(level, false))).1,
            };
            deflate_chunk(compressor, history, chunk, &mut out)
        });
        compressed.ok()?;
        self.crc.update(chunk);
        if self.history_limit > 0 {
            let keep_from_chunk = chunk.len().min(self.history_limit);
            let keep_from_history = (self.history_limit - keep_from_chunk).min(self.history.len());
            self.history.drain(..self.history.len() - keep_from_history);
            // Grown in powers of two up to the limit, so an idle stream (a `retry:` frame sent)
            // holds a few bytes, not the whole history.
            let needed = keep_from_history + keep_from_chunk;
            if needed > self.history.capacity() {
                let capacity = needed.next_power_of_two().max(64).min(self.history_limit.max(needed));
                self.history.reserve_exact(capacity - self.history.len());
            }
            self.history.extend_from_slice(&chunk[chunk.len() - keep_from_chunk..]);
        }
        Some(Bytes::from(out))
    }

    /// The end of the gzip member: a final empty block, the CRC-32 and the length.
    fn trailer(&mut self) -> Bytes {
        let mut out = Vec::with_capacity(GZIP_HEADER.len() + FINAL_BLOCK.len() + 8);
        if !self.started {
            out.extend_from_slice(&GZIP_HEADER);
            self.started = true;
        }
        out.extend_from_slice(&FINAL_BLOCK);
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
        Bytes::from(out)
    }
}

/// Runs `compressor` (just reset) over `chunk` with `history` as its dictionary, appending to `out`.
fn deflate_chunk(
    compressor: &mut Compress,
    history: &[u8],
    chunk: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ()> {
    if !history.is_empty() {
        compressor.set_dictionary(history).map_err(|_| ())?;
    }
    let start_in = compressor.total_in();
    loop {
        let consumed = (compressor.total_in() - start_in) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(chunk.len() - consumed + 64);
        }
        let status = compressor.compress_vec(&chunk[consumed..], out, FlushCompress::Sync).map_err(|_| ())?;
        let consumed = (compressor.total_in() - start_in) as usize;
        // A sync flush is complete once the input is taken and the output was not filled.
        if consumed == chunk.len() && out.len() < out.capacity() {
            return Ok(());
        }
        if status == Status::StreamEnd {
            return Err(());
        }
    }
}

impl<S> std::fmt::Debug for GzipStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipStream")
            .field("level", &self.level.level())
            .field("history_limit", &self.history_limit)
            .field("sent", &self.crc.amount())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<S> Stream for GzipStream<S>
where
    S: Stream<Item = Bytes> + Unpin,
{
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(chunk)) => match this.compress(&chunk) {
                Some(compressed) => Poll::Ready(Some(compressed)),
                None => {
                    // Cannot happen with valid settings; end the body rather than send a broken one.
                    this.finished = true;
                    Poll::Ready(None)
                }
            },
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(Some(this.trailer()))
            }
        }
    }
}
