"""The gateway: the public API that backend systems call."""

# For the benchmark, which times the user tower with the inputs the gateway sends it.
from services.gateway.recommend import user_inputs

__all__ = ["user_inputs"]
