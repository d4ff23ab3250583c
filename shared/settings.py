"""One typed settings object, built from the environment (SPEC.md "Configuration").

Every operator-facing name of the old Go service keeps working; new settings use the same
`FLOWS_CODE_ACTIONS_` prefix. Nothing here is read at import time: call `load_settings()`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "FLOWS_CODE_ACTIONS_"
LANGUAGES = ("python", "javascript", "go")
MONGODB_REFUSED = (
    "FLOWS_CODE_ACTIONS_DB_TYPE=mongodb is not supported: this platform keeps everything in "
    "PostgreSQL. Copy the MongoDB data once with `codeactions import-mongo --mongo-uri URI "
    "--mongo-db NAME`, then set FLOWS_CODE_ACTIONS_DB_TYPE=postgres (or leave it unset)"
)


def _env(name: str, *legacy: str) -> Any:
    """Field options binding a setting to its env var (and legacy spellings)."""
    return AliasChoices(PREFIX + name, *legacy)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="ignore", populate_by_name=True, case_sensitive=False
    )

    # --- HTTP API -------------------------------------------------------------------
    host: str = Field("127.0.0.1", validation_alias=_env("HOST"))
    port: int = Field(8050, validation_alias=_env("PORT"))
    environment: str = Field("local", validation_alias=_env("ENVIRONMENT"))
    log_level: str = Field("debug", validation_alias=_env("LOG_LEVEL"))
    sentry_dsn: str = Field("", validation_alias=_env("SENTRY_DSN"))
    api_workers: int = Field(2, validation_alias=_env("API_WORKERS"))
    # Seconds a request's line, headers and body may take to arrive (api/http_server.py):
    # past it the caller gets a 408 and the thread is free again.
    api_request_read_timeout: float = Field(
        30.0, gt=0, validation_alias=_env("API_REQUEST_READ_TIMEOUT")
    )
    # Browser origins allowed to call the API (comma-separated; `*` alone allows any, a `*`
    # inside an entry matches any characters); empty allows none.
    cors_allowed_origins: str = Field("", validation_alias=_env("CORS_ALLOWED_ORIGINS"))

    # --- storage ---------------------------------------------------------------------
    db_type: Literal["postgres", "mongodb"] = Field("postgres", validation_alias=_env("DB_TYPE"))
    db_uri: str = Field("", validation_alias=_env("DB_URI"))
    # The Go service's names: the database when DB_URI names none; connections per process
    # at most / kept open (capped at the maximum, as Go's database/sql did); seconds one
    # connection attempt may take; seconds an operation waits for a free connection.
    db_name: str = Field("", validation_alias=_env("DB_NAME"))
    db_max_pool_size: int = Field(15, ge=1, validation_alias=_env("DB_MAX_POOL_SIZE"))
    db_min_pool_size: int = Field(5, ge=0, validation_alias=_env("DB_MIN_POOL_SIZE"))
    db_connect_timeout: int = Field(10, ge=1, validation_alias=_env("DB_CONNECT_TIMEOUT"))
    postgres_db_timeout: float = Field(35, gt=0, validation_alias=_env("POSTGRES_DB_TIMEOUT"))
    mongo_db_uri: str = Field("", validation_alias=_env("MONGO_DB_URI"))
    mongo_db_name: str = Field("", validation_alias=_env("MONGO_DB_NAME"))
    redis: str = Field("redis://localhost:6379/10", validation_alias=_env("REDIS"))
    rabbitmq_url: str = Field("", validation_alias=_env("RABBITMQ_URL"))
    # Celery's broker; defaults to the events broker so one RabbitMQ serves both.
    broker_url: str = Field("", validation_alias=_env("BROKER_URL"))

    # --- events ----------------------------------------------------------------------
    project_exchange: str = Field("projects.topic", validation_alias=_env("PROJECT_EXCHANGE"))
    project_queue: str = Field("code-actions.projects", validation_alias=_env("PROJECT_QUEUE"))
    permission_exchange: str = Field(
        "permissions.topic", validation_alias=_env("PERMISSION_EXCHANGE")
    )
    # The seed really spells this one `FLOW_` (SPEC.md); accept both.
    permission_queue: str = Field(
        "code-actions-permissions",
        validation_alias=AliasChoices(
            "FLOW_CODE_ACTIONS_PERMISSION_QUEUE", PREFIX + "PERMISSION_QUEUE"
        ),
    )
    # Attempts before an event that fails to apply goes to `<queue>.dead-letter`.
    events_max_attempts: int = Field(5, ge=1, validation_alias=_env("EVENTS_MAX_ATTEMPTS"))

    # --- auth ------------------------------------------------------------------------
    oidc_auth_enabled: bool = Field(False, validation_alias=_env("OIDC_AUTH_ENABLED"))
    oidc_host: str = Field("", validation_alias=_env("OIDC_HOST"))
    oidc_realm: str = Field("", validation_alias=_env("OIDC_REALM"))
    auth_token: str = Field("", validation_alias=_env("AUTH_TOKEN"))
    # Seconds a user-info answer (or a rejection) is kept per token in Redis, and how long
    # one call to the identity provider may take.
    oidc_cache_seconds: int = Field(30, validation_alias=_env("OIDC_CACHE_SECONDS"))
    oidc_timeout: float = Field(5, validation_alias=_env("OIDC_TIMEOUT"))

    # --- limits ----------------------------------------------------------------------
    code_limiter_max_requests: int = Field(600, validation_alias=_env("CODE_LIMITER_MAX_REQUESTS"))
    code_limiter_window: int = Field(60, validation_alias=_env("CODE_LIMITER_WINDOW_WINDOW"))
    blacklist: str = Field("", validation_alias=_env("BLACKLIST"))
    # The Go service's import names not to `pip install` at code creation; nothing is ever
    # installed at creation here (libraries ship in the engine image), so it changes nothing.
    skiplist: str = Field("", validation_alias=_env("SKIPLIST"))
    source_max_bytes: int = Field(1024 * 1024, validation_alias=_env("SOURCE_MAX_BYTES"))
    request_body_max_bytes: int = Field(
        1024 * 1024, validation_alias=_env("REQUEST_BODY_MAX_BYTES")
    )

    # --- housekeeping ----------------------------------------------------------------
    cleaner_schedule_time: str = Field("01:00", validation_alias=_env("CLEANER_SCHEDULE_TIME"))
    cleaner_retention_period: int = Field(30, validation_alias=_env("CLEANER_RETENTION_PERIOD"))
    cleaner_batch_size: int = Field(500, validation_alias=_env("CLEANER_BATCH_SIZE"))
    # A run still `started` this long past its code's timeout lost its worker.
    stuck_run_margin: int = Field(60, validation_alias=_env("STUCK_RUN_MARGIN"))
    stuck_run_check_interval: float = Field(60, validation_alias=_env("STUCK_RUN_CHECK_INTERVAL"))
    # A started run's lease: its worker extends it while the run executes; a run whose lease
    # ran out (its worker died) is ended by any worker within a few seconds.
    run_lease_seconds: float = Field(20, ge=5, validation_alias=_env("RUN_LEASE_SECONDS"))
    # How long a worker keeps trying to store a finished run's outcome while PostgreSQL is
    # unreachable, before it gives the outcome up.
    store_retry_seconds: float = Field(120, ge=0, validation_alias=_env("STORE_RETRY_SECONDS"))
    # Celery beat's schedule store; empty means `<state_dir>/beat/schedule`.
    beat_schedule_file: str = Field("", validation_alias=_env("BEAT_SCHEDULE_FILE"))

    # --- operations ------------------------------------------------------------------
    # `json`, `text`, or `auto` (text when ENVIRONMENT is local/dev/test, else JSON lines).
    log_format: Literal["auto", "json", "text"] = Field("auto", validation_alias=_env("LOG_FORMAT"))
    # gunicorn workers share their metrics through this directory (prometheus_client's
    # multiprocess mode); empty means a fresh temporary directory per API start.
    api_metrics_dir: str = Field("", validation_alias=_env("API_METRICS_DIR"))
    worker_metrics_port: int = Field(9640, validation_alias=_env("WORKER_METRICS_PORT"))
    worker_heartbeat_ttl: float = Field(30, validation_alias=_env("WORKER_HEARTBEAT_TTL"))
    # Queues /health requires a live worker for; empty skips the check.
    health_worker_languages: str = Field(
        ",".join(LANGUAGES), validation_alias=_env("HEALTH_WORKER_LANGUAGES")
    )
    flower_address: str = Field("127.0.0.1", validation_alias=_env("FLOWER_ADDRESS"))
    flower_port: int = Field(5555, validation_alias=_env("FLOWER_PORT"))
    # `user:password[,user2:password2]`; required unless Flower listens on loopback only.
    flower_basic_auth: str = Field("", validation_alias=_env("FLOWER_BASIC_AUTH"))

    # --- S3 log archive --------------------------------------------------------------
    s3_enabled: bool = Field(True, validation_alias=_env("S3_ENABLED"))
    s3_endpoint: str = Field("", validation_alias=_env("S3_ENDPOINT"))
    s3_bucket_name: str = Field("codeactions-dev", validation_alias=_env("S3_BUCKET_NAME"))
    s3_region: str = Field("us-east-1", validation_alias=_env("S3_REGION"))
    s3_prefix: str = Field("codeactions", validation_alias=_env("S3_PREFIX"))
    s3_access_key_id: str = Field("", validation_alias=_env("S3_ACCESS_KEY_ID"))
    s3_secret_access_key: str = Field("", validation_alias=_env("S3_SECRET_ACCESS_KEY"))

    # --- execution -------------------------------------------------------------------
    worker_pool_size: int = Field(4, validation_alias=_env("WORKER_POOL_SIZE"))
    worker_pool_queue_size: int = Field(100, validation_alias=_env("WORKER_POOL_QUEUE_SIZE"))
    # At most this many runs of one project execute at once, fleet-wide; 0 means no cap.
    project_max_concurrent_runs: int = Field(
        0, ge=0, validation_alias=_env("PROJECT_MAX_CONCURRENT_RUNS")
    )
    health_check_cache_time: float = Field(3, validation_alias=_env("HEALTH_CHECK_CACHE_TIME"))
    resource_enabled: bool = Field(False, validation_alias=_env("RESOURCE_ENABLED"))
    # Docker CPU shares / CFS quota (µs per 100 ms period) and memory in bytes or "128m".
    cpu_shares: int = Field(512, validation_alias=_env("CPU_SHARES"))
    cpu_quota: int = Field(100_000, validation_alias=_env("CPU_QUOTA"))
    memory_limit: str = Field("256m", validation_alias=_env("MEMORY_LIMIT"))
    memory_reservation: str = Field("64m", validation_alias=_env("MEMORY_RESERVATION"))
    # Safe ceilings that hold even when RESOURCE_ENABLED is false (the seed's default).
    sandbox_default_memory: str = Field("256m", validation_alias=_env("SANDBOX_DEFAULT_MEMORY"))
    sandbox_pids_limit: int = Field(64, validation_alias=_env("SANDBOX_PIDS_LIMIT"))
    sandbox_tmpfs_size: str = Field("16m", validation_alias=_env("SANDBOX_TMPFS_SIZE"))
    sandbox_output_max_bytes: int = Field(
        2 * 1024 * 1024, validation_alias=_env("SANDBOX_OUTPUT_MAX_BYTES")
    )
    sandbox_max_logs: int = Field(1000, validation_alias=_env("SANDBOX_MAX_LOGS"))
    # Host uids handed out one per sandbox, in turn (worker/sandbox/uids.py): no per-user
    # kernel quota is shared between sandboxes. `first-last`; no uid of the host's own users.
    sandbox_uid_range: str = Field(
        "200000-265535", validation_alias=_env("SANDBOX_UID_RANGE")
    )
    # Networked sandboxes' addresses (one /32 each, routed to its own veth): a private range
    # (the firewall drops traffic to private ranges, so sandboxes never reach each other).
    sandbox_subnet: str = Field("10.213.0.0/16", validation_alias=_env("SANDBOX_SUBNET"))
    # DNS servers networked sandboxes may ask (comma-separated IPv4); empty means the host's
    # own non-loopback ones.
    sandbox_resolvers: str = Field("", validation_alias=_env("SANDBOX_RESOLVERS"))
    docker_host: str = Field("", validation_alias=_env("DOCKER_HOST"))
    worker_languages: str = Field("python", validation_alias=_env("WORKER_LANGUAGES"))
    # Names this worker's sandboxes; platforms sharing one Docker engine need distinct ids
    # so one never removes the other's containers. Empty means the host name.
    worker_id: str = Field("", validation_alias=_env("WORKER_ID"))
    # Compiled Go actions, by source hash; empty means `<state_dir>/go-build-cache`.
    go_build_cache: str = Field("", validation_alias=_env("GO_BUILD_CACHE"))

    # --- run callbacks (POST the finished run to the caller's URL) -------------------
    # Networks a callback may reach although they are not public (CIDRs, comma-separated);
    # empty in production: private, loopback and link-local addresses are refused.
    callback_allowed_networks: str = Field("", validation_alias=_env("CALLBACK_ALLOWED_NETWORKS"))
    # HMAC-SHA256 key for the `X-CodeActions-Signature` header; empty sends no signature.
    callback_signing_secret: str = Field("", validation_alias=_env("CALLBACK_SIGNING_SECRET"))
    callback_max_attempts: int = Field(
        5, ge=1, le=20, validation_alias=_env("CALLBACK_MAX_ATTEMPTS")
    )
    # Seconds before the 2nd attempt; each later wait doubles (capped at 10 minutes).
    callback_retry_delay: float = Field(
        2.0, gt=0, validation_alias=_env("CALLBACK_RETRY_DELAY")
    )
    callback_timeout: float = Field(10.0, gt=0, validation_alias=_env("CALLBACK_TIMEOUT"))

    # --- fast path (worker/warm/pool.py, worker/warm/environments.py) ------------------
    # Containers started ahead of demand per language (and network setting in use), each
    # used for one run; 0 starts every run's container on the request's path.
    warm_pool_size: int = Field(2, ge=0, le=64, validation_alias=_env("WARM_POOL_SIZE"))
    # A ready container older than this is replaced (seconds).
    warm_pool_max_age: float = Field(240, gt=0, validation_alias=_env("WARM_POOL_MAX_AGE"))
    # Every code runs in a warm environment (otherwise only codes created with `warm=true`).
    warm_environments: bool = Field(False, validation_alias=_env("WARM_ENVIRONMENTS"))
    # The mode of a code created without `mode` or `warm` (shared.codes.model.CODE_MODES).
    default_mode: Literal["pool", "warm", "resident"] = Field(
        "pool", validation_alias=_env("DEFAULT_MODE")
    )
    # A warm environment is retired after this many runs, or this long without one.
    warm_environment_max_runs: int = Field(
        1000, ge=1, validation_alias=_env("WARM_ENVIRONMENT_MAX_RUNS")
    )
    # A resident process (mode `resident`) is replaced after a run that leaves it holding more
    # than this share of the code's memory limit (a leak would otherwise end in the OOM killer
    # in the middle of a later caller's run).
    resident_recycle_memory_percent: int = Field(
        60, ge=1, le=100, validation_alias=_env("RESIDENT_RECYCLE_MEMORY_PERCENT")
    )
    warm_environment_idle_seconds: float = Field(
        300, gt=0, validation_alias=_env("WARM_ENVIRONMENT_IDLE_SECONDS")
    )
    # Warm environments a worker keeps for one code, and in all.
    warm_environments_per_code: int = Field(
        4, ge=1, validation_alias=_env("WARM_ENVIRONMENTS_PER_CODE")
    )
    warm_environments_max: int = Field(16, ge=1, validation_alias=_env("WARM_ENVIRONMENTS_MAX"))
    # Celery task events from the start (Flower switches the workers' on when it runs).
    task_events: bool = Field(False, validation_alias=_env("TASK_EVENTS"))

    # --- local platform (make run / make test) ---------------------------------------
    state_dir: str = Field(".state/dev", validation_alias=_env("STATE_DIR"))

    @model_validator(mode="after")
    def _postgres_only(self) -> Settings:
        # The old service's MongoDB mode: refused loudly, never a silent PostgreSQL.
        if self.db_type == "mongodb":
            raise ValueError(MONGODB_REFUSED)
        return self

    @field_validator("s3_prefix")
    @classmethod
    def _strip_prefix(cls, value: str) -> str:
        return value.strip("/")

    @field_validator("sandbox_uid_range")
    @classmethod
    def _uid_range(cls, value: str) -> str:
        first, _, last = value.strip().partition("-")
        if not (first.isdigit() and last.isdigit() and 1000 <= int(first) <= int(last) < 2**31):
            raise ValueError("SANDBOX_UID_RANGE must be FIRST-LAST, from 1000 up (e.g. "
                             "200000-265535)")
        if int(first) <= 65534 <= int(last):
            raise ValueError("SANDBOX_UID_RANGE must not hold 65534 (the host's nobody)")
        return f"{int(first)}-{int(last)}"

    @field_validator("cleaner_schedule_time")
    @classmethod
    def _schedule_time(cls, value: str) -> str:
        hour, _, minute = value.strip().partition(":")
        if not (hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
            raise ValueError("CLEANER_SCHEDULE_TIME must be HH:MM (UTC)")
        return f"{int(hour):02d}:{int(minute):02d}"

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.cors_allowed_origins.split(",") if o.strip()]

    @property
    def blacklist_terms(self) -> list[str]:
        return [t.strip() for t in self.blacklist.split(",") if t.strip()]

    @property
    def callback_networks(self) -> list[str]:
        return [n.strip() for n in self.callback_allowed_networks.split(",") if n.strip()]

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.rabbitmq_url or "amqp://guest:guest@127.0.0.1:5672//"

    @property
    def sqlalchemy_url(self) -> str:
        uri = self.db_uri or "postgresql+psycopg://postgres@127.0.0.1:5432/"
        # Operators of the Go service wrote plain `postgres://` URLs.
        for legacy in ("postgres://", "postgresql://"):
            if uri.startswith(legacy):
                uri = "postgresql+psycopg://" + uri[len(legacy) :]
                break
        from sqlalchemy.engine import make_url

        url = make_url(uri)
        if url.database:
            return uri
        # A URL without a database: DB_NAME (the Go service's default name otherwise).
        return url.set(database=self.db_name or "codeactions").render_as_string(
            hide_password=False
        )


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; keyword overrides win (tests use them)."""
    return Settings(**overrides)
