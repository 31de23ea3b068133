//! The client connections of one instance (HTTP/1 and HTTP/2), so that at
//! `SITIO_MAX_CONNECTIONS` the longest-idle keep-alive connection can be
//! closed to admit a new client (nginx does the same) instead of idle clients
//! locking new ones out.
//!
//! One lock for the whole instance, taken once when a connection opens and
//! once when it closes (never per request), and scanned only at the cap.

use std::sync::{Arc, Mutex};

use slab::Slab;

/// A connection the registry may close when it is idle.
pub(crate) trait Evictable: Send + Sync {
    /// When it became idle (`io::clock` nanoseconds): a keep-alive
    /// connection between exchanges, an HTTP/2 one with no stream open;
    /// `None` while it serves or reads a request.
    fn idle_since(&self) -> Option<u64>;
    /// Like `idle_since`, for a connection parked with no timer of its own
    /// (`io::Parked`): the registry's sweep ends it at the idle timeout.
    fn parked_since(&self) -> Option<u64> {
        None
    }
    /// Asks it to close once idle (at once if it is now).
    fn evict(&self);
}

/// The connections being served.
#[derive(Default)]
pub(crate) struct Registry {
    conns: Mutex<Slab<Arc<dyn Evictable>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Keeps a connection listed until dropped.
pub(crate) struct Listed {
    registry: Arc<Registry>,
    key: usize,
}

impl Registry {
    /// Lists `conn` until the returned guard drops.
    pub(crate) fn list(self: &Arc<Self>, conn: Arc<dyn Evictable>) -> Option<Listed> {
        let key = self.conns.lock().ok()?.insert(conn);
        Some(Listed {
            registry: self.clone(),
            key,
        })
    }

    /// Asks the keep-alive connection idle the longest to close; false when
    /// no connection is idle (all are in an exchange or reading a request).
    pub(crate) fn evict_longest_idle(&self) -> bool {
        let Ok(conns) = self.conns.lock() else {
            return false;
        };
        let oldest = conns
            .iter()
            .filter_map(|(_, conn)| conn.idle_since().map(|since| (since, conn)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, conn)) => {
                conn.evict();
                true
            }
            None => false,
        }
    }
}

impl Registry {
    /// Asks every parked connection idle since before `idle_before`
    /// (`io::clock` nanoseconds) to close: their idle timeout. One pass
    /// under the lock, a few nanoseconds per connection.
    pub(crate) fn evict_expired(&self, idle_before: u64) {
        self.evict_where(|conn| conn.parked_since().is_some_and(|since| since < idle_before));
    }

    /// Asks every idle connection to close (the drain): parked ones wait on
    /// nothing else.
    pub(crate) fn evict_idle(&self) {
        self.evict_where(|conn| conn.idle_since().is_some());
    }

    fn evict_where(&self, expired: impl Fn(&dyn Evictable) -> bool) {
        let Ok(conns) = self.conns.lock() else {
            return;
        };
        for (_, conn) in conns.iter() {
            if expired(conn.as_ref()) {
                conn.evict();
            }
        }
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.registry.conns.lock() {
            conns.try_remove(self.key);
        }
    }
}
