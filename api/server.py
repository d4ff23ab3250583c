"""What the API's gunicorn master sets up: the shared metrics directory and its logging."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path

from gunicorn import glogging

from shared.settings import Settings

log = logging.getLogger(__name__)


def prepare_metrics_dir(settings: Settings) -> Path:
    """prometheus_client's multiprocess directory, emptied (values of an earlier API would
    add up with ours). The operator's `PROMETHEUS_MULTIPROC_DIR` or
    `FLOWS_CODE_ACTIONS_API_METRICS_DIR` wins; otherwise a temporary one, removed at exit."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.api_metrics_dir
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="codeactions-api-metrics-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def mark_worker_dead(server, worker) -> None:  # noqa: ANN001 - gunicorn's hook signature
    """A gone gunicorn worker's live gauges must not be reported any more."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class GunicornLogger(glogging.Logger):
    """gunicorn's error and access logs go through the root logger, in our format."""

    def setup(self, cfg) -> None:  # noqa: ANN001
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
