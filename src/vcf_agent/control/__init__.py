"""Control-plane runtime shared by every service: gRPC server, health, reflection, errors."""

from vcf_agent.control._errors import invalid_argument
from vcf_agent.control._server import NOT_SERVING, SERVING, ControlPlaneServer, ServiceApi, StatusSource

__all__ = ["NOT_SERVING", "SERVING", "ControlPlaneServer", "ServiceApi", "StatusSource", "invalid_argument"]
