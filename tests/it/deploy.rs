//! The deployment files, checked offline: Kubernetes manifests render with
//! kustomize and validate against the Kubernetes OpenAPI schemas (plus the
//! cross-references schemas cannot see), and the Grafana dashboard's queries
//! are valid PromQL over metrics sitio really exports.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use sitio::Decorators;

use crate::common::backend::Backend;
use crate::common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (the README's test command installs it)"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn kubernetes_and_openshift_manifests_validate() {
    let (ok, rendered) =
        output(Command::new("kubectl").args(["kustomize", &format!("{ROOT}/deploy/kubernetes")]));
    assert!(ok, "kustomize failed: {rendered}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let (ok, report) = output(
        Command::new("python3")
            .arg(format!("{ROOT}/tests/deploy/check_manifests.py"))
            .arg(&file)
            .arg(format!("{ROOT}/deploy/kubernetes/seed-pod/pod.yaml"))
            .arg(format!("{ROOT}/deploy/openshift/template.yaml")),
    );
    assert!(ok, "{report}");
    assert!(report.contains(" 0 failed"), "{report}");
    for expected in [
        "Deployment/web matches",
        "Pod/seed matches",
        "ServiceMonitor selects a Service",
        "NetworkPolicy opens the admin port only to Prometheus",
        "PodDisruptionBudget selects the pods",
        "no service account token in the pods",
        "Route sends",
    ] {
        assert!(
            report.contains(expected),
            "no check for {expected}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_real_metrics_with_valid_promql() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/grafana/sitio-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$job", ".*")
                .replace("$namespace", ".*")
                .replace("$pod", ".*")
        })
        .collect();
    assert!(exprs.len() >= 8);

    // Valid PromQL: promtool parses each as a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let (ok, report) = output(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&file),
    );
    assert!(ok, "{report}");

    // The 5xx-ratio panel shows 0 for a route without errors, not "No data".
    let ratio = exprs
        .iter()
        .find(|e| e.contains("status=~\"5..\""))
        .unwrap();
    let rules = format!(
        "groups:\n  - name: ratio\n    rules:\n      - record: ratio\n        expr: {}\n",
        serde_json::to_string(ratio).unwrap()
    );
    std::fs::write(dir.path().join("ratio.yml"), rules).unwrap();
    let series = |route: &str, status: u16, per_minute: u32| {
        format!(
            "      - series: 'sitio_requests_total{{job=\"web\",namespace=\"shop\",pod=\"web-1\",route=\"{route}\",status=\"{status}\"}}'\n        values: '0+{per_minute}x10'\n"
        )
    };
    let test = format!(
        "rule_files: [ratio.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}{}{}    promql_expr_test:\n      - expr: ratio\n        eval_time: 10m\n        exp_samples:\n          - labels: 'ratio{{route=\"/bad\"}}'\n            value: 0.5\n          - labels: 'ratio{{route=\"/ok\"}}'\n            value: 0\n",
        series("/ok", 200, 60),
        series("/bad", 200, 30),
        series("/bad", 500, 30),
    );
    let test_file = dir.path().join("ratio_test.yml");
    std::fs::write(&test_file, test).unwrap();
    let (ok, report) = output(
        Command::new("promtool")
            .args(["test", "rules"])
            .arg(&test_file),
    );
    assert!(ok && report.contains("SUCCESS"), "{report}");

    // Every metric the dashboard reads is one sitio exports.
    let backend = Backend::start().await;
    let sitio = Sitio::start(config_for(backend.port()), Decorators::none()).await;
    raw_request(sitio.addr, b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let metrics = raw_request(sitio.admin, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Samples, and families declared with no sample yet (no errors so far).
    let exported: BTreeSet<String> = String::from_utf8(metrics.body)
        .unwrap()
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(declared) => declared.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(str::to_owned)
        .collect();
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("sitio_") || word.starts_with("process_") {
                assert!(
                    exported.contains(word),
                    "the dashboard reads {word}, which sitio does not export"
                );
            }
        }
    }
    sitio.stop().await;
}

#[test]
fn the_alerts_pass_promtool_with_series_that_fire_them() {
    let dir = tempfile::tempdir().unwrap();
    // The PrometheusRule's spec is a plain Prometheus rules file.
    let (ok, rules) = output(Command::new("python3").args([
        "-c",
        "import sys, yaml; print(yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))['spec']))",
        &format!("{ROOT}/deploy/kubernetes/prometheusrule.yaml"),
    ]));
    assert!(ok, "{rules}");
    std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
    let tests = dir.path().join("alerts_test.yml");
    std::fs::copy(format!("{ROOT}/tests/deploy/alerts_test.yml"), &tests).unwrap();
    let (ok, report) = output(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(dir.path().join("rules.yml")),
    );
    assert!(ok && report.contains("4 rules found"), "{report}");
    let (ok, report) = output(Command::new("promtool").args(["test", "rules"]).arg(&tests));
    assert!(ok && report.contains("SUCCESS"), "{report}");
}
