//! YAML output that Kubernetes reads back as it was meant. serde's YAML
//! writers print `on`, `yes` or `NO` unquoted (they are strings in YAML
//! 1.2), but Kubernetes parses manifests as YAML 1.1, where they are
//! booleans: an env value `"on"` would come back as `true` and be refused.
//! So strings are written plain only when they cannot mean anything else in
//! either version, and double-quoted (JSON escaping, valid YAML) otherwise.

use std::fmt::Write as _;

use serde_json::Value;

/// `doc` as a block-style YAML document.
pub(super) fn to_string(doc: &Value) -> String {
    let mut out = String::new();
    match doc {
        Value::Object(m) if !m.is_empty() => map(&mut out, doc, 0),
        Value::Array(a) if !a.is_empty() => seq(&mut out, doc, 0),
        other => {
            scalar(&mut out, other);
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A value that fits on its key's line: scalars and empty collections.
fn inline(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => true,
    }
}

fn map(out: &mut String, v: &Value, indent: usize) {
    let Value::Object(m) = v else { return };
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a map inside a sequence follows its "- ".
        if i > 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        string(out, k);
        out.push(':');
        child(out, v, indent);
    }
}

fn seq(out: &mut String, v: &Value, indent: usize) {
    let Value::Array(a) = v else { return };
    for item in a {
        pad(out, indent);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => map(out, item, indent + 2),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                seq(out, item, indent + 2);
            }
            other => {
                scalar(out, other);
                out.push('\n');
            }
        }
    }
}

/// What follows `key:`.
fn child(out: &mut String, v: &Value, indent: usize) {
    if inline(v) {
        out.push(' ');
        scalar(out, v);
        out.push('\n');
    } else if v.is_array() {
        out.push('\n');
        seq(out, v, indent);
    } else {
        out.push('\n');
        map(out, v, indent + 2);
    }
}

fn scalar(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => string(out, s),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

fn string(out: &mut String, s: &str) {
    if plain(s) {
        out.push_str(s);
    } else {
        // A JSON string is a YAML double-quoted scalar.
        out.push_str(&Value::String(s.to_owned()).to_string());
    }
}

/// Safe unquoted in YAML 1.1 and 1.2: a letter first (so no number, no
/// indicator), then letters, digits and `_./-`, and no word that YAML 1.1
/// reads as a boolean or null.
fn plain(s: &str) -> bool {
    const WORDS: [&str; 11] = [
        "y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf",
    ];
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_./-".contains(&b))
        && !WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[test]
    fn what_yaml_1_1_would_misread_is_quoted_and_everything_reads_back() {
        let doc = json!({
            "apiVersion": "apps/v1",
            "env": [{"name": "A", "value": "on"}, {"name": "B", "value": "yes"}, {"name": "C", "value": "1_000"}],
            "image": "reg.example/sitio:1",
            "empty": {}, "none": [], "n": 3, "t": true, "nil": null,
            "nested": [[1, 2], {"k": "multi\nline \"quoted\""}],
            "prometheus.io/port": "9901",
        });
        let text = to_string(&doc);
        assert!(text.contains("value: \"on\""), "{text}");
        assert!(text.contains("value: \"yes\""), "{text}");
        assert!(text.contains("value: \"1_000\""), "{text}");
        assert!(text.contains("apiVersion: apps/v1"), "{text}");
        assert!(text.contains("prometheus.io/port: \"9901\""), "{text}");
        let back = Value::deserialize(serde_yaml_ng::Deserializer::from_str(&text)).unwrap();
        assert_eq!(back, doc, "{text}");
    }
}
