//! A request body that the client connection's loop (`h1::serve`) reads and
//! hands to its exchange. The loop reads only when the exchange asks for
//! more, one read at a time (hyper's "want" signal), so an upload is never
//! buffered beyond one read however slowly the service takes it. A body of
//! known length is cut from the reads; a chunked one is decoded from them
//! (`chunked`), its trailers handed on as the body's last frame. What the
//! buffer holds of the body is handed at once, its chunks (up to
//! `MAX_FRAMES_AT_ONCE`) and its end: the service gets it in one write, as
//! it came (a body whose end came with its head goes with the head; the
//! fuzz target `server_side` found a service that closed its connection
//! when a chunked body's end, handed one ask later, came after its answer).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::body::BoxError;
use crate::chunked::{self, Chunked, Decoded};

/// The most frames handed to the body at once: a body of many small chunks
/// (one byte each, say) would otherwise queue about a hundred bytes of
/// frame per chunk it read, twelve times what it read. The rest waits in
/// the read buffer for the next ask.
const MAX_FRAMES_AT_ONCE: usize = 16;

/// How a body the connection reads is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes (more than zero).
    Length(u64),
    /// The chunked coding, its trailer section within these limits.
    Chunked(chunked::Limits),
}

/// The connection's side of one request body.
#[derive(Debug)]
pub(crate) struct Feed(Mutex<State>);

#[derive(Debug)]
struct State {
    /// Read and not yet taken by the body: data or trailers, or why the
    /// body could not be read.
    ready: Ready,
    /// The body is chunked: its end is not known before it is read.
    chunked: bool,
    /// What is still to be read of the body from the client.
    reading: Reading,
    /// The body asked for more, and nothing was handed since.
    wanted: bool,
    /// The exchange's task, to wake when data is handed.
    waker: Option<Waker>,
    /// The exchange let go of the body: nothing more is read for it.
    dropped: bool,
}

impl State {
    /// Something was handed to the body: it asks again once it took it.
    fn handed(&mut self) {
        self.wanted = false;
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// What the body has to take, in order: the first without an allocation
/// (a body of known length is one frame per read; most chunked bodies are
/// too).
#[derive(Debug, Default)]
struct Ready {
    first: Option<Item>,
    rest: VecDeque<Item>,
}

type Item = Result<Frame<Bytes>, BoxError>;

impl Ready {
    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn push(&mut self, item: Item) {
        if self.is_empty() {
            self.first = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    fn pop(&mut self) -> Option<Item> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    /// Bytes of data ready.
    fn data_len(&self) -> u64 {
        let len = |item: &Item| match item {
            Ok(frame) => frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => 0,
        };
        self.first.iter().chain(&self.rest).map(len).sum()
    }
}

#[derive(Debug)]
enum Reading {
    /// This many bytes still to come (more than zero).
    Length(u64),
    Chunked(Chunked),
    /// Read to its end.
    Done,
    /// Not a valid body: nothing more of the connection is read.
    Failed,
}

/// What [`Feed::take_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Took {
    /// Handed data or trailers to the body, or its end, or both.
    Handed,
    /// The buffer holds no more of the body: read more.
    More,
    /// The body is not valid (the exchange is told so).
    Failed,
}

impl Feed {
    /// A body still to be read: the connection keeps the feed, the exchange
    /// gets the body.
    pub(crate) fn new(framing: Framing) -> (Arc<Feed>, ClientBody) {
        let chunked = matches!(framing, Framing::Chunked(_));
        let reading = match framing {
            Framing::Length(0) => Reading::Done,
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked(limits) => Reading::Chunked(Chunked::new(limits)),
        };
        let feed = Arc::new(Feed(Mutex::new(State {
            ready: Ready::default(),
            chunked,
            reading,
            wanted: false,
            waker: None,
            dropped: false,
        })));
        (feed.clone(), ClientBody { feed })
    }

    /// The lock is this connection's alone (the exchange runs in the
    /// connection's task), never contended; a poisoned one is still usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The body asks for more, and more is to come.
    pub(crate) fn wants(&self) -> bool {
        let s = self.state();
        s.wanted && s.ready.is_empty() && !s.dropped && s.reading.is_open()
    }

    /// The body was not read to its end (or not validly): the connection
    /// must not read what follows as a request.
    pub(crate) fn unfinished(&self) -> bool {
        !matches!(self.state().reading, Reading::Done)
    }

    /// Hands the body what `buf` holds of it (frames, up to
    /// [`MAX_FRAMES_AT_ONCE`], its end, or why it is not valid), taking
    /// those bytes out of `buf`.
    pub(crate) fn take_from(&self, buf: &mut BytesMut) -> Took {
        let mut s = self.state();
        let mut took = Took::More;
        while s.ready.len() < MAX_FRAMES_AT_ONCE {
            match s.reading.next(buf) {
                Next::More => break,
                Next::Frame(frame) => {
                    s.ready.push(Ok(frame));
                    took = Took::Handed;
                }
                // The body learns it from `reading`.
                Next::End => {
                    took = Took::Handed;
                    break;
                }
                Next::Failed(e) => {
                    s.ready.push(Err(e.into()));
                    took = Took::Failed;
                    break;
                }
            }
        }
        if took != Took::More {
            s.handed();
        }
        took
    }

    /// The body cannot be read to its end (it stalled past
    /// `SITIO_BODY_TIMEOUT`): the exchange is told so, as by hyper's side
    /// (it answers 400), and nothing more of the connection is read.
    pub(crate) fn fail(&self, e: std::io::Error) {
        let mut s = self.state();
        s.reading = Reading::Failed;
        s.ready.push(Err(e.into()));
        s.handed();
    }

    /// Once the exchange let go of the body: drops what `buf` holds of it.
    /// True when that was all of it (the connection can read on).
    pub(crate) fn skip(&self, buf: &mut BytesMut) -> bool {
        let mut s = self.state();
        loop {
            match s.reading {
                Reading::Done => return true,
                Reading::Failed => return false,
                _ => {}
            }
            if let Next::More | Next::Failed(_) = s.reading.next(buf) {
                return false;
            }
        }
    }

    /// The exchange let go of the body.
    #[cfg(test)]
    pub(crate) fn is_dropped(&self) -> bool {
        self.state().dropped
    }
}

impl Reading {
    fn is_open(&self) -> bool {
        matches!(self, Reading::Length(_) | Reading::Chunked(_))
    }

    /// The next frame `buf` holds, taken out of it.
    fn next(&mut self, buf: &mut BytesMut) -> Next {
        match self {
            Reading::Done | Reading::Failed => Next::More,
            Reading::Length(_) if buf.is_empty() => Next::More,
            Reading::Length(left) => {
                // At most `left`, so it fits a `usize` (it is at most the buffer's).
                let n = (*left).min(buf.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    *self = Reading::Done;
                }
                Next::Frame(Frame::data(buf.split_to(n).freeze()))
            }
            Reading::Chunked(decoder) => match decoder.decode(buf) {
                Ok(Decoded::More) => Next::More,
                Ok(Decoded::Data(data)) => Next::Frame(Frame::data(data)),
                Ok(Decoded::Trailers(trailers)) => {
                    *self = Reading::Done;
                    Next::Frame(Frame::trailers(trailers))
                }
                Ok(Decoded::End) => {
                    *self = Reading::Done;
                    Next::End
                }
                Err(e) => {
                    *self = Reading::Failed;
                    Next::Failed(e)
                }
            },
        }
    }
}

/// What the buffer held of a body.
enum Next {
    /// Nothing (more is needed, or the body is over).
    More,
    Frame(Frame<Bytes>),
    /// The end of a chunked body without trailers.
    End,
    Failed(chunked::Malformed),
}

/// The exchange's side: the body as the driver and decorators read it.
#[derive(Debug)]
pub(crate) struct ClientBody {
    feed: Arc<Feed>,
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut s = self.feed.state();
        if let Some(next) = s.ready.pop() {
            return Poll::Ready(Some(next));
        }
        if !s.reading.is_open() {
            return Poll::Ready(None);
        }
        s.wanted = true;
        match &mut s.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let s = self.feed.state();
        // Never said in advance of a chunked body (hyper's body does not
        // either): the service gets the chunked framing its head declares.
        !s.chunked && s.ready.is_empty() && !s.reading.is_open()
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.feed.state();
        let ready = s.ready.data_len();
        match s.reading {
            // Unknown, as hyper's side says of a chunked body: the service
            // gets it chunked too.
            _ if s.chunked => {
                let mut hint = SizeHint::new();
                hint.set_lower(ready);
                hint
            }
            Reading::Length(left) => SizeHint::with_exact(left + ready),
            _ => SizeHint::with_exact(ready),
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let mut s = self.feed.state();
        s.dropped = true;
        s.ready = Ready::default();
        s.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::{Feed, Framing, Took};
    use crate::chunked::Limits;
    use bytes::BytesMut;
    use hyper::body::{Body as _, Frame};
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    fn poll(body: &mut super::ClientBody) -> Poll<Option<Frame<bytes::Bytes>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body)
            .poll_frame(&mut cx)
            .map(|f| f.map(|f| f.expect("a frame, not an error")))
    }

    #[test]
    fn the_body_takes_what_it_asked_for_and_ends_at_its_length() {
        let (feed, mut body) = Feed::new(Framing::Length(5));
        assert!(!feed.wants(), "nothing asked yet");
        assert!(poll(&mut body).is_pending());
        assert!(feed.wants());
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(feed.take_from(&mut buf), Took::Handed);
        assert!(!feed.wants(), "one read at a time");
        let Poll::Ready(Some(frame)) = poll(&mut body) else {
            panic!("data")
        };
        assert_eq!(frame.into_data().unwrap(), "hel");
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(2));
        assert!(poll(&mut body).is_pending());
        assert_eq!(feed.take_from(&mut buf), Took::More, "the buffer is empty");
        buf.extend_from_slice(b"loGET");
        assert_eq!(feed.take_from(&mut buf), Took::Handed);
        assert_eq!(&buf[..], b"GET", "the next request stays");
        assert!(poll(&mut body).is_ready());
        assert!(body.is_end_stream());
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
        assert!(!feed.is_dropped() && !feed.unfinished());
        drop(body);
        assert!(feed.is_dropped());
    }

    #[test]
    fn a_chunked_body_hands_all_the_buffer_holds_then_its_end_or_its_fault() {
        let (feed, mut body) = Feed::new(Framing::Chunked(Limits::HYPER));
        assert_eq!(body.size_hint().exact(), None, "unknown, as hyper says");
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n2\r\nde\r\n0\r\nX: 1\r\n\r\nnext"[..]);
        assert_eq!(feed.take_from(&mut buf), Took::Handed);
        assert_eq!(
            &buf[..],
            b"next",
            "every frame at once, the next request left"
        );
        assert_eq!(body.size_hint().lower(), 5);
        assert_eq!(body.size_hint().exact(), None);
        for want in ["abc", "de"] {
            let Poll::Ready(Some(data)) = poll(&mut body) else {
                panic!("data")
            };
            assert_eq!(data.into_data().unwrap(), want);
        }
        let Poll::Ready(Some(trailers)) = poll(&mut body) else {
            panic!("trailers")
        };
        assert_eq!(trailers.into_trailers().unwrap()["x"], "1");
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
        assert!(!feed.unfinished());

        // Its end read with the head: still not said in advance, so the
        // service gets the chunked framing the head declares.
        let (feed, mut body) = Feed::new(Framing::Chunked(Limits::HYPER));
        assert_eq!(
            feed.take_from(&mut BytesMut::from(&b"0\r\n\r\n"[..])),
            Took::Handed
        );
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), None);
        assert!(
            matches!(poll(&mut body), Poll::Ready(None)),
            "the end, no frame"
        );

        let (feed, mut body) = Feed::new(Framing::Chunked(Limits::HYPER));
        let mut buf = BytesMut::from(&b"5\r\nhel"[..]);
        assert!(poll(&mut body).is_pending());
        assert_eq!(feed.take_from(&mut buf), Took::Handed);
        assert!(poll(&mut body).is_ready());
        assert!(poll(&mut body).is_pending());
        assert!(feed.wants());
        assert_eq!(feed.take_from(&mut buf), Took::More, "nothing left to hand");
        buf.extend_from_slice(b"loX");
        assert_eq!(feed.take_from(&mut buf), Took::Failed);
        assert!(poll(&mut body).is_ready(), "the data before the fault");
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Err(_)))
        ));
        assert!(feed.unfinished() && !feed.wants(), "nothing more is read");
    }

    #[test]
    fn a_body_of_many_small_chunks_is_handed_a_few_frames_at_a_time() {
        let (feed, mut body) = Feed::new(Framing::Chunked(Limits::HYPER));
        let mut buf = BytesMut::from("1\r\na\r\n".repeat(100).as_str());
        buf.extend_from_slice(b"0\r\n\r\n");
        let mut data = 0;
        let mut takes = 0;
        loop {
            match poll(&mut body) {
                Poll::Ready(Some(frame)) => data += frame.into_data().unwrap().len(),
                Poll::Ready(None) => break,
                Poll::Pending => {
                    assert_eq!(feed.take_from(&mut buf), Took::Handed);
                    takes += 1;
                    assert!(feed.state().ready.len() <= super::MAX_FRAMES_AT_ONCE);
                }
            }
        }
        assert_eq!(
            (data, takes),
            (100, 100usize.div_ceil(super::MAX_FRAMES_AT_ONCE))
        );
        assert!(buf.is_empty() && !feed.unfinished());
    }

    #[test]
    fn a_body_let_go_is_skipped_if_the_buffer_holds_the_rest() {
        let (feed, body) = Feed::new(Framing::Chunked(Limits::HYPER));
        drop(body);
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n"[..]);
        assert!(!feed.skip(&mut buf), "more is to come");
        buf.extend_from_slice(b"0\r\n\r\nGET");
        assert!(feed.skip(&mut buf));
        assert_eq!(&buf[..], b"GET");
        let (feed, body) = Feed::new(Framing::Length(4));
        drop(body);
        let mut buf = BytesMut::from(&b"abcdGET"[..]);
        assert!(feed.skip(&mut buf));
        assert_eq!(&buf[..], b"GET");
        let (feed, body) = Feed::new(Framing::Chunked(Limits::HYPER));
        drop(body);
        assert!(!feed.skip(&mut BytesMut::from(&b"z\r\n"[..])), "not a body");
    }
}
