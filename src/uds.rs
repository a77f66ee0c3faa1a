//! gRPC on a UNIX socket (`--grpc_socket_path`), as TensorFlow Serving.
//!
//! gRPC clients (grpc-core, so Python and C++, and grpc-go, so grpcurl)
//! send the socket's path as the HTTP/2 `:authority` of a `unix:` target,
//! which the HTTP/2 server under tonic refuses as a malformed authority. So
//! each connection passes through [`AuthorityFix`]: the client's header
//! blocks are decoded (HPACK, `fluke-hpack`), an `:authority` that is not a
//! valid URI authority becomes `localhost`, and every block is re-encoded
//! as literals without indexing, which keeps the server's HPACK table empty
//! and so in step with what it is sent. All other frames, and everything the
//! server sends, pass unchanged.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// SETTINGS_MAX_FRAME_SIZE's default, which the server keeps.
const MAX_FRAME: usize = 16_384;
/// SETTINGS_HEADER_TABLE_SIZE's default, which the server keeps.
const HEADER_TABLE_SIZE: usize = 4096;
/// The largest header block accepted from a client (h2's own default
/// header list limit is 16 MiB; gRPC metadata is far smaller).
const MAX_BLOCK: usize = 1 << 20;

/// A UNIX-socket connection whose client header blocks are rewritten; see
/// the module documentation.
pub struct AuthorityFix {
    inner: UnixStream,
    /// Bytes read from the client, not yet whole frames.
    raw: BytesMut,
    /// Bytes ready for the server.
    ready: BytesMut,
    preface_seen: bool,
    /// A header block waiting for its CONTINUATION frames: stream, flags
    /// of the HEADERS frame, priority bytes, block.
    pending: Option<(u32, u8, Vec<u8>, Vec<u8>)>,
    decoder: fluke_hpack::Decoder<'static>,
    eof: bool,
}

impl AuthorityFix {
    pub fn new(inner: UnixStream) -> AuthorityFix {
        AuthorityFix {
            inner,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            preface_seen: false,
            pending: None,
            decoder: {
                // A client may not grow the table past what the server
                // advertises (SETTINGS_HEADER_TABLE_SIZE, 4096 by default).
                let mut decoder = fluke_hpack::Decoder::new();
                decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
                decoder
            },
            eof: false,
        }
    }

    /// Moves every whole frame of `raw` to `ready`, rewriting header blocks.
    fn process(&mut self) -> io::Result<()> {
        if !self.preface_seen {
            if self.raw.len() < PREFACE.len() {
                return Ok(());
            }
            // Not HTTP/2: pass it on, and let the server refuse it.
            self.preface_seen = true;
            let preface = self.raw.split_to(PREFACE.len());
            self.ready.put_slice(&preface);
        }
        while self.raw.len() >= 9 {
            let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
            if self.raw.len() < 9 + len {
                break;
            }
            let frame = self.raw.split_to(9 + len);
            let (kind, flags) = (frame[3], frame[4]);
            let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
            let payload = &frame[9..];
            match kind {
                HEADERS => {
                    let mut body = payload;
                    if flags & PADDED != 0 {
                        let pad = *body.first().ok_or_else(|| malformed("a padded HEADERS frame without padding"))?;
                        body = body
                            .get(1..body.len().saturating_sub(pad as usize))
                            .filter(|_| (pad as usize) < payload.len())
                            .ok_or_else(|| malformed("HEADERS padding longer than the frame"))?;
                    }
                    let mut priority = Vec::new();
                    if flags & PRIORITY != 0 {
                        priority = body.get(..5).ok_or_else(|| malformed("a short HEADERS priority"))?.to_vec();
                        body = &body[5..];
                    }
                    self.pending = Some((stream, flags, priority, body.to_vec()));
                }
                CONTINUATION => match &mut self.pending {
                    Some((id, _, _, block)) if *id == stream => {
                        if block.len() + payload.len() > MAX_BLOCK {
                            return Err(malformed("a header block over 1 MiB"));
                        }
                        block.extend_from_slice(payload);
                    }
                    _ => return Err(malformed("CONTINUATION without its HEADERS")),
                },
                _ => {
                    if self.pending.is_some() {
                        return Err(malformed("a frame inside a header block"));
                    }
                    self.ready.put_slice(&frame);
                    continue;
                }
            }
            if flags & END_HEADERS != 0
                && let Some((stream, first_flags, priority, block)) = self.pending.take()
            {
                self.emit(stream, first_flags, &priority, &block)?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, stream: u32, flags: u8, priority: &[u8], block: &[u8]) -> io::Result<()> {
        let headers = self.decoder.decode(block).map_err(|e| malformed(&format!("HPACK: {e:?}")))?;
        let mut encoded = Vec::with_capacity(block.len() * 2);
        for (name, value) in headers {
            let value = if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                b"localhost".to_vec()
            } else {
                value
            };
            // Literal header field without indexing, new name (RFC 7541 6.2.2).
            encoded.push(0);
            encode_string(&mut encoded, &name);
            encode_string(&mut encoded, &value);
        }
        let mut first = true;
        let mut rest: &[u8] = &encoded;
        loop {
            let room = if first { MAX_FRAME - priority.len() } else { MAX_FRAME };
            let (chunk, after) = rest.split_at(rest.len().min(room));
            let last = after.is_empty();
            let (kind, mut f) = if first {
                (HEADERS, (flags & END_STREAM) | if priority.is_empty() { 0 } else { PRIORITY })
            } else {
                (CONTINUATION, 0)
            };
            if last {
                f |= END_HEADERS;
            }
            let len = chunk.len() + if first { priority.len() } else { 0 };
            self.ready.put_slice(&(len as u32).to_be_bytes()[1..]);
            self.ready.put_u8(kind);
            self.ready.put_u8(f);
            self.ready.put_u32(stream);
            if first {
                self.ready.put_slice(priority);
            }
            self.ready.put_slice(chunk);
            first = false;
            rest = after;
            if last {
                return Ok(());
            }
        }
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("gRPC UNIX socket: {what}"))
}

/// An HPACK string literal without Huffman coding: a 7-bit-prefix length,
/// then the bytes.
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

impl AsyncRead for AuthorityFix {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 << 10];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => {
                    this.raw.put_slice(read.filled());
                    this.process()?;
                }
            }
        }
    }
}

impl AsyncWrite for AuthorityFix {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFix {
    type ConnectInfo = <UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        encode_string(&mut out, name);
        encode_string(&mut out, value);
        out
    }

    #[tokio::test]
    async fn a_path_authority_becomes_localhost_and_other_frames_pass() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut fix = AuthorityFix::new(a);
        let mut block = literal(b":authority", b"/tmp/serving.sock");
        block.extend(literal(b":path", b"/tensorflow.serving.PredictionService/Predict"));
        block.extend(literal(b"x-long", &[b'v'; 300]));
        let (first, second) = block.split_at(10);
        fix.raw.extend_from_slice(PREFACE);
        fix.raw.extend(frame(0x4, 0, 0, &[]));
        fix.raw.extend(frame(HEADERS, END_STREAM, 1, first));
        fix.raw.extend(frame(CONTINUATION, END_HEADERS, 1, second));
        fix.raw.extend(frame(0x0, END_STREAM, 3, b"data"));
        fix.process().unwrap();
        let out = fix.ready.to_vec();
        assert!(out.starts_with(PREFACE));
        let rest = &out[PREFACE.len() + 9..];
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        assert_eq!((rest[3], rest[4]), (HEADERS, END_STREAM | END_HEADERS));
        let headers = fluke_hpack::Decoder::new().decode(&rest[9..9 + len]).unwrap();
        assert_eq!(headers[0], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(headers[2].1.len(), 300);
        assert_eq!(&rest[9 + len..], frame(0x0, END_STREAM, 3, b"data").as_slice());
    }

    #[tokio::test]
    async fn broken_framing_is_an_error_not_a_panic() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut fix = AuthorityFix::new(a);
        fix.raw.extend_from_slice(PREFACE);
        fix.raw.extend(frame(CONTINUATION, END_HEADERS, 1, b"x"));
        assert!(fix.process().is_err());
        let (a, _b) = UnixStream::pair().unwrap();
        let mut fix = AuthorityFix::new(a);
        fix.raw.extend_from_slice(PREFACE);
        fix.raw.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 1, 2]));
        assert!(fix.process().is_err());
    }
}
