//! The HTTP/1 client connections of one instance, so that at
//! `SITIO_MAX_CONNECTIONS` the longest-idle keep-alive connection can be
//! closed to admit a new client (nginx does the same) instead of idle clients
//! locking new ones out.
//!
//! One lock for the whole instance, taken once when a connection opens and
//! once when it closes (never per request), and scanned only at the cap.

use std::sync::{Arc, Mutex};

use slab::Slab;

use crate::io::ConnPhase;

/// The connections being served.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    conns: Mutex<Slab<Arc<ConnPhase>>>,
}

/// Keeps a connection listed until dropped.
pub(crate) struct Listed {
    registry: Arc<Registry>,
    key: usize,
}

impl Registry {
    /// Lists `phase` until the returned guard drops.
    pub(crate) fn list(self: &Arc<Self>, phase: Arc<ConnPhase>) -> Option<Listed> {
        let key = self.conns.lock().ok()?.insert(phase);
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
            .filter_map(|(_, phase)| phase.idle_since().map(|since| (since, phase)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, phase)) => {
                phase.evict();
                true
            }
            None => false,
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
