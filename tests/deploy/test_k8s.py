"""The Kubernetes manifests: schema-valid for the stated versions, and read against the checklist."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.cli import main as cli_main
from cds_service.config import _PARSERS, ENV_VAR, Settings
from cds_service.store import _MIGRATION_LOCK_TIMEOUT

try:
    import kubernetes_validate
except ImportError:
    if os.environ.get("CI"):
        raise  # a test dependency (the test extras): missing in CI is a failure
    pytest.skip(
        "kubernetes-validate is not installed (pip install -e '.[test]')", allow_module_level=True
    )

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
OVERLAY = DEPLOY / "k8s" / "overlays" / "example"
# Oldest supported (the preStop `sleep` action is on by default from 1.30) and the newest schemas
# kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# The JWK Set fetch timeout (auth.py) and gunicorn's graceful timeout (its default; serve keeps it).
JWKS_TIMEOUT_SECONDS = 3.0
# The slowest restart measured under load (deploy/README.md: 16-32 s to answer again).
START_UP_SECONDS = 32
GUNICORN_GRACEFUL_TIMEOUT_SECONDS = 30
POD_LABELS = {"app.kubernetes.io/name": "cds-service", "app.kubernetes.io/component": "server"}


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def render_base() -> list[dict[str, Any]]:
    """The base as kustomize renders it: it only lists resources (checked below), so concatenate."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    return [doc for name in kustomization["resources"] for doc in load_documents(BASE / name)]


def render_overlay() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        # kubectl/kustomize come from no registry this project installs from; the base is still
        # validated without them (render_base).
        pytest.skip(
            "kubectl is not installed: the example overlay is rendered with kubectl kustomize"
        )
    out = subprocess.run(
        [kubectl, "kustomize", str(OVERLAY)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in documents if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def test_base_kustomization_lists_every_manifest_and_nothing_else() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    # Only `resources`, so render_base is exactly what kustomize renders.
    assert set(kustomization) == {"apiVersion", "kind", "resources"}
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_base_is_schema_valid(version: str) -> None:
    documents = render_base()
    kinds = {doc["kind"] for doc in documents}
    assert kinds >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Secret",
        "ConfigMap",
        "Job",
        "NetworkPolicy",
        "ServiceAccount",
    }
    for doc in documents:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_example_overlay_is_schema_valid(version: str) -> None:
    documents = render_overlay()
    for doc in documents:
        kubernetes_validate.validate(doc, version, strict=True)
        assert doc["metadata"].get("namespace") == "cds" or doc["kind"] == "Namespace"
    # The overlay never ships the base's empty Secret (it would blank the real one on apply).
    assert "Secret" not in {doc["kind"] for doc in documents}


def test_the_validator_refuses_a_broken_manifest() -> None:
    deployment = one(render_base(), "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_probes_and_graceful_termination() -> None:
    pod = one(render_base(), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Liveness asks the kernel, not a worker thread: with every thread waiting on a slow FHIR
    # server an HTTP probe queued behind the calls and would restart every pod at once.
    assert container["livenessProbe"]["tcpSocket"]["port"] == "http"
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    longest_call = Settings().fhir_deadline_seconds + JWKS_TIMEOUT_SECONDS
    grace = pod["terminationGracePeriodSeconds"]
    # The kubelet must not kill a worker still finishing its last call (nor one flushing records).
    assert grace > pre_stop + GUNICORN_GRACEFUL_TIMEOUT_SECONDS
    assert longest_call < GUNICORN_GRACEFUL_TIMEOUT_SECONDS


def test_startup_probe_outlasts_the_migration_lock_wait() -> None:
    (container,) = one(render_base(), "Deployment")["spec"]["template"]["spec"]["containers"]
    probe = container["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    lock_wait = int(_MIGRATION_LOCK_TIMEOUT.removesuffix("s"))
    # A replica waiting on another's migration must not be killed and restarted into the same wait.
    assert budget >= 120
    assert budget > lock_wait + START_UP_SECONDS


def test_serves_graceful_timeout_is_the_one_assumed() -> None:
    # What serve sets, not gunicorn's default: raising it must break the grace-period check above.
    from cds_service.cli import GRACEFUL_TIMEOUT_SECONDS

    assert GRACEFUL_TIMEOUT_SECONDS == GUNICORN_GRACEFUL_TIMEOUT_SECONDS


def containers(documents: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) for every workload's container."""
    return [
        (doc["spec"]["template"]["spec"], c)
        for doc in documents
        if doc["kind"] in {"Deployment", "Job"}
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]


def test_every_container_is_non_root_read_only_and_bounded() -> None:
    for pod, container in containers(render_base()):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's runtime stage (its last `ENV` instruction)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    (last,) = [line for line in text.splitlines() if line.startswith("ENV ")][-1:]
    return dict(pair.split("=", 1) for pair in last.split()[1:])


def test_writable_directories_are_mounted() -> None:
    """On a read-only root, each place the image writes (its ENV, the pod's env) is an emptyDir."""
    for pod, container in containers(render_base()):
        env = {
            **image_env(),
            **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e},
        }
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for variable in ("XDG_RUNTIME_DIR", "PROMETHEUS_MULTIPROC_DIR"):
            assert mounts.get(env[variable]) in empty_dirs, (container["name"], variable)
        assert mounts.get("/tmp") in empty_dirs  # gunicorn's worker heartbeat files


def test_selectors_match_the_pods() -> None:
    documents = render_base()
    assert one(documents, "Deployment")["spec"]["template"]["metadata"]["labels"] == POD_LABELS
    assert one(documents, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == POD_LABELS
    assert one(documents, "Service")["spec"]["selector"] == POD_LABELS
    policy = one(documents, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    assert policy.items() <= POD_LABELS.items()
    target = one(documents, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "cds-service")
    # The HPA owns the replica count; a fixed one in the Deployment would fight it on every apply.
    assert "replicas" not in one(documents, "Deployment")["spec"]
    assert one(documents, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2


def test_network_policy_egress_is_dns_postgresql_and_https_only() -> None:
    policy = one(render_base(), "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ports = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 443)}
    for rule in policy["egress"]:
        assert rule["to"], "an egress rule without `to` allows every destination"


def test_migration_job_runs_a_real_command() -> None:
    job = one(render_base(), "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["cds-service", "migrate"]
    assert "migrate" in cli_main.commands  # type: ignore[attr-defined]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_configuration_names_real_settings_and_commits_no_secret() -> None:
    documents = render_base()
    config = next(d for d in documents if d["metadata"]["name"] == "cds-service-config")
    sources = "".join(
        (ROOT / "cds_service" / name).read_text(encoding="utf-8")
        for name in ("config.py", "cli.py")
    )
    # Settings are read through config.ENV_VAR (the fields _PARSERS reads) and click's envvar=;
    # anything else by its name in the source.
    read = {ENV_VAR[name] for name in _PARSERS} | {
        str(param.envvar)
        for command in cli_main.commands.values()  # type: ignore[attr-defined]
        for param in command.params
        if param.envvar
    }
    for key in config["data"]:
        assert key in read or f'"{key}"' in sources, f"{key} is read nowhere"
    secrets = {d["metadata"]["name"]: d["stringData"] for d in documents if d["kind"] == "Secret"}
    assert secrets == {
        "cds-service-secrets": {"CDS_PATIENT_HASH_KEY": "", "CDS_DATABASE_URL": ""},
        "cds-service-migrator": {"CDS_DATABASE_URL": ""},
    }


def test_only_the_migration_job_holds_the_migrator_role() -> None:
    """Serving pods log in as a role without DDL rights and do not migrate (deploy/README.md)."""
    documents = render_base()
    config = next(d for d in documents if d["metadata"]["name"] == "cds-service-config")
    assert config["data"]["CDS_MIGRATE_AT_START"] == "false"
    (server,) = one(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"cds-service-config", "cds-service-secrets"} == {
        ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in server["envFrom"]
    }
    assert "cds-service-migrator" not in json.dumps(server)
    (job,) = one(documents, "Job")["spec"]["template"]["spec"]["containers"]
    (url,) = [e for e in job["env"] if e["name"] == "CDS_DATABASE_URL"]
    assert url["valueFrom"]["secretKeyRef"]["name"] == "cds-service-migrator"
    assert "cds-service-secrets" not in json.dumps(job)  # `migrate` reads only the database URL


def test_the_overlay_pins_every_image_by_digest() -> None:
    for _, container in containers(render_overlay()):
        assert re.fullmatch(r"[^@:]+(:\d+)?[^@:]*@sha256:[0-9a-f]{64}", container["image"]), (
            container
        )
        # A digest names one image: a node that holds it need not ask the registry again.
        assert container["imagePullPolicy"] == "IfNotPresent"


def test_trusted_issuers_config_map_is_the_shipped_file() -> None:
    documents = render_base()
    issuers = next(d for d in documents if d["metadata"]["name"] == "cds-service-trusted-issuers")
    for name in ("trusted-issuers.example.json", "sandbox-jwks.json"):
        key = name.replace(".example", "")
        assert json.loads(issuers["data"][key]) == json.loads((DEPLOY / name).read_text("utf-8"))
    config = next(d for d in documents if d["metadata"]["name"] == "cds-service-config")
    mount = next(
        m
        for _, c in containers([one(documents, "Deployment")])
        for m in c["volumeMounts"]
        if m["name"] == "trusted-issuers"
    )
    assert config["data"]["CDS_TRUSTED_ISSUERS"] == f"{mount['mountPath']}/trusted-issuers.json"
