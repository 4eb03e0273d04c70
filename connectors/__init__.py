"""Connectors to outside systems, built on one shared base (``HttpConnector``)."""

from connectors.base import Connector as Connector
from connectors.base import ConnectorConfigError as ConnectorConfigError
from connectors.base import ConnectorSettings as ConnectorSettings
from connectors.base import HttpConnector as HttpConnector
from connectors.base import RetryableHttpError as RetryableHttpError
from connectors.base import Verdict as Verdict
from connectors.base import load_settings as load_settings
from connectors.breaker import BreakerState as BreakerState
from connectors.breaker import CircuitBreaker as CircuitBreaker
from connectors.breaker import CircuitOpenError as CircuitOpenError

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "Connector",
    "ConnectorConfigError",
    "ConnectorSettings",
    "HttpConnector",
    "RetryableHttpError",
    "Verdict",
    "load_settings",
]
