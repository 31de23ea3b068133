//! The sidecar's own CPU and memory next to the host's, read from `/proc`
//! (Linux, where sidecars run) and refreshed once a second off the request path.

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Kernel clock ticks per second for `/proc` CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of process and host figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// CPU used by sitio over the last interval, in % of one core.
    pub cpu_percent: f64,
    /// CPU seconds used by sitio since it started.
    pub cpu_seconds: f64,
    /// Resident memory of sitio.
    pub rss_bytes: u64,
    /// Threads of sitio.
    pub threads: u64,
    /// Open file descriptors of sitio.
    pub open_fds: u64,
    /// Busy % of each host core over the last interval.
    pub host_cpu_percent: Vec<f64>,
    /// Host memory.
    pub host_mem_total_bytes: u64,
    /// Host memory available for new work.
    pub host_mem_available_bytes: u64,
}

#[derive(Default)]
struct Raw {
    at: Option<Instant>,
    self_ticks: u64,
    cores: Vec<(u64, u64)>, // (busy, total) jiffies per core
}

/// Keeps the latest [`Sample`].
#[derive(Default)]
pub struct Sampler {
    latest: Mutex<Sample>,
    raw: Mutex<Raw>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

impl Sampler {
    /// The latest reading (refreshed by [`Sampler::refresh`]).
    pub fn latest(&self) -> Sample {
        self.latest.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reads `/proc` again and computes rates since the last call.
    pub fn refresh(&self) {
        let now = Instant::now();
        let self_ticks = self_cpu_ticks().unwrap_or(0);
        let cores = core_jiffies();
        let Ok(mut raw) = self.raw.lock() else { return };
        let mut sample = Sample {
            cpu_seconds: self_ticks as f64 / TICKS_PER_SEC,
            ..Sample::default()
        };
        if let Some(prev_at) = raw.at {
            let secs = now.duration_since(prev_at).as_secs_f64().max(1e-3);
            let ticks = self_ticks.saturating_sub(raw.self_ticks) as f64;
            sample.cpu_percent = ticks / TICKS_PER_SEC / secs * 100.0;
            sample.host_cpu_percent = cores
                .iter()
                .zip(raw.cores.iter())
                .map(|((busy, total), (pbusy, ptotal))| {
                    let dt = total.saturating_sub(*ptotal) as f64;
                    if dt == 0.0 {
                        0.0
                    } else {
                        busy.saturating_sub(*pbusy) as f64 / dt * 100.0
                    }
                })
                .collect();
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        sample.rss_bytes = kib_field(&status, "VmRSS:") * 1024;
        sample.threads = kib_field(&status, "Threads:");
        sample.open_fds = open_fds_now();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        sample.host_mem_total_bytes = kib_field(&meminfo, "MemTotal:") * 1024;
        sample.host_mem_available_bytes = kib_field(&meminfo, "MemAvailable:") * 1024;
        *raw = Raw {
            at: Some(now),
            self_ticks,
            cores,
        };
        if let Ok(mut latest) = self.latest.lock() {
            *latest = sample;
        }
    }
}

/// CPU seconds used by this process so far (fresh, for `/metrics`).
pub fn cpu_seconds_now() -> f64 {
    self_cpu_ticks().unwrap_or(0) as f64 / TICKS_PER_SEC
}

/// Resident memory of this process now (fresh, for `/metrics`).
pub fn rss_bytes_now() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    kib_field(&status, "VmRSS:") * 1024
}

/// Open file descriptors of this process now.
pub fn open_fds_now() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

fn self_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn core_jiffies() -> Vec<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total.saturating_sub(idle), total)
        })
        .collect()
}

fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_plausible() {
        let s = Sampler::default();
        s.refresh();
        let mut spin = 0u64;
        for i in 0..20_000_000u64 {
            spin = spin.wrapping_add(i ^ (spin >> 3));
        }
        std::hint::black_box(spin);
        s.refresh();
        let sample = s.latest();
        assert!(sample.rss_bytes > 1 << 20);
        assert!(sample.threads >= 1 && sample.open_fds >= 3);
        assert!(!sample.host_cpu_percent.is_empty());
        assert!(sample.host_mem_total_bytes >= sample.host_mem_available_bytes);
        assert!(sample.cpu_seconds > 0.0);
    }
}
