"""Engine images built locally, without a container registry.

No image can be pulled here, so every engine image starts from a Debian root filesystem made
with ``debootstrap`` from the machine's own apt mirror (read from the apt sources, never
hard-coded) and imported into Docker as ``codeactions/base:<hash>``. Each language is then
layered on top from ``engines/<language>/Dockerfile`` as ``codeactions/engine-<language>:<hash>``.

Both tags are content hashes, so a build is skipped whenever an image with the tag exists:

- base hash: builder version, suite, variant, mirror, ``--include`` list and the apt sources
  written into the root filesystem;
- engine hash: builder version, base tag and every file under ``engines/<language>/``.

Adding a language is adding a folder with a ``Dockerfile`` (taking ``ARG BASE_IMAGE``). A
Dockerfile that needs another Debian release than bookworm says so with
``ARG DEBIAN_SUITE=<suite>`` (e.g. trixie, for a newer Python); a suite the machine's apt
sources do not list comes from the mirror of the machine's own Debian release. An engine with
a ``requirements.txt`` gets the machine's pip index settings (``pip_settings.py``) in its build
context at ``.build/pip/``, for a build stage to install from; they are not part of the hash
(they say where packages come from, not which).
Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from worker.pip_settings import write_pip_settings

log = logging.getLogger(__name__)

#: Bump to invalidate every cached image (base and engines) after a change to this module
#: that alters what gets built.
BUILDER_VERSION = "2"

BASE_REPOSITORY = "codeactions/base"
ENGINE_REPOSITORY_PREFIX = "codeactions/engine-"
DEFAULT_SUITE = "bookworm"
DEFAULT_VARIANT = "minbase"
#: Packages added to the minbase root filesystem. Keep this small: languages add their own.
BASE_INCLUDE: tuple[str, ...] = ("ca-certificates",)
DEFAULT_COMPONENTS: tuple[str, ...] = ("main",)
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: Characters of the sha256 hex digest used in tags and labels (64 bits).
HASH_LENGTH = 16
#: Environment variable naming the folder that holds ``<language>/Dockerfile``.
ENGINES_DIR_ENV = "FLOWS_CODE_ACTIONS_ENGINES_DIR"

_APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
_APT_SOURCES_LIST = Path("/etc/apt/sources.list")
_OS_RELEASE = Path("/etc/os-release")
_SUITE_ARG_RE = re.compile(r"^\s*ARG\s+DEBIAN_SUITE\s*=\s*([a-z][a-z0-9-]*)\s*$", re.MULTILINE)
#: Where an engine's build context gets the machine's pip settings (never hashed or kept).
BUILD_SETTINGS_DIR = ".build"
_HASH_EXCLUDED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_HASH_EXCLUDED_SUFFIXES = (".pyc", ".pyo", "~", ".swp")
# Read by the platform (catalog, docs), never copied into an image: no rebuild for them.
_HASH_EXCLUDED_NAMES = {"libraries.txt", "README.md"}
_LANGUAGE_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DPKG_NODOC = """\
# Written by codeactions worker/images.py: engine images carry no documentation.
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/groff/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/linda/*
path-exclude=/usr/share/locale/*
"""
_APT_CONF = """\
// Written by codeactions worker/images.py.
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
"""


class ImageBuildError(RuntimeError):
    """An engine or base image could not be built."""


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` entry of the apt sources: a URI with its suites and components."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


# --------------------------------------------------------------------------- apt sources


def _parse_deb822(text: str) -> list[dict[str, str]]:
    """Paragraphs of a deb822 file as ``field(lowercase) -> value`` (continuations joined)."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                paragraphs.append(current)
            current, last = {}, None
            continue
        if raw[0] in " \t":
            if last is not None:
                current[last] += " " + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        last = key.strip().lower()
        current[last] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def _parse_one_line(text: str) -> list[AptSource]:
    """``deb [options] uri suite component...`` lines of a classic sources.list."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line[4:])
        parts = line.split()
        if len(parts) >= 2:
            sources.append(AptSource(parts[0], (parts[1],), tuple(parts[2:])))
    return sources


def apt_sources() -> list[AptSource]:
    """The ``deb`` entries configured on this machine, in apt's reading order."""
    sources: list[AptSource] = []
    files: list[Path] = []
    if _APT_SOURCES_LIST.is_file():
        files.append(_APT_SOURCES_LIST)
    if _APT_SOURCES_DIR.is_dir():
        files.extend(sorted(_APT_SOURCES_DIR.iterdir()))
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if path.suffix == ".sources":
            for para in _parse_deb822(text):
                if "deb" not in para.get("types", "").split():
                    continue
                if para.get("enabled", "yes").lower() == "no":
                    continue
                suites = tuple(para.get("suites", "").split())
                components = tuple(para.get("components", "").split())
                for uri in para.get("uris", "").split():
                    sources.append(AptSource(uri, suites, components))
        elif path.suffix == ".list" or path == _APT_SOURCES_LIST:
            sources.extend(_parse_one_line(text))
    return [s for s in sources if s.uri.startswith(("http://", "https://"))]


def host_codename() -> str | None:
    """The machine's own Debian release (``VERSION_CODENAME`` of /etc/os-release)."""
    try:
        text = _OS_RELEASE.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^VERSION_CODENAME=\"?([a-z][a-z0-9-]*)\"?\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


def _source_for(suite: str, sources: list[AptSource]) -> str | None:
    """The URI serving ``suite``: a source listing it, else the one serving the machine's own
    release in the same role (``trixie-security`` from the source of ``bookworm-security``):
    one Debian mirror serves every release."""
    for source in sources:
        if suite in source.suites:
            return source.uri.rstrip("/")
    host = host_codename()
    release, _, role = suite.partition("-")
    if host is None or release == host:
        return None
    own = f"{host}-{role}" if role else host
    for source in sources:
        if own in source.suites:
            return source.uri.rstrip("/")
    return None


def apt_mirror(suite: str = DEFAULT_SUITE) -> str:
    """The mirror URI serving ``suite``: the configured ``deb`` entry that lists it, else the
    one serving the machine's own Debian release."""
    uri = _source_for(suite, apt_sources())
    if uri is None:
        raise ImageBuildError(
            f"no apt source for suite {suite!r} (nor for this machine's own Debian release) "
            f"in {_APT_SOURCES_LIST} or {_APT_SOURCES_DIR}/"
        )
    return uri


def _rootfs_sources(suite: str, mirror: str) -> list[AptSource]:
    """Sources the base image's apt uses: the mirror for ``suite``, plus ``<suite>-updates``
    and ``<suite>-security`` when the machine has them (or has them for its own release)."""
    wanted = [AptSource(mirror, (suite,), DEFAULT_COMPONENTS)]
    sources = apt_sources()
    for extra in (f"{suite}-updates", f"{suite}-security"):
        uri = _source_for(extra, sources)
        if uri is not None:
            wanted.append(AptSource(uri, (extra,), DEFAULT_COMPONENTS))
    return wanted


def _render_deb822(sources: list[AptSource]) -> str:
    blocks = []
    for s in sources:
        blocks.append(
            "Types: deb\n"
            f"URIs: {s.uri}\n"
            f"Suites: {' '.join(s.suites)}\n"
            f"Components: {' '.join(s.components)}\n"
            f"Signed-By: {KEYRING}\n"
        )
    return "\n".join(blocks)


# --------------------------------------------------------------------------- hashes and tags


def _digest(payload: Any) -> str:
    data = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:HASH_LENGTH]


def _base_spec(suite: str, mirror: str) -> dict[str, Any]:
    return {
        "builder": BUILDER_VERSION,
        "suite": suite,
        "variant": DEFAULT_VARIANT,
        "mirror": mirror,
        "include": sorted(BASE_INCLUDE),
        "sources": [
            [s.uri, list(s.suites), list(s.components)] for s in _rootfs_sources(suite, mirror)
        ],
        "dpkg": _DPKG_NODOC,
        "apt": _APT_CONF,
    }


def base_image_tag(*, suite: str = DEFAULT_SUITE, mirror: str | None = None) -> str:
    """``codeactions/base:<hash>`` for the current mirror and builder, without building."""
    mirror = (mirror or apt_mirror(suite)).rstrip("/")
    return f"{BASE_REPOSITORY}:{_digest(_base_spec(suite, mirror))}"


def engines_dir() -> Path:
    """The folder holding one ``<language>/`` folder per engine."""
    override = os.environ.get(ENGINES_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "engines"


def available_languages(root: Path | None = None) -> list[str]:
    """Languages that have an engine folder with a Dockerfile."""
    root = root or engines_dir()
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and _LANGUAGE_RE.match(p.name) and (p / "Dockerfile").is_file()
    )


def _language_dir(language: str, root: Path | None = None) -> Path:
    if not _LANGUAGE_RE.match(language):
        raise ValueError(f"invalid engine language name: {language!r}")
    path = (root or engines_dir()) / language
    if not (path / "Dockerfile").is_file():
        raise ImageBuildError(f"no engine for {language!r}: {path / 'Dockerfile'} is missing")
    return path


def engine_suite(language: str, root: Path | None = None) -> str:
    """The Debian suite an engine's base image is made from: its Dockerfile's
    ``ARG DEBIAN_SUITE=<suite>``, else bookworm."""
    dockerfile = _language_dir(language, root) / "Dockerfile"
    match = _SUITE_ARG_RE.search(dockerfile.read_text(encoding="utf-8"))
    return match.group(1) if match else DEFAULT_SUITE


def _context_files(path: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in _HASH_EXCLUDED_DIRS)
        for name in sorted(filenames):
            if not name.endswith(_HASH_EXCLUDED_SUFFIXES) and name not in _HASH_EXCLUDED_NAMES:
                yield Path(dirpath) / name


def _engine_hash(language: str, base_tag: str, root: Path | None = None) -> str:
    path = _language_dir(language, root)
    h = hashlib.sha256()
    h.update(f"builder={BUILDER_VERSION}\0base={base_tag}\0language={language}\0".encode())
    for file in _context_files(path):
        rel = file.relative_to(path).as_posix()
        content = file.read_bytes()
        h.update(f"{rel}\0{len(content)}\0".encode())
        h.update(content)
    return h.hexdigest()[:HASH_LENGTH]


def engine_image_tag(
    language: str, *, suite: str | None = None, mirror: str | None = None
) -> str:
    """``codeactions/engine-<language>:<hash>`` for the current sources, without building.
    ``suite`` defaults to the engine's own (``engine_suite``).

    The worker compares this with the local images and refuses to run a language whose
    image is not built.
    """
    base_tag = base_image_tag(suite=suite or engine_suite(language), mirror=mirror)
    return f"{ENGINE_REPOSITORY_PREFIX}{language}:{_engine_hash(language, base_tag)}"


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


# --------------------------------------------------------------------------- building


@contextlib.contextmanager
def _build_lock(name: str) -> Iterator[None]:
    """Serialise image builds between processes of this host (one Docker engine). Not
    reentrant: never nest two builds."""
    path = Path(tempfile.gettempdir()) / "codeactions-images.lock"
    log.debug("waiting for the image build lock for %s", name)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    mounts: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mounts", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 1:
                target = fields[1].replace("\\040", " ")
                if target.startswith(prefix):
                    mounts.append(target)
    return mounts


def _remove_tree(path: Path) -> None:
    """Remove a debootstrap target, unmounting anything a failed run left mounted in it."""
    for target in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
    if _mounts_under(path):  # never recurse into a live /proc or /sys
        raise ImageBuildError(f"cannot remove {path}: filesystems still mounted in it")
    shutil.rmtree(path, ignore_errors=True)


def _prune_rootfs(rootfs: Path, suite: str, mirror: str) -> None:
    """Make the debootstrapped tree a clean, small, host-agnostic image filesystem."""
    sources = rootfs / "etc/apt/sources.list"
    sources.unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
        _render_deb822(_rootfs_sources(suite, mirror)), encoding="utf-8"
    )
    (rootfs / "etc/apt/apt.conf.d/90codeactions").write_text(_APT_CONF, encoding="utf-8")
    (rootfs / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/dpkg/dpkg.cfg.d/90codeactions-nodoc").write_text(_DPKG_NODOC, encoding="utf-8")
    # Host details debootstrap copied in; Docker provides its own at run time.
    for name in ("etc/resolv.conf", "etc/hostname"):
        target = rootfs / name
        if target.is_symlink() or target.exists():
            target.unlink()
        target.write_text("", encoding="utf-8")
    for pattern in (
        "var/cache/apt/archives/*.deb",
        "var/cache/apt/*.bin",
        "var/lib/apt/lists/*_*",
        "var/log/*.log",
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
    ):
        for item in rootfs.glob(pattern):
            if item.is_file() or item.is_symlink():
                item.unlink()
    share = rootfs / "usr/share"
    for sub in ("man", "info", "groff", "lintian", "linda", "locale"):
        target = share / sub
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    doc = share / "doc"
    if doc.is_dir():
        for item in doc.rglob("*"):
            if item.is_file() and item.name != "copyright":
                item.unlink()


def build_base_image(
    client: docker.DockerClient,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str | None = None,
    force: bool = False,
) -> str:
    """Debootstrap ``suite`` (variant minbase) from the configured mirror and import it.

    Returns ``codeactions/base:<hash>``. Skipped when an image with that tag exists. Needs
    root and ``debootstrap``; takes about a minute when it does run.
    """
    mirror = (mirror or apt_mirror(suite)).rstrip("/")
    tag = base_image_tag(suite=suite, mirror=mirror)
    if not force and image_exists(client, tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed (apt-get install debootstrap)")
    if not Path(KEYRING).is_file():
        raise ImageBuildError(f"{KEYRING} is missing (apt-get install debian-archive-keyring)")
    with _build_lock(tag):
        if not force and image_exists(client, tag):
            return tag
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="codeactions-base-", dir="/var/tmp"))
        try:
            rootfs = workdir / "rootfs"
            rootfs.mkdir()
            command = [
                "debootstrap",
                f"--variant={DEFAULT_VARIANT}",
                f"--include={','.join(sorted(BASE_INCLUDE))}",
                f"--components={','.join(DEFAULT_COMPONENTS)}",
                "--force-check-gpg",
                f"--keyring={KEYRING}",
                suite,
                str(rootfs),
                mirror,
            ]
            log.info("building %s: %s", tag, " ".join(command))
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr)[-4000:]
                raise ImageBuildError(f"debootstrap failed ({proc.returncode}):\n{tail}")
            _prune_rootfs(rootfs, suite, mirror)
            tarball = workdir / "rootfs.tar"
            subprocess.run(
                [
                    "tar",
                    "--numeric-owner",
                    "--xattrs",
                    "--acls",
                    "-C",
                    str(rootfs),
                    "--exclude=./proc/*",
                    "--exclude=./sys/*",
                    "--exclude=./dev/*",
                    "-cf",
                    str(tarball),
                    ".",
                ],
                check=True,
                capture_output=True,
            )
            repository, _, version = tag.partition(":")
            client.api.import_image_from_file(
                str(tarball),
                repository=repository,
                tag=version,
                changes=[
                    f"ENV {_PATH_ENV}",
                    "ENV LANG=C.UTF-8",
                    'CMD ["/bin/bash"]',
                    f'LABEL codeactions.base="{suite}"',
                    f'LABEL codeactions.hash="{version}"',
                ],
            )
            if not image_exists(client, tag):
                raise ImageBuildError(f"docker import did not produce {tag}")
        except subprocess.CalledProcessError as exc:
            raise ImageBuildError(f"{exc.cmd[0]} failed: {exc.stderr!r}") from exc
        finally:
            _remove_tree(workdir)
        log.info("built %s in %.1f s", tag, time.monotonic() - started)
    return tag


def build_engine_image(
    client: docker.DockerClient,
    language: str,
    *,
    suite: str | None = None,
    mirror: str | None = None,
    force: bool = False,
) -> str:
    """Build ``codeactions/engine-<language>:<hash>`` from ``engines/<language>/Dockerfile``.

    The base image (of the engine's suite, unless ``suite`` is given) is built first when
    missing. The build uses the host network so that ``apt-get`` inside reaches the mirror
    in the base image's sources (and pip the machine's index). Skipped when an image with the
    tag exists.
    """
    path = _language_dir(language)
    suite = suite or engine_suite(language)
    base_tag = build_base_image(client, suite=suite, mirror=mirror)
    digest = _engine_hash(language, base_tag)
    tag = f"{ENGINE_REPOSITORY_PREFIX}{language}:{digest}"
    if not force and image_exists(client, tag):
        return tag
    with _build_lock(tag):
        if not force and image_exists(client, tag):
            return tag
        started = time.monotonic()
        log.info("building %s from %s on %s", tag, path, base_tag)
        with _build_context(path) as context:
            _docker_build(client, context, tag, language, digest, base_tag)
        log.info("built %s in %.1f s", tag, time.monotonic() - started)
    return tag


@contextlib.contextmanager
def _build_context(path: Path) -> Iterator[Path]:
    """The engine's folder, or a copy of it with the machine's pip settings in
    ``.build/pip/`` when the engine installs from a ``requirements.txt``."""
    if not (path / "requirements.txt").is_file():
        yield path
        return
    workdir = Path(tempfile.mkdtemp(prefix="codeactions-context-"))
    try:
        context = workdir / path.name
        shutil.copytree(path, context, ignore=shutil.ignore_patterns(*_HASH_EXCLUDED_DIRS))
        write_pip_settings(context / BUILD_SETTINGS_DIR / "pip")
        yield context
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _docker_build(
    client: docker.DockerClient, context: Path, tag: str, language: str, digest: str,
    base_tag: str,
) -> None:
    output: list[str] = []
    error: str | None = None
    for chunk in client.api.build(
        path=str(context),
        tag=tag,
        buildargs={"BASE_IMAGE": base_tag},
        labels={
            "codeactions.engine": language,
            "codeactions.hash": digest,
            "codeactions.base_image": base_tag,
        },
        network_mode="host",
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    ):
        if "stream" in chunk:
            line = str(chunk["stream"]).rstrip()
            if line:
                output.append(line)
                log.debug("%s | %s", language, line)
        if "error" in chunk:
            error = str(chunk.get("error"))
    if error is not None or not image_exists(client, tag):
        tail = "\n".join(output[-40:])
        raise ImageBuildError(f"building {tag} failed: {error}\n{tail}")


def ensure_images(
    client: docker.DockerClient,
    languages: Iterable[str] | None = None,
    *,
    suite: str | None = None,
    mirror: str | None = None,
) -> dict[str, str]:
    """Build whatever is missing; returns ``language -> engine image tag``.

    ``languages`` defaults to every folder under ``engines/`` that has a Dockerfile.
    """
    wanted = list(languages) if languages is not None else available_languages()
    return {
        language: build_engine_image(client, language, suite=suite, mirror=mirror)
        for language in wanted
    }


def remove_stale_images(client: docker.DockerClient, keep: Iterable[str]) -> list[str]:
    """Remove older tags of the repositories of ``keep`` (e.g. what ``ensure_images``
    returned), then base images no remaining engine image was built on.

    Never called implicitly: another worker on the host may still run an older version.
    Images in use by a container are left alone, and nothing is removed while a build runs
    on this host (it holds the build lock): a base image no engine image refers to yet may be
    the one a build is using. Returns the tags removed.
    """
    with _build_lock("pruning"):
        return _remove_stale_images(client, keep)


def _remove_stale_images(client: docker.DockerClient, keep: Iterable[str]) -> list[str]:
    kept = set(keep)
    repositories = {tag.rpartition(":")[0] for tag in kept}
    removed: list[str] = []

    def _remove(tag: str) -> None:
        try:
            client.images.remove(tag)
        except docker.errors.APIError as exc:
            log.info("keeping %s: %s", tag, exc)
        else:
            removed.append(tag)

    for image in client.images.list():
        for tag in image.tags:
            if tag.rpartition(":")[0] in repositories and tag not in kept:
                _remove(tag)
    in_use: set[str] = set()
    bases: list[str] = []
    for image in client.images.list():
        labels = image.labels or {}
        if "codeactions.engine" in labels and labels.get("codeactions.base_image"):
            in_use.add(labels["codeactions.base_image"])
        bases.extend(t for t in image.tags if t.rpartition(":")[0] == BASE_REPOSITORY)
    for language in available_languages():
        with contextlib.suppress(ImageBuildError, OSError):
            in_use.add(base_image_tag(suite=engine_suite(language)))
    for tag in bases:
        if tag not in in_use and tag not in kept:
            _remove(tag)
    return removed
