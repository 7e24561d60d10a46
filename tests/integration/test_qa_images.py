"""QA of the images issue: what the other image tests did not pin down."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.usefixtures("unprivileged")


def test_image_pulled_by_digest_is_listed_with_its_repository_and_digest(rl, registry, images):
    digest = images.info("busybox")["manifests"][f"linux/{images.host_arch}"]
    ref = f"{registry.host}/busybox@{digest}"
    iid = rl.ok("pull", "-q", ref).strip()
    rows = rl.ok("images", "--digests").splitlines()
    assert rows[1].split()[:3] == [f"{registry.host}/busybox", "<none>", digest], rows
    js = [json.loads(x) for x in rl.ok("images", "--format", "json").splitlines()]   # Docker: JSON lines
    assert [(j["Repository"], j["Tag"], j["Digest"], j["ID"]) for j in js] == \
        [(f"{registry.host}/busybox", "<none>", digest, iid[7:19])]
    assert rl.ok("images", "--format", "{{.Repository}}@{{.Digest}}") == f"{registry.host}/busybox@{digest}\n"
    assert rl.ok("run", "--rm", "--network", "none", "--pull=never", ref, "echo", "ran") == "ran\n"


def test_docker_schema2_manifest_list(rl, empty_registry, images):
    """The test images are OCI; skopeo converts them to Docker's schema 2 (manifest list + manifests)."""
    skopeo = shutil.which("skopeo") or "/usr/bin/skopeo"
    cp = subprocess.run([skopeo, "--insecure-policy", "copy", "--quiet", "--all", "--format", "v2s2",
                         "--dest-tls-verify=false", f"oci:{images.layout('busybox')}:latest",
                         f"docker://{empty_registry.host}/dockerfmt:latest"], capture_output=True, text=True,
                        env={"TMPDIR": str(empty_registry.workdir), "PATH": "/usr/bin:/bin"})
    assert cp.returncode == 0, cp.stderr
    raw = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false",
                          f"docker://{empty_registry.host}/dockerfmt:latest"], capture_output=True, text=True)
    assert json.loads(raw.stdout)["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    ref = empty_registry.ref("dockerfmt")
    host = json.loads(rl.ok("image", "inspect", ref) if rl("pull", "-q", ref).returncode == 0 else "[{}]")[0]
    assert host.get("Architecture") == images.host_arch
    foreign = "arm64" if images.host_arch == "amd64" else "amd64"
    rl.ok("pull", "-q", "--platform", f"linux/{foreign}", ref)
    other = json.loads(rl.ok("image", "inspect", "--platform", f"linux/{foreign}", ref))[0]
    assert other["Architecture"] == foreign and other["Id"] != host["Id"]
    assert json.loads(rl.ok("image", "inspect", ref))[0]["Id"] == host["Id"]   # the host's stays the tag's
    assert rl.ok("run", "--rm", "--network", "none", ref, "echo", "schema2") == "schema2\n"
