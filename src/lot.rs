//! The parking lot: idle keep-alive client sockets held outside any task.
//!
//! Parked in a task of its own, an idle client costs that task (its header
//! and future, 384 bytes) and Tokio's registration of its socket (256);
//! nginx's idle connection costs about 0.5 KiB in all. So each worker keeps
//! its parked sockets in one `epoll` set of its own (mio's `Poll`, itself
//! watched by Tokio), each beside what resumes it (about a hundred bytes in a
//! slab). The first bytes of a next request give the socket back to Tokio,
//! in a new task; a close, the idle timeout or the connection cap (both
//! through the idle registry's evictions) and the drain drop it.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use mio::{Events, Interest, Token};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::idle::Shrinking;
use crate::io::ConnPhase;

/// What a parked connection leaves in the lot beside its socket: dropped
/// with the connection, or given the socket back to resume it.
pub(crate) trait Resume: Send + 'static {
    /// The connection's phase: idle since when, evicted or not.
    fn phase(&self) -> &ConnPhase;
    /// Serves the connection again (in a new task) from `first`, the bytes
    /// that woke it; `lot` is where it parks next. (A parked connection
    /// holds no reference to its lot: the lot would then never be dropped,
    /// nor would its sockets, when a worker's runtime ends.)
    fn resume(self, socket: std::net::TcpStream, first: Bytes, lot: Arc<Lot<Self>>)
    where
        Self: Sized;
}

/// One worker's parked sockets (see the module's documentation).
pub(crate) struct Lot<C> {
    state: Mutex<State<C>>,
    /// Where sockets are added to and removed from the lot's `epoll` set.
    registry: mio::Registry,
    /// Woken by an eviction of a parked connection.
    evictions: Arc<Evictions>,
    /// The same, as a waker handed to each parked connection's phase.
    waker: Waker,
}

struct State<C> {
    parked: Shrinking<Parked<C>>,
    /// The drain began: nothing more is parked.
    closed: bool,
}

struct Parked<C> {
    socket: mio::net::TcpStream,
    client: C,
}

/// Tells the lot's task that some parked connection was evicted.
#[derive(Default)]
struct Evictions {
    pending: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Evictions {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.pending.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Tokio's watch over the lot's `epoll` set: readable when a parked socket is.
#[allow(unsafe_code)]
fn watch(poll: mio::Poll) -> io::Result<AsyncFd<mio::Poll>> {
    // SAFETY: Tokio requires the descriptor to stay open and unchanged while
    // it watches it: `AsyncFd` owns the `Poll`, which owns the descriptor
    // and closes it only when dropped, after Tokio let go of it.
    let watched = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) };
    watched.map_err(io::Error::from)
}

/// Readiness events taken from the lot's `epoll` set per turn.
const EVENTS: usize = 256;

impl<C: Resume> Lot<C> {
    /// A lot for the current worker, with its task on the current runtime
    /// until `stop` turns true (the drain), when it drops every socket.
    pub(crate) fn start(stop: watch::Receiver<bool>) -> io::Result<Arc<Self>> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let watched = watch(poll)?;
        let evictions = Arc::new(Evictions::default());
        let lot = Arc::new(Lot {
            state: Mutex::new(State {
                parked: Shrinking::default(),
                closed: false,
            }),
            registry,
            waker: Waker::from(evictions.clone()),
            evictions,
        });
        tokio::spawn(lot.clone().run(watched, stop));
        Ok(lot)
    }

    /// Parks `socket` with `client`; gives them back when the drain began or
    /// the socket cannot join the lot's set.
    pub(crate) fn park(
        &self,
        socket: std::net::TcpStream,
        client: C,
    ) -> Result<(), (std::net::TcpStream, C)> {
        let Some(mut state) = self.lock() else {
            return Err((socket, client));
        };
        if state.closed {
            return Err((socket, client));
        }
        let entry = state.parked.slab.vacant_entry();
        let mut socket = mio::net::TcpStream::from_std(socket);
        // Edge-triggered, and told at once when bytes are already there.
        let token = Token(entry.key());
        if self
            .registry
            .register(&mut socket, token, Interest::READABLE)
            .is_err()
        {
            return Err((socket.into(), client));
        }
        if client.phase().watch_eviction(&self.waker) {
            self.evictions.pending.store(true, Ordering::Release);
            self.evictions.task.wake();
        }
        entry.insert(Parked { socket, client });
        Ok(())
    }

    /// Connections parked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map_or(0, |s| s.parked.slab.len())
    }

    fn lock(&self) -> Option<MutexGuard<'_, State<C>>> {
        self.state.lock().ok()
    }

    async fn run(
        self: Arc<Self>,
        mut watched: AsyncFd<mio::Poll>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                () = self.evicted() => self.drop_evicted(),
                ready = watched.readable_mut() => {
                    let Ok(mut ready) = ready else { break };
                    if ready.get_inner_mut().poll(&mut events, Some(Duration::ZERO)).is_err() {
                        continue;
                    }
                    let mut taken = 0;
                    for event in events.iter() {
                        taken += 1;
                        self.woken(event.token().0);
                    }
                    // A full batch may leave more behind: look again before
                    // waiting for the next edge.
                    if taken < EVENTS {
                        ready.clear_ready();
                    }
                }
            }
        }
        self.close();
    }

    /// Resolves when some parked connection was evicted.
    async fn evicted(&self) {
        std::future::poll_fn(|cx| {
            if self.evictions.pending.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.evictions.task.register(cx.waker());
            if self.evictions.pending.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// The socket of slot `key` turned readable: the next request's first
    /// bytes resume it, a close drops it, nothing yet leaves it parked.
    fn woken(self: &Arc<Self>, key: usize) {
        let mut first = [0u8; 512];
        let (parked, read) = {
            let Some(mut state) = self.lock() else { return };
            let Some(parked) = state.parked.slab.get_mut(key) else {
                return;
            };
            // Woken for nothing: the next bytes wake it again.
            let Some(read) = read_now(&mut parked.socket, &mut first) else {
                return;
            };
            let Some(parked) = state.parked.remove(key) else {
                return;
            };
            (parked, read)
        };
        self.leave(parked, read, &first);
    }

    /// A connection leaves the lot: resumed with the bytes read, or dropped
    /// (which closes it) when there were none.
    fn leave(self: &Arc<Self>, parked: Parked<C>, read: io::Result<usize>, first: &[u8]) {
        let Parked { mut socket, client } = parked;
        let _ = self.registry.deregister(&mut socket);
        match read {
            Ok(n) if n > 0 => {
                let first = Bytes::copy_from_slice(&first[..n]);
                client.resume(socket.into(), first, self.clone());
            }
            // Closed by the client (or broken), or told to go.
            _ => {}
        }
    }

    /// A connection told to go (evicted, or the drain) whose next request
    /// arrived meanwhile is served instead: closing a socket with unread
    /// bytes would reset it, and the request would be lost.
    fn let_go(self: &Arc<Self>, gone: Vec<Parked<C>>) {
        for mut parked in gone {
            let mut first = [0u8; 512];
            let read = read_now(&mut parked.socket, &mut first).unwrap_or(Ok(0));
            self.leave(parked, read, &first);
        }
    }

    /// Lets go of the parked connections that were evicted (the idle
    /// timeout, the connection cap, the drain), once the lock is released:
    /// a connection leaving the idle registry takes the registry's lock.
    fn drop_evicted(self: &Arc<Self>) {
        let evicted: Vec<Parked<C>> = {
            let Some(mut state) = self.lock() else { return };
            let keys: Vec<usize> = state
                .parked
                .slab
                .iter()
                .filter(|(_, p)| p.client.phase().is_evicted())
                .map(|(key, _)| key)
                .collect();
            keys.into_iter()
                .filter_map(|k| state.parked.remove(k))
                .collect()
        };
        self.let_go(evicted);
    }

    /// The drain: every parked connection goes, and none parks again.
    fn close(self: &Arc<Self>) {
        let parked = {
            let Some(mut state) = self.lock() else { return };
            state.closed = true;
            std::mem::take(&mut state.parked)
        };
        self.let_go(parked.slab.into_iter().map(|(_, p)| p).collect());
    }
}

/// Reads what the socket holds now: `None` when nothing yet (it would
/// block), `Ok(0)` when the client closed.
fn read_now(socket: &mut mio::net::TcpStream, into: &mut [u8]) -> Option<io::Result<usize>> {
    loop {
        match socket.read(into) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            other => return Some(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::sync::{mpsc, watch};

    use super::{Lot, Resume};
    use crate::idle::Evictable as _;
    use crate::io::ConnPhase;

    /// Tells the test what it was resumed with.
    struct Client {
        phase: Arc<ConnPhase>,
        resumed: mpsc::UnboundedSender<Bytes>,
    }

    impl Resume for Client {
        fn phase(&self) -> &ConnPhase {
            &self.phase
        }

        fn resume(self, _socket: std::net::TcpStream, first: Bytes, _lot: Arc<Lot<Self>>) {
            let _ = self.resumed.send(first);
        }
    }

    /// A connected pair: the test's end and the end to park.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let theirs = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (theirs, ours)
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen within 5 s");
    }

    /// Whether the peer closed: EOF within 5 s.
    fn closed(mut theirs: TcpStream) -> bool {
        theirs
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        matches!(theirs.read(&mut [0u8; 16]), Ok(0))
    }

    #[tokio::test]
    async fn a_parked_socket_resumes_with_its_first_bytes_closes_or_is_evicted() {
        let (_stop_tx, stop) = watch::channel(false);
        let lot = Lot::start(stop).unwrap();
        let (resumed, mut woke) = mpsc::unbounded_channel();
        let client = |phase: &Arc<ConnPhase>| Client {
            phase: phase.clone(),
            resumed: resumed.clone(),
        };

        // Bytes that were there before it parked, and bytes sent after.
        let (mut early, ours) = pair();
        early.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let phase = Arc::new(ConnPhase::default());
        assert!(lot.park(ours, client(&phase)).is_ok());
        assert_eq!(
            woke.recv().await.unwrap(),
            Bytes::from_static(b"GET / HTTP/1.1\r\n")
        );
        let (mut late, ours) = pair();
        assert!(lot.park(ours, client(&phase)).is_ok());
        until("parked", || lot.len() == 1).await;
        late.write_all(b"GET /next").unwrap();
        assert_eq!(woke.recv().await.unwrap(), Bytes::from_static(b"GET /next"));
        assert_eq!(lot.len(), 0);

        // A client that closes is dropped, not resumed.
        let (gone, ours) = pair();
        assert!(lot.park(ours, client(&phase)).is_ok());
        drop(gone);
        until("the closed client dropped", || lot.len() == 0).await;

        // An evicted one is closed (idle timeout, connection cap), also when
        // it was evicted before it parked.
        let (evicted, ours) = pair();
        let phase = Arc::new(ConnPhase::default());
        assert!(lot.park(ours, client(&phase)).is_ok());
        phase.evict();
        assert!(
            tokio::task::spawn_blocking(move || closed(evicted))
                .await
                .unwrap()
        );
        let (evicted, ours) = pair();
        assert!(lot.park(ours, client(&phase)).is_ok());
        assert!(
            tokio::task::spawn_blocking(move || closed(evicted))
                .await
                .unwrap()
        );
        assert_eq!(lot.len(), 0);
        assert!(woke.try_recv().is_err(), "nothing else resumed");
    }

    /// Told to go (evicted, or the drain) with its next request already
    /// there: served, not closed (a close with unread bytes resets the
    /// client and loses its request). The lot's task has not run yet here
    /// (a current-thread runtime and no await), so the lot decides alone.
    #[tokio::test]
    async fn a_request_that_came_before_the_close_is_served() {
        let (_stop_tx, stop) = watch::channel(false);
        let lot = Lot::start(stop).unwrap();
        let (resumed, mut woke) = mpsc::unbounded_channel();
        let phase = Arc::new(ConnPhase::default());
        let (mut evicted, ours) = pair();
        let client = Client {
            phase: phase.clone(),
            resumed: resumed.clone(),
        };
        assert!(lot.park(ours, client).is_ok());
        evicted.write_all(b"GET /evicted").unwrap();
        phase.evict();
        lot.drop_evicted();
        assert_eq!(
            woke.try_recv().unwrap(),
            Bytes::from_static(b"GET /evicted")
        );

        let (mut drained, ours) = pair();
        let (quiet, quiet_ours) = pair();
        let phase = Arc::new(ConnPhase::default());
        for socket in [ours, quiet_ours] {
            let client = Client {
                phase: phase.clone(),
                resumed: resumed.clone(),
            };
            assert!(lot.park(socket, client).is_ok());
        }
        drained.write_all(b"GET /drained").unwrap();
        lot.close();
        assert_eq!(
            woke.try_recv().unwrap(),
            Bytes::from_static(b"GET /drained")
        );
        assert!(
            woke.try_recv().is_err(),
            "the quiet one is closed, not resumed"
        );
        assert!(
            tokio::task::spawn_blocking(move || closed(quiet))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn the_drain_closes_the_lot() {
        let (stop_tx, stop) = watch::channel(false);
        let lot = Lot::start(stop).unwrap();
        let (resumed, _woke) = mpsc::unbounded_channel();
        let phase = Arc::new(ConnPhase::default());
        let (theirs, ours) = pair();
        let parked = Client {
            phase: phase.clone(),
            resumed: resumed.clone(),
        };
        assert!(lot.park(ours, parked).is_ok());
        stop_tx.send(true).unwrap();
        assert!(
            tokio::task::spawn_blocking(move || closed(theirs))
                .await
                .unwrap()
        );
        let (_theirs, ours) = pair();
        let refused = lot.park(ours, Client { phase, resumed });
        assert!(refused.is_err(), "nothing parks once the drain began");
    }
}
