//! The chunked transfer coding's decoder (RFC 9112 §7.1), by hyper's rules
//! byte for byte, for the bodies sitio reads itself: a client's request
//! body on its own HTTP/1 server side (`h1`, `client_body`) and the
//! service's response body (`upstream::h1`).
//!
//! hyper's rules and not `httparse::parse_chunk_size` (which hyper does not
//! use either): `httparse` reads an empty size as the last chunk, takes a
//! line feed inside an extension and refuses sizes of more than 16 digits
//! (leading zeros included). Where two parsers on one path frame a body
//! differently, a request can be smuggled; sitio's own side must end a body
//! exactly where hyper's side ended it (`h1::tests`, `served_alike`).
//!
//! Its one piece of encoding, [`SizeLine`], is shared by the two writers of
//! chunks (the client's response, the service's request).
//!
//! The decoder works on the connection's read buffer as bytes arrive, in
//! any split, and takes out of it what it used: data as slices of the
//! buffer (no copy); the trailer section gathered in a buffer of its own
//! (rare, and at most `Limits::trailer_bytes`).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Extension bytes (after `;`, to the line's end) one body may carry in all
/// its size lines: hyper's limit. Extensions mean nothing to sitio; the
/// limit stops a body that is all extensions.
const EXTENSIONS_LIMIT: u16 = 16 * 1024;

/// What a trailer section may hold (`u32`s: the decoder sits in every
/// response body, whose size counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Trailer fields (hyper: the connection's header field limit).
    pub(crate) trailer_fields: u32,
    /// Bytes of the whole section, its last empty line included.
    pub(crate) trailer_bytes: u32,
}

impl Limits {
    /// hyper's: 100 fields (its default `max_headers`) and 16 KiB.
    pub(crate) const HYPER: Limits = Limits {
        trailer_fields: 100,
        trailer_bytes: 16 * 1024,
    };
}

/// Why the bytes are not a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(&'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid chunked body: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// What the decoder found next.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    /// Data of a chunk (part of one, if that is all the buffer holds).
    Data(Bytes),
    /// The trailer section; the body is over.
    Trailers(HeaderMap),
    /// The body is over (no trailer section).
    End,
    /// More bytes are needed.
    More,
}

/// Where the decoder is in the body (hyper's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The first digit of a size.
    Start,
    /// More digits of the size, or what ends them.
    Size,
    /// Blanks after the size.
    SizeLws,
    /// An extension, to the line's end.
    Extension,
    /// The line feed of a size line.
    SizeLf,
    /// Inside a chunk's data.
    Body,
    BodyCr,
    BodyLf,
    /// After the last chunk: the end, or a trailer line.
    EndCr,
    /// Inside a trailer line.
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// The decoder of one chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunked {
    at: At,
    /// The size being read, then the data left of the chunk.
    size: u64,
    /// Extension bytes so far (below [`EXTENSIONS_LIMIT`]).
    extensions: u16,
    /// The trailer section read so far, boxed: most bodies have none, and
    /// the decoder stays small.
    trailers: Option<Box<Section>>,
    limits: Limits,
}

/// A trailer section read so far, and the lines it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Section {
    bytes: BytesMut,
    lines: u32,
}

impl Chunked {
    /// A decoder at the start of a body.
    pub(crate) fn new(limits: Limits) -> Self {
        Chunked {
            at: At::Start,
            size: 0,
            extensions: 0,
            trailers: None,
            limits,
        }
    }

    /// The body was read to its end.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.at == At::Done
    }

    /// Decodes what `buf` holds, taking the bytes it used out of it: the
    /// next data, the trailers or the end, or `More` once all of `buf` is
    /// used. After the end, `End` again.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        let mut used = 0;
        let found = loop {
            if self.at == At::Body {
                buf.advance(used);
                used = 0;
                if buf.is_empty() {
                    break Decoded::More;
                }
                let n = usize::try_from(self.size).map_or(buf.len(), |s| s.min(buf.len()));
                self.size -= n as u64;
                if self.size == 0 {
                    self.at = At::BodyCr;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            if self.at == At::Done {
                break self.finish()?;
            }
            let Some(&byte) = buf.get(used) else {
                break Decoded::More;
            };
            used += 1;
            self.at = self.step(byte)?;
        };
        buf.advance(used);
        Ok(found)
    }

    /// One byte read in the current state: the next state.
    fn step(&mut self, byte: u8) -> Result<At, Malformed> {
        Ok(match self.at {
            At::Start => {
                self.digit(byte)?
                    .ok_or(Malformed("a size line without a size"))?;
                At::Size
            }
            At::Size => match self.digit(byte)? {
                Some(()) => At::Size,
                None => match byte {
                    b'\t' | b' ' => At::SizeLws,
                    b';' => At::Extension,
                    b'\r' => At::SizeLf,
                    _ => return Err(Malformed("a size that is not hexadecimal")),
                },
            },
            At::SizeLws => match byte {
                b'\t' | b' ' => At::SizeLws,
                b';' => At::Extension,
                b'\r' => At::SizeLf,
                _ => return Err(Malformed("a blank inside a size")),
            },
            At::Extension => match byte {
                b'\r' => At::SizeLf,
                // Some peers end a line at a bare LF: refused (hyper too).
                b'\n' => return Err(Malformed("a line feed inside an extension")),
                _ => {
                    self.extensions += 1;
                    if self.extensions >= EXTENSIONS_LIMIT {
                        return Err(Malformed("more chunk extensions than 16 KiB"));
                    }
                    At::Extension
                }
            },
            At::SizeLf => match (byte, self.size) {
                (b'\n', 0) => At::EndCr,
                (b'\n', _) => At::Body,
                _ => return Err(Malformed("a size line not ended by CRLF")),
            },
            At::BodyCr if byte == b'\r' => At::BodyLf,
            At::BodyLf if byte == b'\n' => {
                self.size = 0;
                At::Start
            }
            At::BodyCr | At::BodyLf => return Err(Malformed("chunk data not followed by CRLF")),
            At::EndCr => {
                if self.trailers.is_some() {
                    self.keep(byte)?;
                } else if byte != b'\r' {
                    let mut bytes = BytesMut::with_capacity(64);
                    bytes.put_u8(byte);
                    self.trailers = Some(Box::new(Section { bytes, lines: 0 }));
                }
                if byte == b'\r' {
                    At::EndLf
                } else {
                    At::Trailer
                }
            }
            At::Trailer => {
                self.keep(byte)?;
                if byte == b'\r' {
                    At::TrailerLf
                } else {
                    At::Trailer
                }
            }
            At::TrailerLf if byte == b'\n' => {
                if let Some(section) = &mut self.trailers {
                    if section.lines >= self.limits.trailer_fields {
                        return Err(Malformed("more trailer fields than the limit"));
                    }
                    section.lines += 1;
                }
                self.keep(byte)?;
                At::EndCr
            }
            At::TrailerLf => return Err(Malformed("a trailer line not ended by CRLF")),
            At::EndLf if byte == b'\n' => {
                if self.trailers.is_some() {
                    self.keep(byte)?;
                }
                At::Done
            }
            At::EndLf => return Err(Malformed("the last chunk not ended by CRLF")),
            // `decode` reads data and ends the body itself.
            At::Body | At::Done => self.at,
        })
    }

    /// Adds a hexadecimal digit to the size; `None` if `byte` is not one.
    fn digit(&mut self, byte: u8) -> Result<Option<()>, Malformed> {
        let Some(d) = (byte as char).to_digit(16) else {
            return Ok(None);
        };
        self.size = self
            .size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(Malformed("a chunk size too large"))?;
        Ok(Some(()))
    }

    /// Adds `byte` to the trailer section, if one began; hyper's check
    /// after each byte: the section stays below its limit.
    fn keep(&mut self, byte: u8) -> Result<(), Malformed> {
        let Some(section) = &mut self.trailers else {
            return Ok(());
        };
        section.bytes.put_u8(byte);
        if section.bytes.len() >= self.limits.trailer_bytes as usize {
            return Err(Malformed("a trailer section larger than the limit"));
        }
        Ok(())
    }

    /// The end of the body: its trailer section read (by `httparse`, with
    /// as many fields as lines were counted, as hyper reads it), if any.
    fn finish(&mut self) -> Result<Decoded, Malformed> {
        let Some(section) = self.trailers.take() else {
            return Ok(Decoded::End);
        };
        let mut fields = vec![httparse::EMPTY_HEADER; section.lines as usize];
        let fields = match httparse::parse_headers(&section.bytes, &mut fields) {
            Ok(httparse::Status::Complete((_, fields))) => fields,
            _ => return Err(Malformed("a trailer section that does not parse")),
        };
        let mut map = HeaderMap::with_capacity(fields.len());
        for field in fields.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes());
            let value = HeaderValue::from_bytes(field.value);
            let (Ok(name), Ok(value)) = (name, value) else {
                return Err(Malformed("a trailer field that is not valid"));
            };
            map.append(name, value);
        }
        Ok(Decoded::Trailers(map))
    }
}

/// A chunk's size line: the size in upper-case hex, as hyper writes it,
/// and CRLF; kept inline, with no allocation per chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SizeLine {
    buf: [u8; 18],
    /// Where the line begins in `buf` (it ends at its end).
    at: u8,
}

impl SizeLine {
    /// The size line of a chunk of `len` bytes.
    pub(crate) fn new(len: usize) -> Self {
        let mut buf = [0u8; 18];
        buf[16..].copy_from_slice(b"\r\n");
        let (mut at, mut n) = (16, len);
        loop {
            at -= 1;
            buf[at] = b"0123456789ABCDEF"[n & 15];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        SizeLine { buf, at: at as u8 }
    }

    /// The line's bytes not yet written.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[usize::from(self.at)..]
    }

    /// `n` more of its bytes were written (fewer than are left).
    pub(crate) fn advance(&mut self, n: usize) {
        let left = self.buf.len() - usize::from(self.at);
        self.at += n.min(left) as u8;
    }
}

#[cfg(test)]
mod tests;
