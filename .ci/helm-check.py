#!/usr/bin/env python3
"""Renders the Helm chart as operators would and checks what comes out.

helm itself comes from the Python package index (helm-binary), so the
chart is rendered by the real `helm template`, not by a stand-in.

    python3 .ci/helm-check.py target/debug/mmgate
"""
import os
import subprocess
import sys
import tempfile

import yaml

CHART = "deploy/helm/mmgate"
VALUES = "deploy/helm/ci-values.yaml"
MMGATE = sys.argv[1] if len(sys.argv) > 1 else "target/debug/mmgate"


def helm(*args, ok=True):
    done = subprocess.run(["helm", *args], capture_output=True, text=True)
    if ok and done.returncode != 0:
        sys.exit(f"helm-check: helm {' '.join(args)} failed:\n{done.stderr}")
    return done


def render(*extra):
    out = helm("template", "demo", CHART, *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def fail(message):
    sys.exit(f"helm-check: {message}")


helm("lint", "--strict", CHART, "-f", VALUES)

docs = render("-f", VALUES)
kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
expected = ["ConfigMap/demo-mmgate", "Deployment/demo-mmgate", "Deployment/demo-mmgate-redis",
            "PodDisruptionBudget/demo-mmgate", "Secret/mmgate-keys", "Service/demo-mmgate",
            "Service/demo-mmgate-redis", "ServiceMonitor/demo-mmgate"]
if kinds != expected:
    fail(f"rendered {kinds}, expected {expected}")

# Kubernetes' own schemas (the ServiceMonitor is a CRD they do not hold).
with tempfile.TemporaryDirectory() as tmp:
    core = os.path.join(tmp, "core.yaml")
    with open(core, "w") as f:
        yaml.safe_dump_all([d for d in docs if d["kind"] != "ServiceMonitor"], f)
    subprocess.run(["kubernetes-validate", "--strict", "--quiet", "-k", "1.30.0", core], check=True)

    # The rendered mmgate.toml is a configuration mmgate accepts.
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["mmgate.toml"]
    path = os.path.join(tmp, "mmgate.toml")
    with open(path, "w") as f:
        f.write(config)
    check = subprocess.run([MMGATE, "check", "--skip-keys", "--config", path], capture_output=True, text=True)
    if check.returncode != 0:
        fail(f"mmgate check refused the rendered config:\n{check.stdout}{check.stderr}\n{config}")
    for needed in ['listen = "0.0.0.0:8080"', 'file = "/run/secrets/mmgate/reporting"', 'redis = "redis://demo-mmgate-redis:6379"', "per_minute = 900"]:
        if needed not in config:
            fail(f"rendered config lacks {needed!r}:\n{config}")

deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "demo-mmgate")
pod = deployment["spec"]["template"]["spec"]
container = pod["containers"][0]
security = container["securityContext"]
if not (pod["securityContext"]["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        and security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]):
    fail(f"the container is not locked down: {pod['securityContext']} {security}")
for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
    if container[probe]["httpGet"]["path"] != path:
        fail(f"{probe} is not {path}")
if pod.get("enableServiceLinks") is not False:
    fail("service links would put MMGATE_* variables into the environment")
mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
if not all(mounts[p]["readOnly"] for p in ["/etc/mmgate", "/run/secrets/mmgate"]):
    fail("config and keys must be mounted read-only")

# One replica: no PodDisruptionBudget; no Redis or ServiceMonitor unless asked.
small = render("-f", VALUES, "--set", "replicaCount=1", "--set", "redis.enabled=false", "--set", "serviceMonitor.enabled=false")
if sorted(d["kind"] for d in small) != ["ConfigMap", "Deployment", "Secret", "Service"]:
    fail(f"a single replica rendered {[d['kind'] for d in small]}")

# Without clients the chart refuses to render, saying what to set.
bare = helm("template", "demo", CHART, ok=False)
if bare.returncode == 0 or "config.clients" not in bare.stderr:
    fail(f"rendering without clients should fail naming config.clients:\n{bare.stderr}")

print(f"helm-check: chart renders {len(docs)} objects, valid for Kubernetes 1.30, config accepted by mmgate check")
