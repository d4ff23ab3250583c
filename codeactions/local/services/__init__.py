"""Real back-end services for `make run` and `make test`, brought up on one Debian machine.

Nothing happens at import time; see `LocalStack` (all services) or the per-service modules.
"""

from codeactions.local.services.docker_engine import DockerEngine, ensure_docker_engine
from codeactions.local.services.errors import (
    LocalServiceError,
    MissingPrivilegesError,
    PortInUseError,
    ServiceStartError,
    StateDirBusyError,
)
from codeactions.local.services.postgres import PostgresServer
from codeactions.local.services.rabbitmq import RabbitMQServer
from codeactions.local.services.redis import RedisServer
from codeactions.local.services.s3 import S3Server
from codeactions.local.services.stack import (
    SERVICE_ENVIRONMENT,
    LocalStack,
    StackUrls,
    overrides_from_environment,
)

__all__ = [
    "SERVICE_ENVIRONMENT",
    "DockerEngine",
    "LocalServiceError",
    "LocalStack",
    "MissingPrivilegesError",
    "PortInUseError",
    "PostgresServer",
    "RabbitMQServer",
    "RedisServer",
    "S3Server",
    "ServiceStartError",
    "StackUrls",
    "StateDirBusyError",
    "ensure_docker_engine",
    "overrides_from_environment",
]
