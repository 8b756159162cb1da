"""REST/JSON front end of the gateway, transcoded from the gRPC API at run time.

Nothing here is a second hand-written API: routes, request and response
mapping and the OpenAPI document all come from the `google.api.http`
annotations and message descriptors of protos/mutate/v1/public_api.proto.
The server calls the gateway's own gRPC server over a loopback channel, so
authentication, validation and errors have one implementation.

Start it from the gateway's main::

    rest = await serve_rest(host=..., port=8080, grpc_target="127.0.0.1:50051",
                            settings=gateway_settings)
    ...
    await rest.stop(grace)
"""

from __future__ import annotations

from mutate.gateway.rest._app import FORWARDED_HEADERS, RestApp
from mutate.gateway.rest._errors import HTTP_STATUS_BY_CODE, RestError
from mutate.gateway.rest._openapi import build_openapi
from mutate.gateway.rest._routes import Route, RouteError, RouteTable, build_routes
from mutate.gateway.rest._server import (
    RestServer,
    RestServerState,
    public_services,
    serve_rest,
)
from mutate.gateway.rest._settings import RestSettings

__all__ = [
    "FORWARDED_HEADERS",
    "HTTP_STATUS_BY_CODE",
    "RestApp",
    "RestError",
    "RestServer",
    "RestServerState",
    "RestSettings",
    "Route",
    "RouteError",
    "RouteTable",
    "build_openapi",
    "build_routes",
    "public_services",
    "serve_rest",
]
