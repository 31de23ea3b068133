//! sitio's own server side of HTTP/1 (the client connection), taking over
//! from hyper's there as `upstream::h1` did for the client side: hyper's
//! server side was the largest part of sitio's user-space instructions per
//! request (its dispatcher, a new 8 KiB read buffer per request). See
//! docs/benchmarks.md.
//!
//! - `head`: the request head, parsed by `httparse` into one buffer shared by
//!   the header values, read by hyper's rules (framing, persistence, limits),
//!   with the raw framing fields the guard needs.
//! - `response` and `send`: the response head encoded and the body framed by
//!   hyper's server rules (`content-length` or chunked, HEAD/204/304, `date`,
//!   `connection: close`, trailers for a request with `TE: trailers`), head
//!   and a ready body written together.
//! - `serve`: the connection loop (keep-alive, pipelining, the client watched
//!   while its exchange runs, the drain and the connection cap). It serves
//!   every request it can parse: no body, a body of known length or a
//!   chunked one (`crate::chunked`, hyper's rules; `100-continue` included,
//!   HTTP/1.0 too), and upgrades, whose tunnel it relays itself after the
//!   `101`. A head its parser refuses is handed, with every byte read, to
//!   hyper's server, which answers it (400, 431...) as before.
//!
//! Each part is held to hyper on the same bytes: the parser on generated
//! heads, the desync corpus and a fuzz target (`request_head`); the encoder
//! on every combination of framing fields and bodies (`encode_tests`); the
//! whole connection, served both ways, on the same inputs (`tests`, and the
//! `server_side` fuzz target).
//!
//! When no decorator has request hooks, `head` also plans how the head can
//! go to the service as the bytes it came in (`crate::splice`);
//! `splice_alike` holds that to the edited field map's way.

mod date;
#[cfg(test)]
mod encode_tests;
pub(crate) mod head;
pub(crate) mod response;
mod send;
mod serve;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod splice_alike;
#[cfg(test)]
mod tests;
mod watch;

pub(crate) use serve::{Ended, serve};
