//! The parking lot: idle keep-alive client sockets held outside any task.
//!
//! Parked in a task of its own, an idle client costs that task (its header
//! and future, 384 bytes), Tokio's registration of its socket (256) and the
//! connection's state (280, scattered among freed request buffers, so about
//! twice that in RSS); nginx's idle connection costs about 0.5 KiB in all.
//! So each worker keeps its parked sockets in one `epoll` set of its own
//! (mio's `Poll`, itself watched by Tokio), each beside what resumes it (a
//! hundred bytes in one slab: the connection's state is rebuilt when it
//! resumes, from what all its connections share, kept once in the lot). The
//! first bytes of a next request give the socket back to Tokio in a new task;
//! a close drops it. The lot stands in the idle registry for its connections:
//! the connection cap evicts its longest-idle one, the idle timeout's sweep
//! expires the old ones, and the drain closes the lot.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use mio::{Events, Interest, Token};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::idle::{Evictable, Registry, Shrinking};

/// What a parked connection leaves in the lot beside its socket: dropped
/// with the connection, or given the socket back to resume it.
pub(crate) trait Resume: Send + Sized + 'static {
    /// What all the lot's connections share, kept once in the lot.
    type Home: Send + Sync + 'static;
    /// Since when it has been idle (`io::clock` nanoseconds).
    fn idle_since(&self) -> u64;
    /// Serves the connection again (in a new task) from `first`, the bytes
    /// that woke it; `lot` is where it parks next. (A parked connection
    /// holds no reference to its lot: the lot would then never be dropped,
    /// nor would its sockets, when a worker's runtime ends.)
    fn resume(self, socket: std::net::TcpStream, first: Bytes, lot: &Arc<Lot<Self>>);
}

/// One worker's parked sockets (see the module's documentation).
pub(crate) struct Lot<C: Resume> {
    state: Mutex<State<C>>,
    /// Where sockets are added to and removed from the lot's `epoll` set.
    registry: mio::Registry,
    /// What the idle registry asked of the lot's task.
    asked: Asked,
    home: C::Home,
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

/// Evictions the idle registry asked for, done by the lot's task.
#[derive(Default)]
struct Asked {
    /// How many of the longest-idle connections to close (the connection cap).
    oldest: AtomicUsize,
    /// Close those idle since before this (`io::clock` ns; 0: none).
    expire_before: AtomicU64,
    /// The drain began: every parked connection goes, and none parks again.
    drain: AtomicBool,
    pending: AtomicBool,
    task: AtomicWaker,
}

impl Asked {
    fn wake(&self) {
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
    /// A lot for the current worker, listed in `idle`, with its task on the
    /// current runtime until the drain (told through `idle`, or begun before
    /// the task starts: `stop`), when it lets go of every socket.
    pub(crate) fn start(
        home: C::Home,
        idle: &Arc<Registry>,
        stop: watch::Receiver<bool>,
    ) -> io::Result<Arc<Self>> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let watched = watch(poll)?;
        let lot = Arc::new(Lot {
            state: Mutex::new(State {
                parked: Shrinking::default(),
                closed: false,
            }),
            registry,
            asked: Asked::default(),
            home,
        });
        // Listed by the task, which unlists it when it ends: the registry
        // then lets go of the lot.
        let listed = idle.list(lot.clone());
        tokio::spawn(lot.clone().run(watched, stop, listed));
        Ok(lot)
    }

    /// What all the lot's connections share.
    pub(crate) fn home(&self) -> &C::Home {
        &self.home
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
        stop: watch::Receiver<bool>,
        _listed: Option<crate::idle::Listed>,
    ) {
        // Listed before this look: a drain that began after it tells the
        // lot through the registry (`Evictable::drain`). Not a watch on
        // `stop` polled at every wake-up: that takes the channel's lock,
        // which every worker shares.
        if *stop.borrow() {
            self.close();
            return;
        }
        let mut events = Events::with_capacity(EVENTS);
        loop {
            tokio::select! {
                biased;
                () = self.asked() => {
                    if self.asked.drain.load(Ordering::Acquire) {
                        break;
                    }
                    self.do_asked();
                }
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

    /// Resolves when the idle registry asked for evictions.
    async fn asked(&self) {
        std::future::poll_fn(|cx| {
            if self.asked.pending.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.asked.task.register(cx.waker());
            if self.asked.pending.swap(false, Ordering::AcqRel) {
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
                client.resume(socket.into(), first, self);
            }
            // Closed by the client (or broken), or told to go.
            _ => {}
        }
    }

    /// Connections told to go (evicted, expired, or the drain) whose next
    /// request arrived meanwhile are served instead: closing a socket with
    /// unread bytes would reset it, and the request would be lost.
    fn let_go(self: &Arc<Self>, gone: Vec<Parked<C>>) {
        for mut parked in gone {
            let mut first = [0u8; 512];
            let read = read_now(&mut parked.socket, &mut first).unwrap_or(Ok(0));
            self.leave(parked, read, &first);
        }
    }

    /// Closes what the idle registry asked to: the longest-idle connections
    /// (the connection cap) and those idle past the idle timeout.
    fn do_asked(self: &Arc<Self>) {
        let oldest = self.asked.oldest.swap(0, Ordering::AcqRel);
        let before = self.asked.expire_before.swap(0, Ordering::AcqRel);
        let gone: Vec<Parked<C>> = {
            let Some(mut state) = self.lock() else { return };
            // One pass for the sweep (every tick, usually nothing expires);
            // a sort only when the connection cap asks for the oldest.
            let mut keys: Vec<(u64, usize)> = state
                .parked
                .slab
                .iter()
                .map(|(key, p)| (p.client.idle_since(), key))
                .filter(|(since, _)| oldest > 0 || *since < before)
                .collect();
            if oldest > 0 {
                keys.sort_unstable();
                let expired = keys.iter().take_while(|(since, _)| *since < before).count();
                keys.truncate(expired.max(oldest));
            }
            keys.into_iter()
                .filter_map(|(_, key)| state.parked.remove(key))
                .collect()
        };
        self.let_go(gone);
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

/// The lot stands in the idle registry for all its connections.
impl<C: Resume> Evictable for Lot<C> {
    /// Since when its longest-idle connection has been idle.
    fn idle_since(&self) -> Option<u64> {
        let state = self.lock()?;
        state
            .parked
            .slab
            .iter()
            .map(|(_, p)| p.client.idle_since())
            .min()
    }

    /// Closes its longest-idle connection.
    fn evict(&self) {
        self.asked.oldest.fetch_add(1, Ordering::AcqRel);
        self.asked.wake();
    }

    fn expire(&self, idle_before: u64) {
        self.asked
            .expire_before
            .fetch_max(idle_before, Ordering::AcqRel);
        self.asked.wake();
    }

    /// The drain began: the lot's task closes it.
    fn drain(&self) {
        self.asked.drain.store(true, Ordering::Release);
        self.asked.wake();
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
    use crate::idle::{Evictable as _, Registry};

    /// Tells the test what it was resumed with.
    struct Client {
        idle_since: u64,
        resumed: mpsc::UnboundedSender<(u64, Bytes)>,
    }

    impl Resume for Client {
        type Home = ();

        fn idle_since(&self) -> u64 {
            self.idle_since
        }

        fn resume(self, _socket: std::net::TcpStream, first: Bytes, _lot: &Arc<Lot<Self>>) {
            let _ = self.resumed.send((self.idle_since, first));
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
    async fn closed(mut theirs: TcpStream) -> bool {
        tokio::task::spawn_blocking(move || {
            theirs
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            matches!(theirs.read(&mut [0u8; 16]), Ok(0))
        })
        .await
        .unwrap()
    }

    type Woke = mpsc::UnboundedReceiver<(u64, Bytes)>;
    type Setup = (
        Arc<Lot<Client>>,
        Arc<Registry>,
        watch::Sender<bool>,
        Box<dyn Fn(u64) -> Client>,
        Woke,
    );

    fn lot() -> Setup {
        let (stop_tx, stop) = watch::channel(false);
        let registry = Arc::new(Registry::default());
        let lot = Lot::start((), &registry, stop).unwrap();
        let (resumed, woke) = mpsc::unbounded_channel();
        let client = move |idle_since| Client {
            idle_since,
            resumed: resumed.clone(),
        };
        (lot, registry, stop_tx, Box::new(client), woke)
    }

    #[tokio::test]
    async fn a_parked_socket_resumes_with_its_first_bytes_or_is_dropped_when_it_closes() {
        let (lot, _registry, _stop, client, mut woke) = lot();
        // Bytes that were there before it parked, and bytes sent after.
        let (mut early, ours) = pair();
        early.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert!(lot.park(ours, client(1)).is_ok());
        let first = woke.recv().await.unwrap();
        assert_eq!(first, (1, Bytes::from_static(b"GET / HTTP/1.1\r\n")));
        let (mut late, ours) = pair();
        assert!(lot.park(ours, client(2)).is_ok());
        until("parked", || lot.len() == 1).await;
        late.write_all(b"GET /next").unwrap();
        assert_eq!(
            woke.recv().await.unwrap(),
            (2, Bytes::from_static(b"GET /next"))
        );
        assert_eq!(lot.len(), 0);
        // A client that closes is dropped, not resumed.
        let (gone, ours) = pair();
        assert!(lot.park(ours, client(3)).is_ok());
        drop(gone);
        until("the closed client dropped", || lot.len() == 0).await;
        assert!(woke.try_recv().is_err(), "nothing else resumed");
    }

    /// The lot stands in the idle registry for its connections: the cap
    /// evicts the longest-idle one, the idle timeout's sweep the old ones.
    #[tokio::test]
    async fn the_registry_evicts_the_longest_idle_and_expires_the_old() {
        let (lot, registry, _stop, client, woke) = lot();
        let mut theirs = Vec::new();
        for since in [30, 10, 20, 40] {
            let (t, ours) = pair();
            assert!(lot.park(ours, client(since)).is_ok());
            theirs.push((since, t));
        }
        assert_eq!(lot.idle_since(), Some(10));
        assert!(registry.evict_longest_idle());
        let (_, oldest) = theirs.remove(1);
        assert!(closed(oldest).await, "the longest-idle one went");
        until("evicted", || lot.len() == 3).await;
        assert_eq!(lot.idle_since(), Some(20));
        // Idle since before 35: 20 and 30 go, 40 stays.
        registry.evict_expired(35);
        until("expired", || lot.len() == 1).await;
        assert_eq!(lot.idle_since(), Some(40));
        for (since, t) in theirs {
            if since < 35 {
                assert!(closed(t).await, "{since} expired");
            }
        }
        drop(woke);
    }

    /// Told to go (evicted, or the drain) with its next request already
    /// there: served, not closed (a close with unread bytes resets the
    /// client and loses its request). The lot's task has not run yet here
    /// (a current-thread runtime and no await), so the lot decides alone.
    #[tokio::test]
    async fn a_request_that_came_before_the_close_is_served() {
        let (lot, _registry, _stop, client, mut woke) = lot();
        let (mut evicted, ours) = pair();
        assert!(lot.park(ours, client(1)).is_ok());
        evicted.write_all(b"GET /evicted").unwrap();
        lot.evict();
        lot.do_asked();
        let resumed = woke.try_recv().unwrap();
        assert_eq!(resumed, (1, Bytes::from_static(b"GET /evicted")));

        let (mut drained, ours) = pair();
        let (quiet, quiet_ours) = pair();
        assert!(lot.park(ours, client(2)).is_ok());
        assert!(lot.park(quiet_ours, client(3)).is_ok());
        drained.write_all(b"GET /drained").unwrap();
        lot.close();
        let resumed = woke.try_recv().unwrap();
        assert_eq!(resumed, (2, Bytes::from_static(b"GET /drained")));
        assert!(
            woke.try_recv().is_err(),
            "the quiet one is closed, not resumed"
        );
        assert!(closed(quiet).await);
    }

    #[tokio::test]
    async fn the_drain_closes_the_lot_and_unlists_it() {
        let (lot, registry, stop, client, _woke) = lot();
        let (theirs, ours) = pair();
        assert!(lot.park(ours, client(1)).is_ok());
        // The server's drain: the flag, then every listed connection told.
        stop.send(true).unwrap();
        registry.drain();
        assert!(closed(theirs).await);
        let (_theirs, ours) = pair();
        assert!(
            lot.park(ours, client(2)).is_err(),
            "nothing parks once the drain began"
        );
        until("unlisted", || Arc::strong_count(&lot) == 1).await;
        assert!(!registry.evict_longest_idle());
    }
}
