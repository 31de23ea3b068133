//! The response body as handed to the client connection: counts bytes, feeds
//! body hooks when asked, and reports the exchange's completion exactly once,
//! whether it ends cleanly, fails, or the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::decorator::Exchange;
use crate::error::ErrorKind;
use crate::proxy::ConnCtx;
use crate::upstream::RequestBodyState;

/// A response body whose end completes its exchange.
pub(crate) struct TrackedBody {
    inner: Body,
    exchange: Exchange,
    conn: Arc<ConnCtx>,
    bytes_in: Option<Arc<RequestBodyState>>,
    done: bool,
    /// The client socket's byte count when this response began (see `send_window`).
    written_at_start: u64,
}

impl TrackedBody {
    /// Wraps the final response of an exchange.
    pub(crate) fn respond(
        conn: Arc<ConnCtx>,
        res: Response<Body>,
        mut exchange: Exchange,
        bytes_in: Option<Arc<RequestBodyState>>,
    ) -> Response<TrackedBody> {
        exchange.status = Some(res.status());
        exchange.response_started = Some(Instant::now());
        let (head, inner) = res.into_parts();
        let written_at_start = conn.phase.window.written();
        let body = TrackedBody {
            inner,
            exchange,
            conn,
            bytes_in,
            done: false,
            written_at_start,
        };
        Response::from_parts(head, body)
    }

    fn finish(&mut self, error: Option<ErrorKind>) {
        if self.done {
            return;
        }
        self.done = true;
        let ex = &mut self.exchange;
        let now = Instant::now();
        ex.finished = Some(now);
        if ex.error.is_none() {
            ex.error = error;
        }
        if let Some(body) = &self.bytes_in {
            ex.bytes_in = body.bytes();
        }
        self.conn.shared.decorators.on_complete(ex);
        self.conn.phase.exchange_finished(now);
    }

    /// A response that carries no body by definition, so hyper never reads it.
    fn bodiless(&self) -> bool {
        self.exchange.method == Method::HEAD
            || self.exchange.status.is_some_and(|s| {
                s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED || s.is_informational()
            })
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let window = &this.conn.phase.window;
        if window
            .poll_room(cx, this.written_at_start, this.exchange.bytes_out)
            .is_pending()
        {
            return Poll::Pending;
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Some(ErrorKind::UpstreamBodyAborted));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(mut data) => {
                        if this.exchange.body_watchers != 0 {
                            let decorators = &this.conn.shared.decorators;
                            decorators.on_body_chunk(&mut data, &mut this.exchange);
                        }
                        this.exchange.bytes_out += data.len() as u64;
                        Frame::data(data)
                    }
                    Err(trailers) => trailers,
                };
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if !self.done {
            let complete = self.inner.is_end_stream() || self.bodiless();
            self.finish((!complete).then_some(ErrorKind::ClientAborted));
        }
    }
}
