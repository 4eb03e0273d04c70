"""Settings of the HTTP API, read from ``HUB_*`` environment variables (or passed in).

Webhook secrets are ``SecretStr`` so no repr, log line or error message can show them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hub.errors import HubError


class ApiSettings(BaseSettings):
    """Defaults suit a laptop; production sets the webhook secrets."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore", populate_by_name=True,
                                      env_file=".env")

    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='per-source webhook secrets, JSON: {"warehouse": "secret"}',
    )
    webhook_secrets_file: Path | None = Field(
        default=None, description="a JSON file of per-source secrets (merged, file wins)"
    )
    api_routes: Annotated[list[str], NoDecode] = Field(
        default=["api.routes"],
        description="comma-separated modules (or module:attribute) holding an APIRouter "
                    "`router` of custom routes",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, alias="HUB_API_MAX_BODY_BYTES",
        description="largest request body; larger ones are refused with 413",
    )
    max_wait_seconds: float = Field(
        default=60.0, gt=0, alias="HUB_API_MAX_WAIT_SECONDS",
        description="the longest ?wait=true may hold a request",
    )
    key_touch_seconds: float = Field(
        default=60.0, ge=0, alias="HUB_API_KEY_TOUCH_SECONDS",
        description="last_used_at of a key is written at most this often",
    )

    @field_validator("api_routes", mode="before")
    @classmethod
    def _split_routes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    def secrets(self) -> dict[str, bytes]:
        """Every source's secret as bytes: the variable's, then the file's (which wins)."""
        merged = {k: v.get_secret_value() for k, v in self.webhook_secrets.items()}
        if self.webhook_secrets_file is not None:
            path = self.webhook_secrets_file
            try:
                raw = json.loads(path.read_text())
                parsed = _SecretsFile.model_validate({"secrets": raw}).secrets
            except (OSError, ValueError, ValidationError) as exc:
                # the message names the file, never its content
                raise HubError(
                    f"HUB_WEBHOOK_SECRETS_FILE {str(path)!r} must be a readable JSON object "
                    f'of source name to secret, like {{"warehouse": "..."}} '
                    f"({type(exc).__name__})"
                ) from None
            merged.update({k: v.get_secret_value() for k, v in parsed.items()})
        return {k: v.encode() for k, v in merged.items() if v}


class _SecretsFile(BaseModel):
    secrets: dict[str, SecretStr]
