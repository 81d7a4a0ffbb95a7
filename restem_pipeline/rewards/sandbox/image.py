"""Build the sandbox image locally, with no registry: debootstrap + ``docker import`` + one layer.

Step 1 (minutes, once): ``debootstrap --variant=minbase --include=python3 bookworm`` into a temporary
directory (the full ``python3`` standard library: ``python3-minimal`` lacks json, decimal, unittest),
prune docs, locales and apt caches, and ``docker import`` it as ``restem-sandbox-base:<hash>``.
Step 2 (seconds): a classic ``docker build`` ``FROM`` that local base (``pull=False``, no network)
adds the trusted runner (:mod:`restem_pipeline.rewards.sandbox.runner`) and the modules it runs beside it.

Tags are content hashes: the base tag hashes the base recipe (suite, variant, packages, pruned
paths); the image tag also hashes the runner source and the Dockerfile, so editing the runner
rebuilds only step 2, and a second ``restem sandbox build`` is a no-op. Needs root and the
``debootstrap`` binary for step 1 (``scripts/setup_docker.sh`` installs it). Nothing is cached in
the repository; images live in the local engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

IMAGE_REPO = "restem-sandbox"
BASE_REPO = "restem-sandbox-base"
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3",)
PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/log",
)
MIRROR = "http://deb.debian.org/debian"
RUNNER_PATH = Path(__file__).with_name("runner.py")
# The runner and what it runs beside it, copied together into /opt/restem (standard library only).
IN_IMAGE_MODULES = ("runner.py", "zygote.py", "checker.py", "plaindata.py")
RUNNER_IN_IMAGE = "/opt/restem/runner.py"
DOCKERFILE = """\
FROM {base}
COPY {modules} /opt/restem/
ENV LANG=C.UTF-8
WORKDIR /tmp
CMD ["python3", "-I", "-B", "{runner}"]
"""
DEBOOTSTRAP_TIMEOUT_S = 1800


class ImageBuildError(RuntimeError):
    """The sandbox image could not be built (message says which step and why)."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def base_tag() -> str:
    recipe = {"suite": SUITE, "variant": VARIANT, "packages": PACKAGES, "prune": PRUNE}
    return _sha(json.dumps(recipe, sort_keys=True))


def image_sources() -> str:
    """The in-image modules' sources (the runner first, from ``RUNNER_PATH``)."""
    others = [Path(__file__).with_name(m).read_text() for m in IN_IMAGE_MODULES[1:]]
    return "\n".join([RUNNER_PATH.read_text(), *others])


def image_tag() -> str:
    return _sha(base_tag() + image_sources() + DOCKERFILE)


def image_ref() -> str:
    """``restem-sandbox:<content hash>``: the image the docker backend runs."""
    return f"{IMAGE_REPO}:{image_tag()}"


def base_ref() -> str:
    return f"{BASE_REPO}:{base_tag()}"


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_image(
    client: docker.DockerClient | None = None, *, log: Callable[[str], None] = print, mirror: str | None = None
) -> str:
    """Build (if missing) and return the sandbox image reference. Idempotent."""
    client = client or docker.from_env(timeout=600)
    ref = image_ref()
    if image_exists(client, ref):
        log(f"sandbox image {ref} is up to date")
        return ref
    base = base_ref()
    if image_exists(client, base):
        log(f"base image {base} present")
    else:
        _build_base(client, base, mirror or os.environ.get("RESTEM_DEBIAN_MIRROR", MIRROR), log)
    with tempfile.TemporaryDirectory(prefix="restem-ctx-") as ctx:
        shutil.copy(RUNNER_PATH, Path(ctx) / "runner.py")
        for name in IN_IMAGE_MODULES[1:]:
            shutil.copy(Path(__file__).with_name(name), Path(ctx) / name)
        dockerfile = DOCKERFILE.format(base=base, runner=RUNNER_IN_IMAGE, modules=" ".join(IN_IMAGE_MODULES))
        (Path(ctx) / "Dockerfile").write_text(dockerfile)
        log(f"building {ref} from {base}")
        try:
            client.images.build(
                path=ctx,
                tag=ref,
                pull=False,
                rm=True,
                forcerm=True,
                network_mode="none",
                labels={"restem.sandbox": "1", "restem.recipe": image_tag()},
            )
        except (docker.errors.BuildError, docker.errors.APIError) as e:
            raise ImageBuildError(f"docker build of {ref} failed: {e}") from e
    log(f"built {ref}")
    return ref


def _build_base(client: docker.DockerClient, base: str, mirror: str, log: Callable[[str], None]) -> None:
    if os.geteuid() != 0:
        raise ImageBuildError("building the base image runs debootstrap, which needs root")
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise ImageBuildError("debootstrap is not installed: run `bash scripts/setup_docker.sh` first")
    work = Path(tempfile.mkdtemp(prefix="restem-rootfs-", dir=os.environ.get("RESTEM_BUILD_TMP")))
    try:
        root = work / "root"
        cmd = [debootstrap, f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror]
        log(f"debootstrap {SUITE} with {','.join(PACKAGES)} from {mirror} (a few minutes)")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise ImageBuildError(f"debootstrap took over {DEBOOTSTRAP_TIMEOUT_S}s") from e
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise ImageBuildError(f"debootstrap failed (exit {proc.returncode}):\n{tail}")
        for rel in PRUNE:
            target = root / rel
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir(mode=0o755)
        if not (root / "usr/lib/python3.11/json/__init__.py").exists():
            raise ImageBuildError("the debootstrapped root has no full python3 standard library")
        tar = work / "rootfs.tar"
        proc = subprocess.run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(tar), "."],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise ImageBuildError(f"tar of the root failed: {proc.stderr[-1000:]}")
        repo, tag = base.split(":")
        log(f"importing {base} ({tar.stat().st_size >> 20} MiB)")
        try:
            client.api.import_image(src=str(tar), repository=repo, tag=tag, changes=["LABEL restem.sandbox=1"])
        except docker.errors.APIError as e:
            raise ImageBuildError(f"docker import failed: {e}") from e
        if not image_exists(client, base):
            raise ImageBuildError(f"docker import reported success but {base} is missing")
    finally:
        shutil.rmtree(work, ignore_errors=True)
