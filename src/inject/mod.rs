//! `sitio inject` and `sitio uninject`, like `linkerd inject`: manifests in
//! (YAML, multi-document, or JSON, `List` included), the same manifests out
//! with sitio added to (or taken from) every workload's pods.
//!
//! - `pod`: one pod spec: the sidecar, the port swap, the record that
//!   `uninject` undoes;
//! - `yaml`: output Kubernetes (YAML 1.1) reads back as it was meant;
//! - `webhook`: `sitio injector`, the admission webhook doing the same to pods
//!   as they are created.

mod pod;
mod webhook;
mod yaml;

use std::io::Read;

use serde::Deserialize;
use serde_json::Value;

pub(crate) use pod::Options;
use pod::Outcome;
pub(crate) use webhook::serve as serve_webhook;

/// Whether to add sitio or take it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Inject,
    Uninject,
}

/// Reads `file` (`-`: standard input), writes the result to standard output
/// and notes for the operator to standard error. Exit code 2 for input that
/// is not manifests, or a pod that cannot be injected.
pub(crate) fn run(file: &str, direction: Direction, opts: &Options) -> std::process::ExitCode {
    match transform_file(file, direction, opts) {
        Ok((text, notes)) => {
            for note in notes {
                eprintln!("sitio: {note}");
            }
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sitio: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn transform_file(
    file: &str,
    direction: Direction,
    opts: &Options,
) -> Result<(String, Vec<String>), String> {
    let mut input = String::new();
    if file == "-" {
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
    } else {
        input = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    }
    transform(&input, direction, opts)
}

/// The manifests of `input`, transformed, in `input`'s format; and notes.
pub(crate) fn transform(
    input: &str,
    direction: Direction,
    opts: &Options,
) -> Result<(String, Vec<String>), String> {
    let mut notes = Vec::new();
    if input.trim_start().starts_with('{') {
        let mut doc: Value =
            serde_json::from_str(input).map_err(|e| format!("not JSON manifests: {e}"))?;
        object(&mut doc, direction, opts, &mut notes)?;
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        return Ok((text + "\n", notes));
    }
    let mut out = String::new();
    for document in serde_yaml_ng::Deserializer::from_str(input) {
        let mut doc =
            Value::deserialize(document).map_err(|e| format!("not YAML manifests: {e}"))?;
        if doc.is_null() {
            continue; // an empty document (a trailing `---`)
        }
        object(&mut doc, direction, opts, &mut notes)?;
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&yaml::to_string(&doc));
    }
    Ok((out, notes))
}

/// One object: a workload (its pods), a `List` (each item), or anything else (as is).
fn object(
    doc: &mut Value,
    direction: Direction,
    opts: &Options,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
    let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_owned();
    let template = match kind.as_str() {
        "List" => {
            for item in doc["items"].as_array_mut().into_iter().flatten() {
                object(item, direction, opts, notes)?;
            }
            return Ok(());
        }
        "Pod" => None,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => return Ok(()),
    };
    let workload_annotations = doc["metadata"]["annotations"].clone();
    let pod = match template {
        None => &mut *doc,
        Some(path) => doc
            .pointer_mut(path)
            .ok_or_else(|| format!("{kind}/{name} has no pod template"))?,
    };
    let pod = pod
        .as_object_mut()
        .ok_or("a pod template is not an object")?;
    let mut meta = pod
        .remove("metadata")
        .unwrap_or_else(|| serde_json::json!({}));
    let spec = pod
        .get_mut("spec")
        .ok_or_else(|| format!("{kind}/{name} has no pod spec"))?;
    let outcome = match direction {
        Direction::Inject => {
            let mut local = Vec::new();
            let outcome = pod::inject(
                spec,
                &mut meta,
                Some(&workload_annotations),
                opts,
                &mut local,
            )
            .map_err(|e| format!("{kind}/{name}: {e}"))?;
            notes.extend(local.into_iter().map(|n| format!("{kind}/{name}: {n}")));
            outcome
        }
        Direction::Uninject => pod::uninject(spec, &mut meta),
    };
    if meta.as_object().is_some_and(|m| !m.is_empty()) {
        pod.insert("metadata".into(), meta);
    }
    if outcome == Outcome::Unchanged && direction == Direction::Inject {
        notes.push(format!(
            "{kind}/{name}: unchanged (already injected, or {}: disabled)",
            pod::INJECT
        ));
    }
    Ok(())
}
