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
