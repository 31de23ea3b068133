//! The pods view (`/fleet.json`): every sitio instance with its routes, and
//! the fleet's worst routes; optionally only one namespace or workload, which
//! is how the page drills down from the workload view without reading every
//! pod's series of a large fleet.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::prometheus::{Source, label, matchers, number};

/// Routes listed in the fleet-wide "worst routes" table.
const WORST: usize = 10;

/// What each figure is, and the PromQL that computes it (per instance,
/// method, route and upstream where it applies). `SEL` stands for the
/// drill-down's label matchers (nothing for the whole fleet).
pub(super) const QUERIES: [(&str, &str); 9] = [
    (
        "hits",
        "sum by (instance, method, route, upstream) (sitio_requests_total{SEL})",
    ),
    (
        "rps",
        "sum by (instance, method, route, upstream) (rate(sitio_requests_total{SEL}[1m]))",
    ),
    (
        "errors_per_s",
        "sum by (instance, method, route, upstream) (rate(sitio_requests_total{status=~\"5..\",SEL}[1m]))",
    ),
    (
        "p50_s",
        "histogram_quantile(0.5, sum by (instance, method, route, upstream, le) (rate(sitio_request_duration_seconds_bucket{SEL}[1m])))",
    ),
    (
        "p99_s",
        "histogram_quantile(0.99, sum by (instance, method, route, upstream, le) (rate(sitio_request_duration_seconds_bucket{SEL}[1m])))",
    ),
    (
        "cpu",
        "rate(process_cpu_seconds_total{SEL}[1m]) and on (instance) sitio_build_info",
    ),
    (
        "memory",
        "process_resident_memory_bytes{SEL} and on (instance) sitio_build_info",
    ),
    ("circuit", "sitio_circuit_state{SEL} == 1"),
    (
        "in_flight",
        "sum by (instance) (sitio_requests_in_flight{SEL})",
    ),
];

/// A template of [`QUERIES`] with its `SEL` filled in.
fn fill(template: &str, sel: &str) -> String {
    if sel.is_empty() {
        template.replace(",SEL}", "}").replace("{SEL}", "")
    } else {
        template.replace("SEL", sel)
    }
}

/// (method, route, upstream).
pub(super) type RouteKey = (String, String, String);

/// The route a sample is about.
pub(super) fn route_key(sample: &Value) -> RouteKey {
    (
        label(sample, "method").to_owned(),
        label(sample, "route").to_owned(),
        label(sample, "upstream").to_owned(),
    )
}
/// A route's or an instance's figures, by name.
pub(super) type Figures = Map<String, Value>;

/// A route's figures as the page and scripts read them: req/s, error rate,
/// p50/p99 in milliseconds, rounded.
pub(super) fn route_figures(method: &str, route: &str, upstream: &str, f: &Figures) -> Value {
    let rps = f.get("rps").and_then(Value::as_f64).unwrap_or(0.0);
    let errors = f.get("errors_per_s").and_then(Value::as_f64).unwrap_or(0.0);
    let ms = |k: &str| {
        f.get(k)
            .and_then(Value::as_f64)
            .map(|s| (s * 1e5).round() / 100.0)
    };
    let mut r = json!({
        "method": method, "route": route, "upstream": upstream,
        "rps": (rps * 100.0).round() / 100.0,
        "error_rate": if rps > 0.0 { ((errors / rps) * 1e4).round() / 1e4 } else { 0.0 },
        "p50_ms": ms("p50_s"), "p99_ms": ms("p99_s"),
    });
    if let Some(hits) = f.get("hits") {
        r["hits"] = json!(hits.as_f64().unwrap_or(0.0));
    }
    r
}

/// The pods document for the instances matching `filter` (label, value).
pub(super) async fn document(
    prometheus: &Source,
    filter: &[(&str, &str)],
) -> Result<Value, String> {
    let sel = matchers(filter);
    let queries: Vec<(&'static str, String)> =
        QUERIES.iter().map(|(n, q)| (*n, fill(q, &sel))).collect();
    let results: BTreeMap<&str, Vec<Value>> =
        prometheus.query_all(&queries).await?.into_iter().collect();
    // instance -> (method, route, upstream) -> figures
    let mut routes: BTreeMap<String, BTreeMap<RouteKey, Figures>> = BTreeMap::new();
    let mut instances: BTreeMap<String, Figures> = BTreeMap::new();
    for name in ["hits", "rps", "errors_per_s", "p50_s", "p99_s"] {
        for sample in results.get(name).into_iter().flatten() {
            let instance = label(sample, "instance").to_owned();
            let entry = routes
                .entry(instance.clone())
                .or_default()
                .entry(route_key(sample))
                .or_default();
            entry.insert(name.into(), json!(number(sample)));
            instances.entry(instance).or_default();
        }
    }
    for (name, field, scale) in [
        ("cpu", "cpu_percent", 100.0),
        ("memory", "memory_bytes", 1.0),
        ("in_flight", "in_flight", 1.0),
    ] {
        for sample in results.get(name).into_iter().flatten() {
            let i = instances
                .entry(label(sample, "instance").to_owned())
                .or_default();
            i.insert(field.into(), json!(number(sample).map(|v| v * scale)));
            for l in ["namespace", "workload", "pod", "job"] {
                if let Some(v) = sample["metric"][l].as_str() {
                    i.insert(l.into(), json!(v));
                }
            }
        }
    }
    for sample in results.get("circuit").into_iter().flatten() {
        let i = instances
            .entry(label(sample, "instance").to_owned())
            .or_default();
        i.insert("circuit".into(), json!(label(sample, "state")));
    }
    let mut all = Vec::new();
    let list: Vec<Value> = instances
        .into_iter()
        .map(|(instance, mut figures)| {
            let pod = figures.get("pod").cloned().unwrap_or(Value::Null);
            let its: Vec<Value> = routes
                .remove(&instance)
                .unwrap_or_default()
                .into_iter()
                .map(|((method, route, upstream), f)| {
                    let r = route_figures(&method, &route, &upstream, &f);
                    let mut worst = r.clone();
                    worst["instance"] = json!(instance);
                    worst["pod"] = pod.clone();
                    all.push(worst);
                    r
                })
                .collect();
            figures.insert("instance".into(), json!(instance));
            figures.insert("routes".into(), json!(its));
            Value::Object(figures)
        })
        .collect();
    worst_first(&mut all);
    all.truncate(WORST);
    Ok(json!({
        "queries": queries.iter().map(|(n, q)| json!({"figure": n, "promql": q})).collect::<Vec<_>>(),
        "instances": list,
        "worst_routes": all,
    }))
}

/// Worst first: error rate, then p99.
pub(super) fn worst_first(routes: &mut [Value]) {
    let key = |v: &Value| {
        (
            v["error_rate"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
        )
    };
    routes.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_is_filled_in_or_left_out() {
        let errors = QUERIES[2].1;
        assert_eq!(
            fill(errors, ""),
            "sum by (instance, method, route, upstream) (rate(sitio_requests_total{status=~\"5..\"}[1m]))"
        );
        assert_eq!(
            fill(errors, "workload=\"web\""),
            "sum by (instance, method, route, upstream) (rate(sitio_requests_total{status=~\"5..\",workload=\"web\"}[1m]))"
        );
        assert_eq!(
            fill(QUERIES[5].1, ""),
            "rate(process_cpu_seconds_total[1m]) and on (instance) sitio_build_info"
        );
        for (_, q) in QUERIES {
            assert!(q.contains("SEL"), "{q} cannot be narrowed to a workload");
        }
    }
}
