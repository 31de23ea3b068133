//! The workload view (`/workloads.json`): per namespace, workload and route,
//! read from the recording rules of `deploy/mothership/recording-rules.yaml`
//! so a fleet of thousands of pods renders from a few thousand
//! pre-aggregated series. Where those rules are not loaded, the same
//! expressions are asked directly (correct, but they read every pod's series).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::pods::{Figures, RouteKey, route_figures, route_key};
use super::prometheus::{Source, label, number};

/// Each figure: its name, the recorded series, and the expression the
/// recording rule evaluates (the same text as in the rules file; a test
/// holds the two together).
pub(super) const FIGURES: [(&str, &str, &str); 8] = [
    (
        "pods",
        "workload:sitio_pods:count",
        "count by (namespace, workload) (sitio_build_info)",
    ),
    (
        "cpu",
        "workload:sitio_cpu_seconds:rate1m",
        "sum by (namespace, workload) (rate(process_cpu_seconds_total[1m]) and on (instance) sitio_build_info)",
    ),
    (
        "memory",
        "workload:sitio_resident_memory_bytes:sum",
        "sum by (namespace, workload) (process_resident_memory_bytes and on (instance) sitio_build_info)",
    ),
    (
        "open_circuits",
        "workload:sitio_open_circuits:count",
        "count by (namespace, workload) (sitio_circuit_state == 1)",
    ),
    (
        "rps",
        "workload_route_upstream:sitio_requests:rate1m",
        "sum by (namespace, workload, method, route, upstream) (rate(sitio_requests_total[1m]))",
    ),
    (
        "errors_per_s",
        "workload_route_upstream:sitio_request_errors:rate1m",
        "sum by (namespace, workload, method, route, upstream) (rate(sitio_requests_total{status=~\"5..\"}[1m]))",
    ),
    (
        "p50_s",
        "workload_route_upstream:sitio_request_duration_seconds:p50_1m",
        "histogram_quantile(0.5, sum by (namespace, workload, method, route, upstream, le) (rate(sitio_request_duration_seconds_bucket[1m])))",
    ),
    (
        "p99_s",
        "workload_route_upstream:sitio_request_duration_seconds:p99_1m",
        "histogram_quantile(0.99, sum by (namespace, workload, method, route, upstream, le) (rate(sitio_request_duration_seconds_bucket[1m])))",
    ),
];

/// (namespace, workload).
type WorkloadKey = (String, String);

/// The workload document.
pub(super) async fn document(prometheus: &Source) -> Result<Value, String> {
    let recorded: Vec<(&'static str, String)> = FIGURES
        .iter()
        .map(|(n, r, _)| (*n, (*r).to_owned()))
        .collect();
    let mut results = prometheus.query_all(&recorded).await?;
    let mut queries = recorded;
    let mut source = "recording rules";
    // No recorded pod count: the rules are not loaded (or not evaluated yet).
    if results
        .iter()
        .all(|(name, r)| *name != "pods" || r.is_empty())
    {
        queries = FIGURES
            .iter()
            .map(|(n, _, e)| (*n, (*e).to_owned()))
            .collect();
        results = prometheus.query_all(&queries).await?;
        source = "raw series (recording rules not loaded)";
    }
    let mut workloads: BTreeMap<WorkloadKey, Figures> = BTreeMap::new();
    let mut routes: BTreeMap<WorkloadKey, BTreeMap<RouteKey, Figures>> = BTreeMap::new();
    for (name, samples) in &results {
        for sample in samples {
            let key = (
                label(sample, "namespace").to_owned(),
                label(sample, "workload").to_owned(),
            );
            let value = number(sample);
            match *name {
                "pods" | "open_circuits" | "memory" => {
                    let field = if *name == "memory" {
                        "memory_bytes"
                    } else {
                        name
                    };
                    workloads
                        .entry(key)
                        .or_default()
                        .insert(field.into(), json!(value));
                }
                "cpu" => {
                    let cpu = value.map(|v| (v * 1e4).round() / 100.0);
                    workloads
                        .entry(key)
                        .or_default()
                        .insert("cpu_percent".into(), json!(cpu));
                }
                _ => {
                    let figures = routes
                        .entry(key.clone())
                        .or_default()
                        .entry(route_key(sample))
                        .or_default();
                    figures.insert((*name).into(), json!(value));
                    workloads.entry(key).or_default();
                }
            }
        }
    }
    let list: Vec<Value> = workloads
        .into_iter()
        .map(|(key, mut figures)| {
            // In route order, so a route's A/B sides sit side by side.
            let its: Vec<Value> = routes
                .remove(&key)
                .unwrap_or_default()
                .iter()
                .map(|((method, route, upstream), f)| route_figures(method, route, upstream, f))
                .collect();
            figures.insert("namespace".into(), json!(key.0));
            figures.insert("workload".into(), json!(key.1));
            figures.insert("routes".into(), json!(its));
            Value::Object(figures)
        })
        .collect();
    Ok(json!({
        "source": source,
        "queries": queries.iter().map(|(n, q)| json!({"figure": n, "promql": q})).collect::<Vec<_>>(),
        "workloads": list,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules file records exactly these series with these expressions,
    /// so the recorded and the direct answers are the same figures.
    #[test]
    fn every_figure_is_a_shipped_recording_rule() {
        let text = include_str!("../../deploy/mothership/recording-rules.yaml");
        let rules: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
        let rules = rules["groups"][0]["rules"].as_array().unwrap();
        for (name, record, expr) in FIGURES {
            let rule = rules
                .iter()
                .find(|r| r["record"] == record)
                .unwrap_or_else(|| panic!("{name}: no rule records {record}"));
            assert_eq!(rule["expr"], expr, "{record}");
        }
    }
}
