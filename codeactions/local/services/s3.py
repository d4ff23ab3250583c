"""An S3-compatible endpoint: moto's server, in memory (buckets vanish when it stops)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from codeactions.local.services.readiness import LOOPBACK
from codeactions.local.services.server import LocalServer


class S3Server(LocalServer):
    name = "s3"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def is_healthy(self) -> bool:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with direct.open(f"{self.url}/moto-api/", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)]

    def _working_dir(self) -> Path | None:
        return self.state_dir
