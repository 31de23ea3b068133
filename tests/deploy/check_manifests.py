#!/usr/bin/env python3
"""Checks sitio's deployment manifests offline.

Usage: check_manifests.py RENDERED_KUSTOMIZE_YAML SEED_POD_YAML OPENSHIFT_TEMPLATE_YAML

- Every object of a core Kubernetes kind is validated, strictly, against the
  Kubernetes OpenAPI schemas shipped by the kubernetes-validate package.
- What schemas cannot see is checked by hand: the Service selects the pods, its
  ports name container ports, the ServiceMonitor (a CRD, no bundled schema)
  selects the Service and names one of its ports, volumes name the generated
  ConfigMap, and sitio runs as a locked-down native sidecar with probes.
- The OpenShift template's objects are checked the same way after parameter
  substitution; its OpenShift-only kinds (Route, BuildConfig, ImageStream) are
  checked for the fields the seed's flow relies on.
Prints one line per check and ends with "N passed, N failed".
"""
import re
import sys

import kubernetes_validate
import yaml

K8S_VERSION = "1.32.0"
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + detail))


def validate(doc, where):
    kind = doc.get("kind")
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        check(f"{where}: {kind}/{doc['metadata']['name']} matches the {K8S_VERSION} schema", True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError as e:
        check(f"{where}: {kind} schema", False, str(e)[:500])
    return True


def containers(pod_spec):
    return pod_spec.get("initContainers", []) + pod_spec.get("containers", [])


def check_workload(where, pod_spec, pod_labels, services, config_maps):
    sitio = next((c for c in containers(pod_spec) if c["name"] == "sitio"), None)
    check(f"{where}: has a sitio container", sitio is not None)
    if sitio is None:
        return
    env = {e["name"]: e.get("value") for e in sitio.get("env", [])}
    port_names = {p["name"] for c in containers(pod_spec) for p in c.get("ports", [])}
    check(f"{where}: sitio listens on PORT and forwards to TARGET_PORT",
          "PORT" in env and "TARGET_PORT" in env, str(env))
    for probe in ("readinessProbe", "livenessProbe"):
        p = sitio.get(probe, {}).get("httpGet", {})
        check(f"{where}: sitio {probe} on the admin port", p.get("port") in ("admin", 9901)
              and p.get("path") in ("/ready", "/live"), str(p))
    sc = sitio.get("securityContext", {})
    locked = (sc.get("runAsNonRoot") or pod_spec.get("securityContext", {}).get("runAsNonRoot")) \
        and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False \
        and sc.get("capabilities", {}).get("drop") == ["ALL"]
    check(f"{where}: sitio is non-root, read-only, without capabilities", bool(locked), str(sc))
    limits = sitio.get("resources", {})
    check(f"{where}: sitio has resource requests and limits",
          "requests" in limits and "limits" in limits, str(limits))
    for svc in services:
        sel = svc["spec"].get("selector", {})
        if all(pod_labels.get(k) == v for k, v in sel.items()):
            for p in svc["spec"]["ports"]:
                tp = p.get("targetPort")
                check(f"{where}: Service {svc['metadata']['name']} port {p['name']} targets a container port",
                      tp in port_names or isinstance(tp, int), f"{tp} not in {port_names}")
            http = next((p for p in svc["spec"]["ports"] if p["name"] == "http"), None)
            if http is None:
                continue  # a metrics-only Service
            check(f"{where}: Service traffic goes through sitio", http.get("targetPort") == "http"
                  and any(p["name"] == "http" for p in sitio.get("ports", [])))
            check(f"{where}: Service {svc['metadata']['name']} does not expose sitio's admin port",
                  all(p.get("targetPort") not in ("admin", 9901) for p in svc["spec"]["ports"]))
    for vol in pod_spec.get("volumes", []):
        if "configMap" in vol:
            check(f"{where}: volume {vol['name']} names an existing ConfigMap",
                  vol["configMap"]["name"] in config_maps, f"{vol['configMap']['name']} not in {config_maps}")


def check_set(where, docs):
    services = [d for d in docs if d["kind"] == "Service"]
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for d in docs:
        if not validate(d, where) and d["kind"] not in ("ServiceMonitor", "PrometheusRule", "Route", "BuildConfig", "ImageStream"):
            check(f"{where}: {d['kind']} is a known kind", False, "no schema")
    for d in docs:
        if d["kind"] == "Deployment":
            t = d["spec"]["template"]
            check(f"{where}: Deployment selector matches its pods",
                  all(t["metadata"]["labels"].get(k) == v for k, v in d["spec"]["selector"]["matchLabels"].items()))
            sitio = next((c for c in t["spec"].get("initContainers", []) if c["name"] == "sitio"), None)
            check(f"{where}: sitio is a native sidecar (init container, restartPolicy Always)",
                  sitio is not None and sitio.get("restartPolicy") == "Always")
            ann = t["metadata"].get("annotations", {})
            check(f"{where}: pods carry Prometheus scrape annotations",
                  ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "9901", str(ann))
            grace = t["spec"].get("terminationGracePeriodSeconds", 30)
            sitio_env = {e["name"]: e.get("value") for e in (sitio or {}).get("env", [])}
            check(f"{where}: termination grace outlasts SITIO_DRAIN_SECONDS",
                  grace > int(sitio_env.get("SITIO_DRAIN_SECONDS", "30")), f"{grace}")
            check_workload(f"{where} Deployment", t["spec"], t["metadata"]["labels"], services, config_maps)
        if d["kind"] == "Pod":
            check_workload(f"{where} Pod", d["spec"], d["metadata"]["labels"], services, config_maps)
        if d["kind"] == "ServiceMonitor":
            sel = d["spec"]["selector"]["matchLabels"]
            svc = [s for s in services if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
            check(f"{where}: ServiceMonitor selects a Service", len(svc) == 1, str(sel))
            for ep in d["spec"]["endpoints"]:
                check(f"{where}: ServiceMonitor scrapes a named Service port at /metrics",
                      bool(svc) and any(p["name"] == ep["port"] for p in svc[0]["spec"]["ports"])
                      and ep.get("path") == "/metrics")
        if d["kind"] in ("NetworkPolicy", "PodDisruptionBudget"):
            pods = [w["spec"]["template"]["metadata"]["labels"] for w in docs if w["kind"] == "Deployment"]
            sel = d["spec"].get("podSelector", d["spec"].get("selector", {})).get("matchLabels", {})
            check(f"{where}: {d['kind']} selects the pods",
                  any(all(p.get(k) == v for k, v in sel.items()) for p in pods), str(sel))
        if d["kind"] == "NetworkPolicy":
            rules = d["spec"]["ingress"]
            admin = [r for r in rules if any(p.get("port") in ("admin", 9901) for p in r.get("ports", []))]
            check(f"{where}: NetworkPolicy opens the admin port only to Prometheus",
                  len(admin) == 1 and all(f.get("podSelector", {}).get("matchLabels", {}).get(
                      "app.kubernetes.io/name") == "prometheus" for f in admin[0].get("from", [{}])),
                  str(admin))
            opened = {p.get("port") for r in rules for p in r.get("ports", [])}
            check(f"{where}: NetworkPolicy leaves the app's port closed", opened <= {"http", "admin"}, str(opened))
        if d["kind"] == "Deployment":
            spec = d["spec"]["template"]["spec"]
            check(f"{where}: no service account token in the pods",
                  spec.get("automountServiceAccountToken") is False)
            check(f"{where}: replicas spread across nodes",
                  any(c.get("topologyKey") == "kubernetes.io/hostname"
                      for c in spec.get("topologySpreadConstraints", [])))
        if d["kind"] == "Route":
            svc_names = {s["metadata"]["name"] for s in services}
            check(f"{where}: Route sends to the Service's http port",
                  d["spec"]["to"]["name"] in svc_names and d["spec"]["port"]["targetPort"] == "http")
        if d["kind"] == "BuildConfig":
            s = d["spec"]
            check(f"{where}: BuildConfig is a binary Docker build into sitio:latest",
                  s["source"]["type"] == "Binary" and s["strategy"]["type"] == "Docker"
                  and s["output"]["to"]["name"] == "sitio:latest")


def substitute(node, values):
    """Replaces ${PARAM} inside string values, as `oc process` does."""
    if isinstance(node, dict):
        return {k: substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, values) for v in node]
    if isinstance(node, str):
        return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), node)
    return node


def main():
    rendered, seed, template = sys.argv[1:4]
    check_set("kustomize", [d for d in yaml.safe_load_all(open(rendered)) if d])
    check_set("seed pod", [d for d in yaml.safe_load_all(open(seed)) if d])
    tpl = yaml.safe_load(open(template))
    check("openshift: is a Template", tpl["kind"] == "Template")
    values = {p["name"]: p.get("value", "") for p in tpl["parameters"]}
    used = set(re.findall(r"\$\{(\w+)\}", yaml.safe_dump(tpl["objects"])))
    check("openshift: every ${PARAM} is declared", used <= set(values), str(used - set(values)))
    check_set("openshift", substitute(tpl["objects"], values))
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
