"""Control-plane runtime shared by every service: gRPC server, health, reflection, flags, auth."""

from vcf_agent.config import SecuritySettings
from vcf_agent.control._auth import (
    Principal,
    TokenTable,
    current_principal,
    may_see,
    requested_tenant,
    tenant_scope,
)
from vcf_agent.control._bus_status import LagReadRounds, LagReadSource
from vcf_agent.control._errors import abort, invalid_argument, page_offset
from vcf_agent.control._flags import (
    FieldError,
    FlagNotFoundError,
    FlagStore,
    StaleVersionError,
    instance_group,
)
from vcf_agent.control._limits import (
    MAX_PAGE_BYTES,
    MAX_PAGE_ROWS,
    REQUEST_LIMITS,
    Bound,
    LimitViolation,
    request_fields,
    request_violation,
)
from vcf_agent.control._modes import JobRun, JobRunSource, compare_modes
from vcf_agent.control._rollout import bucket, in_rollout
from vcf_agent.control._server import (
    LIVENESS,
    NOT_SERVING,
    SERVING,
    ControlPlaneServer,
    ServiceApi,
    StatusSource,
)

__all__ = [
    "LIVENESS",
    "MAX_PAGE_BYTES",
    "MAX_PAGE_ROWS",
    "NOT_SERVING",
    "REQUEST_LIMITS",
    "SERVING",
    "Bound",
    "ControlPlaneServer",
    "FieldError",
    "FlagNotFoundError",
    "FlagStore",
    "JobRun",
    "JobRunSource",
    "LagReadRounds",
    "LagReadSource",
    "LimitViolation",
    "Principal",
    "SecuritySettings",
    "ServiceApi",
    "StaleVersionError",
    "StatusSource",
    "TokenTable",
    "abort",
    "bucket",
    "compare_modes",
    "current_principal",
    "in_rollout",
    "instance_group",
    "invalid_argument",
    "may_see",
    "page_offset",
    "request_fields",
    "request_violation",
    "requested_tenant",
    "tenant_scope",
]
