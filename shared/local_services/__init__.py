"""Real back-end services for `make run` and `make test`, brought up on one Debian machine.

Nothing happens at import time; see `LocalStack` (all services) or the per-service modules.
"""

from shared.local_services.docker_engine import DockerEngine, ensure_docker_engine
from shared.local_services.errors import (
    LocalServiceError,
    MissingPrivilegesError,
    PortInUseError,
    ServiceStartError,
    StateDirBusyError,
)
from shared.local_services.postgres import PostgresServer
from shared.local_services.rabbitmq import RabbitMQServer
from shared.local_services.redis import RedisServer
from shared.local_services.s3 import S3Server
from shared.local_services.stack import (
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
