//! `sitio inject` / `sitio uninject` on manifests as a team has them
//! (`tests/inject/`): the native sidecar and the port swap by name, a note
//! for a numeric port, opt-out, per-workload settings from annotations,
//! idempotence, `uninject` giving the input back, `--legacy`, JSON `List`s
//! from standard input, and every output valid against the schemas of
//! Kubernetes 1.29 to 1.33 (kubernetes-validate).

use std::io::Write;
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::SITIO;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSIONS: [&str; 5] = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"];

/// `sitio ARGS` with `stdin`: (exit code, stdout, stderr).
fn sitio(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(SITIO)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|d| !d.is_null())
        .collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name}"))
}

fn env(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap().to_owned())
}

pub(crate) fn validate(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("python3")
        .arg(format!("{ROOT}/tests/deploy/validate_k8s.py"))
        .arg(&file)
        .args(VERSIONS)
        .output()
        .expect("python3 and kubernetes-validate (the README's test command installs them)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(" 0 failed"), "{report}");
}

#[test]
fn inject_adds_a_native_sidecar_that_takes_over_the_named_port() {
    let input = std::fs::read_to_string(format!("{ROOT}/tests/inject/workloads.yaml")).unwrap();
    let file = format!("{ROOT}/tests/inject/workloads.yaml");
    let (code, out, notes) = sitio(
        &["inject", "-f", &file, "--image", "reg.example/sitio:1"],
        "",
    );
    assert_eq!(code, 0, "{notes}");
    let before = docs(&input);
    let after = docs(&out);
    assert_eq!(after.len(), before.len());

    let shop = named(&after, "Deployment", "shop");
    let pod = &shop["spec"]["template"]["spec"];
    let sidecar = &pod["initContainers"][0];
    assert_eq!(sidecar["name"], "sitio");
    assert_eq!(sidecar["image"], "reg.example/sitio:1");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    // The Service targets `http`: sitio has that name now, the app keeps its number.
    assert_eq!(
        sidecar["ports"][0],
        json!({"name": "http", "containerPort": 8080})
    );
    let app = &pod["containers"][0];
    assert_eq!(
        app["ports"][0],
        json!({"name": "http-app", "containerPort": 8000})
    );
    assert_eq!(env(sidecar, "TARGET_PORT").as_deref(), Some("8000"));
    assert_eq!(env(sidecar, "PORT").as_deref(), Some("8080"));
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["port"], "sitio-admin");
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(app["lifecycle"]["preStop"]["exec"]["command"][0], "sleep");
    assert_eq!(app["lifecycle"]["postStart"]["exec"]["command"][0], "true");
    assert_eq!(pod["terminationGracePeriodSeconds"], 50);
    let annotations = &shop["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "9901");
    // Opted out, and not a workload: exactly as they were.
    for (kind, name) in [
        ("Deployment", "legacy-batch"),
        ("Service", "shop"),
        ("ConfigMap", "nightly-pages"),
    ] {
        assert_eq!(named(&after, kind, name), named(&before, kind, name));
    }
    // A numeric port: injected, and the operator is told what to change.
    let nightly = &named(&after, "CronJob", "nightly")["spec"]["jobTemplate"]["spec"]["template"];
    let sidecar = &nightly["spec"]["initContainers"][0];
    assert_eq!(env(sidecar, "TARGET_PORT").as_deref(), Some("8080"));
    assert_eq!(
        env(sidecar, "PORT").as_deref(),
        Some("8081"),
        "8080 is the app's"
    );
    assert!(
        notes.contains("CronJob/nightly") && notes.contains("targetPort is 8080"),
        "{notes}"
    );
    // Settings from annotations.
    assert_eq!(env(sidecar, "SITIO_RATE_LIMIT").as_deref(), Some("50/s"));
    assert_eq!(
        env(sidecar, "SITIO_ERROR_PAGE_404").as_deref(),
        Some("/etc/sitio/pages/404/404.html")
    );
    assert_eq!(
        nightly["spec"]["volumes"][0]["configMap"]["name"],
        "nightly-pages"
    );
    validate(&out);

    // Idempotent, and uninject gives the manifests back.
    let (_, again, _) = sitio(
        &["inject", "-f", "-", "--image", "reg.example/sitio:1"],
        &out,
    );
    assert_eq!(again, out);
    let (code, back, _) = sitio(&["uninject", "-f", "-"], &out);
    assert_eq!(code, 0);
    assert_eq!(docs(&back), before);

    // Older clusters: a plain sidecar container.
    let (_, legacy, _) = sitio(&["inject", "-f", &file, "--legacy"], "");
    let legacy = docs(&legacy);
    let pod = &named(&legacy, "Deployment", "shop")["spec"]["template"]["spec"];
    assert!(pod.get("initContainers").is_none());
    assert_eq!(pod["containers"][1]["name"], "sitio");
    assert!(pod["containers"][1].get("restartPolicy").is_none());
}

#[test]
fn json_lists_from_standard_input_and_clear_refusals() {
    let input = std::fs::read_to_string(format!("{ROOT}/tests/inject/list.json")).unwrap();
    let (code, out, notes) = sitio(&["inject", "-f", "-"], &input);
    assert_eq!(code, 0, "{notes}");
    let list: Value = serde_json::from_str(&out).expect("JSON in, JSON out");
    let sts = &list["items"][0]["spec"]["template"]["spec"];
    assert_eq!(sts["initContainers"][0]["ports"][0]["name"], "web");
    assert_eq!(
        sts["terminationGracePeriodSeconds"], 120,
        "a longer grace is kept"
    );
    let pod = &list["items"][1]["spec"];
    assert_eq!(pod["initContainers"][0]["ports"][0]["containerPort"], 8081);
    validate(&out);
    let (_, back, _) = sitio(&["uninject", "-f", "-"], &out);
    assert_eq!(
        serde_json::from_str::<Value>(&back).unwrap(),
        serde_json::from_str::<Value>(&input).unwrap()
    );

    let no_port = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: a}]\n";
    let (code, out, err) = sitio(&["inject", "-f", "-"], no_port);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("Pod/p") && err.contains("containerPort"),
        "{err}"
    );
    let (code, _, err) = sitio(&["inject", "-f", "-"], "{ not json");
    assert_eq!(code, 2);
    assert!(err.contains("not JSON"), "{err}");
    let (code, _, err) = sitio(&["inject", "-f", "/nonexistent.yaml"], "");
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.yaml"), "{err}");
}
