//! The `Date` field of responses (RFC 9110 §6.6.1), formatted once a second
//! per thread rather than once per response (hyper does the same).

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT`.len()
const LEN: usize = 29;

struct Cached {
    /// The second `value` shows (since the epoch).
    second: u64,
    value: [u8; LEN],
}

thread_local! {
    static CACHED: RefCell<Cached> = const { RefCell::new(Cached { second: u64::MAX, value: [0; LEN] }) };
}

/// Appends the current date, as an HTTP date, to `dst`.
pub(crate) fn extend(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHED.with_borrow_mut(|cached| {
        if cached.second != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == LEN {
                cached.value.copy_from_slice(formatted.as_bytes());
                cached.second = second;
            }
        }
        dst.extend_from_slice(&cached.value);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_is_an_http_date_of_now() {
        let mut dst = Vec::new();
        super::extend(&mut dst);
        let parsed = httpdate::parse_http_date(std::str::from_utf8(&dst).unwrap()).unwrap();
        let age = std::time::SystemTime::now().duration_since(parsed).unwrap();
        assert!(age < std::time::Duration::from_secs(2), "{age:?}");
    }
}
