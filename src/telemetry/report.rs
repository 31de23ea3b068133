//! `/stats` as JSON, and the periodic summary table for the log.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::Telemetry;
use super::stats::Endpoint;

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

fn percentiles(h: &Histogram<u32>) -> Value {
    if h.is_empty() {
        return json!({"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0});
    }
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
        "mean": ms(h.mean() as u64),
    })
}

fn endpoint_json(method: &str, route: &str, e: &Endpoint) -> Value {
    let status: serde_json::Map<String, Value> = e
        .status
        .iter()
        .map(|(code, n)| (code.to_string(), json!(n)))
        .collect();
    let mut latency = percentiles(&e.latency);
    if let Some(mean) = e.latency_sum_us.checked_div(e.hits) {
        // The exact mean, from the exact sum.
        latency["mean"] = json!(ms(mean));
    }
    let mut doc = json!({
        "method": method,
        "route": route,
        "hits": e.hits,
        "status": status,
        "errors": e.server_errors(),
        "latency_ms": latency,
        "ttfb_ms": percentiles(&e.ttfb),
        "bytes_in": e.bytes_in,
        "bytes_out": e.bytes_out,
        "in_flight": e.in_flight.max(0),
    });
    if !e.grpc.is_empty() {
        // By name, as gRPC tooling shows them: {"OK": 10, "UNAVAILABLE": 2}.
        let grpc: serde_json::Map<String, Value> = e
            .grpc
            .iter()
            .map(|(code, n)| (crate::grpc::code_name(*code).to_owned(), json!(n)))
            .collect();
        doc["grpc"] = Value::Object(grpc);
    }
    doc
}

/// One upstream's figures: what it answered (its own statuses, whatever
/// decorators did with them), and its latency.
fn upstream_json(name: &str, e: &Endpoint) -> Value {
    let mut v = endpoint_json("", "", e);
    if let Some(o) = v.as_object_mut() {
        o.remove("method");
        o.remove("route");
        o.remove("in_flight");
        o.insert("upstream".into(), json!(name));
    }
    v
}

/// Per endpoint, `"upstreams": {"service": {...}, "canary": {...}}`: the same
/// figures split by the upstream each exchange went to (A/B comparisons).
fn add_variants(
    list: &mut [Value],
    variants: &[(
        http::Method,
        compact_str::CompactString,
        compact_str::CompactString,
        Endpoint,
    )],
) {
    let mut i = 0;
    for entry in list.iter_mut() {
        let mut split = serde_json::Map::new();
        // Both lists are sorted by (route, method).
        while let Some((m, r, upstream, e)) = variants.get(i) {
            let here = (entry["route"].as_str(), entry["method"].as_str());
            if (Some(r.as_str()), Some(m.as_str())) != here {
                break;
            }
            let mut v = endpoint_json(m.as_str(), r, e);
            if let Some(o) = v.as_object_mut() {
                o.remove("method");
                o.remove("route");
                o.remove("in_flight");
            }
            split.insert(upstream.to_string(), v);
            i += 1;
        }
        if !split.is_empty() {
            entry["upstreams"] = Value::Object(split);
        }
    }
}

/// The `/stats` document.
pub fn stats_json(t: &Telemetry) -> Value {
    let (endpoints, upstream_errors, requests, upstreams) = match &t.stats {
        Some(stats) => {
            let snap = stats.snapshot();
            let mut list: Vec<Value> = snap
                .endpoints
                .iter()
                .map(|(m, r, e)| endpoint_json(m.as_str(), r, e))
                .collect();
            add_variants(&mut list, &snap.variants);
            let upstreams: Vec<Value> = snap
                .upstreams
                .iter()
                .map(|(name, e)| upstream_json(name, e))
                .collect();
            let errors = json!(snap.upstream_errors);
            (list, errors, snap.requests_total(), upstreams)
        }
        None => (Vec::new(), json!({}), 0, Vec::new()),
    };
    let c = &t.connections;
    let (tin, tout) = c.tunnel_bytes();
    let mut doc = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "stats_enabled": t.stats.is_some(),
        "uptime_s": (t.uptime_secs() * 10.0).round() / 10.0,
        "requests_total": requests,
        "connections_open": t.connections.open_now(),
        "connections_parked": t.connections.parked_now(),
        "connections_total": counts(c.totals()),
        "connections_by_worker": c.per_worker(),
        "tunnel_bytes": {"in": tin, "out": tout},
        "tunnels": counts(c.tunnels()),
        "refused": counts(c.refusals()),
        "upstream_errors": upstream_errors,
        "upstreams": upstreams,
        "endpoints": endpoints,
        "max_routes": t.max_routes,
        "tap": {"readers": t.tap.readers(), "dropped": t.tap.dropped()},
        "process": t.process.latest(),
    });
    if let Some(o) = doc.as_object_mut() {
        for r in &t.reports {
            o.insert(r.section().to_owned(), r.stats());
        }
    }
    doc
}

/// A compact table of the busiest endpoints, for the log.
pub fn summary_table(t: &Telemetry, rows: usize) -> Option<String> {
    let stats = t.stats.as_ref()?;
    let mut snap = stats.snapshot().endpoints;
    snap.sort_by_key(|e| std::cmp::Reverse(e.2.hits));
    let mut out = format!(
        "{:<7} {:<40} {:>8} {:>9} {:>9} {:>6}\n",
        "method", "route", "hits", "p50 ms", "p99 ms", "5xx"
    );
    for (method, route, e) in snap.iter().take(rows) {
        let _ = writeln!(
            out,
            "{:<7} {:<40} {:>8} {:>9.2} {:>9.2} {:>6}",
            method.as_str(),
            route.as_str(),
            e.hits,
            ms(e.latency.value_at_quantile(0.5)),
            ms(e.latency.value_at_quantile(0.99)),
            e.server_errors()
        );
    }
    Some(out)
}

/// Labelled counters as a JSON object (`{"label": n, ...}`).
fn counts(pairs: impl IntoIterator<Item = (&'static str, u64)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(label, n)| (label.to_owned(), json!(n)))
            .collect(),
    )
}
