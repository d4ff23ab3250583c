"""Run once when the engine image is built: list what an action can import from the installed
packages, with versions, as /opt/codeactions/libraries.json.

    python3 -I manifest.py <site-packages folder> <output file>

Every distribution installed in the folder is listed with its version and the modules it
provides, and every such module is imported here: one that does not import fails the build, so
the catalog the platform shows (GET /codelib) only ever lists what really works. The worker
reads the file out of the image; the warm environment's supervisor reads which modules it may
import ahead of a run from it: all but those whose import started a thread (`threaded`), since
the supervisor must stay single-threaded to fork.
"""

import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys


def _module_names(dist, site):
    """Top-level importable names of a distribution; inside a namespace package (a folder
    without __init__.py, such as google/), the subpackages it brings."""
    names = set()
    for entry in dist.files or ():
        parts = entry.parts
        if not parts or parts[0] in ("..", "bin") or parts[0].endswith((".dist-info", ".data")):
            continue
        if parts[0] == "__pycache__" or parts[-1].endswith((".pyc", ".pth")):
            continue
        first = parts[0]
        if len(parts) == 1:
            stem = first.split(".", 1)[0]
            if first.endswith((".py", ".so")) and stem.isidentifier():
                names.add(stem)
            continue
        if not first.isidentifier():
            continue
        if os.path.isfile(os.path.join(site, first, "__init__.py")):
            names.add(first)
        elif len(parts) > 2 and parts[1].isidentifier():  # namespace package
            names.add(f"{first}.{parts[1]}")
        elif len(parts) == 2 and parts[1].endswith(".py") and parts[1] != "__init__.py":
            names.add(f"{first}.{parts[1][:-3]}")
    return sorted(name for name in names if not name.split(".")[-1].startswith("_"))


def _ffmpeg_version():
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    words = out.stdout.split()
    return words[2] if len(words) > 2 and words[0] == "ffmpeg" else None


def _threads():
    return len(os.listdir("/proc/self/task"))


def main():
    site, output = sys.argv[1], sys.argv[2]
    packages, failures, threaded = [], [], []
    for dist in importlib.metadata.distributions(path=[site]):
        modules = _module_names(dist, site)
        for module in modules:
            before = _threads()
            try:
                importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001 - any failure fails the build
                failures.append(f"{dist.metadata['Name']}: import {module}: {exc!r}")
            if _threads() > before:
                threaded.append(module)
        packages.append(
            {"name": dist.metadata["Name"], "version": dist.version, "modules": modules}
        )
    if failures:
        sys.exit("not importable:\n" + "\n".join(failures))
    packages.sort(key=lambda package: package["name"].lower())
    manifest = {
        "python": platform.python_version(),
        "ffmpeg": _ffmpeg_version(),
        "packages": packages,
        "threaded": sorted(threaded),
    }
    with open(output, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print(f"{len(packages)} packages, Python {manifest['python']}, ffmpeg {manifest['ffmpeg']}; "
          f"imports that start threads: {', '.join(threaded) or 'none'}")


if __name__ == "__main__":
    main()
