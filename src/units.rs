//! Quantities as settings spell them (a leaf: config and the built-in
//! decorators both parse their own settings with it).

use std::time::Duration;

/// Parses an `http://` or `https://` URL with a host; `example` shows one in the error.
pub(crate) fn parse_http_url(s: &str, example: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s
        .trim()
        .parse()
        .map_err(|e| format!("expected an http:// or https:// URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(format!(
            "expected an http:// or https:// URL with a host, e.g. {example}"
        )),
    }
}

/// Parses a switch: on/off (also true/false, 1/0, yes/no).
pub(crate) fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err("expected on or off".to_owned()),
    }
}

/// Parses `65536`, `64KiB`, `64MiB` or `1GiB`.
pub(crate) fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let err = || format!("expected a size such as 65536, 512KiB, 64MiB or 1GiB, got {s:?}");
    let n: usize = n.parse().map_err(|_| err())?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        _ => return Err(err()),
    };
    n.checked_mul(scale).filter(|&b| b > 0).ok_or_else(err)
}

/// Parses `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let err = || {
        format!(
            "expected a duration such as 10s, 500ms, 2m or 1h (a bare number means seconds), got {s:?}"
        )
    };
    let n: u64 = digits.parse().map_err(|_| err())?;
    // Checked: "8888888888888888889h" must be refused, not wrap (found by fuzzing).
    let secs = |scale: u64| {
        n.checked_mul(scale)
            .map(Duration::from_secs)
            .ok_or_else(err)
    };
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => secs(60)?,
        "h" => secs(3600)?,
        _ => return Err(err()),
    };
    if d.is_zero() {
        return Err(format!("expected a duration above zero, got {s:?}"));
    }
    Ok(d)
}
