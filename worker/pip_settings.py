"""The machine's pip index settings, handed to an engine image's build.

An engine that installs packages from a package index at build time (the Python engine's
``requirements.txt``) must reach the index this machine's pip is configured for: a mirror, a
proxy, a private CA. Nothing of it is hard-coded: it is read where pip reads it —
``PIP_CONFIG_FILE``, else the global files (``/etc/xdg/pip/pip.conf``, ``/etc/pip.conf``) then
the user's (``~/.pip/pip.conf``, ``~/.config/pip/pip.conf``), the later winning, then ``PIP_*``
environment variables — and written into the build context as one ``pip.conf`` (and the CA
bundle it names, copied in as ``cert.pem``). Settings that point at this machine's own files
(``file://`` indexes, ``find-links`` folders, constraint files) cannot be seen from a build
container and are left out. Only a build stage uses them: no engine image keeps them.
"""

from __future__ import annotations

import configparser
import os
import shutil
from pathlib import Path

#: pip options a build needs to reach an index, as pip spells them in a config file.
_KEYS = ("index-url", "extra-index-url", "trusted-host", "cert", "proxy", "timeout", "retries")
_SECTIONS = ("global", "install")
_PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
#: Where the generated files are inside the build stage (the Dockerfile copies them there).
BUILD_PATH = "/tmp/build/pip"


def config_files() -> list[Path]:
    """pip's configuration files, in the order pip reads them (later ones win)."""
    override = os.environ.get("PIP_CONFIG_FILE")
    if override:
        return [] if override == os.devnull else [Path(override)]
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    home = Path.home()
    xdg_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    files = [Path(d) / "pip" / "pip.conf" for d in reversed(xdg_dirs) if d]
    files += [Path("/etc/pip.conf"), home / ".pip" / "pip.conf", xdg_home / "pip" / "pip.conf"]
    return files


def machine_pip_settings() -> dict[str, str]:
    """The index settings pip would use on this machine (option name -> value)."""
    settings: dict[str, str] = {}
    for path in config_files():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except (OSError, configparser.Error):
            continue
        for section in _SECTIONS:
            if parser.has_section(section):
                for key in _KEYS:
                    if parser.has_option(section, key):
                        settings[key] = parser.get(section, key)
    for key in _KEYS:
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            settings[key] = value
    if "timeout" not in settings and os.environ.get("PIP_DEFAULT_TIMEOUT"):
        settings["timeout"] = os.environ["PIP_DEFAULT_TIMEOUT"]
    if "proxy" not in settings:
        proxy = next((os.environ[name] for name in _PROXY_ENV if os.environ.get(name)), None)
        if proxy:
            settings["proxy"] = proxy
    return settings


def _remote(urls: str) -> list[str]:
    return [url for url in urls.split() if url.startswith(("http://", "https://"))]


def write_pip_settings(folder: Path) -> Path:
    """Write ``pip.conf`` (and ``cert.pem`` when a CA bundle is configured) into ``folder``
    for a build stage that copies the folder to ``BUILD_PATH``; returns the pip.conf path."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = machine_pip_settings()
    lines = ["# Written by codeactions worker/pip_settings.py from this machine's pip settings."]
    lines.append("[global]")
    for key in ("index-url", "extra-index-url"):
        urls = _remote(settings.get(key, ""))
        if key == "index-url" and urls:
            lines.append(f"index-url = {urls[0]}")
        elif key == "extra-index-url" and urls:
            lines.append(f"extra-index-url = {' '.join(urls)}")
    for key in ("trusted-host", "proxy", "timeout", "retries"):
        if settings.get(key):
            lines.append(f"{key} = {' '.join(settings[key].split())}")
    cert = settings.get("cert")
    if cert and Path(cert).is_file():
        shutil.copyfile(cert, folder / "cert.pem")
        lines.append(f"cert = {BUILD_PATH}/cert.pem")
    path = folder / "pip.conf"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
