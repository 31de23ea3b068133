//! Idle upstream connections, in shards.
//!
//! Each worker thread puts connections back into, and takes them from, a
//! shard of its own, so the common case locks a mutex no other core is using.
//! Workers of thread per core ([`pin_worker`]) keep to their shard. On a
//! multi-thread runtime (a custom binary's own) a connection is often taken
//! on one thread and returned on another (the runtime moves tasks), so there
//! a thread whose shard is empty takes one from another shard before opening
//! a new connection: otherwise idle connections would pile up in one shard
//! while another thread keeps dialing.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::h1::Conn;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) idle_timeout: Duration,
    /// Idle connections kept per shard.
    pub(crate) max_idle: usize,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections to one service. Each shard is ordered by the time
/// its connections went idle: reuse takes the newest (back), expiry trims
/// the oldest (front), so neither walks the whole shard.
pub(crate) struct Pool {
    shards: Vec<Mutex<VecDeque<Idle>>>,
    limits: Limits,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard number (modulo the shard count).
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    /// Set on the threads of thread per core (`workers`): the worker's
    /// number, which is its shard.
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Makes the calling thread worker `index` of thread per core: it uses shard
/// `index` and never takes another worker's connections. Its tasks never
/// move, so a connection it dialled is driven by its own runtime; one taken
/// from another worker would cost a cross-thread wake-up on every exchange.
pub(crate) fn pin_worker(index: usize) {
    WORKER.with(|w| w.set(Some(index)));
}

/// The calling thread's shard among `n` (its worker's, when pinned), and
/// whether it is a pinned worker.
pub(super) fn shard_of_thread(n: usize) -> (usize, bool) {
    match WORKER.with(std::cell::Cell::get) {
        Some(worker) => (worker % n.max(1), true),
        None => (THREAD_INDEX.with(|i| *i % n.max(1)), false),
    }
}

impl Pool {
    pub(crate) fn new(shards: usize, limits: Limits) -> Self {
        Pool {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            limits,
        }
    }

    /// This thread's shard, and whether it is a pinned worker's.
    fn own(&self) -> (usize, bool) {
        shard_of_thread(self.shards.len())
    }

    /// The most recently used live connection, if any, with how long it sat idle.
    pub(crate) fn checkout(&self) -> Option<(Conn, Duration)> {
        let (own, pinned) = self.own();
        let n = self.shards.len();
        let now = Instant::now();
        for k in 0..if pinned { 1 } else { n } {
            let i = (own + k) % n;
            // Other shards only if free: waiting on another core's lock costs
            // more than a new connection would save.
            let shard = if k == 0 {
                self.shards[i].lock().ok()
            } else {
                self.shards[i].try_lock().ok()
            };
            let Some(mut shard) = shard else { continue };
            while let Some(conn) = shard.pop_back() {
                let idle_for = now.duration_since(conn.since);
                if idle_for < self.limits.idle_timeout && conn.conn.is_open() {
                    return Some((conn.conn, idle_for));
                }
            }
        }
        None
    }

    /// Keeps `conn` for reuse. Connections idle past the timeout are
    /// dropped (closed) from the old end; when the shard is full the oldest
    /// goes, as it is the likeliest to be closed by the service. Closed
    /// connections elsewhere in the shard are skipped at checkout.
    pub(crate) fn checkin(&self, conn: Conn) {
        let Ok(mut shard) = self.shards[self.own().0].lock() else {
            return;
        };
        let now = Instant::now();
        self.close_expired(&mut shard, now);
        if shard.len() >= self.limits.max_idle {
            shard.pop_front();
        }
        shard.push_back(Idle { conn, since: now });
    }

    /// Tidies the idle connections, about once a second off the request
    /// path: closes those idle past the timeout (checkin does too, but
    /// after a burst no checkin may come for a long time), and frees the read
    /// buffer of those idle for [`KEEP_BUFFER`]. A shard another thread holds
    /// is left for the next sweep.
    ///
    /// Measured with `bench/burst_rss.py 9000`: the 64 connections a worker
    /// keeps after a burst held 16 KiB each (1 MiB of live heap, heaptrack)
    /// with no traffic at all.
    pub(crate) fn sweep(&self, now: Instant) {
        for shard in &self.shards {
            let Ok(mut shard) = shard.try_lock() else {
                continue;
            };
            self.close_expired(&mut shard, now);
            // Oldest first: stop at the first one idle too briefly.
            for idle in shard.iter_mut() {
                if now.saturating_duration_since(idle.since) < KEEP_BUFFER {
                    break;
                }
                idle.conn.release_buffer();
            }
        }
    }
}

impl Pool {
    /// Closes the shard's connections idle past the timeout (at its old end).
    fn close_expired(&self, shard: &mut VecDeque<Idle>, now: Instant) {
        while shard
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.since) >= self.limits.idle_timeout)
        {
            shard.pop_front();
        }
    }
}

/// An idle connection keeps its read buffer this long: under steady traffic
/// a connection is back in use within it and reuses the buffer (no
/// allocation per exchange); one idle longer gives it back and allocates a
/// new one when it is next used.
const KEEP_BUFFER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// A live connection over loopback; `peer` keeps it open.
    async fn sender() -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        (Conn::new(ours), peer)
    }

    fn idle_count(pool: &Pool) -> usize {
        pool.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    /// Thread per core: a worker finds the connections it returned, and
    /// never another worker's (whose runtime drives them).
    #[tokio::test]
    async fn pinned_workers_keep_to_their_own_shard() {
        let pool = Pool::new(
            2,
            Limits {
                idle_timeout: Duration::from_secs(60),
                max_idle: 8,
            },
        );
        let (sender, _peer) = sender().await;
        let on_worker = |index: usize, f: &(dyn Fn(&Pool) -> bool + Sync)| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    pin_worker(index);
                    f(&pool)
                })
                .join()
                .unwrap()
            })
        };
        let sender = std::sync::Mutex::new(Some(sender));
        on_worker(1, &|p| {
            p.checkin(sender.lock().unwrap().take().unwrap());
            true
        });
        assert!(
            !on_worker(0, &|p| p.checkout().is_some()),
            "worker 0 took worker 1's"
        );
        assert!(
            on_worker(1, &|p| p.checkout().is_some()),
            "worker 1 lost its own"
        );
    }

    #[tokio::test]
    async fn a_full_shard_keeps_the_newest_and_hands_out_the_newest_first() {
        let pool = Pool::new(
            1,
            Limits {
                idle_timeout: Duration::from_secs(60),
                max_idle: 2,
            },
        );
        let mut peers = Vec::new();
        let mut first_in = None;
        for _ in 0..3 {
            let (s, peer) = sender().await;
            peers.push(peer);
            pool.checkin(s);
            first_in.get_or_insert_with(Instant::now);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(idle_count(&pool), 2);
        let (_, newest) = pool.checkout().unwrap();
        let (_, older) = pool.checkout().unwrap();
        assert!(newest < older, "newest first: {newest:?} vs {older:?}");
        // The first one checked in (idle since `first_in`) was the one let go.
        let first_idle = first_in.unwrap().elapsed();
        assert!(
            older + Duration::from_millis(15) < first_idle,
            "{older:?} is the second, not the first ({first_idle:?})"
        );
        assert!(pool.checkout().is_none());
    }

    #[tokio::test]
    async fn expired_connections_are_trimmed_at_checkin_and_never_handed_out() {
        let pool = Pool::new(
            1,
            Limits {
                idle_timeout: Duration::from_millis(50),
                max_idle: 8,
            },
        );
        let (old, _old_peer) = sender().await;
        pool.checkin(old);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(pool.checkout().is_none(), "expired at checkout");
        let (old, _old_peer) = sender().await;
        pool.checkin(old);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (fresh, _fresh_peer) = sender().await;
        pool.checkin(fresh);
        assert_eq!(idle_count(&pool), 1, "the expired one went at checkin");
    }

    /// After a burst no checkin may come for a long time: the sweep alone
    /// frees the buffers of connections idle a while (a recent one keeps its
    /// buffer for the next exchange) and closes the expired ones.
    #[tokio::test]
    async fn the_sweep_frees_idle_buffers_and_closes_expired_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let pool = Pool::new(
            1,
            Limits {
                idle_timeout: Duration::from_secs(10),
                max_idle: 8,
            },
        );
        let (mut conn, mut peer) = sender().await;
        // An exchange's read leaves the connection with an (empty) buffer.
        peer.write_all(b"x").await.unwrap();
        std::future::poll_fn(|cx| conn.poll_fill(cx)).await.unwrap();
        conn.buf_mut().clear();
        pool.checkin(conn);
        let buffer = |pool: &Pool| pool.shards[0].lock().unwrap()[0].conn.buf_mut().capacity();
        let now = Instant::now();
        pool.sweep(now);
        assert!(buffer(&pool) > 0, "idle briefly: the buffer stays");
        pool.sweep(now + KEEP_BUFFER);
        assert_eq!(buffer(&pool), 0, "idle a while: the buffer is freed");
        assert_eq!(idle_count(&pool), 1, "and the connection kept");
        pool.sweep(now + Duration::from_secs(11));
        assert_eq!(idle_count(&pool), 0, "expired: closed");
        let mut end = [0u8; 1];
        assert_eq!(
            peer.read(&mut end).await.unwrap(),
            0,
            "the service sees the close"
        );
    }
}
