"""Errors raised while bringing up the local services."""


class LocalServiceError(RuntimeError):
    """Base class: a local service could not be provided."""


class PortInUseError(LocalServiceError):
    """The port a service should use is held by a process that is not ours."""


class ServiceStartError(LocalServiceError):
    """A service process was started but never became healthy."""


class StateDirBusyError(LocalServiceError):
    """Another live supervisor already manages this state directory."""


class MissingPrivilegesError(LocalServiceError):
    """Something must be installed or created, and only root can do it."""
