//! One error type that says who failed, so that one place (`rescue`) can
//! turn any failure into the right response and every log line can name the culprit.

use std::borrow::Cow;
use std::fmt;

use http::StatusCode;

/// Boxed error used by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Who is responsible for a failed exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The downstream client sent something sitio refuses, or went away.
    Client,
    /// The decorated service could not be reached or misbehaved.
    Upstream,
    /// sitio itself failed (a bug or resource exhaustion).
    Sitio,
}

/// What went wrong, at the level an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The service refused the TCP connection (nothing listens on the target port).
    ConnectRefused,
    /// The service reset the TCP connection while it was being set up.
    ConnectReset,
    /// The TCP connection to the service did not complete within the connect timeout.
    ConnectTimeout,
    /// The target address could not be resolved or connected for another reason.
    ConnectFailed,
    /// The service closed the connection before sending a complete response head.
    UpstreamClosed,
    /// The service did not answer within the configured time.
    UpstreamTimeout,
    /// The service sent bytes that are not a valid HTTP/1 response.
    UpstreamProtocol,
    /// The service's response body broke off before its end.
    UpstreamBodyAborted,
    /// The circuit breaker is open: sitio answered without calling the service.
    CircuitOpen,
    /// The client's request was malformed or ambiguous and was not forwarded.
    BadRequest,
    /// The client went away before the response was complete.
    ClientAborted,
    /// sitio failed on its own, or a decorator panicked.
    Internal,
    /// A decorator refused the exchange ([`crate::Action::Fail`] with a
    /// status of its choosing, e.g. 401 or 429).
    Refused,
    /// Fault injection answered instead of the service (`SITIO_FAULT_ABORT`).
    FaultInjected,
}

impl ErrorKind {
    /// The party responsible for this kind of failure.
    pub fn blame(self) -> Blame {
        match self {
            ErrorKind::BadRequest | ErrorKind::ClientAborted | ErrorKind::Refused => Blame::Client,
            ErrorKind::Internal | ErrorKind::FaultInjected => Blame::Sitio,
            _ => Blame::Upstream,
        }
    }

    /// A short stable token, used in the `sitio-error` header, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect-refused",
            ErrorKind::ConnectReset => "connect-reset",
            ErrorKind::ConnectTimeout => "connect-timeout",
            ErrorKind::ConnectFailed => "connect-failed",
            ErrorKind::UpstreamClosed => "upstream-closed",
            ErrorKind::UpstreamTimeout => "upstream-timeout",
            ErrorKind::UpstreamProtocol => "upstream-protocol",
            ErrorKind::UpstreamBodyAborted => "upstream-body-aborted",
            ErrorKind::CircuitOpen => "circuit-open",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::ClientAborted => "client-aborted",
            ErrorKind::Internal => "internal",
            ErrorKind::Refused => "refused",
            ErrorKind::FaultInjected => "fault-injected",
        }
    }

    /// The status a client receives when this failure happens before any response byte.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::ConnectTimeout | ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Refused => StatusCode::FORBIDDEN,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed exchange: its [`ErrorKind`], a human-readable detail for logs,
/// the status the client gets, and the error that caused it (its source chain).
#[derive(Debug)]
pub struct ProxyError {
    kind: ErrorKind,
    detail: Cow<'static, str>,
    status: Option<StatusCode>,
    /// Seconds after which trying again makes sense (`Retry-After`).
    retry_after: Option<u64>,
    /// A finer token than the kind's for `sitio-error` (e.g. `auth-expired`).
    cause: Option<&'static str>,
    source: Option<BoxError>,
}

impl ProxyError {
    /// A new error of `kind`, with `detail` explaining it for the logs.
    pub fn new(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        ProxyError {
            kind,
            detail: detail.into(),
            status: None,
            retry_after: None,
            cause: None,
            source: None,
        }
    }

    /// A decorator's refusal with the status the client gets (e.g. 401, 429);
    /// the detail goes to the log and, in the error page, to the client.
    pub fn refused(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        ProxyError::new(ErrorKind::Refused, detail).with_status(status)
    }

    /// The same error, answered with `status` instead of its kind's.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// The same error, with the time after which trying again makes sense:
    /// sitio's answer carries it as `Retry-After` (whole seconds, at least 1).
    pub fn with_retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after.as_secs_f64().ceil().max(1.0) as u64);
        self
    }

    /// The same error, named `cause` in the `sitio-error` header instead of
    /// its kind's token: a stable, lower-case token such as `auth-expired`.
    pub fn with_cause(mut self, cause: &'static str) -> Self {
        self.cause = Some(cause);
        self
    }

    /// The token of the `sitio-error` header: the cause if one was given, else the kind's.
    pub fn cause(&self) -> &'static str {
        self.cause.unwrap_or_else(|| self.kind.as_str())
    }

    /// Seconds after which trying again makes sense, if the failure says.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The same error, caused by `source` (shown by
    /// [`std::error::Error::source`], so log lines can print the chain).
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status the client gets for this failure.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.kind.status())
    }

    /// Who is to blame.
    pub fn blame(&self) -> Blame {
        self.kind.blame()
    }

    /// The log detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Errors that stop sitio from starting or running at all.
#[derive(Debug)]
pub enum StartError {
    /// A configuration value is unusable; the message names the variable.
    Config(String),
    /// A socket could not be bound or used.
    Io(String, std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(msg) => f.write_str(msg),
            StartError::Io(what, err) => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The `T` an IO error wraps, if it is one (`ClientIo`'s timeouts).
pub(crate) fn io_inner<T: std::error::Error + 'static>(e: &std::io::Error) -> Option<&T> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<T>())
}

/// The `T` somewhere in `e`'s source chain, looking inside IO errors too:
/// hyper wraps IO errors (and the h2 crate's), which wrap sitio's own.
pub(crate) fn cause<'e, T: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(found) = err.downcast_ref::<std::io::Error>().and_then(io_inner) {
            return Some(found);
        }
        source = err.source();
    }
    None
}
