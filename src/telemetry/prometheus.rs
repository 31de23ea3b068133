//! `/metrics` in the Prometheus text format (0.0.4), written directly: the
//! format is small, and writing it here keeps counter names exactly as
//! `promtool check metrics` wants them (`_total` on the family name).

use std::fmt::Write;

use super::Telemetry;
use super::process;
use super::stats::Endpoint;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value escaped for the exposition format; PromQL string literals
/// take the same escapes (the mothership's matchers use it).
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Starts a metric family: its `# HELP` and `# TYPE` lines.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A counter family with one label: `name{label="value"} n` per pair.
fn labelled(
    out: &mut String,
    (name, label): (&str, &str),
    help: &str,
    pairs: impl IntoIterator<Item = (&'static str, u64)>,
) {
    family(out, name, "counter", help);
    for (value, n) in pairs {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// Renders every metric of `t`.
pub fn render(t: &Telemetry) -> String {
    let mut out = String::new();
    if let Some(stats) = &t.stats {
        let snap = stats.snapshot();
        // With named upstreams (A/B variants) the request series carry an
        // `upstream` label; summed over it they are the per-route figures.
        let rows: Vec<(String, &Endpoint)> = if snap.variants.is_empty() {
            snap.endpoints
                .iter()
                .map(|(m, r, e)| {
                    let labels =
                        format!("method=\"{}\",route=\"{}\"", escape(m.as_str()), escape(r));
                    (labels, e)
                })
                .collect()
        } else {
            snap.variants
                .iter()
                .map(|(m, r, u, e)| {
                    let labels = format!(
                        "method=\"{}\",route=\"{}\",upstream=\"{}\"",
                        escape(m.as_str()),
                        escape(r),
                        escape(u)
                    );
                    (labels, e)
                })
                .collect()
        };
        family(
            &mut out,
            "sitio_requests_total",
            "counter",
            "Completed requests by method, route and status (and upstream, when named upstreams exist).",
        );
        for (labels, e) in &rows {
            for (status, n) in &e.status {
                let _ = writeln!(
                    out,
                    "sitio_requests_total{{{labels},status=\"{status}\"}} {n}"
                );
            }
        }
        if rows.iter().any(|(_, e)| !e.grpc.is_empty()) {
            family(
                &mut out,
                "sitio_grpc_requests_total",
                "counter",
                "Completed gRPC calls by method, route (the gRPC method) and grpc-status, by name.",
            );
            for (labels, e) in &rows {
                for (code, n) in &e.grpc {
                    let code = crate::grpc::code_name(*code);
                    let _ = writeln!(
                        out,
                        "sitio_grpc_requests_total{{{labels},grpc_code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        family(
            &mut out,
            "sitio_request_duration_seconds",
            "histogram",
            "Time from request head to last response byte.",
        );
        for (labels, e) in &rows {
            for le in BUCKETS {
                let n = e.latency.count_between(0, (le * 1e6) as u64);
                let _ = writeln!(
                    out,
                    "sitio_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let count = e.latency.len();
            let _ = writeln!(
                out,
                "sitio_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "sitio_request_duration_seconds_sum{{{labels}}} {}",
                e.latency_sum_us as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "sitio_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        family(
            &mut out,
            "sitio_requests_in_flight",
            "gauge",
            "Requests being served now.",
        );
        for (method, route, e) in &snap.endpoints {
            let _ = writeln!(
                out,
                "sitio_requests_in_flight{{method=\"{}\",route=\"{}\"}} {}",
                escape(method.as_str()),
                escape(route),
                e.in_flight.max(0)
            );
        }
        family(
            &mut out,
            "sitio_upstream_requests_total",
            "counter",
            "Requests sent to each upstream, by the status it answered (\"none\": it failed).",
        );
        for (name, e) in &snap.upstreams {
            let answered: u64 = e.status.values().sum();
            let failed = e.hits.saturating_sub(answered);
            let rows = e.status.iter().map(|(s, n)| (s.to_string(), *n));
            for (status, n) in rows.chain((failed > 0).then(|| ("none".to_owned(), failed))) {
                let _ = writeln!(
                    out,
                    "sitio_upstream_requests_total{{upstream=\"{}\",status=\"{status}\"}} {n}",
                    escape(name)
                );
            }
        }
        family(
            &mut out,
            "sitio_upstream_errors_total",
            "counter",
            "Failures reaching the service, by kind.",
        );
        for (kind, n) in &snap.upstream_errors {
            let _ = writeln!(out, "sitio_upstream_errors_total{{kind=\"{kind}\"}} {n}");
        }
    }
    family(
        &mut out,
        "sitio_connections_open",
        "gauge",
        "Client connections open now.",
    );
    let _ = writeln!(out, "sitio_connections_open {}", t.connections.open_now());
    family(
        &mut out,
        "sitio_connections_parked",
        "gauge",
        "Idle keep-alive connections parked without buffers (among the open ones).",
    );
    let _ = writeln!(
        out,
        "sitio_connections_parked {}",
        t.connections.parked_now()
    );
    let c = &t.connections;
    labelled(
        &mut out,
        ("sitio_connections_total", "protocol"),
        "Client connections by detected protocol.",
        c.totals(),
    );
    labelled(
        &mut out,
        ("sitio_tunnels_total", "reason"),
        "Connections tunnelled to the service untouched, by why.",
        c.tunnels(),
    );
    labelled(
        &mut out,
        ("sitio_refused_total", "reason"),
        "Requests refused before reaching the service, by reason.",
        c.refusals(),
    );
    family(
        &mut out,
        "sitio_worker_connections_total",
        "counter",
        "Client connections accepted, by worker (SITIO_WORKERS).",
    );
    for (worker, n) in c.per_worker().iter().enumerate() {
        let _ = writeln!(
            out,
            "sitio_worker_connections_total{{worker=\"{worker}\"}} {n}"
        );
    }
    let (tin, tout) = t.connections.tunnel_bytes();
    family(
        &mut out,
        "sitio_tunnel_bytes_total",
        "counter",
        "Bytes through opaque TCP tunnels.",
    );
    let _ = writeln!(out, "sitio_tunnel_bytes_total{{direction=\"in\"}} {tin}");
    let _ = writeln!(out, "sitio_tunnel_bytes_total{{direction=\"out\"}} {tout}");
    family(
        &mut out,
        "sitio_tap_dropped_events_total",
        "counter",
        "Tap events lost by slow readers.",
    );
    let _ = writeln!(out, "sitio_tap_dropped_events_total {}", t.tap.dropped());
    for r in &t.reports {
        r.metrics(&mut out);
    }
    family(&mut out, "sitio_build_info", "gauge", "Build information.");
    let _ = writeln!(
        out,
        "sitio_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    family(
        &mut out,
        "process_cpu_seconds_total",
        "counter",
        "CPU time used by sitio.",
    );
    let _ = writeln!(
        out,
        "process_cpu_seconds_total {}",
        process::cpu_seconds_now()
    );
    family(
        &mut out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of sitio.",
    );
    let rss = process::rss_bytes_now();
    let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    family(
        &mut out,
        "process_open_fds",
        "gauge",
        "Open file descriptors of sitio.",
    );
    let fds = process::open_fds_now();
    let _ = writeln!(out, "process_open_fds {fds}");
    family(
        &mut out,
        "process_start_time_seconds",
        "gauge",
        "Start time of sitio, Unix seconds.",
    );
    let _ = writeln!(out, "process_start_time_seconds {}", t.start_time_unix());
    out
}
