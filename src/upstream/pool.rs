//! Idle upstream connections, in shards.
//!
//! Each worker thread puts connections back into, and takes them from, a
//! shard of its own, so the common case locks a mutex no other core is using.
//! A connection is often taken on one thread and returned on another (the
//! runtime moves tasks), so a thread whose shard is empty takes one from
//! another shard before opening a new connection: otherwise idle connections
//! would pile up in one shard while another thread keeps dialing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Sender;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) idle_timeout: Duration,
    /// Idle connections kept per shard.
    pub(crate) max_idle: usize,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The idle connections to one service.
pub(crate) struct Pool {
    shards: Vec<Mutex<Vec<Idle>>>,
    limits: Limits,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard number (modulo the shard count).
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

impl Pool {
    pub(crate) fn new(shards: usize, limits: Limits) -> Self {
        Pool {
            shards: (0..shards.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            limits,
        }
    }

    fn own(&self) -> usize {
        THREAD_INDEX.with(|i| *i % self.shards.len())
    }

    /// The most recently used live connection, if any, with how long it sat idle.
    pub(crate) fn checkout(&self) -> Option<(Sender, Duration)> {
        let own = self.own();
        let n = self.shards.len();
        let now = Instant::now();
        for k in 0..n {
            let i = (own + k) % n;
            // Other shards only if free: waiting on another core's lock costs
            // more than a new connection would save.
            let shard = if k == 0 {
                self.shards[i].lock().ok()
            } else {
                self.shards[i].try_lock().ok()
            };
            let Some(mut shard) = shard else { continue };
            while let Some(conn) = shard.pop() {
                let idle_for = now.duration_since(conn.since);
                if !conn.sender.is_closed() && idle_for < self.limits.idle_timeout {
                    return Some((conn.sender, idle_for));
                }
            }
        }
        None
    }

    /// Keeps `sender` for reuse, dropping (closing) expired or surplus connections.
    pub(crate) fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut shard) = self.shards[self.own()].lock() else {
            return;
        };
        let now = Instant::now();
        shard.retain(|c| {
            !c.sender.is_closed() && now.duration_since(c.since) < self.limits.idle_timeout
        });
        if shard.len() < self.limits.max_idle {
            shard.push(Idle { sender, since: now });
        }
    }
}
