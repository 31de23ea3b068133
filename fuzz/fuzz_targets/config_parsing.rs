//! Configuration parsing on arbitrary flag values: never panics; a value is
//! either accepted or refused with a message naming its setting.
#![no_main]

use libfuzzer_sys::fuzz_target;

const FLAGS: &[(&str, &str)] = &[
    ("--port", "PORT"),
    ("--header-timeout", "SITIO_HEADER_TIMEOUT"),
    ("--max-header-bytes", "SITIO_MAX_HEADER_BYTES"),
    ("--routes", "SITIO_ROUTES"),
    ("--fault-delay", "SITIO_FAULT_DELAY"),
    ("--fault-abort", "SITIO_FAULT_ABORT"),
    ("--notify-url", "SITIO_NOTIFY_URL"),
    ("--stale-cache-bytes", "SITIO_STALE_CACHE_BYTES"),
    ("--stats-interval", "SITIO_STATS_INTERVAL"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let Ok(value) = std::str::from_utf8(rest) else { return };
    let (flag, var) = FLAGS[usize::from(pick) % FLAGS.len()];
    // `--flag=value`: as a separate argument, a value starting with `-` would
    // be read as another flag (found by this target; see config's tests).
    if let Err(e) = sitio::Config::from_args([format!("{flag}={value}")]) {
        assert!(e.contains(var), "{flag}={value:?}: {e}");
    }
});
