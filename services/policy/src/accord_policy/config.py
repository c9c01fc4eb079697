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
