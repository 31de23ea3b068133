//! The response body as handed to the client: runs the body filters, counts
//! bytes, and completes the exchange exactly once, whether it ends cleanly,
//! fails, or the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Method, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::Leg;
use crate::body::{Body, BoxError};
use crate::decorator::{Exchange, States};
use crate::error::ErrorKind;
use crate::filter::Step;
use crate::upstream::RequestBodyState;

/// A response body whose end completes its exchange.
pub(crate) struct Tracked<L: Leg> {
    inner: Body,
    exchange: Exchange,
    states: States,
    leg: Arc<L>,
    bytes_in: Option<Arc<RequestBodyState>>,
    done: bool,
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
        if exchange.is_grpc() {
            // A trailers-only answer (sitio's own failures are) has it here.
            exchange.grpc_status = crate::grpc::status_of(&head.headers);
        }
        if exchange.response_filters.change_length() {
            // Framing follows: chunked to HTTP/1.1 clients, close-delimited
            // to HTTP/1.0 ones, never a stale length.
            head.headers.remove(CONTENT_LENGTH);
        }
        let written_at_start = leg.written();
        let mut body = Tracked {
            inner,
            exchange,
            states,
            leg,
            bytes_in,
            done: false,
            written_at_start,
        };
        if L::COMPLETE_BODILESS_AT_HEAD && (body.is_end_stream() || body.bodiless()) {
            body.finish(None);
        }
        Response::from_parts(head, body)
    }

    /// The fields of the response head, if they were kept as the client's
    /// lines (see `upstream::h1::Lines`); once.
    pub(crate) fn take_lines(&mut self) -> Option<Box<crate::upstream::Lines>> {
        self.inner.take_lines()
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

    /// Hands on what the filters made of the body.
    fn emit(&mut self, step: Step) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Step::Frame(frame) = step else {
            self.finish(None);
            return Poll::Ready(None);
        };
        if let Some(data) = frame.data_ref() {
            self.exchange.bytes_out += data.len() as u64;
        } else if let Some(trailers) = frame.trailers_ref()
            && self.exchange.is_grpc()
        {
            self.exchange.grpc_status =
                crate::grpc::status_of(trailers).or(self.exchange.grpc_status);
        }
        if self.is_end_stream() {
            self.finish(None);
        }
        Poll::Ready(Some(Ok(frame)))
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
        if let Some(step) = this.exchange.response_filters.waiting() {
            return this.emit(step);
        }
        if this
            .leg
            .poll_room(cx, this.written_at_start, this.exchange.bytes_out)
            .is_pending()
        {
            return Poll::Pending;
        }
        loop {
            let polled = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.finish(Some(ErrorKind::UpstreamBodyAborted));
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => Some(frame),
                Poll::Ready(None) => None,
            };
            let last = this.inner.is_end_stream();
            match this.exchange.response_filters.step(polled, last) {
                Step::Held => continue,
                step => return this.emit(step),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.exchange.response_filters.drained()
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
