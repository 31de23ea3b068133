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
    /// Closes what has been parked with no timer of its own since before
    /// `idle_before` (`io::clock` nanoseconds): the idle timeout's sweep.
    fn expire(&self, idle_before: u64) {
        let _ = idle_before;
    }
    /// The drain began: what serves exchanges closes once idle, what is
    /// idle at once. Each connection is told here, once, rather than each
    /// watching a signal at every wake-up (a `watch` channel's lock, shared
    /// by every worker, taken about three times per request).
    fn drain(&self);
    /// Asks it to close once idle (at once if it is now).
    fn evict(&self);
}

/// The connections being served.
#[derive(Default)]
pub(crate) struct Registry {
    conns: Mutex<Shrinking<Arc<dyn Evictable>>>,
}

/// A slab that gives its memory back once mostly empty: after a burst of
/// clients has come and gone, a slab sized for the burst would stay (a
/// `Vec` never shrinks on its own). Keys stay valid: only the vacant tail is
/// released. A try walks the slab, so it comes at most once per quarter of
/// its capacity in removals (amortised constant time), and at once when the
/// slab empties.
#[derive(Debug)]
pub(crate) struct Shrinking<T> {
    pub(crate) slab: Slab<T>,
    removals: usize,
}

impl<T> Default for Shrinking<T> {
    fn default() -> Self {
        Shrinking {
            slab: Slab::new(),
            removals: 0,
        }
    }
}

impl<T> Shrinking<T> {
    /// Removes `key`'s entry, if any.
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let removed = self.slab.try_remove(key);
        self.removals += 1;
        let (len, capacity) = (self.slab.len(), self.slab.capacity());
        if len == 0 && capacity > 0 {
            self.slab = Slab::new();
            self.removals = 0;
        } else if len * 4 < capacity && self.removals * 4 >= capacity {
            self.slab.shrink_to_fit();
            self.removals = 0;
        }
        removed
    }
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
        let mut conns = self.conns.lock().ok()?;
        let key = conns.slab.insert(conn);
        drop(conns);
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
            .slab
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
        self.each(|conn| conn.expire(idle_before));
    }

    /// The drain: tells every connection (see [`Evictable::drain`]). The
    /// drain's flag is set before, so a connection listed after this pass
    /// sees it when it looks after listing.
    pub(crate) fn drain(&self) {
        self.each(|conn| conn.drain());
    }

    fn each(&self, what: impl Fn(&dyn Evictable)) {
        let Ok(conns) = self.conns.lock() else {
            return;
        };
        for (_, conn) in conns.slab.iter() {
            what(conn.as_ref());
        }
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.registry.conns.lock() {
            conns.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shrinking;

    #[test]
    fn a_slab_gives_back_its_memory_once_mostly_empty_and_keys_stay_valid() {
        let mut s = Shrinking::default();
        let keys: Vec<usize> = (0..1000).map(|i| s.slab.insert(i)).collect();
        let full = s.slab.capacity();
        assert!(full >= 1000);
        // The last 900 leave: the vacant tail is released, keys hold.
        for &k in keys[100..].iter().rev() {
            assert!(s.remove(k).is_some());
        }
        assert!(
            s.slab.capacity() <= full / 4,
            "{} of {full}",
            s.slab.capacity()
        );
        assert_eq!(s.slab[keys[99]], 99);
        // A live entry at the end pins the capacity: only keys matter then.
        let pinned = s.slab.insert(1000);
        for &k in &keys[..99] {
            s.remove(k);
        }
        assert_eq!(s.slab[pinned], 1000);
        assert_eq!(s.slab[keys[99]], 99);
        // All gone: nothing kept.
        s.remove(keys[99]);
        s.remove(pinned);
        assert_eq!(s.slab.capacity(), 0);
        assert!(s.remove(keys[0]).is_none());
    }
}
