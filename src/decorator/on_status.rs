//! A decorator that acts on responses with a given status, the descendant of the
//! seed's `service.on('http:404', ...)`.

use std::ops::RangeInclusive;

use http::response;

use super::{Action, Decorator, Exchange};

/// Which statuses an [`OnStatus`] decorator reacts to.
#[derive(Debug, Clone)]
pub enum StatusMatch {
    /// Exactly this code.
    Exact(u16),
    /// Any code in this range, e.g. `500..=599`.
    Range(RangeInclusive<u16>),
}

impl StatusMatch {
    fn matches(&self, code: u16) -> bool {
        match self {
            StatusMatch::Exact(c) => *c == code,
            StatusMatch::Range(r) => r.contains(&code),
        }
    }
}

impl From<u16> for StatusMatch {
    fn from(code: u16) -> Self {
        StatusMatch::Exact(code)
    }
}

impl From<RangeInclusive<u16>> for StatusMatch {
    fn from(range: RangeInclusive<u16>) -> Self {
        StatusMatch::Range(range)
    }
}

/// Calls a closure on each response whose status matches; see [`on_status`].
pub struct OnStatus<F> {
    status: StatusMatch,
    hook: F,
}

impl<F> std::fmt::Debug for OnStatus<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnStatus").finish_non_exhaustive()
    }
}

/// A decorator that runs `hook` on every response whose status matches `status`
/// (a code such as `404`, or a range such as `500..=599`). The hook may edit the
/// head and return [`Action::Continue`], or answer with its own response.
///
/// ```
/// use sitio::{Action, on_status, response};
/// let override_404 = on_status(404, |_head, _exchange| {
///     Action::Respond(response::html(404, "<h1>Look somewhere else</h1>"))
/// });
/// # let _ = override_404;
/// ```
pub fn on_status<F>(status: impl Into<StatusMatch>, hook: F) -> OnStatus<F>
where
    F: Fn(&mut response::Parts, &mut Exchange) -> Action<'static> + Send + Sync + 'static,
{
    OnStatus {
        status: status.into(),
        hook,
    }
}

impl<F> Decorator for OnStatus<F>
where
    F: Fn(&mut response::Parts, &mut Exchange) -> Action<'static> + Send + Sync + 'static,
{
    type State = ();
    const ON_REQUEST: bool = false;

    fn name(&self) -> &'static str {
        "on_status"
    }

    fn on_response(
        &self,
        head: &mut response::Parts,
        (): &mut (),
        exchange: &mut Exchange,
    ) -> Action<'_> {
        if self.status.matches(head.status.as_u16()) {
            (self.hook)(head, exchange)
        } else {
            Action::Continue
        }
    }
}
