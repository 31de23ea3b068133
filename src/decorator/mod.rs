//! The decorator API: the phase hooks a decorator may implement, what they
//! return, and the body filters they may install.
//!
//! Every hook has a do-nothing default, so a decorator implements only the phases
//! it cares about (the shape of Pingora's `ProxyHttp`). Decorators are composed by
//! [`Decorators::builder`] in an explicit order, following tower's onion rule: the
//! first decorator added is the outermost one. It sees the request first and the
//! response last. The phase order itself belongs to one driver (`engine`), which
//! runs the same way over a real connection and in [`Decorators::simulate`].
//!
//! ```text
//!  client ──request──▶ d1.on_request ─▶ d2.on_request ─▶ service
//!  client ◀─response── d1.on_response ◀ d2.on_response ◀─┘
//! ```

mod access_log;
mod chain;
mod error_pages;
mod exchange;
mod on_status;

pub use crate::filter::BodyFilter;
pub use access_log::AccessLog;
pub use chain::{Decorators, DecoratorsBuilder, Target};
pub use error_pages::{ErrorPages, PageFor};
pub use exchange::Exchange;
pub use on_status::{OnStatus, StatusMatch, on_status};

pub(crate) use crate::filter::Filters;
pub(crate) use chain::{SERVICE, States, panicked};

use std::future::Future;
use std::pin::Pin;

use http::{Response, request, response};

use crate::body::Body;
use crate::error::ProxyError;

/// What a request or response hook decides.
///
/// The lifetime lets a waiting hook ([`Action::wait`]) keep borrowing the head,
/// its state and the exchange while it waits; hooks that answer at once return
/// `Action<'_>` (or `Action<'static>`) and cost nothing more than before.
// `Respond` is large and `Continue` empty, but `Continue` is the hot value and
// returning it writes only the tag; boxing would cost decorator authors a
// `Box::new` on every answer for no gain.
#[allow(clippy::large_enum_variant)]
pub enum Action<'a> {
    /// Go on: forward the request, or pass the response outward unchanged
    /// (apart from any edits the hook made to the head).
    Continue,
    /// Answer with this response instead. From a request hook, the service is
    /// never called; from a response hook, the service's response is discarded.
    /// sitio normalises it like its own answers (version, hop-by-hop fields,
    /// framing).
    Respond(Response<Body>),
    /// Fail the exchange: the error goes the one error path (every decorator's
    /// [`Decorator::on_error`], then sitio's page in the client's format), is
    /// counted by kind in statistics and logged.
    Fail(ProxyError),
    /// Wait for something (a call to another service, a timer, a lock) without
    /// holding a thread, then decide. Made by [`Action::wait`].
    Wait(Waiting<'a>),
}

impl<'a> Action<'a> {
    /// A decision that needs to wait: `future` runs on the exchange's own task
    /// (on one worker as on many) and its answer is applied as if the hook had
    /// returned it. Only waiting hooks pay for this (one allocation). The
    /// answer borrows nothing (`Action<'static>`): edits to the head happen
    /// inside the future, which may borrow what the hook received.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sitio::{Action, Decorator, Exchange, http};
    ///
    /// struct Slow;
    /// impl Decorator for Slow {
    ///     type State = ();
    ///     fn on_request<'a>(
    ///         &'a self,
    ///         head: &'a mut http::request::Parts,
    ///         _: &'a mut (),
    ///         _: &'a mut Exchange,
    ///     ) -> Action<'a> {
    ///         Action::wait(async move {
    ///             tokio::time::sleep(Duration::from_millis(5)).await;
    ///             head.headers.insert("x-waited", http::HeaderValue::from_static("5ms"));
    ///             Action::Continue
    ///         })
    ///     }
    /// }
    /// ```
    pub fn wait(future: impl Future<Output = Action<'static>> + Send + 'a) -> Self {
        Action::Wait(Waiting(Box::pin(future)))
    }
}

impl std::fmt::Debug for Action<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Action::Continue => "Continue",
            Action::Respond(_) => "Respond",
            Action::Fail(_) => "Fail",
            Action::Wait(_) => "Wait",
        };
        f.write_str(name)
    }
}

/// A decision still being made; see [`Action::wait`].
pub struct Waiting<'a>(pub(crate) Pin<Box<dyn Future<Output = Action<'static>> + Send + 'a>>);

impl std::fmt::Debug for Waiting<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiting")
    }
}

/// A sidecar behaviour applied to every exchange. All hooks default to doing
/// nothing; implement only the ones you need.
///
/// Each decorator gets its own [`Decorator::State`] per exchange, created with
/// `Default` when the exchange starts using it and handed to every hook of
/// that exchange: two instances of one decorator never share it. A unit `()`
/// state costs nothing. The [`Exchange`] holds what sitio knows (read-only)
/// and the few controls a hook may use (upstream choice, body filters).
pub trait Decorator: Send + Sync + 'static {
    /// This decorator's per-exchange state; `()` when it needs none.
    type State: Default + Send + 'static;

    /// Whether sitio calls [`Decorator::on_response`] (`true` unless set).
    /// A decorator that does not implement it sets `false`: when no
    /// decorator in the chain has a response hook, sitio sends the
    /// service's response head on as it read it (hop-by-hop fields out)
    /// without building a field map for it, about a sixth of the CPU sitio
    /// spends on a small proxied request. With `false`, `on_response` is
    /// never called.
    ///
    /// ```
    /// use sitio::{Decorator, Exchange};
    ///
    /// /// Counts answers by status; needs no response head.
    /// struct Count;
    /// impl Decorator for Count {
    ///     type State = ();
    ///     const ON_RESPONSE: bool = false;
    ///     fn on_complete(&self, _: &mut (), ex: &Exchange) {
    ///         let _status = ex.status();
    ///     }
    /// }
    /// ```
    const ON_RESPONSE: bool = true;

    /// Whether sitio calls [`Decorator::on_request`] and
    /// [`Decorator::on_upstream_request`] (`true` unless set). A decorator
    /// that implements neither sets `false`: when no decorator in the chain
    /// has them, nothing can change a request head on its way, and sitio
    /// sends the client's head to the service as the bytes it came in
    /// (hop-by-hop fields out, forwarding fields in) instead of editing its
    /// field map and encoding it again. With `false`, neither hook is
    /// called; [`Decorator::on_start`] sees every exchange begin.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use sitio::{Decorator, Exchange};
    ///
    /// /// Counts exchanges in flight; reads no head.
    /// #[derive(Default)]
    /// struct InFlight(AtomicU64);
    /// impl Decorator for InFlight {
    ///     type State = ();
    ///     const ON_REQUEST: bool = false;
    ///     const ON_RESPONSE: bool = false;
    ///     fn on_start(&self, _: &mut (), _: &Exchange) {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///     }
    ///     fn on_complete(&self, _: &mut (), _: &Exchange) {
    ///         self.0.fetch_sub(1, Ordering::Relaxed);
    ///     }
    /// }
    /// ```
    const ON_REQUEST: bool = true;

    /// A short name for logs (a panic in a hook is logged with it).
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// Called when an exchange begins, its request head read (before the
    /// guard checks it), outermost decorator first: every exchange that
    /// starts also completes ([`Decorator::on_complete`]). Sees the
    /// exchange, not the head: counts, gauges, timers.
    fn on_start(&self, _state: &mut Self::State, _exchange: &Exchange) {}

    /// Called once the request head is read and checked, outermost decorator
    /// first. May edit the head, pick an upstream
    /// ([`Exchange::set_upstream`]), filter the request body, answer, fail
    /// or wait.
    fn on_request<'a>(
        &'a self,
        _head: &'a mut request::Parts,
        _state: &'a mut Self::State,
        _exchange: &'a mut Exchange,
    ) -> Action<'a> {
        Action::Continue
    }

    /// Called with the request as the chosen upstream will receive it
    /// (forwarding headers added, hop-by-hop fields removed), outermost first,
    /// just before it is sent.
    fn on_upstream_request<'a>(
        &'a self,
        _head: &'a mut request::Parts,
        _state: &'a mut Self::State,
        _exchange: &'a mut Exchange,
    ) -> Action<'a> {
        Action::Continue
    }

    /// Called with the response head (from the service, from sitio's error
    /// path, or from an inner decorator), innermost first. May edit the head,
    /// replace the response, fail, wait, or filter the body
    /// ([`Exchange::filter_response_body`]).
    fn on_response<'a>(
        &'a self,
        _head: &'a mut response::Parts,
        _state: &'a mut Self::State,
        _exchange: &'a mut Exchange,
    ) -> Action<'a> {
        Action::Continue
    }

    /// Called, innermost first, for every failure that happens before a
    /// response head: the guard's refusals, malformed request bodies, the
    /// service's failures and timeouts, a decorator's [`Action::Fail`] or
    /// panic. The first `Some` replaces sitio's own answer (which follows
    /// the client's `Accept`: HTML or `application/problem+json`).
    fn on_error(
        &self,
        _error: &ProxyError,
        _state: &mut Self::State,
        _exchange: &mut Exchange,
    ) -> Option<Response<Body>> {
        None
    }

    /// Called once the exchange is over (last body byte sent, or failed),
    /// innermost first, with the status, timings, byte counts and error kind
    /// filled in.
    fn on_complete(&self, _state: &mut Self::State, _exchange: &Exchange) {}
}
