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

/// The checkov of scripts/test.sh (a venv of its own), else one on PATH.
fn checkov() -> Command {
    let venv = format!("{ROOT}/target/tools/checkov/bin/checkov");
    let mut cmd = Command::new(if std::path::Path::new(&venv).exists() {
        venv.as_str()
    } else {
        "checkov"
    });
    // Offline: no guideline download, no telemetry.
    cmd.args(["--skip-download", "--quiet", "--compact", "-o", "json"])
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false");
    cmd
}

/// checkov's JSON (one report, or a list of one per framework) as
/// (framework, passed, failed, failed check ids with their resources).
fn checkov_report(json: &str) -> Vec<(String, u64, u64, Vec<String>)> {
    let value: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let reports = match value {
        Value::Array(list) => list,
        one => vec![one],
    };
    reports
        .iter()
        .map(|r| {
            let failed = r["results"]["failed_checks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{} {} {}", f["check_id"], f["file_path"], f["resource"]))
                .collect();
            assert_eq!(r["summary"]["parsing_errors"], 0, "{r}");
            (
                r["check_type"].as_str().unwrap_or_default().to_string(),
                r["summary"]["passed"].as_u64().unwrap_or(0),
                r["summary"]["failed"].as_u64().unwrap_or(0),
                failed,
            )
        })
        .collect()
}

/// A platform team's policy scanner over everything sitio ships or writes:
/// the rendered manifests (app with sitio, injector, mothership, the seed's
/// pod), `sitio inject` output in both forms, and both Dockerfiles. The
/// checks it skips are in deploy/checkov.yaml, each with its reason.
#[test]
fn checkov_passes_the_manifests_the_injected_pods_and_the_dockerfiles() {
    // Not tempdir()'s ".tmp…": checkov skips Kubernetes files under hidden folders.
    let visible = || {
        tempfile::Builder::new()
            .prefix("sitio-checkov")
            .tempdir()
            .unwrap()
    };
    let dir = visible();
    for base in ["kubernetes", "injector", "mothership"] {
        let (ok, rendered) =
            output(Command::new("kubectl").args(["kustomize", &format!("{ROOT}/deploy/{base}")]));
        assert!(ok, "{rendered}");
        std::fs::write(dir.path().join(format!("{base}.yaml")), rendered).unwrap();
    }
    for file in ["pod.yaml", "networkpolicy.yaml"] {
        let from = format!("{ROOT}/deploy/kubernetes/seed-pod/{file}");
        std::fs::copy(from, dir.path().join(format!("seed-{file}"))).unwrap();
    }
    for file in ["Dockerfile", "Dockerfile.prebuilt"] {
        std::fs::copy(format!("{ROOT}/{file}"), dir.path().join(file)).unwrap();
    }

    // The app passes every check on its own, none skipped: what checkov
    // finds once sitio is injected is sitio's.
    let app = format!("{ROOT}/tests/deploy/hardened-app.yaml");
    let (_, json) = output(checkov().args(["--framework", "kubernetes", "-f", &app]));
    let report = checkov_report(&json);
    assert!(
        report
            .iter()
            .all(|(_, passed, failed, _)| *passed > 50 && *failed == 0),
        "{report:?}"
    );
    for (form, flags) in [("native", &[][..]), ("legacy", &["--legacy"][..])] {
        let (ok, injected) = output(Command::new(SITIO).args(["inject", "-f", &app]).args(flags));
        assert!(ok, "{injected}");
        std::fs::write(dir.path().join(format!("injected-{form}.yaml")), &injected).unwrap();
    }

    let config = format!("{ROOT}/deploy/checkov.yaml");
    let scan = |dir: &std::path::Path| {
        let (_, json) = output(checkov().args(["--config-file", &config]).args([
            "--framework",
            "kubernetes",
            "dockerfile",
            "-d",
            dir.to_str().unwrap(),
        ]));
        checkov_report(&json)
    };
    let report = scan(dir.path());
    let frameworks: BTreeSet<&str> = report.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        frameworks,
        BTreeSet::from(["dockerfile", "kubernetes"]),
        "{report:?}"
    );
    for (framework, passed, failed, failures) in &report {
        assert!(*passed > 20 && *failed == 0, "{framework}: {failures:#?}");
    }

    // The scan sees sitio's container: without its read-only root it fails.
    let injected = std::fs::read_to_string(dir.path().join("injected-legacy.yaml")).unwrap();
    let weakened = visible();
    let sitio_part = injected.find("name: sitio").expect("sitio's container");
    let (head, tail) = injected.split_at(sitio_part);
    let tail = tail.replacen(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
        1,
    );
    std::fs::write(
        weakened.path().join("weakened.yaml"),
        format!("{head}{tail}"),
    )
    .unwrap();
    let report = scan(weakened.path());
    let failures: Vec<&String> = report.iter().flat_map(|r| &r.3).collect();
    assert!(
        failures.iter().any(|f| f.contains("CKV_K8S_22")),
        "a writable root in sitio's container went unnoticed: {report:?}"
    );
}
