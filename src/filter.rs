//! Body filters (a leaf: it imports nothing of sitio): what a decorator installs to see or rewrite a body as it
//! streams, with an end-of-stream signal so it can hold bytes back and flush
//! them. They are objects rather than hooks so that each owns its state and a
//! request body can stream to the service while response hooks run.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use hyper::body::Frame;

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

/// The filters of one body, in the order the bytes pass through them, and
/// where that body stands: the one place that turns a source's frames into
/// filtered ones (the request body and the response body both use it).
#[derive(Default)]
pub(crate) struct Filters {
    /// `None` on most exchanges: an exchange without filters carries one
    /// word, and the state below is paid only by exchanges that filter.
    stream: Option<Box<Stream>>,
}

type Entry = (usize, Box<dyn BodyFilter>);

#[derive(Default)]
struct Stream {
    /// `(decorator index, filter)`.
    list: Vec<Entry>,
    /// The filters' `on_end` ran.
    flushed: bool,
    /// Sent after the held-back bytes: the source's trailers (`Some`), or
    /// its end (`None`).
    after: Option<Option<HeaderMap>>,
}

/// What a filtered body does with one frame of its source.
pub(crate) enum Step {
    /// Hand this frame on.
    Frame(Frame<Bytes>),
    /// The filters held it all back: poll the source again.
    Held,
    /// The body is over.
    Over,
}

impl std::fmt::Debug for Filters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filters")
            .field("len", &self.stream.as_ref().map_or(0, |s| s.list.len()))
            .finish()
    }
}

impl Filters {
    pub(crate) fn push(&mut self, owner: usize, filter: Box<dyn BodyFilter>) {
        self.stream
            .get_or_insert_default()
            .list
            .push((owner, filter));
    }

    /// No filter was installed.
    pub(crate) fn is_empty(&self) -> bool {
        self.stream.as_ref().is_none_or(|s| s.list.is_empty())
    }

    /// True when some filter may change the body's length.
    pub(crate) fn change_length(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(|s| s.list.iter().any(|(_, f)| !f.keeps_length()))
    }

    /// Drops the filters of decorators inside `owner` (index above it): they
    /// were installed on a response `owner` has just replaced.
    pub(crate) fn drop_inside(&mut self, owner: usize) {
        if let Some(s) = &mut self.stream {
            s.list.retain(|(i, _)| *i <= owner);
        }
    }

    /// True when nothing is held back or waiting: the filtered body is over
    /// once its source is.
    pub(crate) fn drained(&self) -> bool {
        self.stream
            .as_ref()
            .is_none_or(|s| s.list.is_empty() || (s.flushed && s.after.is_none()))
    }

    /// What follows the held-back bytes, once they were handed on: to send
    /// before polling the source again.
    pub(crate) fn waiting(&mut self) -> Option<Step> {
        let after = self.stream.as_deref_mut()?.after.take()?;
        Some(after.map_or(Step::Over, |t| Step::Frame(Frame::trailers(t))))
    }

    /// One frame polled from the source (`None`: it ended); `last`: the
    /// source has nothing after it. A last data chunk ends the filters at
    /// once: a peer that knows the length stops polling after it.
    pub(crate) fn step(&mut self, polled: Option<Frame<Bytes>>, last: bool) -> Step {
        let Some(s) = self.stream.as_deref_mut().filter(|s| !s.list.is_empty()) else {
            return polled.map_or(Step::Over, Step::Frame);
        };
        let Some(frame) = polled else {
            return s.end(None);
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => return s.end(Some(trailers)),
                Err(_) => return Step::Held, // a frame kind HTTP/1 cannot carry
            },
        };
        run(&mut s.list, &mut data);
        if last && !s.flushed {
            s.flushed = true;
            data = joined(data, s.tail());
        }
        match (data.is_empty(), last) {
            // An empty chunk would end a chunked body early.
            (true, false) => Step::Held,
            (true, true) => Step::Over,
            (false, _) => Step::Frame(Frame::data(data)),
        }
    }
}

impl Stream {
    /// The source ended (with `trailers`, or none): the held-back bytes go first.
    fn end(&mut self, trailers: Option<HeaderMap>) -> Step {
        if !self.flushed {
            self.flushed = true;
            let tail = self.tail();
            if !tail.is_empty() {
                self.after = Some(trailers);
                return Step::Frame(Frame::data(tail));
            }
        }
        trailers.map_or(Step::Over, |t| Step::Frame(Frame::trailers(t)))
    }

    /// Each filter's held-back bytes, passed through the filters after it,
    /// joined (empty when nobody held anything back).
    fn tail(&mut self) -> Bytes {
        let mut tail = BytesMut::new();
        for k in 0..self.list.len() {
            let (done, rest) = self.list.split_at_mut(k + 1);
            let Some(mut flushed) = done[k].1.on_end() else {
                continue;
            };
            run(rest, &mut flushed);
            tail.extend_from_slice(&flushed);
        }
        tail.freeze()
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

    fn data(step: Step) -> Vec<u8> {
        match step {
            Step::Frame(f) => f.into_data().map(|d| d.to_vec()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn held_back_bytes_pass_the_later_filters_at_the_end() {
        let mut filters = Filters::default();
        filters.push(1, Box::new(HoldOne(None)));
        filters.push(0, Box::new(Upper));
        let mut out = Vec::new();
        for part in ["ab", "c", "de"] {
            out.extend(data(
                filters.step(Some(Frame::data(Bytes::from(part))), false),
            ));
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("1"));
        // The source ends with trailers: the held-back byte goes first.
        out.extend(data(filters.step(Some(Frame::trailers(trailers)), true)));
        assert_eq!(out, b"ABCDE");
        assert!(!filters.drained());
        let Some(Step::Frame(t)) = filters.waiting() else {
            panic!("the trailers follow")
        };
        assert!(t.is_trailers() && filters.drained());
        assert!(filters.change_length());
        filters.drop_inside(0);
        assert_eq!(filters.stream.as_ref().map(|s| s.list.len()), Some(1));
    }

    #[test]
    fn a_last_chunk_ends_the_filters_with_it() {
        let mut filters = Filters::default();
        filters.push(0, Box::new(HoldOne(None)));
        let out = data(filters.step(Some(Frame::data(Bytes::from("xyz"))), true));
        assert_eq!(out, b"xyz");
        assert!(filters.drained() && filters.waiting().is_none());
        let mut none = Filters::default();
        assert!(matches!(none.step(None, true), Step::Over) && none.drained());
    }
}
