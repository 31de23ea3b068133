//! Body filters (a leaf: it imports nothing of sitio): what a decorator installs to see or rewrite a body as it
//! streams, with an end-of-stream signal so it can hold bytes back and flush
//! them. They are objects rather than hooks so that each owns its state and a
//! request body can stream to the service while response hooks run.

use bytes::{Bytes, BytesMut};

/// Sees (and may rewrite) one body as it streams; installed for one exchange
/// with [`crate::Exchange::filter_request_body`] or
/// [`crate::Exchange::filter_response_body`]. Synchronous: it runs as the
/// bytes pass.
///
/// ```
/// use sitio::{BodyFilter, bytes::Bytes};
///
/// /// Upper-cases ASCII: same length, so the framing stays as it is.
/// struct Shout;
/// impl BodyFilter for Shout {
///     fn on_chunk(&mut self, chunk: &mut Bytes) {
///         *chunk = Bytes::from(chunk.to_ascii_uppercase());
///     }
///     fn keeps_length(&self) -> bool {
///         true
///     }
/// }
/// ```
pub trait BodyFilter: Send + 'static {
    /// Called with each chunk, in order. May rewrite it, shorten it, or take
    /// it all (leave it empty) to send later.
    fn on_chunk(&mut self, chunk: &mut Bytes);

    /// Called once when the body ends cleanly (not when it breaks off): the
    /// bytes held back, to be sent last. Trailers, if any, follow them.
    fn on_end(&mut self) -> Option<Bytes> {
        None
    }

    /// True when this filter never changes the body's length (an observer, a
    /// same-length rewrite), so the body keeps its `Content-Length`. By
    /// default sitio assumes it may: the length header is dropped and the body
    /// is sent chunked to HTTP/1.1 peers, close-delimited to HTTP/1.0 clients.
    fn keeps_length(&self) -> bool {
        false
    }
}

/// The filters of one body, in the order the bytes pass through them.
#[derive(Default)]
pub(crate) struct Filters {
    /// `(decorator index, filter)`; `None` on most exchanges. Boxed so that an
    /// exchange without filters carries one word, not a vector's three (the
    /// exchange moves with every response; the extra allocation is paid only
    /// by exchanges that filter).
    #[allow(clippy::box_collection)]
    list: Option<Box<Vec<Entry>>>,
}

type Entry = (usize, Box<dyn BodyFilter>);

impl std::fmt::Debug for Filters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filters")
            .field("len", &self.list().len())
            .finish()
    }
}

impl Filters {
    fn list(&self) -> &[Entry] {
        self.list.as_deref().map_or(&[], Vec::as_slice)
    }

    fn list_mut(&mut self) -> &mut [Entry] {
        self.list.as_deref_mut().map_or(&mut [], Vec::as_mut_slice)
    }

    pub(crate) fn push(&mut self, owner: usize, filter: Box<dyn BodyFilter>) {
        self.list.get_or_insert_default().push((owner, filter));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list().is_empty()
    }

    /// True when some filter may change the body's length.
    pub(crate) fn change_length(&self) -> bool {
        self.list().iter().any(|(_, f)| !f.keeps_length())
    }

    /// Drops the filters of decorators inside `owner` (index above it): they
    /// were installed on a response `owner` has just replaced.
    pub(crate) fn drop_inside(&mut self, owner: usize) {
        if let Some(list) = &mut self.list {
            list.retain(|(i, _)| *i <= owner);
        }
    }

    /// Runs `chunk` through every filter.
    pub(crate) fn chunk(&mut self, chunk: &mut Bytes) {
        run(self.list_mut(), chunk);
    }

    /// The end of the body: each filter's held-back bytes, passed through the
    /// filters after it, joined (empty when nobody held anything back).
    pub(crate) fn end(&mut self) -> Bytes {
        let mut tail = BytesMut::new();
        let list = self.list_mut();
        for k in 0..list.len() {
            let (done, rest) = list.split_at_mut(k + 1);
            let Some(mut flushed) = done[k].1.on_end() else {
                continue;
            };
            run(rest, &mut flushed);
            tail.extend_from_slice(&flushed);
        }
        tail.freeze()
    }

    /// The end of the body, whose last (already filtered) chunk is `last`:
    /// `last` followed by the held-back bytes.
    pub(crate) fn end_after(&mut self, last: Bytes) -> Bytes {
        let tail = self.end();
        joined(last, tail)
    }
}

/// `head` then `tail`, copying only when both have bytes.
fn joined(head: Bytes, tail: Bytes) -> Bytes {
    if tail.is_empty() {
        head
    } else if head.is_empty() {
        tail
    } else {
        let mut both = BytesMut::with_capacity(head.len() + tail.len());
        both.extend_from_slice(&head);
        both.extend_from_slice(&tail);
        both.freeze()
    }
}

fn run(filters: &mut [Entry], chunk: &mut Bytes) {
    for (_, f) in filters {
        if chunk.is_empty() {
            return; // held back by an earlier filter: the rest see it later
        }
        f.on_chunk(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds the last byte back until the next chunk (or the end).
    struct HoldOne(Option<u8>);
    impl BodyFilter for HoldOne {
        fn on_chunk(&mut self, chunk: &mut Bytes) {
            let mut out: Vec<u8> = self.0.take().into_iter().collect();
            out.extend_from_slice(chunk);
            self.0 = out.pop();
            *chunk = out.into();
        }
        fn on_end(&mut self) -> Option<Bytes> {
            self.0.take().map(|b| Bytes::from(vec![b]))
        }
    }

    struct Upper;
    impl BodyFilter for Upper {
        fn on_chunk(&mut self, chunk: &mut Bytes) {
            *chunk = chunk.to_ascii_uppercase().into();
        }
    }

    #[test]
    fn held_back_bytes_pass_the_later_filters_at_the_end() {
        let mut filters = Filters::default();
        filters.push(1, Box::new(HoldOne(None)));
        filters.push(0, Box::new(Upper));
        let mut out = Vec::new();
        for part in ["ab", "c", "de"] {
            let mut chunk = Bytes::from(part);
            filters.chunk(&mut chunk);
            out.extend_from_slice(&chunk);
        }
        out.extend_from_slice(&filters.end());
        assert_eq!(out, b"ABCDE");
        assert!(filters.change_length());
        filters.drop_inside(0);
        assert_eq!(filters.list().len(), 1);
    }
}
