//! Paths folded into routes, so per-endpoint statistics have bounded
//! cardinality with zero configuration: ids, UUIDs, hashes and random tokens
//! become `{id}`, query strings are dropped, operator patterns win, and past a
//! limit every new route is counted as `{other}`.

use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use compact_str::CompactString;
// Route keys are bounded (SITIO_MAX_ROUTES), so a fast seeded hash is safe here.
use foldhash::{HashMap, HashSet};

/// The route every path beyond the limit is counted under.
pub const OTHER: &str = "{other}";
const MAX_SEGMENTS: usize = 16;

/// An operator pattern such as `/users/{id}` or `/static/*`.
#[derive(Debug, Clone)]
struct Pattern {
    text: CompactString,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Any,
    Rest,
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        if !text.starts_with('/') {
            return Err(format!("route pattern {text:?} must start with /"));
        }
        let parts: Vec<&str> = text[1..].split('/').collect();
        let mut segments = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            segments.push(if *part == "*" {
                if i + 1 != parts.len() {
                    return Err(format!("in route pattern {text:?}, * may only end it"));
                }
                Segment::Rest
            } else if part.starts_with('{') && part.ends_with('}') && part.len() > 2 {
                Segment::Any
            } else {
                Segment::Literal((*part).to_owned())
            });
        }
        Ok(Pattern {
            text: text.into(),
            segments,
        })
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
        for seg in &self.segments {
            match seg {
                Segment::Rest => return true,
                Segment::Any => {
                    if parts.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

/// Checks a setting of route patterns (`SITIO_ROUTES`, `SITIO_FAULT_ROUTES`).
pub(crate) fn parse_routes(s: &str) -> Result<String, String> {
    Patterns::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{e} (expected patterns such as /users/{{id}},/static/*)"))
}

/// A list of route patterns (`/users/{id}`, `/static/*`).
#[derive(Debug, Clone, Default)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    /// Parses comma-separated patterns.
    pub fn parse(text: &str) -> Result<Patterns, String> {
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Pattern::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Patterns)
    }

    /// True when no pattern is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `path` (without query) matches one of the patterns.
    pub fn matches(&self, path: &str) -> bool {
        self.0.iter().any(|p| p.matches(path))
    }
}

/// Folds paths into routes and bounds how many distinct routes exist.
#[derive(Debug)]
pub struct Routes {
    id: u64,
    /// Lets per-thread caches tell that this table is gone.
    alive: std::sync::Arc<()>,
    patterns: Vec<Pattern>,
    max: usize,
    known: Mutex<HashSet<CompactString>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Negative answers cached per thread before the cache is cleared.
const LOCAL_CACHE_LIMIT: usize = 4096;

/// A thread's verdicts for one table, dropped with the table.
type Verdicts = (std::sync::Weak<()>, HashMap<CompactString, bool>);

thread_local! {
    /// Routes this thread already knows are admitted (or refused), per table,
    /// so the shared table is locked only the first time a thread meets a route.
    /// Entries of tables that are gone are pruned when a new table shows up.
    static ADMITTED: RefCell<HashMap<u64, Verdicts>> = RefCell::new(HashMap::default());
}

impl Routes {
    /// A table from the comma-separated `SITIO_ROUTES` patterns, admitting at
    /// most `max` distinct routes.
    pub fn new(patterns: &str, max: usize) -> Result<Routes, String> {
        let patterns = patterns
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Pattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Routes {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: std::sync::Arc::new(()),
            patterns,
            max,
            known: Mutex::new(HashSet::default()),
        })
    }

    /// A table with no operator patterns.
    pub fn unpatterned(max: usize) -> Routes {
        Routes {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: std::sync::Arc::new(()),
            patterns: Vec::new(),
            max,
            known: Mutex::new(HashSet::default()),
        }
    }

    /// The route `path` is counted under.
    pub fn route_of(&self, path: &str) -> CompactString {
        let folded = match self.patterns.iter().find(|p| p.matches(path)) {
            Some(p) => p.text.clone(),
            None => fold(path),
        };
        if self.admit(&folded) {
            folded
        } else {
            CompactString::const_new(OTHER)
        }
    }

    fn admit(&self, route: &CompactString) -> bool {
        ADMITTED.with(|cache| {
            let mut cache = cache.borrow_mut();
            // The common case, a route this thread has seen: two lookups.
            if let Some(&ok) = cache.get(&self.id).and_then(|(_, local)| local.get(route)) {
                return ok;
            }
            if !cache.contains_key(&self.id) {
                cache.retain(|_, (alive, _)| alive.strong_count() > 0);
                let alive = std::sync::Arc::downgrade(&self.alive);
                cache.insert(self.id, (alive, HashMap::default()));
            }
            let Some((_, local)) = cache.get_mut(&self.id) else {
                return true; // just inserted
            };
            let ok = {
                let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
                if known.contains(route) {
                    true
                } else if known.len() < self.max {
                    known.insert(route.clone());
                    true
                } else {
                    false
                }
            };
            if local.len() >= LOCAL_CACHE_LIMIT {
                local.clear();
            }
            local.insert(route.clone(), ok);
            ok
        })
    }
}

/// Folds a path with the built-in rules: query dropped, id-like segments
/// replaced by `{id}`, at most a few segments kept.
pub fn fold(path: &str) -> CompactString {
    // Byte scans (memchr) rather than `split(char)`: this runs for every
    // request, and the char searcher's set-up was a visible share of it.
    let path = memchr::memchr(b'?', path.as_bytes()).map_or(path, |q| &path[..q]);
    let mut out = CompactString::default();
    // The segments after the first '/', as `path.split('/').skip(1)`.
    let mut rest = memchr::memchr(b'/', path.as_bytes()).map(|s| &path[s + 1..]);
    let mut i = 0;
    while let Some(here) = rest {
        if i == MAX_SEGMENTS {
            out.push_str("/…");
            break;
        }
        let (seg, next) = match memchr::memchr(b'/', here.as_bytes()) {
            Some(end) => (&here[..end], Some(&here[end + 1..])),
            None => (here, None),
        };
        out.push('/');
        if is_id_like(seg) {
            out.push_str("{id}");
        } else {
            out.push_str(seg);
        }
        rest = next;
        i += 1;
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn is_id_like(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if is_uuid(b) {
        return true;
    }
    if b.len() >= 8 && digits > 0 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    // Long random tokens (base64url, ulids...): long, mixed letters and digits.
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    b.len() >= 16
        && digits >= 2
        && letters >= 2
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_hashes_uuids_and_tokens_fold() {
        assert_eq!(
            fold("/users/42/orders/9f8e7d6c5b4a"),
            "/users/{id}/orders/{id}"
        );
        assert_eq!(
            fold("/u/123e4567-e89b-12d3-a456-426614174000?x=1"),
            "/u/{id}"
        );
        assert_eq!(fold("/files/aZ3kQ9xLm2Pq7RtY8wVb/raw"), "/files/{id}/raw");
        assert_eq!(fold("/photos/7.svg"), "/photos/7.svg");
        assert_eq!(fold("/api/v2/health"), "/api/v2/health");
        assert_eq!(
            fold("/deadbeef"),
            "/deadbeef",
            "hex without digits is a word"
        );
        assert_eq!(fold(""), "/");
        assert_eq!(fold("*"), "/");
        assert_eq!(fold("/"), "/");
        assert_eq!(fold("/a//b/"), "/a//b/");
        assert_eq!(fold("/a/b?c/d"), "/a/b");
        assert_eq!(fold("/"), "/");
    }

    #[test]
    fn operator_patterns_win_and_the_table_is_bounded() {
        let routes = Routes::new("/users/{id}, /static/*", 3).unwrap();
        assert_eq!(routes.route_of("/users/alice"), "/users/{id}");
        assert_eq!(routes.route_of("/static/css/a.css"), "/static/*");
        assert_eq!(routes.route_of("/users/alice/x"), "/users/alice/x");
        assert_eq!(
            routes.route_of("/new-one"),
            OTHER,
            "limit of 3 routes reached"
        );
        assert_eq!(
            routes.route_of("/users/bob"),
            "/users/{id}",
            "known routes still count"
        );
        assert!(Routes::new("users", 3).is_err());
        assert!(Routes::new("/a/*/b", 3).is_err());
    }
}
