"""Who may call the control plane and how it is encrypted: bearer tokens and TLS files.

Parsed when a service starts (never at import) from a JSON token file or from
variables, so one container image serves any deployment:

- VCF_AGENT_TOKENS_FILE: {"admins": {"alice": "TOKEN"}, "tenants": {"lab-a": "TOKEN" or ["T1", "T2"]}}
- VCF_AGENT_ADMIN_TOKENS: "alice:TOKEN,bob:TOKEN"   (name:token; the name is the audit actor)
- VCF_AGENT_TENANT_TOKENS: "lab-a:TOKEN,lab-b:TOKEN" (tenant:token)
- VCF_AGENT_TLS_CERT, VCF_AGENT_TLS_KEY: PEM files; both or neither.

No tokens at all means authentication is off (local development).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vcf_agent.config import ConfigError
from vcf_agent.schema import TENANT_ID_PATTERN


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    # token -> admin name
    admin_tokens: Mapping[str, str] = field(default_factory=dict)
    # token -> tenant id
    tenant_tokens: Mapping[str, str] = field(default_factory=dict)
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both VCF_AGENT_TLS_CERT and VCF_AGENT_TLS_KEY")
        shared = set(self.admin_tokens) & set(self.tenant_tokens)
        if shared:
            raise ConfigError("a token cannot be both an admin token and a tenant token")
        # A token decides its caller's tenant, which becomes part of every stored key.
        for tenant in sorted(set(self.tenant_tokens.values())):
            if not TENANT_ID_PATTERN.fullmatch(tenant):
                raise ConfigError(
                    f"tenant id {tenant[:63]!r}: use 1-63 letters, digits, '.', '_' or '-', starting with"
                    " a letter or digit"
                )

    @property
    def auth_enabled(self) -> bool:
        return bool(self.admin_tokens or self.tenant_tokens)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SecuritySettings:
        admins: dict[str, str] = {}
        tenants: dict[str, str] = {}
        if env.get("VCF_AGENT_TOKENS_FILE"):
            file_admins, file_tenants = _read_token_file(Path(env["VCF_AGENT_TOKENS_FILE"]))
            admins.update(file_admins)
            tenants.update(file_tenants)
        admins.update(_pairs("VCF_AGENT_ADMIN_TOKENS", env.get("VCF_AGENT_ADMIN_TOKENS", "")))
        tenants.update(_pairs("VCF_AGENT_TENANT_TOKENS", env.get("VCF_AGENT_TENANT_TOKENS", "")))
        cert, key = env.get("VCF_AGENT_TLS_CERT"), env.get("VCF_AGENT_TLS_KEY")
        return cls(admins, tenants, Path(cert) if cert else None, Path(key) if key else None)


def _pairs(variable: str, text: str) -> dict[str, str]:
    """token -> name from "name:token,name:token"."""
    tokens: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, token = item.partition(":")
        if not sep or not name or not token:
            raise ConfigError(f"{variable} entries must be NAME:TOKEN, got {item.split(':')[0]!r}...")
        tokens[token] = name
    return tokens


def _read_token_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"VCF_AGENT_TOKENS_FILE {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"VCF_AGENT_TOKENS_FILE {path}: expected a JSON object")
    result: list[dict[str, str]] = []
    for section in ("admins", "tenants"):
        entries = document.get(section, {})
        if not isinstance(entries, dict):
            raise ConfigError(f"VCF_AGENT_TOKENS_FILE {path}: {section!r} must map names to tokens")
        tokens: dict[str, str] = {}
        for name, value in entries.items():
            for token in [value] if isinstance(value, str) else value:
                if not isinstance(token, str) or not token:
                    raise ConfigError(f"VCF_AGENT_TOKENS_FILE {path}: bad token for {section}.{name}")
                tokens[token] = name
        result.append(tokens)
    return result[0], result[1]
