//! The decorator API: the phase hooks a decorator may implement, and the
//! per-exchange context they share.
//!
//! Every hook has a do-nothing default, so a decorator implements only the phases
//! it cares about (the shape of Pingora's `ProxyHttp`). Decorators are composed by
//! [`Decorators::builder`] in an explicit order, following tower's onion rule: the
//! first decorator added is the outermost one. It sees the request first and the
//! response last.
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
mod simulate;

pub use access_log::AccessLog;
pub use chain::{Decorators, DecoratorsBuilder};
pub use error_pages::{ErrorPages, PageFor};
pub use exchange::Exchange;
pub use on_status::{OnStatus, StatusMatch, on_status};
pub use simulate::Simulated;

use bytes::Bytes;
use http::{Response, request, response};

use crate::body::Body;
use crate::error::ProxyError;

/// What a request or response hook decides.
// `Respond` is large and `Continue` empty, but `Continue` is the hot value and
// returning it writes only the tag; boxing would cost decorator authors a
// `Box::new` on every answer for no gain.
#[allow(clippy::large_enum_variant)]
pub enum Action {
    /// Go on: forward the request, or pass the response outward unchanged
    /// (apart from any edits the hook made to the head).
    Continue,
    /// Answer with this response instead. From a request hook, the service is
    /// never called; from a response hook, the service's response is discarded.
    Respond(Response<Body>),
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Action").finish_non_exhaustive()
    }
}

/// A sidecar behaviour applied to every exchange. All hooks default to doing
/// nothing; implement only the ones you need.
pub trait Decorator: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// Called once the request head is read, before the service is called.
    /// May edit the head (it is what the service receives) or answer directly.
    fn on_request(&self, _head: &mut request::Parts, _exchange: &mut Exchange) -> Action {
        Action::Continue
    }

    /// Called with the response head (from the service, from sitio's error
    /// handling, or from an inner decorator). May edit the head or replace the
    /// whole response. To see body chunks, call [`Exchange::watch_body`] here.
    fn on_response(&self, _head: &mut response::Parts, _exchange: &mut Exchange) -> Action {
        Action::Continue
    }

    /// Called for each chunk of the response body, only for exchanges in which
    /// this decorator called [`Exchange::watch_body`]; may rewrite the chunk.
    fn on_body_chunk(&self, _chunk: &mut Bytes, _exchange: &mut Exchange) {}

    /// Called when the service could not be reached or failed before a response
    /// head. Returning a response replaces sitio's own error page.
    fn on_upstream_error(
        &self,
        _error: &ProxyError,
        _exchange: &mut Exchange,
    ) -> Option<Response<Body>> {
        None
    }

    /// Called once the exchange is over (last body byte sent, or failed), with
    /// the status, timings, byte counts and error kind filled in.
    fn on_complete(&self, _exchange: &Exchange) {}
}
