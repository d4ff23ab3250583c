"""The Python engine's runtime against the old service's (SPEC.md, "The old Python runtime"):
Python >= 3.12, every package the old runtime pinned at its version, ffmpeg for pydub, a
catalog that says what the image really has, and warm environments that still import ahead
what a code imports. Real image, real hardened containers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from textwrap import dedent

import pytest

from .conftest import RunOutput, Runner, run_engine, run_engine_warm

HERE = Path(__file__).resolve().parent
OLD_PINS = HERE / "old_python_runtime_requirements.txt"
REQUIREMENTS = HERE.parents[1] / "engines" / "python" / "requirements.txt"
#: Old pins the image has at another version, with why (the README lists them too). None:
#: every old pin installs on Python 3.13 as it is.
DEVIATIONS: dict[str, str] = {}


def pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a requirements file, by normalised name."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return found


def src(text: str) -> str:
    return dedent(text).lstrip("\n")


def _completed(out: RunOutput) -> None:
    assert out.end == {"t": "end", "status": "completed"}, (out.frames, out.stderr)


# ----------------------------------------------------------------------------- packages


def test_requirements_keep_every_old_pin() -> None:
    old, ours = pins(OLD_PINS), pins(REQUIREMENTS)
    assert len(old) == 89
    for name, version in old.items():
        if name in DEVIATIONS:
            assert ours[name] != version, f"{name}: no longer a deviation"
        else:
            assert ours.get(name) == version, f"{name}=={version} is not pinned"


IMPORT_EVERYTHING = src(
    """
    import importlib, importlib.metadata, importlib.util, json, re, sys

    def Run(engine):
        wanted = json.loads(engine.body)
        modules_of = {}
        for module, dists in importlib.metadata.packages_distributions().items():
            for dist in dists:
                modules_of.setdefault(re.sub(r"[-_.]+", "-", dist).lower(), set()).add(module)
        report = {"python": list(sys.version_info[:3])}
        for name in wanted:
            # top_level.txt may name what a wheel does not install ("testing"): skipped
            modules = sorted(m for m in modules_of.get(name, ()) if m.isidentifier()
                             and not m.startswith("_") and importlib.util.find_spec(m))
            for module in modules:
                importlib.import_module(module)
            report[name] = {"version": importlib.metadata.version(name), "imported": modules}
        engine.result.set(report, content_type="json")
    """
)


def test_every_old_package_imports_in_the_sandbox(python_image: str) -> None:
    """One run, in the hardened sandbox: every package of the old runtime's list is there at
    its pinned version and all of its modules import (as nobody, read-only root, no network)."""
    old = pins(OLD_PINS)
    out = run_engine(python_image, IMPORT_EVERYTHING, body=json.dumps(sorted(old)),
                     memory="512m", timeout=120)
    _completed(out)
    report = json.loads(out.result["value"])
    assert report.pop("python")[:2] >= [3, 12]
    versions = {name: entry["version"] for name, entry in report.items()}
    assert versions == {name: version for name, version in old.items() if name not in DEVIATIONS}
    nothing_to_import = {name for name, entry in report.items() if not entry["imported"]}
    assert nothing_to_import == set(), nothing_to_import
    assert "pandas" in report["pandas"]["imported"]
    assert "bs4" in report["beautifulsoup4"]["imported"]
    assert "googleapiclient" in report["google-api-python-client"]["imported"]


def test_python_3_12_syntax(run: Runner) -> None:
    """PEP 701 f-strings (same quotes and backslashes inside) and PEP 695 type parameters:
    a syntax error on Python 3.11."""
    out = run(
        src(
            '''
            type Pair[T] = tuple[T, T]

            def first[T](items: list[T]) -> T:
                return items[0]

            def Run(engine):
                names = ["ana", "bia"]
                engine.result.set(f"{"\\n".join(names)}|{first(names)}|{f"{f"{1 + 1}"}"}")
            '''
        )
    )
    _completed(out)
    assert out.result["value"] == "ana\nbia|ana|2"


def test_pydub_converts_a_generated_wav_with_ffmpeg(run: Runner) -> None:
    out = run(
        src(
            """
            import io, math, shutil, struct, wave
            from pydub import AudioSegment

            def Run(engine):
                raw = io.BytesIO()
                with wave.open(raw, "wb") as wav:
                    wav.setnchannels(1)
                    wav.setsampwidth(2)
                    wav.setframerate(8000)
                    wav.writeframes(b"".join(
                        struct.pack("<h", int(8000 * math.sin(i / 8)))
                        for i in range(4000)))
                sound = AudioSegment.from_wav(io.BytesIO(raw.getvalue()))
                mp3 = sound.export(io.BytesIO(), format="mp3").getvalue()
                back = AudioSegment.from_file(io.BytesIO(mp3), format="mp3")
                engine.result.set({
                    "ffmpeg": shutil.which("ffmpeg"),
                    "wav_ms": len(sound),
                    "mp3_head": mp3[:3].hex(),
                    "mp3_ms": len(back),
                }, content_type="json")
            """
        ),
        memory="256m",
    )
    _completed(out)
    value = json.loads(out.result["value"])
    assert value["ffmpeg"] == "/usr/bin/ffmpeg"
    assert value["wav_ms"] == 500
    assert value["mp3_head"] in ("494433", "fffb", "fff3") or value["mp3_head"].startswith("ff")
    assert 450 <= value["mp3_ms"] <= 600  # mp3 frames pad the end a little


# ----------------------------------------------------------------------------- catalog


def test_manifest_lists_what_the_image_has(python_image: str) -> None:
    """The catalog's source (worker/image_manifest.py reads it out of the image): every pin
    of requirements.txt with its version and what to import, and no thread-starting import
    left for the warm supervisor to trip on."""
    import docker

    from worker.image_manifest import manifest_libraries, read_manifest

    client = docker.from_env()
    try:
        manifest = read_manifest(client, python_image, {"codeactions.test": "manifest"})
    finally:
        client.close()
    assert manifest is not None
    assert manifest["python"].startswith("3.") and int(manifest["python"].split(".")[1]) >= 12
    assert manifest["ffmpeg"]
    libraries = {re.sub(r"[-_.]+", "-", lib.name).lower(): lib for lib in
                 manifest_libraries(manifest)}
    assert {name: lib.version for name, lib in libraries.items()} == pins(REQUIREMENTS)
    assert libraries["beautifulsoup4"].modules == ("bs4",)
    assert libraries["pillow"].modules == ("PIL",)
    assert "google.auth" in libraries["google-auth"].modules
    assert manifest["threaded"] == []


# ----------------------------------------------------------------------------- warm preload

PRELOAD_PROBE = src(
    """
    import sys
    ahead = sorted(name for name in ("pandas", "numpy", "requests", "openai") if name in sys.modules)
    import pandas, requests, openai

    def Run(engine):
        engine.result.set({"ahead": ahead, "rows": len(pandas.DataFrame({"a": [1, 2]}))},
                          content_type="json")
    """
)


def test_warm_environment_imports_the_code_s_packages_ahead(python_image: str) -> None:
    """The supervisor imports what the code imports before it forks the run's process (the
    image's packages are on its list), and stays single-threaded doing so: numpy's OpenBLAS
    would otherwise start a thread per CPU and the environment could not fork."""
    warm = run_engine_warm(python_image, PRELOAD_PROBE, memory="256m", runs=2)
    _completed(warm)
    assert json.loads(warm.result["value"]) == {
        "ahead": ["numpy", "openai", "pandas", "requests"], "rows": 2,
    }
    cold = run_engine(python_image, PRELOAD_PROBE, memory="256m")
    _completed(cold)
    assert json.loads(cold.result["value"])["ahead"] == []


@pytest.mark.parametrize("mode", ["one-shot", "warm"])
def test_hello_world_imports_no_package(python_image: str, mode: str) -> None:
    """Start-up cost stays the harness's: nothing of the installed packages is imported
    until the code asks for it."""
    runner = run_engine_warm if mode == "warm" else run_engine
    out = runner(python_image, src(
        """
        import sys
        def Run(engine):
            heavy = ("numpy", "pandas", "pydantic", "requests", "boto3", "google", "lxml")
            engine.result.set(",".join(name for name in heavy if name in sys.modules))
        """
    ))
    _completed(out)
    assert out.result["value"] == ""
