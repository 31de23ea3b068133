//! Log output: `tracing` for every line, written by a background thread, and
//! a direct writer for the access log, the one line per request.
//!
//! The access log went through `tracing`'s field visitors and formatters:
//! 18,000 of sitio's 63,000 instructions per request (callgrind), 40% of its
//! user-space work. When sitio set up the logging itself (no terminal, so no
//! colours), the access line is formatted here instead, into a reused
//! per-thread buffer, byte for byte as `tracing` would print it (text or
//! JSON), and handed to the same background writer; `RUST_LOG` still decides
//! whether it is written. Otherwise (a terminal, or a subscriber of the
//! embedding program) it goes through `tracing` as before.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use tracing_appender::non_blocking::NonBlocking;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Log lines queued for the background writer before new ones are dropped.
const LOG_QUEUE_LINES: usize = 8192;
/// The target access lines are logged under (and filtered by, in `RUST_LOG`).
pub(crate) const ACCESS_TARGET: &str = "sitio::access";

/// Keeps the background log writer running; logs are flushed when it drops.
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard").finish_non_exhaustive()
    }
}

/// Where access lines go when sitio formats them itself.
struct Sink {
    writer: NonBlocking,
    json: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sets up `tracing` output: `RUST_LOG` picks levels (default `info`), `format`
/// picks text or JSON lines. Lines are written by a background thread, so a
/// request never waits on the stderr lock every core would share; under
/// extreme load lines are dropped rather than traffic slowed. Keep the
/// returned guard alive. Safe to call more than once.
pub fn init_logging(format: LogFormat) -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The writer's queue is allocated (and touched) whole at startup: the
    // default 128k lines cost 4 MiB of resident memory for nothing. 8k lines
    // (256 KiB) absorb bursts; beyond that lines are dropped, as documented.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer.clone());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() && !ansi {
        let _ = SINK.set(Sink {
            writer,
            json: format == LogFormat::Json,
        });
    }
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}

/// A worker thread's access-line state.
struct Line {
    /// The line being written.
    buf: String,
    /// The second `prefix` (`YYYY-MM-DDTHH:MM:SS`) is for.
    second: u64,
    prefix: String,
    /// This thread's handle on the background writer: cloning one per line
    /// (as `tracing`'s `MakeWriter` does) bumps two counters every core shares.
    writer: Option<NonBlocking>,
}

thread_local! {
    static LINE: RefCell<Line> = const {
        RefCell::new(Line { buf: String::new(), second: u64::MAX, prefix: String::new(), writer: None })
    };
}

/// Writes one access line through the direct writer: `fields` adds the
/// fields in order. False when there is no direct writer (then the caller
/// logs through `tracing`).
pub(crate) fn access(fields: impl FnOnce(&mut Fields<'_>)) -> bool {
    let Some(sink) = SINK.get() else {
        return false;
    };
    if !tracing::enabled!(target: "sitio::access", tracing::Level::INFO) {
        return true;
    }
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        let Line {
            buf,
            second,
            prefix,
            writer,
        } = &mut *line;
        buf.clear();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if now.as_secs() != *second {
            *second = now.as_secs();
            prefix.clear();
            civil_time(prefix, *second);
        }
        if sink.json {
            let _ = write!(
                buf,
                "{{\"timestamp\":\"{prefix}.{:06}Z\",\"level\":\"INFO\"",
                now.subsec_micros()
            );
        } else {
            let _ = write!(
                buf,
                "{prefix}.{:06}Z  INFO {ACCESS_TARGET}: ",
                now.subsec_micros()
            );
        }
        let mut f = Fields {
            buf,
            json: sink.json,
            first: true,
        };
        fields(&mut f);
        if sink.json {
            let _ = write!(buf, ",\"target\":\"{ACCESS_TARGET}\"}}");
        }
        buf.push('\n');
        // Lossy: a full queue drops the line, as for every other line.
        let writer = writer.get_or_insert_with(|| sink.writer.clone());
        let _ = writer.write_all(buf.as_bytes());
    });
    true
}

/// The fields of one access line, as `tracing`'s text or JSON formatter
/// prints them.
pub(crate) struct Fields<'a> {
    buf: &'a mut String,
    json: bool,
    first: bool,
}

impl Fields<'_> {
    fn key(&mut self, key: &str) {
        if self.json {
            let _ = write!(self.buf, ",\"{key}\":");
        } else {
            if !self.first {
                self.buf.push(' ');
            }
            self.buf.push_str(key);
            self.buf.push('=');
        }
        self.first = false;
    }

    /// A value logged with `%` (its `Display` text; a JSON string).
    pub(crate) fn display(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        if !self.json {
            let _ = write!(self.buf, "{value}");
            return;
        }
        self.buf.push('"');
        let start = self.buf.len();
        let _ = write!(self.buf, "{value}");
        // Request targets hold no quote, backslash or control character
        // (the parser refused them); escape anyway, after the fact.
        if self.buf[start..]
            .bytes()
            .any(|b| b == b'"' || b == b'\\' || b < 0x20)
        {
            let raw: String = self.buf.split_off(start);
            escape_json(self.buf, &raw);
        }
        self.buf.push('"');
    }

    /// A `&str` value (quoted in text, as `tracing` prints strings).
    pub(crate) fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        if self.json {
            self.buf.push('"');
            escape_json(self.buf, value);
            self.buf.push('"');
        } else {
            let _ = write!(self.buf, "{value:?}");
        }
    }

    /// A number.
    pub(crate) fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.buf, "{value}");
    }

    /// A boolean.
    pub(crate) fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.buf.push_str(if value { "true" } else { "false" });
    }
}

fn escape_json(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the Unix epoch, in UTC.
pub(crate) fn civil_time(out: &mut String, secs: u64) {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_and_escaping() {
        let mut s = String::new();
        civil_time(&mut s, 1_795_348_800);
        assert_eq!(s, "2026-11-22T12:00:00");
        s.clear();
        civil_time(&mut s, 0);
        assert_eq!(s, "1970-01-01T00:00:00");
        s.clear();
        escape_json(&mut s, "a\"b\\c\u{1}");
        assert_eq!(s, "a\\\"b\\\\c\\u0001");
    }

    /// What `tracing` itself prints for the access event, without the timestamp.
    fn from_tracing(json: bool) -> String {
        use std::sync::{Arc, Mutex};
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let make = move || Capture(sink.clone());
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(make);
        let event = || {
            let addr: std::net::SocketAddr = "127.0.0.1:5".parse().unwrap();
            tracing::info!(target: "sitio::access", client = %addr, path = %"/x", status = 200u64,
                error = Some("connect-refused"), upstream = None::<&str>, upgraded = false);
        };
        if json {
            let sub = builder.json().flatten_event(true).finish();
            tracing::subscriber::with_default(sub, event);
        } else {
            tracing::subscriber::with_default(builder.finish(), event);
        }
        String::from_utf8(out.lock().unwrap().clone()).unwrap()
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn ours(json: bool) -> String {
        let mut buf = String::new();
        let mut f = Fields {
            buf: &mut buf,
            json,
            first: true,
        };
        f.display(
            "client",
            "127.0.0.1:5".parse::<std::net::SocketAddr>().unwrap(),
        );
        f.display("path", "/x");
        f.u64("status", 200);
        f.str("error", "connect-refused");
        f.bool("upgraded", false);
        buf
    }

    #[test]
    fn lines_match_what_tracing_prints() {
        // Text: tracing prints " INFO target: fields" after the time.
        assert_eq!(
            from_tracing(false),
            format!(" INFO {ACCESS_TARGET}: {}\n", ours(false))
        );
        // JSON: the same object, fields in the same order.
        assert_eq!(
            from_tracing(true),
            format!(
                "{{\"level\":\"INFO\"{},\"target\":\"{ACCESS_TARGET}\"}}\n",
                ours(true)
            )
        );
    }

    #[test]
    fn fields_print_as_tracing_does() {
        let mut buf = String::new();
        let mut f = Fields {
            buf: &mut buf,
            json: false,
            first: true,
        };
        f.display("path", "/x");
        f.u64("status", 200);
        f.str("error", "connect-refused");
        f.bool("upgraded", false);
        assert_eq!(
            buf,
            "path=/x status=200 error=\"connect-refused\" upgraded=false"
        );
        let mut buf = String::new();
        let mut f = Fields {
            buf: &mut buf,
            json: true,
            first: true,
        };
        f.display("path", "/a\"b");
        f.u64("status", 200);
        f.str("error", "x");
        f.bool("upgraded", true);
        assert_eq!(
            buf,
            ",\"path\":\"/a\\\"b\",\"status\":200,\"error\":\"x\",\"upgraded\":true"
        );
    }
}
