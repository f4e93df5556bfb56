"""The life of one relayed request: read ``serve`` top to bottom.

serve.py      the request, step by step, for an answer and for a stream
request.py    RelayRequest: owns what the request takes, ends it exactly once
auth.py       1. authenticate the key
              2. validate: the dialect (``relay.dialects``)
policy.py     3. what the key allows (IP allowlist, models)
routing.py    4. the models and channels that may serve it, in order
admission.py  5. rate limits, 6. the hold
upstream.py   7. the provider call, with the one failover loop
respond.py    8. the JSON answer, the error, or the stream
finish.py     9. the usage record, settlement asked for, limits given back
"""

from .request import CLIENT_GONE, endings_done, endings_settled
from .respond import method_not_allowed, request_id_for
from .serve import serve

__all__ = [
    "CLIENT_GONE",
    "endings_done",
    "endings_settled",
    "method_not_allowed",
    "request_id_for",
    "serve",
]
