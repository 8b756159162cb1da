"""Who is calling: the API key in the call's metadata, and the idempotency key."""

from __future__ import annotations

import contextvars

import grpc

from mutate.gateway.tenancy import Authenticator, Principal

IDEMPOTENCY_METADATA = "idempotency-key"

# The caller of the RPC being served, for code that has no context at hand.
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "current_principal", default=None
)


class Auth:
    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def principal(self, context: grpc.aio.ServicerContext) -> Principal:
        principal = await self.authenticator.authenticate(
            context.invocation_metadata() or ()
        )
        current_principal.set(principal)
        return principal


def metadata_value(context: grpc.aio.ServicerContext, name: str) -> str:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else value
    return ""
