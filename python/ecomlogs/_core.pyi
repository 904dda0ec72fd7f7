"""Type stubs for the native module (checked against the build with ``python -m mypy.stubtest``)."""

from typing import Callable, Optional, final

__all__ = [
    "__version__",
    "StopToken",
    "bench_core",
    "ensure_topics",
    "generate_events",
    "load",
    "migrate",
    "migrations",
    "process",
    "produce",
    "query",
    "reason_codes",
    "reset_log_cache",
    "validate_many",
    "validate_one",
]

__version__: str

@final
class StopToken:
    """Tells a running stage how to finish, from another thread."""

    def __init__(self) -> None: ...
    def stop(self) -> None:
        """Finish the batch in flight, commit, return."""
    def drain(self) -> None:
        """Keep going until every assigned partition has been read to its end, then finish."""
    @property
    def stopped(self) -> bool: ...
    @property
    def draining(self) -> bool: ...

def generate_events(
    n: int, invalid_ratio: float = 0.25, seed: Optional[int] = None
) -> list[tuple[Optional[bytes], bytes, str]]: ...
def validate_one(value: Optional[bytes]) -> tuple[Optional[str], Optional[str], Optional[bytes]]: ...
def validate_many(
    values: list[Optional[bytes]],
) -> list[tuple[Optional[str], Optional[str], Optional[bytes]]]: ...
def reason_codes() -> list[str]: ...
def ensure_topics(
    bootstrap_servers: str,
    topics: list[str],
    partitions: int = 3,
    timeout_s: float = 15.0,
    extra_config: Optional[dict[str, str]] = None,
) -> None: ...
def produce(
    bootstrap_servers: str,
    topic: str,
    count: Optional[int] = None,
    interval_s: float = 0.5,
    invalid_ratio: float = 0.25,
    seed: Optional[int] = None,
    log_each: bool = True,
    partitions: int = 3,
    extra_config: Optional[dict[str, str]] = None,
    progress: Optional[Callable[[dict[str, object]], object]] = None,
    progress_every_s: float = 1.0,
    stop: Optional[StopToken] = None,
) -> dict[str, object]: ...
def reset_log_cache() -> None: ...
def process(
    bootstrap_servers: str,
    input_topic: str,
    output_topic: str,
    dlq_topic: str,
    group_id: str,
    until_idle_s: Optional[float] = None,
    exactly_once: bool = False,
    transactional_id: Optional[str] = None,
    batch_max: int = 50000,
    log_each: bool = False,
    partitions: int = 3,
    extra_config: Optional[dict[str, str]] = None,
    progress: Optional[Callable[[dict[str, object]], object]] = None,
    progress_every_s: float = 1.0,
    workers: int = 1,
    until_caught_up: bool = False,
    stop: Optional[StopToken] = None,
) -> dict[str, object]: ...
def load(
    bootstrap_servers: str,
    topic: str,
    group_id: str,
    dsn: str,
    dlq_topic: str,
    batch_size: int = 500,
    flush_interval_ms: int = 1000,
    until_idle_s: Optional[float] = None,
    partitions: int = 3,
    migrate: bool = True,
    max_backoff_s: float = 10.0,
    log_each: bool = False,
    extra_config: Optional[dict[str, str]] = None,
    progress: Optional[Callable[[dict[str, object]], object]] = None,
    progress_every_s: float = 1.0,
    workers: int = 1,
    until_caught_up: bool = False,
    stop: Optional[StopToken] = None,
) -> dict[str, object]: ...
def migrate(dsn: str) -> list[str]: ...
def migrations() -> list[tuple[str, str, str]]: ...
def query(dsn: str, sql: str) -> tuple[list[str], list[list[Optional[str]]]]: ...
def bench_core(
    n: int, values: list[bytes], seed: int = 1
) -> dict[str, tuple[int, float, float]]: ...
