//! The response body as handed to the client: runs the body filters, counts
//! bytes, and completes the exchange exactly once, whether it ends cleanly,
//! fails, or the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::Leg;
use crate::body::{Body, BoxError};
use crate::decorator::{Exchange, States};
use crate::error::ErrorKind;
use crate::upstream::RequestBodyState;

/// A response body whose end completes its exchange.
pub(crate) struct Tracked<L: Leg> {
    inner: Body,
    exchange: Exchange,
    states: States,
    leg: Arc<L>,
    bytes_in: Option<Arc<RequestBodyState>>,
    done: bool,
    /// The filters' end ran; what follows their held-back bytes.
    flushed: bool,
    after_tail: Option<Box<Option<HeaderMap>>>, // rare: boxed, so the body stays small
    /// The client's byte count when this response began (see `send_window`).
    written_at_start: u64,
}

impl<L: Leg> Tracked<L> {
    /// Wraps the final response of an exchange.
    pub(crate) fn new(
        leg: Arc<L>,
        res: Response<Body>,
        mut exchange: Exchange,
        states: States,
        bytes_in: Option<Arc<RequestBodyState>>,
    ) -> Response<Tracked<L>> {
        exchange.status = Some(res.status());
        exchange.response_started = Some(crate::clock::now());
        let (mut head, inner) = res.into_parts();
        if exchange.response_filters.change_length() {
            // Framing follows: chunked to HTTP/1.1 clients, close-delimited
            // to HTTP/1.0 ones, never a stale length.
            head.headers.remove(CONTENT_LENGTH);
        }
        let written_at_start = leg.written();
        let body = Tracked {
            inner,
            exchange,
            states,
            leg,
            bytes_in,
            done: false,
            flushed: false,
            after_tail: None,
            written_at_start,
        };
        Response::from_parts(head, body)
    }

    /// The exchange, completed (for `Decorators::simulate`, once the body
    /// was read: an unread body completes as abandoned by the client).
    pub(crate) fn completed(mut self) -> Exchange {
        if !self.done {
            let complete = self.inner.is_end_stream() || self.bodiless();
            self.finish((!complete).then_some(ErrorKind::ClientAborted));
        }
        let placeholder = Exchange::new(
            &http::Request::new(()).into_parts().0,
            Default::default(),
            self.exchange.client_addr,
            self.exchange.started,
        );
        std::mem::replace(&mut self.exchange, placeholder)
    }

    fn finish(&mut self, error: Option<ErrorKind>) {
        if self.done {
            return;
        }
        self.done = true;
        let ex = &mut self.exchange;
        let now = crate::clock::now();
        ex.finished = Some(now);
        if ex.error.is_none() {
            ex.error = error;
        }
        if let Some(body) = &self.bytes_in {
            ex.bytes_in = body.bytes();
        }
        self.leg.decorators().complete(&mut self.states, ex);
        self.leg.finished(now);
    }

    /// A response that carries no body by definition, so hyper never reads it.
    fn bodiless(&self) -> bool {
        self.exchange.method == Method::HEAD
            || self.exchange.status.is_some_and(|s| {
                s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED || s.is_informational()
            })
    }

    fn filtering(&self) -> bool {
        !self.exchange.response_filters.is_empty()
    }

    /// The body ended (with `trailers`, or none): the filters' held-back
    /// bytes go first.
    fn ended(
        &mut self,
        trailers: Option<HeaderMap>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.filtering() && !self.flushed {
            self.flushed = true;
            let tail = self.exchange.response_filters.end();
            if !tail.is_empty() {
                self.exchange.bytes_out += tail.len() as u64;
                self.after_tail = Some(Box::new(trailers));
                return Poll::Ready(Some(Ok(Frame::data(tail))));
            }
        }
        self.finish(None);
        Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
    }
}

impl<L: Leg> HttpBody for Tracked<L> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(trailers) = this.after_tail.take().map(|t| *t) {
            this.finish(None);
            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
        }
        if this
            .leg
            .poll_room(cx, this.written_at_start, this.exchange.bytes_out)
            .is_pending()
        {
            return Poll::Pending;
        }
        loop {
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return this.ended(None),
                Poll::Ready(Some(Err(e))) => {
                    this.finish(Some(ErrorKind::UpstreamBodyAborted));
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let mut data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => return this.ended(Some(trailers)),
                    Err(_) => continue, // a frame kind HTTP/1 cannot carry
                },
            };
            let end = this.inner.is_end_stream();
            if this.filtering() {
                let filters = &mut this.exchange.response_filters;
                filters.chunk(&mut data);
                if end {
                    // The last chunk: a peer that knows the length stops
                    // polling after it, so the filters end with it.
                    this.flushed = true;
                    data = filters.end_after(data);
                }
            }
            this.exchange.bytes_out += data.len() as u64;
            if end {
                this.finish(None);
            }
            if data.is_empty() {
                // Held back by a filter: an empty chunk would end a chunked body.
                if end {
                    return Poll::Ready(None);
                }
                continue;
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
            && self.after_tail.is_none()
            && (self.flushed || !self.filtering())
    }

    fn size_hint(&self) -> SizeHint {
        if self.exchange.response_filters.change_length() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl<L: Leg> Drop for Tracked<L> {
    fn drop(&mut self) {
        if !self.done {
            let complete = self.inner.is_end_stream() || self.bodiless();
            self.finish((!complete).then_some(ErrorKind::ClientAborted));
        }
    }
}
