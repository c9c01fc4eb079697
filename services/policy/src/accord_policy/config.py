"""Policy service settings, from ACCORD_POLICY_* (and the suite-wide ACCORD_* URLs)."""

from pydantic_settings import SettingsConfigDict

from accord_kit.config import DEFAULT_DATABASE_URL, DEFAULT_NATS_URL, ServiceSettings, shared
from accord_kit.ports import DEFAULT_PORTS

P = "ACCORD_POLICY_"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=P, extra="ignore", populate_by_name=True)

    port: int = DEFAULT_PORTS["policy"].grpc
    metrics_port: int = DEFAULT_PORTS["policy"].metrics
    database_url: str = shared("DATABASE_URL", DEFAULT_DATABASE_URL, prefix=P)
    nats_url: str = shared("NATS_URL", DEFAULT_NATS_URL, prefix=P)
    # Hosts no policy allows are denied. On by default: Accord is secure by default.
    default_deny: bool = True
    # The product token robots.txt groups are matched against (RFC 9309 2.2.1).
    robots_agent: str = "Accord"
    # The User-Agent robots.txt is fetched with; names Accord, as the executors' does.
    robots_user_agent: str = "Accord/0.1 (+https://accord.dev/bot)"
    # Seconds a robots.txt fetch may take before the origin counts as unreachable.
    robots_timeout: float = 5.0
    # Seconds an unreachable or failing (5xx) robots.txt blocks its origin before a refetch.
    robots_error_ttl: float = 60.0
