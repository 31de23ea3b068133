//! Idle upstream connections, kept per worker thread.
//!
//! A thread-local list instead of one shared pool: checkout and checkin never
//! take a lock another core could hold. A connection may be checked out on one
//! thread and returned on another; it simply moves.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use super::Sender;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
}

struct Idle {
    upstream_id: u64,
    sender: Sender,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
}

/// The most recently used live connection to `upstream_id`, if any, with how
/// long it sat idle.
pub(crate) fn checkout(upstream_id: u64, limits: &Limits) -> Option<(Sender, Duration)> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let now = Instant::now();
        while let Some(pos) = idle.iter().rposition(|c| c.upstream_id == upstream_id) {
            let conn = idle.swap_remove(pos);
            let idle_for = now.duration_since(conn.since);
            if !conn.sender.is_closed() && idle_for < limits.idle_timeout {
                return Some((conn.sender, idle_for));
            }
        }
        None
    })
}

/// Keeps `sender` for reuse, dropping (closing) expired or surplus connections.
pub(crate) fn checkin(upstream_id: u64, sender: Sender, limits: &Limits) {
    if sender.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let now = Instant::now();
        idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < limits.idle_timeout);
        let mine = idle.iter().filter(|c| c.upstream_id == upstream_id).count();
        if mine < limits.max_idle {
            idle.push(Idle {
                upstream_id,
                sender,
                since: now,
            });
        }
    })
}
