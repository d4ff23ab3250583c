"""The one logging set-up: at debug level our own records show, the wire chatter of client
libraries does not, even from a library that resets its logger's level when imported."""

from __future__ import annotations

import logging

from shared.observability.log_format import configure_logging
from shared.settings import Settings


def test_debug_level_keeps_library_chatter_out(capsys) -> None:  # noqa: ANN001
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(Settings(log_level="debug", environment="dev"), "test")
        import pyroute2  # noqa: F401 - its import sets its logger back to NOTSET

        logging.getLogger("pyroute2.netlink.core").debug("netlink message")
        logging.getLogger("pyroute2.netlink.core").warning("netlink trouble")
        logging.getLogger("worker.sandbox.sandbox").debug("our own detail")
        err = capsys.readouterr().err
        assert "our own detail" in err and "netlink trouble" in err
        assert "netlink message" not in err
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
