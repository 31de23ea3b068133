#!/usr/bin/env python3
"""Validates Kubernetes manifests, strictly, against the OpenAPI schemas of
several Kubernetes versions (the kubernetes-validate package ships them).

Usage: validate_k8s.py FILE VERSION [VERSION ...]   (YAML or JSON; `List` items too)
Prints one line per object and version, and ends with "N passed, N failed".
Kinds the package has no schema for (cert-manager's) are listed as SKIP.
"""
import sys

import kubernetes_validate
import yaml

path, versions = sys.argv[1], sys.argv[2:]
with open(path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
objects = []
for d in docs:
    objects.extend(d.get("items", []) if d.get("kind") == "List" else [d])
passed = failed = 0
for version in versions:
    for doc in objects:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            passed += 1
            print(f"PASS {name} {version}")
        except kubernetes_validate.SchemaNotFoundError:
            print(f"SKIP {name} {version}: no schema")
        except kubernetes_validate.ValidationError as e:
            failed += 1
            print(f"FAIL {name} {version}: {str(e)[:400]}")
print(f"{passed} passed, {failed} failed")
