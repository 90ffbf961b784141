"""The production image, built and run as deployed: non-root, healthy, read-only, JWT, metrics.

`make image-test` runs this (CDS_IMAGE_TESTS=1): it builds with deploy/build-image.sh (BASE_IMAGE
from the environment, e.g. a local base made by deploy/make-base-image.sh), or uses CDS_IMAGE if
set, then starts the image the way deploy/k8s runs it: read-only root, tmpfs for /tmp and the
metrics directory, the trusted-issuers file mounted read-only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, SERVICE_ID
from tests.deploy.test_nginx import REQUEST

pytestmark = pytest.mark.image

TAG = "leg-cramps-cds:image-test"
ISSUER = "https://ehr.image-test.example"
KEY = ec.generate_private_key(ec.SECP384R1())
WORKERS = 2
CALLS = 40
OWNED = "uid=10001,gid=10001,mode=0700"  # tmpfs mounts are root's 0755 unless told


def engine() -> str:
    for name in ("docker", "podman"):
        path = shutil.which(name)
        if path and subprocess.run([path, "info"], capture_output=True).returncode == 0:
            return path
    pytest.fail("no container engine answers (docker with its daemon running, or podman)")


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    if os.environ.get("CDS_IMAGE"):
        return os.environ["CDS_IMAGE"]
    run(str(ROOT / "deploy" / "build-image.sh"), TAG)
    return TAG


@pytest.fixture(scope="module")
def container(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The running container's id and base URL."""
    docker = engine()
    issuers = tmp_path_factory.mktemp("issuers")
    public = json.loads(ECAlgorithm.to_jwk(KEY.public_key()))
    (issuers / "trusted-issuers.json").write_text(
        json.dumps(
            {
                "issuers": [
                    {"iss": ISSUER, "jwks": {"keys": [{**public, "kid": "k1", "alg": "ES384"}]}}
                ]
            }
        )
    )
    issuers.chmod(0o755)
    (issuers / "trusted-issuers.json").chmod(0o644)
    cid = run(
        docker, "run", "--detach", "--read-only",
        "--tmpfs", "/tmp", "--tmpfs", f"/run/prometheus:{OWNED}", "--tmpfs", f"/app/var:{OWNED}",
        "--volume", f"{issuers}:/etc/cds-service/issuers:ro",
        "--env", "CDS_TRUSTED_ISSUERS=/etc/cds-service/issuers/trusted-issuers.json",
        "--env", "CDS_PATIENT_HASH_KEY=image-test-key",
        "--env", f"CDS_WORKERS={WORKERS}",
        # The public URL must be fixed before the port is known: tokens name it as their audience.
        "--env", "CDS_PUBLIC_BASE_URL=https://cds.image-test.example",
        "--health-interval", "2s",  # the image's own HEALTHCHECK command, checked more often
        "--publish", "127.0.0.1::8080",
        image,
    )  # fmt: skip
    try:
        port = run(docker, "port", cid, "8080/tcp").splitlines()[0].rsplit(":", 1)[1]
        yield cid, f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([docker, "logs", cid], capture_output=True)
        subprocess.run([docker, "rm", "--force", cid], capture_output=True)


def health(cid: str) -> str:
    return run(engine(), "inspect", "--format", "{{.State.Health.Status}}", cid)


def token(path: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": f"https://cds.image-test.example{path}",
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, KEY, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


def hook_calls_counted(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "cds_requests"
        for sample in family.samples
        if sample.name == "cds_requests_total" and sample.labels.get("service") == SERVICE_ID
    )


def signed_call(base: str) -> httpx.Response:
    path = f"/cds-services/{SERVICE_ID}"
    with httpx.Client() as client:  # a new connection per call, so calls spread over workers
        return client.post(
            base + path,
            json=REQUEST,
            headers={"Authorization": f"Bearer {token(path)}"},
            timeout=30,
        )


def test_image_runs_as_deployed(container: tuple[str, str]) -> None:
    cid, base = container
    docker = engine()
    for _ in range(90):
        if health(cid) != "starting":
            break
        time.sleep(1)
    logs = subprocess.run([docker, "logs", cid], capture_output=True, text=True).stderr
    assert health(cid) == "healthy", logs
    # Non-root, read-only root filesystem.
    assert run(docker, "exec", cid, "id", "-u") == "10001"
    assert run(docker, "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", cid) == "true"
    denied = subprocess.run(
        [docker, "exec", cid, "touch", "/app/x"], capture_output=True, text=True
    )
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    # Nothing failed for want of a writable place; `serve` turns gunicorn's control socket off.
    assert "PermissionError" not in logs and "control socket" not in logs, logs
    run(docker, "exec", cid, "test", "!", "-e", "/tmp/gunicorn.ctl")
    # A signed call is answered; an unsigned one refused.
    path = f"/cds-services/{SERVICE_ID}"
    assert httpx.post(base + path, json=REQUEST, timeout=10).status_code == 401
    answered = signed_call(base)
    assert answered.status_code == 200, answered.text
    assert answered.json()["cards"]
    # /metrics adds up every worker: CALLS concurrent calls on fresh connections, all counted.
    before = hook_calls_counted(base)
    with ThreadPoolExecutor(8) as pool:
        statuses = [r.status_code for r in pool.map(lambda _: signed_call(base), range(CALLS))]
    assert statuses == [200] * CALLS
    assert hook_calls_counted(base) - before == CALLS
    files = run(docker, "exec", cid, "ls", "/run/prometheus").split()
    pids = {name.rsplit("_", 1)[1] for name in files if name.startswith("counter_")}
    assert len(pids) >= WORKERS, files  # every worker wrote its own counts
    # The SBOM made at build is in the image and lists the locked dependencies.
    sbom = json.loads(run(docker, "exec", cid, "cat", "/app/sbom.cdx.json"))
    names = {component["name"].lower() for component in sbom["components"]}
    assert {"flask", "gunicorn", "psycopg", "cds-service"} <= names
