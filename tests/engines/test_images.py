"""worker/images.py without Docker: apt sources, hashes and tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker import images


def test_parse_deb822() -> None:
    text = (
        "Types: deb deb-src\n"
        "# a comment\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        " contrib\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "Enabled: no\n"
    )
    paragraphs = images._parse_deb822(text)
    assert paragraphs[0]["uris"] == "http://mirror.example/debian"
    assert paragraphs[0]["components"] == "main contrib"
    assert paragraphs[1]["enabled"] == "no"


def test_parse_one_line_sources() -> None:
    text = (
        "deb [signed-by=/k.gpg arch=amd64] http://m.example/debian bookworm main contrib\n"
        "# deb http://old.example/debian bullseye main\n"
        "deb-src http://m.example/debian bookworm main\n"
    )
    assert images._parse_one_line(text) == [
        images.AptSource("http://m.example/debian", ("bookworm",), ("main", "contrib"))
    ]


def test_apt_mirror_reads_the_machine_sources(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://a.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://a.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    monkeypatch.setattr(images, "_APT_SOURCES_DIR", d)
    monkeypatch.setattr(images, "_APT_SOURCES_LIST", tmp_path / "missing.list")
    assert images.apt_mirror() == "http://a.example/debian"
    assert [s.suites for s in images._rootfs_sources("bookworm", "http://a.example/debian")] == [
        ("bookworm",),
        ("bookworm-updates",),
        ("bookworm-security",),
    ]
    # A suite the sources do not list comes from the mirror of the machine's own release,
    # in the same role (an engine may need a newer Debian than the host's).
    monkeypatch.setattr(images, "host_codename", lambda: "bookworm")
    assert images.apt_mirror("trixie") == "http://a.example/debian"
    assert images._rootfs_sources("trixie", "http://a.example/debian") == [
        images.AptSource("http://a.example/debian", ("trixie",), ("main",)),
        images.AptSource("http://a.example/debian", ("trixie-updates",), ("main",)),
        images.AptSource("http://a.example/debian-security", ("trixie-security",), ("main",)),
    ]
    monkeypatch.setattr(images, "host_codename", lambda: None)  # not a Debian host
    with pytest.raises(images.ImageBuildError):
        images.apt_mirror("trixie")
    tag = images.base_image_tag()
    assert tag.startswith("codeactions/base:") and len(tag.partition(":")[2]) == 16
    assert images.base_image_tag(mirror="http://b.example/debian") != tag


def test_engine_tag_follows_the_folder_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engine = tmp_path / "cobol"
    engine.mkdir()
    (engine / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    (engine / "harness.cob").write_text("v1")
    monkeypatch.setenv(images.ENGINES_DIR_ENV, str(tmp_path))
    mirror = "http://a.example/debian"
    assert images.available_languages() == ["cobol"]
    first = images.engine_image_tag("cobol", mirror=mirror)
    assert first.startswith("codeactions/engine-cobol:")
    assert images.engine_image_tag("cobol", mirror=mirror) == first
    (engine / "__pycache__").mkdir()
    (engine / "__pycache__" / "x.pyc").write_bytes(b"ignored")
    assert images.engine_image_tag("cobol", mirror=mirror) == first
    (engine / "harness.cob").write_text("v2")
    assert images.engine_image_tag("cobol", mirror=mirror) != first
    assert images.engine_image_tag("cobol", mirror="http://b.example/debian") != first


def test_unknown_or_invalid_language(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(images.ENGINES_DIR_ENV, str(tmp_path))
    with pytest.raises(images.ImageBuildError):
        images.engine_image_tag("ruby", mirror="http://a.example/debian")
    with pytest.raises(ValueError):
        images.engine_image_tag("../etc", mirror="http://a.example/debian")


def test_engine_suite_comes_from_the_dockerfile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, dockerfile in (
        ("plain", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"),
        ("newer", "ARG BASE_IMAGE\n# the base image's suite\nARG DEBIAN_SUITE=trixie\n"
                  "FROM ${BASE_IMAGE}\n"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text(dockerfile)
    monkeypatch.setenv(images.ENGINES_DIR_ENV, str(tmp_path))
    assert images.engine_suite("plain") == "bookworm"
    assert images.engine_suite("newer") == "trixie"
    mirror = "http://a.example/debian"
    assert images.engine_image_tag("newer", mirror=mirror) != images.engine_image_tag(
        "newer", suite="bookworm", mirror=mirror)
    assert images.engine_suite("python", root=Path(images.__file__).parents[1] / "engines") == (
        "trixie")


def test_pip_settings_follow_the_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The build stage gets the index, proxy and CA this machine's pip uses; local-only
    settings (file:// indexes, find-links, constraints) stay behind."""
    import os

    from worker import pip_settings

    for name in list(os.environ):  # this machine's own pip settings stay out of the test
        if name.startswith("PIP_") or name.lower() in ("https_proxy", "http_proxy"):
            monkeypatch.delenv(name)
    cert = tmp_path / "ca.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\nindex-url = https://mirror.example/simple\n"
        "extra-index-url = file:///opt/local/simple https://extra.example/simple\n"
        f"find-links = /opt/wheels\nconstraint = /etc/constraints.txt\ncert = {cert}\n"
        "[install]\ntrusted-host = mirror.example\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_TIMEOUT", "90")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    out = tmp_path / "context" / ".build" / "pip"
    written = pip_settings.write_pip_settings(out).read_text()
    lines = [line for line in written.splitlines() if not line.startswith("#")]
    assert lines == [
        "[global]",
        "index-url = https://mirror.example/simple",
        "extra-index-url = https://extra.example/simple",
        "trusted-host = mirror.example",
        "proxy = http://proxy.example:3128",
        "timeout = 90",
        f"cert = {pip_settings.BUILD_PATH}/cert.pem",
    ]
    assert (out / "cert.pem").read_text() == cert.read_text()
    # Nothing configured: an empty [global], pip's defaults.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.delenv("PIP_TIMEOUT")
    monkeypatch.delenv("HTTPS_PROXY")
    bare = pip_settings.write_pip_settings(tmp_path / "bare").read_text().splitlines()
    assert bare[1:] == ["[global]"]
