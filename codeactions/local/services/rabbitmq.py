"""A private RabbitMQ node from Debian's rabbitmq-server package, on 127.0.0.1 only.

The node gets its own name, ports, Erlang port mapper (epmd), configuration and state, so
it neither sees nor disturbs a machine-wide RabbitMQ. Plugins (management etc.) are off.
"""

from __future__ import annotations

import logging
import pwd
import shutil
from pathlib import Path

import pika
import pika.exceptions

from codeactions.local.services.accounts import ensure_reachable, give_to, service_account
from codeactions.local.services.apt import apt_install
from codeactions.local.services.errors import LocalServiceError
from codeactions.local.services.readiness import LOOPBACK, port_accepts_connections
from codeactions.local.services.server import LocalServer

logger = logging.getLogger(__name__)

RABBITMQ_ACCOUNT = "rabbitmq"
DEBIAN_WRAPPER = Path("/usr/sbin/rabbitmq-server")
# The real start script; Debian's wrapper above would `su` and send output to /var/log.
SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
DIST_PORT_OFFSET = 100  # below 32768: outside the ephemeral port range
EPMD_PORT_OFFSET = 101


def ensure_rabbitmq_installed() -> Path:
    """Path of the start script, installing Debian's rabbitmq-server package if needed."""
    if not DEBIAN_WRAPPER.exists():
        apt_install("rabbitmq-server")
    if SERVER_SCRIPT.exists():
        return SERVER_SCRIPT
    fallback = shutil.which("rabbitmq-server")
    if fallback is None:
        raise LocalServiceError("rabbitmq-server is not installed and could not be installed")
    return Path(fallback)


def epmd_binary() -> str:
    found = shutil.which("epmd") or shutil.which("epmd", path="/usr/lib/erlang/bin")
    if found is None:
        raise LocalServiceError("epmd (Erlang) not found; install the rabbitmq-server package")
    return found


class ErlangPortMapper(LocalServer):
    """A private epmd, so the node does not spawn a machine-wide daemon that outlives it."""

    name = "epmd"
    stop_grace_seconds = 5.0

    @property
    def url(self) -> str:
        return f"epmd://{LOOPBACK}:{self.port}"

    def is_healthy(self) -> bool:
        return port_accepts_connections(self.port)

    def _command(self) -> list[str]:
        return [epmd_binary(), "-address", LOOPBACK, "-port", str(self.port)]


class RabbitMQServer(LocalServer):
    name = "rabbitmq"
    start_timeout_seconds = 120.0
    stop_grace_seconds = 30.0

    def __init__(self, state_dir: Path, port: int) -> None:
        super().__init__(state_dir, port)
        self.epmd = ErlangPortMapper(state_dir, port + EPMD_PORT_OFFSET)
        self._account: pwd.struct_passwd | None = None
        self._script = SERVER_SCRIPT

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{LOOPBACK}:{self.port}//"

    @property
    def node_name(self) -> str:
        return f"codeactions-{self.port}@localhost"

    @property
    def dist_port(self) -> int:
        return self.port + DIST_PORT_OFFSET

    @property
    def base_dir(self) -> Path:
        return self.state_dir / "rabbitmq"

    @property
    def node_log_dir(self) -> Path:
        return self.state_dir / "logs" / "rabbitmq-node"

    def is_healthy(self) -> bool:
        if not port_accepts_connections(self.port):
            return False
        parameters = pika.ConnectionParameters(
            host=LOOPBACK,
            port=self.port,
            credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=1,
            socket_timeout=3,
            stack_timeout=5,
            blocked_connection_timeout=5,
        )
        try:
            pika.BlockingConnection(parameters).close()
        except pika.exceptions.AMQPError:
            return False
        return True

    def _prepare(self) -> None:
        self._script = ensure_rabbitmq_installed()
        self._account = service_account(RABBITMQ_ACCOUNT)
        ensure_reachable(self.state_dir, self._account)
        self._write_private_config()
        give_to(self.base_dir, self._account)
        give_to(self.node_log_dir, self._account)
        self.epmd.start()

    def _write_private_config(self) -> None:
        """Config files of our own, so /etc/rabbitmq does not apply to this node."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "enabled_plugins").write_text("[].\n")
        (self.base_dir / "rabbitmq-env.conf").write_text("# private node: see environment\n")
        (self.base_dir / "rabbitmq.conf").write_text("# private node: defaults only\n")

    def _command(self) -> list[str]:
        return [str(self._script)]

    def _extra_env(self) -> dict[str, str]:
        return {
            "HOME": str(self.base_dir),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "ERL_EPMD_PORT": str(self.epmd.port),
            "RABBITMQ_MNESIA_BASE": str(self.base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.node_log_dir),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": str(self.base_dir / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base_dir / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base_dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.base_dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base_dir / "advanced.config"),
        }

    def _run_as(self) -> pwd.struct_passwd | None:
        return self._account

    def _working_dir(self) -> Path | None:
        return self.base_dir  # Erlang crash dumps land here

    def _after_stop(self) -> None:
        self.epmd.stop()
