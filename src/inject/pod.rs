//! Adding sitio to one pod spec, and taking it out again: the sidecar as
//! `deploy/kubernetes/` ships it, the port swap that needs no privileges,
//! and a record (an annotation) of every change so that `uninject` can
//! undo exactly those.

use serde_json::{Map, Value, json};

/// The annotation that records what `inject` changed (JSON).
pub(super) const INJECTED: &str = "sitio.io/injected";
/// `disabled` on a workload or its pod template: leave it alone.
pub(super) const INJECT: &str = "sitio.io/inject";
/// `sitio.io/env-NAME: value`: a setting for sitio (`SITIO_RATE_LIMIT`...).
const ENV_PREFIX: &str = "sitio.io/env-";
/// `sitio.io/error-page-404: CONFIGMAP` (a ConfigMap with key `404.html`).
const PAGE_PREFIX: &str = "sitio.io/error-page-";
const CONTAINER: &str = "sitio";
const ADMIN_PORT_NAME: &str = "sitio-admin";
const PROMETHEUS: [(&str, &str); 3] = [
    ("prometheus.io/scrape", "true"),
    ("prometheus.io/port", ""),
    ("prometheus.io/path", "/metrics"),
];
/// The app's `preStop` sleep, then sitio's drain (30 s), with room to spare.
const GRACE_SECONDS: u64 = 50;

/// How to inject.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// sitio's image.
    pub image: String,
    /// A plain sidecar container (clusters before 1.29) instead of a native one.
    pub legacy: bool,
}

/// What happened to one pod spec.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Injected,
    /// Already injected, or opted out.
    Unchanged,
}

/// Adds sitio to the pod `spec` whose template metadata is `meta`
/// (`workload_annotations` also opt out). Notes for the operator (a numeric
/// port a Service must be told about) go to `notes`; an error means this pod
/// cannot be injected as it is.
pub(super) fn inject(
    spec: &mut Value,
    meta: &mut Value,
    workload_annotations: Option<&Value>,
    opts: &Options,
    notes: &mut Vec<String>,
) -> Result<Outcome, String> {
    let opted_out = |a: Option<&Value>| a.and_then(|a| a.get(INJECT)) == Some(&json!("disabled"));
    if opted_out(meta.get("annotations")) || opted_out(workload_annotations) {
        return Ok(Outcome::Unchanged);
    }
    if has_sitio(spec) {
        return Ok(Outcome::Unchanged);
    }
    let (app, port_at) = app_port(spec)?;
    let mut used = used_ports(spec);
    let free = |from: u64, used: &[u64]| (from..).find(|p| !used.contains(p)).unwrap_or(from);
    let listen = free(8080, &used);
    used.push(listen);
    let admin = free(9901, &used);
    let annotations = meta
        .as_object_mut()
        .ok_or("the pod template's metadata is not an object")?
        .entry("annotations")
        .or_insert_with(|| json!({}));
    let settings = annotations.clone();
    let mut record = Map::new();

    // The port swap: sitio takes over the app's port name, so Services that
    // target the name reach sitio with no edit; the app's port keeps its number.
    let containers = spec["containers"].as_array_mut().ok_or("no containers")?;
    let app_port = &mut containers[app]["ports"][port_at];
    let target = app_port["containerPort"]
        .as_u64()
        .ok_or("a containerPort is not a number")?;
    let original = app_port
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let name = match original {
        Some(name) => {
            let renamed = app_port_name(&name);
            app_port["name"] = json!(renamed);
            record.insert("portName".into(), json!(name));
            name
        }
        None => {
            notes.push(format!(
                "a Service whose targetPort is {target} still reaches the app directly: set it to {listen} (or name the app's port and inject again)"
            ));
            "sitio".to_owned()
        }
    };
    // The app keeps serving while the pod leaves the endpoints, then stops
    // before sitio (native sidecar) or while sitio drains (plain sidecar).
    let app_container = &mut containers[app];
    if app_container.pointer("/lifecycle/preStop").is_none() {
        app_container["lifecycle"]["preStop"] = json!({"exec": {"command": ["sleep", "10"]}});
        record.insert("preStop".into(), app_container["name"].clone());
    }
    let sidecar = sidecar(
        opts,
        &settings,
        &name,
        listen,
        target,
        admin,
        spec,
        &mut record,
    );
    if opts.legacy {
        spec["containers"]
            .as_array_mut()
            .ok_or("no containers")?
            .push(sidecar);
    } else {
        let inits = spec
            .as_object_mut()
            .ok_or("the pod spec is not an object")?
            .entry("initContainers")
            .or_insert_with(|| json!([]));
        inits
            .as_array_mut()
            .ok_or("initContainers is not a list")?
            .push(sidecar);
    }
    let grace = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64);
    if grace.is_none_or(|g| g < GRACE_SECONDS) {
        record.insert("grace".into(), grace.map_or(Value::Null, |g| json!(g)));
        spec["terminationGracePeriodSeconds"] = json!(GRACE_SECONDS);
    }
    let annotations = meta["annotations"]
        .as_object_mut()
        .ok_or("bad annotations")?;
    let mut added = Vec::new();
    for (key, value) in PROMETHEUS {
        if !annotations.contains_key(key) {
            let value = if value.is_empty() {
                admin.to_string()
            } else {
                value.to_owned()
            };
            annotations.insert(key.into(), json!(value));
            added.push(json!(key));
        }
    }
    record.insert("annotations".into(), json!(added));
    record.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    annotations.insert(INJECTED.into(), json!(Value::Object(record).to_string()));
    Ok(Outcome::Injected)
}

/// The app's port renamed, the name kept valid (at most 15 characters).
fn app_port_name(name: &str) -> String {
    let base: String = name.chars().take(11).collect();
    format!("{}-app", base.trim_end_matches('-'))
}

fn has_sitio(spec: &Value) -> bool {
    ["containers", "initContainers"].iter().any(|list| {
        spec[list]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["name"] == CONTAINER))
    })
}

/// The app container and its port: the port named `http`, else the first
/// TCP port of the first container that has one.
fn app_port(spec: &Value) -> Result<(usize, usize), String> {
    let containers = spec["containers"]
        .as_array()
        .ok_or("the pod has no containers")?;
    let ports = |c: &Value| c["ports"].as_array().cloned().unwrap_or_default();
    let tcp = |p: &Value| p.get("protocol").is_none_or(|v| v == "TCP");
    for (i, c) in containers.iter().enumerate() {
        if let Some(j) = ports(c).iter().position(|p| p["name"] == "http" && tcp(p)) {
            return Ok((i, j));
        }
    }
    for (i, c) in containers.iter().enumerate() {
        if let Some(j) = ports(c).iter().position(tcp) {
            return Ok((i, j));
        }
    }
    Err(
        "no container declares a TCP containerPort: sitio would not know the app's port \
         (declare it, named `http` ideally)"
            .into(),
    )
}

fn used_ports(spec: &Value) -> Vec<u64> {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|list| spec[list].as_array().cloned().unwrap_or_default())
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["containerPort"].as_u64())
        .collect()
}

/// The sidecar container, as `deploy/kubernetes/deployment.yaml` has it.
#[allow(clippy::too_many_arguments)]
fn sidecar(
    opts: &Options,
    settings: &Value,
    port_name: &str,
    listen: u64,
    target: u64,
    admin: u64,
    spec: &mut Value,
    record: &mut Map<String, Value>,
) -> Value {
    let mut env = vec![
        json!({"name": "PORT", "value": listen.to_string()}),
        json!({"name": "TARGET_PORT", "value": target.to_string()}),
        json!({"name": "SITIO_ADMIN_PORT", "value": admin.to_string()}),
        json!({"name": "SITIO_DRAIN_SECONDS", "value": "30"}),
        json!({"name": "SITIO_READY_REQUIRES_SERVICE", "value": "on"}),
        json!({"name": "SITIO_LOG_FORMAT", "value": "json"}),
        // 3,000 clients: 23.1 MiB once idle (parked), a burst of 3,000 at once peaks near 54 MiB
        // (bench/idle_clients.py, two workers), within the 64Mi below.
        json!({"name": "SITIO_MAX_CONNECTIONS", "value": "3000"}),
    ];
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    for (key, value) in settings.as_object().into_iter().flatten() {
        let value = value.as_str().unwrap_or_default();
        if let Some(name) = key.strip_prefix(ENV_PREFIX) {
            env.retain(|e| e["name"] != name);
            env.push(json!({"name": name, "value": value}));
        } else if let Some(code) = key.strip_prefix(PAGE_PREFIX) {
            let volume = format!("sitio-page-{}", code.to_ascii_lowercase());
            let file = format!("{code}.html");
            volumes.push(json!({"name": volume, "configMap": {"name": value, "items": [{"key": file, "path": file}]}}));
            let dir = format!("/etc/sitio/pages/{code}");
            mounts.push(json!({"name": volume, "mountPath": dir, "readOnly": true}));
            env.push(json!({"name": format!("SITIO_ERROR_PAGE_{}", code.to_ascii_uppercase()), "value": format!("{dir}/{file}")}));
        }
    }
    if !volumes.is_empty() {
        record.insert(
            "volumes".into(),
            json!(
                volumes
                    .iter()
                    .map(|v| v["name"].clone())
                    .collect::<Vec<_>>()
            ),
        );
        if let Some(list) = spec
            .as_object_mut()
            .map(|s| s.entry("volumes").or_insert_with(|| json!([])))
            .and_then(Value::as_array_mut)
        {
            list.extend(volumes);
        }
    }
    let probe = |path: &str, period: u64| json!({"httpGet": {"path": path, "port": ADMIN_PORT_NAME}, "periodSeconds": period});
    let mut startup = probe("/live", 1);
    startup["failureThreshold"] = json!(30);
    let mut c = json!({
        "name": CONTAINER,
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "ports": [
            {"name": port_name, "containerPort": listen},
            {"name": ADMIN_PORT_NAME, "containerPort": admin},
        ],
        "startupProbe": startup,
        "readinessProbe": probe("/ready", 5),
        "livenessProbe": probe("/live", 10),
        // Measured: a 500m CPU limit throttled sitio's tail latency (p99 38.8
        // ms against 8.1 ms), so none; memory as the connection cap needs.
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    if !mounts.is_empty() {
        c["volumeMounts"] = json!(mounts);
    }
    if !opts.legacy {
        c["restartPolicy"] = json!("Always");
    }
    c
}

/// Takes sitio out of the pod `spec` as `inject` recorded it.
pub(super) fn uninject(spec: &mut Value, meta: &mut Value) -> Outcome {
    let Some(record) = meta
        .pointer(&format!("/annotations/{}", INJECTED.replace('/', "~1")))
        .and_then(Value::as_str)
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
    else {
        return Outcome::Unchanged;
    };
    for list in ["containers", "initContainers"] {
        if let Some(l) = spec[list].as_array_mut() {
            l.retain(|c| c["name"] != CONTAINER);
        }
    }
    if spec["initContainers"].as_array().is_some_and(Vec::is_empty)
        && let Some(s) = spec.as_object_mut()
    {
        s.remove("initContainers");
    }
    if let Some(name) = record["portName"].as_str() {
        let renamed = app_port_name(name);
        for c in spec["containers"].as_array_mut().into_iter().flatten() {
            for p in c["ports"].as_array_mut().into_iter().flatten() {
                if p["name"] == renamed.as_str() {
                    p["name"] = json!(name);
                }
            }
        }
    }
    if let Some(app) = record["preStop"].as_str() {
        for c in spec["containers"].as_array_mut().into_iter().flatten() {
            if c["name"] != app {
                continue;
            }
            if let Some(l) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
                l.remove("preStop");
            }
            if c["lifecycle"].as_object().is_some_and(Map::is_empty)
                && let Some(o) = c.as_object_mut()
            {
                o.remove("lifecycle");
            }
        }
    }
    if let Some(s) = spec.as_object_mut() {
        match record.get("grace") {
            Some(Value::Null) => {
                s.remove("terminationGracePeriodSeconds");
            }
            Some(g) => {
                s.insert("terminationGracePeriodSeconds".into(), g.clone());
            }
            None => {}
        }
        let ours: Vec<&Value> = record["volumes"].as_array().into_iter().flatten().collect();
        if let Some(v) = s.get_mut("volumes").and_then(Value::as_array_mut) {
            v.retain(|vol| !ours.contains(&&vol["name"]));
        }
        if s.get("volumes")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            s.remove("volumes");
        }
    }
    if let Some(a) = meta["annotations"].as_object_mut() {
        for key in record["annotations"].as_array().into_iter().flatten() {
            if let Some(k) = key.as_str() {
                a.remove(k);
            }
        }
        a.remove(INJECTED);
    }
    if meta["annotations"].as_object().is_some_and(Map::is_empty)
        && let Some(m) = meta.as_object_mut()
    {
        m.remove("annotations");
    }
    Outcome::Injected
}
