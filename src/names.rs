//! The header names most heads carry, found without `HeaderName::from_bytes`,
//! which lowercases every name into a scratch buffer before its lookup
//! (about 150 instructions a name in callgrind; nginx's response has nine
//! names): a switch on the length and first letter, then one comparison of
//! words. Both of sitio's HTTP/1 parsers use it (`upstream::h1` for the
//! service's responses, `h1` for clients' requests); a name not listed
//! here goes to `from_bytes`.

use http::{HeaderName, header};

/// The standard name `raw` (a token `httparse` accepted) is, in any case,
/// if it is one of the common ones; `None` otherwise.
pub(crate) fn common(raw: &[u8]) -> Option<HeaderName> {
    let first = raw.first()? | 0x20;
    // Bit 5 set lowercases a letter: the byte that tells two names of the
    // same length and first letter apart (a wrong guess only means `None`).
    let at = |i: usize| raw.get(i).map_or(0, |b| b | 0x20);
    let (name, lower): (HeaderName, &[u8]) = match (raw.len(), first) {
        (4, b'd') => (header::DATE, b"date"),
        (4, b'e') => (header::ETAG, b"etag"),
        (4, b'h') => (header::HOST, b"host"),
        (4, b'v') => (header::VARY, b"vary"),
        (6, b'a') => (header::ACCEPT, b"accept"),
        (6, b'c') => (header::COOKIE, b"cookie"),
        (6, b'o') => (header::ORIGIN, b"origin"),
        (6, b's') => (header::SERVER, b"server"),
        (7, b'e') => (header::EXPIRES, b"expires"),
        (7, b'r') => (header::REFERER, b"referer"),
        (7, b'u') => (header::UPGRADE, b"upgrade"),
        (8, b'l') => (header::LOCATION, b"location"),
        (10, b'c') => (header::CONNECTION, b"connection"),
        (10, b's') => (header::SET_COOKIE, b"set-cookie"),
        (10, b'u') => (header::USER_AGENT, b"user-agent"),
        (12, b'c') => (header::CONTENT_TYPE, b"content-type"),
        (13, b'a') if at(1) == b'c' => (header::ACCEPT_RANGES, b"accept-ranges"),
        (13, b'a') => (header::AUTHORIZATION, b"authorization"),
        (13, b'c') => (header::CACHE_CONTROL, b"cache-control"),
        (13, b'i') => (header::IF_NONE_MATCH, b"if-none-match"),
        (13, b'l') => (header::LAST_MODIFIED, b"last-modified"),
        (14, b'c') => (header::CONTENT_LENGTH, b"content-length"),
        (15, b'a') if at(7) == b'e' => (header::ACCEPT_ENCODING, b"accept-encoding"),
        (15, b'a') => (header::ACCEPT_LANGUAGE, b"accept-language"),
        (16, b'c') => (header::CONTENT_ENCODING, b"content-encoding"),
        (17, b'i') => (header::IF_MODIFIED_SINCE, b"if-modified-since"),
        (17, b't') => (header::TRANSFER_ENCODING, b"transfer-encoding"),
        _ => return None,
    };
    token_eq_lower(raw, lower).then_some(name)
}

/// `raw`, a header name `httparse` accepted (a token), equals `lower` (the
/// same length, lowercase letters, digits and `-`) but for case. Setting
/// bit 5 of every byte lowercases letters and leaves `-` and digits as
/// they are; the only other bytes it maps onto them are control characters,
/// which a token never holds. Compared as overlapping words: two or three
/// comparisons for the names above, where `eq_ignore_ascii_case` went
/// byte by byte (more instructions than the lookup it replaced).
fn token_eq_lower(raw: &[u8], lower: &[u8]) -> bool {
    /// `N` bytes of `s` from `at` (4 or 8), bit 5 set in each.
    fn folded<const N: usize>(s: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w[..N].copy_from_slice(&s[at..at + N]);
        u64::from_le_bytes(w) | (0x2020_2020_2020_2020 >> (64 - 8 * N))
    }
    let n = raw.len();
    if n != lower.len() || n < 4 {
        return false;
    }
    if n < 8 {
        let same = |at| folded::<4>(raw, at) == folded::<4>(lower, at);
        return same(0) && same(n - 4);
    }
    let mut at = 0;
    while at + 8 < n {
        if folded::<8>(raw, at) != folded::<8>(lower, at) {
            return false;
        }
        at += 8;
    }
    folded::<8>(raw, n - 8) == folded::<8>(lower, n - 8)
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    /// Every covered name, in any case, is the http crate's; same-length
    /// lookalikes (and names sharing a length and first letter with a
    /// covered one) are left to it.
    #[test]
    fn common_names_are_found_as_the_http_crate_finds_them() {
        let names = [
            "date",
            "etag",
            "host",
            "vary",
            "accept",
            "cookie",
            "origin",
            "server",
            "expires",
            "referer",
            "upgrade",
            "location",
            "connection",
            "set-cookie",
            "user-agent",
            "content-type",
            "accept-ranges",
            "authorization",
            "cache-control",
            "if-none-match",
            "last-modified",
            "content-length",
            "accept-encoding",
            "accept-language",
            "content-encoding",
            "if-modified-since",
            "transfer-encoding",
        ];
        let cases = |n: &str| {
            let mixed: String = n
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            [n.to_owned(), n.to_ascii_uppercase(), mixed]
        };
        for name in names {
            for raw in cases(name) {
                let from_bytes = HeaderName::from_bytes(raw.as_bytes()).unwrap();
                assert_eq!(super::common(raw.as_bytes()), Some(from_bytes), "{raw}");
            }
        }
        let others = [
            "dave",
            "dat3",
            "eta9",
            "hosT1",
            "vars",
            "serves",
            "x-serve",
            "expired",
            "locatiom",
            "connexion",
            "content-typo",
            "accept-rangez",
            "cache-controk",
            "last-modifies",
            "content-lengtx",
            "content-encodinx",
            "transfer-encodinx",
            "authorizatiom",
            "accept-encodinq",
            "accept-languaqe",
            "content-language",
            "if-unmodified-since",
            "if-range",
            "if-match",
            "keep-alive",
            "x-request-id",
            "allow",
            "age",
            "te",
            "",
            "a",
        ];
        for raw in others {
            assert_eq!(super::common(raw.as_bytes()), None, "{raw}");
        }
    }
}
