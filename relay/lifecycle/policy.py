"""Step 3: what the key allows. Its IP allowlist, and the models it may use (a key
limited to some models may still ask for ``auto``: the choice then stays among
them, see ``routing``). Its spend limits are checked with its hold (``admission``)."""

import ipaddress

from .. import errors
from .request import RelayRequest
from .routing import AUTO


def _ip_allowed(allowlist: tuple[str, ...], client_ip: str | None) -> bool:
    if not allowlist:
        return True
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    for entry in allowlist:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def check(request: RelayRequest) -> None:
    """Raises ApiError when the key may not make this request."""
    key, model = request.key, request.params.model
    if not _ip_allowed(key.ip_allowlist, request.client_ip):
        raise errors.permission_denied(
            f"Requests from {request.client_ip} are not allowed for this API key.",
            "ip_not_allowed",
        )
    if model != AUTO and key.allowed_models and model not in key.allowed_models:
        raise errors.permission_denied(
            f"This API key is not allowed to use the model `{model}`.", "model_not_allowed"
        )
