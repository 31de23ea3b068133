//! Tokens already verified, per worker thread: a client sends the same token
//! for minutes, and checking its signature again costs 35 to 140 µs (EdDSA,
//! RS256, ES256 with RustCrypto, measured), several times the rest of the
//! exchange. A hit costs a hash of the token.
//!
//! Only tokens that passed every check are kept, with what was forwarded from
//! them; an entry ends with the token's `exp` (plus the leeway) or as soon as
//! the key set changes (a key taken out of the set stops its tokens at once).
//! Per thread, so no lock is shared; bounded, so random tokens cannot grow it.

use std::cell::RefCell;
use std::sync::Arc;

use foldhash::HashMap;
use http::{HeaderName, HeaderValue};

/// Tokens kept per thread and per auth instance before the cache starts over.
const ENTRIES: usize = 512;

/// What a verified token forwards, and until when it holds.
#[derive(Clone)]
pub(super) struct Verified {
    pub headers: Arc<[(HeaderName, HeaderValue)]>,
    /// Seconds since the Unix epoch after which the entry is stale.
    pub until: u64,
    /// The key-set generation it was verified against.
    pub generation: u64,
}

type Entries = HashMap<Box<str>, Verified>;

thread_local! {
    /// Per auth instance (by id): its verified tokens on this thread.
    static VERIFIED: RefCell<Vec<(u64, Entries)>> = const { RefCell::new(Vec::new()) };
}

/// The entry for `token` of auth instance `id`, if still good at `now` for `generation`.
pub(super) fn get(id: u64, token: &str, now: u64, generation: u64) -> Option<Verified> {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        let (_, entries) = v.iter_mut().find(|(i, _)| *i == id)?;
        let hit = entries.get(token)?;
        if hit.until >= now && hit.generation == generation {
            return Some(hit.clone());
        }
        entries.remove(token);
        None
    })
}

/// Keeps `verified` for `token` of auth instance `id`.
pub(super) fn put(id: u64, token: &str, verified: Verified) {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        let entries = match v.iter().position(|(i, _)| *i == id) {
            Some(at) => &mut v[at].1,
            None => {
                v.push((id, Entries::default()));
                let last = v.len() - 1;
                &mut v[last].1
            }
        };
        if entries.len() >= ENTRIES {
            entries.clear();
        }
        entries.insert(token.into(), verified);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(until: u64, generation: u64) -> Verified {
        Verified {
            headers: Arc::new([]),
            until,
            generation,
        }
    }

    #[test]
    fn entries_end_with_the_token_or_the_key_set() {
        put(7, "t", entry(100, 1));
        assert!(get(7, "t", 100, 1).is_some());
        assert!(get(8, "t", 100, 1).is_none(), "another instance");
        assert!(get(7, "t", 100, 2).is_none(), "the key set changed");
        assert!(get(7, "t", 100, 1).is_none(), "and the entry is gone");
        put(7, "t", entry(100, 1));
        assert!(get(7, "t", 101, 1).is_none(), "expired");
        for i in 0..ENTRIES + 1 {
            put(9, &i.to_string(), entry(100, 1));
        }
        assert!(VERIFIED.with(|v| v.borrow().iter().all(|(_, e)| e.len() <= ENTRIES)));
    }
}
