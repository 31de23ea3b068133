//! The client connection as hyper sees it: the bytes read during protocol
//! detection are replayed first, and the header-read and keep-alive idle
//! timeouts are enforced here, because only here can sitio tell a silent idle
//! connection (closed quietly) from a client dribbling a request head (sent 408).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use futures_util::task::AtomicWaker;

use crate::deadline::{LazyDeadline, Stall};
use crate::guard::RawFraming;
use crate::head_scan::HeadScan;
use crate::interim::InterimRelay;
use crate::send_window::SendWindow;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

const AWAITING_HEAD: u8 = 0;
const IN_EXCHANGE: u8 = 1;
const TUNNEL: u8 = 2;

/// Where a client connection is between requests; shared by the connection's IO
/// and its exchanges (never across connections, so never contended).
#[derive(Debug, Default)]
pub(crate) struct ConnPhase {
    /// AWAITING_HEAD, IN_EXCHANGE or TUNNEL.
    state: AtomicU8,
    /// Exchanges started on this connection.
    exchanges: AtomicU32,
    /// The connection task, woken when an exchange ends (to arm the idle timer).
    reader: AtomicWaker,
    /// RAW_* bits of the head being read, taken by the exchange it starts.
    raw_framing: AtomicU8,
    /// A request body is still expected (the body timeout applies).
    body_pending: AtomicBool,
    /// Relays the service's `103 Early Hints` to the client.
    pub(crate) interim: InterimRelay,
    /// Keeps response bodies from running ahead of the client's socket.
    pub(crate) window: SendWindow,
    /// Some bytes of the next request head have arrived.
    head_started: AtomicBool,
    /// When the last exchange finished, in [`clock`] nanoseconds.
    idle_since: AtomicU64,
    /// Set when the connection is to close as soon as it is idle.
    evicted: AtomicBool,
    /// Set with `evicted` when the cause is the drain.
    draining: AtomicBool,
    /// The close lingers (see `ClientIo::poll_linger`): answered, only
    /// draining what the client still sends, so the first to make room at
    /// the connection cap.
    lingering: AtomicBool,
    /// The connection task, woken by [`ConnPhase::evict`].
    evict_waker: AtomicWaker,
    /// Parked (see [`PARK_AFTER`]): its idle timeout is the registry's sweep.
    parked: AtomicBool,
    /// The last request's body has not been read to its end: a close must
    /// linger (see `ClientIo::poll_linger`).
    body_unread: AtomicBool,
}

/// Marks a connection parked until dropped.
pub(crate) struct ParkedGuard<'a> {
    phase: &'a ConnPhase,
    _counted: crate::telemetry::ParkedConnection,
}

impl Drop for ParkedGuard<'_> {
    fn drop(&mut self) {
        self.phase.parked.store(false, Ordering::Relaxed);
    }
}

/// Nanoseconds since the first call: a monotonic clock that fits an atomic.
pub(crate) fn clock(at: std::time::Instant) -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

const RAW_CONTENT_LENGTH: u8 = 1;
const RAW_TRANSFER_ENCODING: u8 = 2;

impl ConnPhase {
    /// A request head was read: no head timeout while the exchange runs.
    /// Returns what the raw head showed of its framing.
    pub(crate) fn exchange_started(&self) -> RawFraming {
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(false, Ordering::Relaxed);
        let _ = self.state.compare_exchange(
            AWAITING_HEAD,
            IN_EXCHANGE,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let bits = self.raw_framing.swap(0, Ordering::Relaxed);
        RawFraming {
            content_length: bits & RAW_CONTENT_LENGTH != 0,
            transfer_encoding: bits & RAW_TRANSFER_ENCODING != 0,
        }
    }

    /// What the head about to start an exchange showed of its framing.
    pub(crate) fn head_scanned(&self, framing: RawFraming) {
        let bits = u8::from(framing.content_length) * RAW_CONTENT_LENGTH
            + u8::from(framing.transfer_encoding) * RAW_TRANSFER_ENCODING;
        self.raw_framing.store(bits, Ordering::Relaxed);
    }

    /// How many exchanges have started on this connection.
    pub(crate) fn exchanges(&self) -> u32 {
        self.exchanges.load(Ordering::Relaxed)
    }

    /// The response is fully sent (at `at`): the next bytes are a new request head.
    pub(crate) fn exchange_finished(&self, at: std::time::Instant) {
        self.idle_since.store(clock(at), Ordering::Relaxed);
        let finished = self
            .state
            .compare_exchange(
                IN_EXCHANGE,
                AWAITING_HEAD,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok();
        if finished {
            // hyper may have polled the socket while the exchange still ran, so
            // no idle timer is armed: have it poll again, which arms one.
            self.reader.wake();
        }
    }

    /// A request head arrived, with a body to come or not; the body's reader
    /// calls [`ConnPhase::body_read`] when it reached the end.
    pub(crate) fn request_arrived(&self, with_body: bool) {
        self.body_unread.store(with_body, Ordering::Relaxed);
    }

    /// The request body was read to its end (or the client broke it off):
    /// nothing more of it will come.
    pub(crate) fn body_read(&self) {
        self.body_unread.store(false, Ordering::Relaxed);
    }

    /// The request being served has a body still to arrive (or not).
    pub(crate) fn body_pending(&self, pending: bool) {
        self.body_pending.store(pending, Ordering::Relaxed);
    }

    /// The drain asked the connection to close (see [`ConnPhase::evicted`]).
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The connection was evicted, or the drain began: it closes once idle.
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Resolves when the connection was evicted or the drain began.
    /// An atomic load per poll: the connection polls this with every wake-up,
    /// so it must cost less than a `Notify`.
    pub(crate) async fn evicted(&self) {
        std::future::poll_fn(|cx| {
            if self.evicted.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.evict_waker.register(cx.waker());
            if self.evicted.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// The connection is parked (and counted so) until the guard drops: the
    /// idle registry's sweep is then its idle timeout.
    pub(crate) fn park(&self, connections: &Arc<crate::telemetry::Connections>) -> ParkedGuard<'_> {
        self.parked.store(true, Ordering::Relaxed);
        ParkedGuard {
            phase: self,
            _counted: connections.parked(),
        }
    }

    /// The phase of a connection that was parked outside any task (`lot`)
    /// and resumes: `exchanges` served, idle since `idle_since`.
    pub(crate) fn resumed(exchanges: u32, idle_since: u64) -> Self {
        let phase = ConnPhase::default();
        phase.exchanges.store(exchanges, Ordering::Relaxed);
        phase.idle_since.store(idle_since, Ordering::Relaxed);
        phase
    }

    /// Since when (`clock` nanoseconds) the last exchange finished.
    pub(crate) fn last_finished(&self) -> u64 {
        self.idle_since.load(Ordering::Relaxed)
    }

    /// The connection became a tunnel: HTTP timeouts no longer apply.
    pub(crate) fn tunnel(&self) {
        self.state.store(TUNNEL, Ordering::Relaxed);
    }

    fn get(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    Off,
    /// Waiting for the first byte of a request head.
    Idle,
    /// Some of a head arrived; all of it must arrive in time.
    Head,
    /// A whole head arrived in one read; hyper is about to start its exchange.
    Dispatched,
}

/// Vectored writes up to this size are copied and sent as one buffer.
const SMALL_WRITE: usize = 4096;

thread_local! {
    /// The buffer small vectored writes are copied into: one per thread,
    /// not per connection, so idle connections hold none.
    static FLAT: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(SMALL_WRITE));
}

/// What a client that was too slow with its request head receives when the
/// error path could not answer (a hook that waits, a streamed page).
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\nsitio-error: header-timeout\r\n\r\n";

/// What a connection answers a failure with before any request exists:
/// implemented by the connection's context, so the decorators' error path
/// answers it as it answers an exchange's failures.
pub(crate) trait EarlyAnswer: Send + Sync {
    /// The bytes answering a request head that did not arrive in time
    /// (`None`: the plain 408).
    fn header_timeout(&self) -> Option<Bytes>;
}

/// The error hyper sees when a request body or a response write stalled.
#[derive(Debug)]
pub(crate) struct Stalled(&'static str);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Stalled {}

/// The error hyper sees when a request head was too slow.
#[derive(Debug)]
pub(crate) struct HeaderTimeout;

impl std::fmt::Display for HeaderTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request head not received within the header timeout; sent 408")
    }
}
impl std::error::Error for HeaderTimeout {}

/// A client stream with replayed prefix and HTTP read timeouts.
pub(crate) struct ClientIo<S> {
    stream: S,
    prefix: Bytes,
    phase: Arc<ConnPhase>,
    armed: Armed,
    /// Exchanges seen when the timer was last armed: a new one means any
    /// armed head deadline belongs to a request that has since been served.
    armed_at_exchange: u32,
    scan: HeadScan,
    /// sitio's own server side reads the heads (and notes their framing
    /// itself): no scan of what is read; until a hand-over to hyper.
    own_heads: bool,
    deadline: LazyDeadline,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// Runs while a request body is awaited; every byte restarts it.
    body_stall: Stall,
    /// Runs while a response write is blocked on the client.
    send_stall: Stall,
    /// Answers a head that did not arrive in time.
    early: Arc<dyn EarlyAnswer>,
    /// When the keep-alive idle timeout ends the current wait for a head.
    idle_due: Instant,
    /// Handed to hyper as a clean end so that it lets go of the connection
    /// (see [`PARK_AFTER`]); the socket stays open.
    parked: bool,
    /// `exchanges` when bytes beyond a request arrived during its exchange
    /// (pipelining): hyper may hold part of the next head, so this idle
    /// wait must not park.
    pipelined_at: Option<u32>,
    /// Set once the close began to linger: when it must end anyway.
    linger_until: Option<Instant>,
    /// The head timeout answered 408: a close after it does not linger (a
    /// slow client would hold the connection up to `LINGER_MAX` longer).
    head_timed_out: bool,
}

/// Longest quiet spell of a lingering close (nginx: 5 s).
const LINGER_QUIET: Duration = Duration::from_secs(5);
/// Longest lingering close (nginx: 30 s).
const LINGER_MAX: Duration = Duration::from_secs(30);

/// A keep-alive connection idle this long is parked: hyper lets go of it
/// (freeing its read and write buffers, 16 KiB), and the connection waits
/// for its next request holding only the socket and a few hundred bytes;
/// a new hyper connection takes the next request. Long enough that a client
/// with steady traffic never pays for the new connection (a few
/// microseconds), short enough that idle clients cost little (nginx frees
/// its buffers at once).
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(100);

/// The connection's timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
    pub(crate) body: Duration,
    pub(crate) send: Duration,
}

impl<S> ClientIo<S> {
    /// `prefix` was already read from `stream`; its head must be complete by
    /// `head_deadline` (counted from accept).
    pub(crate) fn new(
        stream: S,
        prefix: Bytes,
        phase: Arc<ConnPhase>,
        head_deadline: Instant,
        timeouts: Timeouts,
        early: Arc<dyn EarlyAnswer>,
    ) -> Self {
        ClientIo {
            stream,
            prefix,
            phase,
            armed: Armed::Head,
            armed_at_exchange: 0,
            scan: HeadScan::default(),
            own_heads: false,
            deadline: LazyDeadline::new(head_deadline),
            header_timeout: timeouts.header,
            idle_timeout: timeouts.idle,
            body_stall: Stall::new(timeouts.body),
            send_stall: Stall::new(timeouts.send),
            early,
            idle_due: head_deadline,
            parked: false,
            pipelined_at: None,
            linger_until: None,
            head_timed_out: false,
        }
    }

    /// What is left of a connection hyper let go of to park it (see
    /// [`PARK_AFTER`]): the socket; `None` when
    /// hyper ended for any other reason (the client closed, an upgrade).
    pub(crate) fn into_parked(self) -> Option<Parked<S>> {
        self.parked.then_some(Parked {
            stream: self.stream,
        })
    }

    /// The last read ended the wait for a head because the connection is
    /// to be parked (see [`PARK_AFTER`]), not because the client closed.
    pub(crate) fn is_parked(&self) -> bool {
        self.parked
    }

    /// Bytes read but not used (a head sitio's own server side leaves to
    /// hyper's, and what followed it) are read again first, and scanned
    /// again. One copy at most, and none for a head read alone.
    pub(crate) fn unread(&mut self, head: Bytes, rest: &[u8]) {
        if self.prefix.is_empty() && rest.is_empty() {
            self.prefix = head;
        } else {
            let len = head.len() + rest.len() + self.prefix.len();
            let mut joined = bytes::BytesMut::with_capacity(len);
            for part in [&head[..], rest, &self.prefix[..]] {
                joined.extend_from_slice(part);
            }
            self.prefix = joined.freeze();
        }
        self.scan.reset();
        self.own_heads = false;
    }

    /// sitio's own server side reads the heads from now on, until it hands
    /// the connection to hyper ([`ClientIo::unread`]): what is read is not
    /// scanned (about 575 instructions a request), and a head that needs
    /// another read is held to the header timeout from that read on.
    pub(crate) fn read_heads_itself(&mut self) {
        self.own_heads = true;
    }

    /// A parked connection whose next request's first bytes arrived: they are
    /// replayed to the next hyper connection, whose head is held to the
    /// header timeout from now.
    pub(crate) fn resume(
        parked: Parked<S>,
        first: Bytes,
        phase: Arc<ConnPhase>,
        timeouts: Timeouts,
        early: Arc<dyn EarlyAnswer>,
    ) -> Self {
        phase.head_started.store(true, Ordering::Relaxed);
        let mut io = ClientIo::new(
            parked.stream,
            first,
            phase,
            Instant::now() + timeouts.header,
            timeouts,
            early,
        );
        io.armed_at_exchange = io.phase.exchanges();
        io
    }

    fn arm(&mut self, armed: Armed, after: Duration) {
        self.armed = armed;
        self.deadline.set(Instant::now() + after);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            if let Some(framing) = this.scan.feed(&this.prefix[..n]) {
                this.phase.head_scanned(framing);
            }
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // An advanced `Bytes` still holds its whole buffer; an idle
                // keep-alive connection should not.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        if this.phase.get() != AWAITING_HEAD {
            this.phase.reader.register(cx.waker());
            this.armed = Armed::Off;
            if this.phase.get() == TUNNEL || !this.phase.body_pending.load(Ordering::Relaxed) {
                this.body_stall.stop();
                let before = buf.filled().len();
                let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
                if buf.filled().len() > before {
                    this.pipelined_at = Some(this.phase.exchanges());
                }
                return polled;
            }
            // A request body is still expected: every byte restarts its clock.
            this.body_stall.start();
            let before = buf.filled().len();
            return match Pin::new(&mut this.stream).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    if buf.filled().len() > before {
                        this.body_stall.progress();
                    }
                    Poll::Ready(Ok(()))
                }
                Poll::Pending => {
                    if this.body_stall.expired(cx) {
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            Stalled("request body stalled (SITIO_BODY_TIMEOUT)"),
                        )))
                    } else {
                        Poll::Pending
                    }
                }
                other => other,
            };
        }
        // Registered here too, not only while an exchange runs: hyper may
        // poll for the next head between parsing a head and starting its
        // exchange, and then not again; the exchange's end must wake it to
        // arm the idle timer (else the head deadline, still armed, would
        // answer an idle keep-alive client 408).
        this.phase.reader.register(cx.waker());
        if this.armed == Armed::Off || this.armed_at_exchange != this.phase.exchanges() {
            this.armed_at_exchange = this.phase.exchanges();
            this.scan.reset();
            // One clock read per keep-alive request: the idle timeout, and
            // the earlier park that usually comes first.
            let now = Instant::now();
            this.idle_due = now + this.idle_timeout;
            this.armed = Armed::Idle;
            this.deadline.set(now + this.idle_timeout.min(PARK_AFTER));
        } else if this.armed == Armed::Dispatched {
            // hyper wants more of a head the scan saw end, or sitio's own
            // parser more of one it has not scanned: hold it to the header
            // timeout as any partial head.
            this.phase.head_started.store(true, Ordering::Relaxed);
            let head = this.header_timeout;
            this.arm(Armed::Head, head);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let complete = if this.own_heads {
                    // Taken as whole: if it is not, the next read for it
                    // arms the header timeout (the `Dispatched` case).
                    true
                } else if let Some(framing) = this.scan.feed(&buf.filled()[before..]) {
                    this.phase.head_scanned(framing);
                    true
                } else {
                    false
                };
                if this.armed == Armed::Idle && buf.filled().len() > before {
                    if complete {
                        // The usual keep-alive request: the whole head in one
                        // read, so no header deadline (and no timer update).
                        this.armed = Armed::Dispatched;
                    } else {
                        this.phase.head_started.store(true, Ordering::Relaxed);
                        let head = this.header_timeout;
                        this.arm(Armed::Head, head);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(this.deadline.poll_expired(cx));
                if this.armed == Armed::Idle && Instant::now() < this.idle_due {
                    if this.pipelined_at != Some(this.phase.exchanges()) {
                        // Nothing of a next head anywhere: hyper may go.
                        this.parked = true;
                        return Poll::Ready(Ok(()));
                    }
                    // Part of a pipelined head may sit in hyper's buffer:
                    // wait out the idle timeout as before.
                    this.deadline.set(this.idle_due);
                    ready!(this.deadline.poll_expired(cx));
                }
                match this.armed {
                    // A quiet keep-alive connection: end it like a clean EOF.
                    Armed::Idle | Armed::Off | Armed::Dispatched => Poll::Ready(Ok(())),
                    Armed::Head => {
                        this.head_timed_out = true;
                        // Best effort: the client is gone or slow anyway.
                        let answer = this.early.header_timeout();
                        let mut rest = answer.as_deref().unwrap_or(REQUEST_TIMEOUT);
                        while !rest.is_empty() {
                            match Pin::new(&mut this.stream).poll_write(cx, rest) {
                                Poll::Ready(Ok(n)) if n > 0 => rest = &rest[n..],
                                _ => break,
                            }
                        }
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, HeaderTimeout)))
                    }
                }
            }
        }
    }
}

/// An idle keep-alive connection between two hyper connections: only the
/// socket. Its idle timeout is not a timer of its own but the sweep of the
/// idle registry (`idle::Registry::evict_expired`), so that a parked client
/// costs a few dozen bytes of its task.
pub(crate) struct Parked<S> {
    stream: S,
}

impl<S> Parked<S> {
    /// A parked connection on `stream`.
    pub(crate) fn new(stream: S) -> Self {
        Parked { stream }
    }

    /// Its socket, to park it elsewhere (`lot`).
    pub(crate) fn into_stream(self) -> S {
        self.stream
    }
}

impl<S: AsyncRead + Unpin> Parked<S> {
    /// Waits for the next request's first bytes: `Some` when they came (hand
    /// them to a new hyper connection), `None` when the client closed.
    pub(crate) async fn wait(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| {
            // The read buffer lives on each poll's stack, not in the task.
            let mut first = [0u8; 512];
            let mut buf = tokio::io::ReadBuf::new(&mut first);
            match ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => {
                    Poll::Ready(Some(Bytes::copy_from_slice(buf.filled())))
                }
                _ => Poll::Ready(None),
            }
        })
        .await
    }
}

impl<S: AsyncWrite + Unpin> ClientIo<S> {
    /// Interim responses still queued go out before anything hyper writes.
    fn interim_first(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<usize>>> {
        match self.phase.interim.poll_write_pending(&mut self.stream, cx) {
            Poll::Ready(Ok(())) => None,
            Poll::Ready(Err(e)) => Some(Poll::Ready(Err(e))),
            Poll::Pending => Some(self.watch_send(cx, Poll::Pending)),
        }
    }
}

impl<S> ClientIo<S> {
    /// A write that stays blocked on a client that does not read (a slow-read
    /// attack) fails after the send timeout instead of holding the connection.
    fn watch_send(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Pending => {
                self.send_stall.start();
                if self.send_stall.expired(cx) {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        Stalled("client stopped reading (SITIO_SEND_TIMEOUT)"),
                    )))
                } else {
                    Poll::Pending
                }
            }
            done => {
                self.send_stall.stop();
                if let Poll::Ready(Ok(n)) = done {
                    self.phase.window.wrote(n);
                }
                done
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(blocked) = this.interim_first(cx) {
            return blocked;
        }
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch_send(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(blocked) = this.interim_first(cx) {
            return blocked;
        }
        // A response head and a small body are copied into one buffer and go
        // out with one send(2), which costs the kernel less than writev(2)
        // (no iovec import, no VFS layer); large bodies keep the copy-free
        // writev. Both accept any prefix of the bytes, so the result means
        // the same.
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let polled = if bufs.len() == 1 {
            Pin::new(&mut this.stream).poll_write(cx, &bufs[0])
        } else if total <= SMALL_WRITE {
            FLAT.with_borrow_mut(|flat| {
                flat.clear();
                for b in bufs {
                    flat.extend_from_slice(b);
                }
                Pin::new(&mut this.stream).poll_write(cx, flat)
            })
        } else {
            Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
        };
        this.watch_send(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper flushes its IO only with its own buffer empty: the one safe
        // moment to send an interim response (see `interim`).
        ready!(this.phase.interim.poll_write_pending(&mut this.stream, cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            // hyper ends its side of a parked connection; the socket stays.
            return Poll::Ready(Ok(()));
        }
        if this.linger_until.is_none() {
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            // A body left unread, or a head hyper refused (answered 400 or
            // 431 with no exchange): its body, if any, is still coming.
            let body_unread = this.phase.body_unread.swap(false, Ordering::Relaxed);
            let refused_head = matches!(this.armed, Armed::Head | Armed::Dispatched)
                && this.armed_at_exchange == this.phase.exchanges()
                && !this.head_timed_out;
            if !body_unread && !refused_head {
                return Poll::Ready(Ok(()));
            }
            let now = Instant::now();
            this.linger_until = Some(now + LINGER_MAX);
            this.phase.lingering.store(true, Ordering::Relaxed);
            this.deadline.set(now + this.quiet());
        }
        this.poll_linger(cx)
    }
}

impl<S: AsyncRead + Unpin> ClientIo<S> {
    /// How long a lingering close waits for the client's next bytes.
    fn quiet(&self) -> Duration {
        LINGER_QUIET.min(self.idle_timeout)
    }

    /// Reads and drops what the client still sends: a lingering close
    /// (nginx's `lingering_close`). When a connection closes with its request
    /// body unread (an early answer such as a 413 to an unfinished upload),
    /// the answer is followed by a FIN, and what the client still sends is
    /// read and dropped until it closes. Closing at once would answer those
    /// bytes with a reset, which fails the client's next write and can
    /// destroy the answer before the client reads it: most clients send their
    /// whole body before they read.
    ///
    /// The lingering ends when the client closes, when it has been quiet for
    /// [`LINGER_QUIET`] (or the idle timeout, if shorter), after [`LINGER_MAX`]
    /// in all (nginx's `lingering_timeout` and `lingering_time`), or when the
    /// connection cap evicts it. Ready then; never an error: the answer is out.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // On the stack: a lingering connection holds no buffer between reads.
        let mut scratch = [0u8; 8192];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let now = Instant::now();
                    // The cap's eviction ends it; the drain does not (it
                    // is bounded anyway, and the client gets its answer).
                    let evicted =
                        self.phase.evicted.load(Ordering::Relaxed) && !self.phase.is_draining();
                    if evicted || self.linger_until.is_some_and(|until| now >= until) {
                        return Poll::Ready(Ok(()));
                    }
                    self.deadline.set(now + self.quiet());
                }
                // The client closed (or reset): the lingering is over.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    ready!(self.deadline.poll_expired(cx));
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl crate::idle::Evictable for ConnPhase {
    /// Since when (in [`clock`] nanoseconds) the connection has been an idle
    /// keep-alive connection: served at least once, no exchange running, no
    /// byte of a next request; `None` otherwise.
    fn idle_since(&self) -> Option<u64> {
        if self.evicted.load(Ordering::Relaxed) {
            return None;
        }
        // A lingering close counts as idle since ever: nothing it still
        // does is owed to the client (a refused first head has no exchange,
        // and would otherwise never make room).
        if self.lingering.load(Ordering::Relaxed) {
            return Some(0);
        }
        let idle = self.get() == AWAITING_HEAD
            && self.exchanges() > 0
            && !self.head_started.load(Ordering::Relaxed);
        idle.then(|| self.idle_since.load(Ordering::Relaxed))
    }

    fn expire(&self, idle_before: u64) {
        let parked = self.parked.load(Ordering::Relaxed);
        if parked && self.idle_since().is_some_and(|since| since < idle_before) {
            self.evict();
        }
    }

    /// Asks the connection to close once idle (at once if it is now).
    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.evict_waker.wake();
    }

    /// The drain: as an eviction, whether idle or not (an exchange in
    /// progress finishes first).
    fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.evict();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake, Waker};
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::{AsyncRead, ReadBuf};
    use tokio::time::Instant;

    use super::{ClientIo, ConnPhase, EarlyAnswer, Timeouts};

    struct Plain;
    impl EarlyAnswer for Plain {
        fn header_timeout(&self) -> Option<Bytes> {
            None
        }
    }

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// hyper may poll for the next head after parsing one and before its
    /// exchange starts, then not again: the exchange's end must wake it, so
    /// that it polls again and arms the idle timer (else the head deadline
    /// armed at accept stays, and the idle client gets a 408 at it).
    #[tokio::test]
    async fn the_end_of_an_exchange_wakes_a_reader_that_polled_before_it_began() {
        let (_client, server) = tokio::io::duplex(1024);
        let phase = Arc::new(ConnPhase::default());
        let second = Duration::from_secs(1);
        let timeouts = Timeouts {
            header: second,
            idle: second,
            body: second,
            send: second,
        };
        let mut io = ClientIo::new(
            server,
            Bytes::new(),
            phase.clone(),
            Instant::now() + second,
            timeouts,
            Arc::new(Plain),
        );
        let woken = Arc::new(Count::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut bytes = [0u8; 16];
        let mut buf = ReadBuf::new(&mut bytes);
        assert!(
            std::pin::Pin::new(&mut io)
                .poll_read(&mut cx, &mut buf)
                .is_pending()
        );
        phase.exchange_started();
        phase.exchange_finished(std::time::Instant::now());
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "the reader was woken");
    }
}
