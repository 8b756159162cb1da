"""The route table, read from the `google.api.http` options of the services.

Built once at start-up from the service descriptors: every HttpRule (and its
`additional_bindings`) becomes a `Route` with its parsed path template, the
request field each path variable sets, the body field, and the message classes.
A request is matched against the routes with the same segment count and verb,
so a lookup touches a handful of candidates. There is no hand-written route:
a new annotated method is served as soon as the protos are regenerated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message

from mutate.gateway.rest import _errors, _fields, _template

logger = logging.getLogger(__name__)

_METHOD_KINDS = ("get", "put", "post", "delete", "patch")


class RouteError(ValueError):
    """The annotations describe a route the transcoder cannot serve."""


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str
    template: _template.PathTemplate
    method: descriptor.MethodDescriptor
    # "" (no body), "*" (the whole request) or a top-level request field name.
    body: str
    response_body: str
    request_class: type[Message]
    response_class: type[Message]
    # (template variable, the request field it sets)
    path_fields: tuple[tuple[str, _fields.FieldPath], ...]
    body_field: descriptor.FieldDescriptor | None
    operation_id: str
    # Proto paths a query parameter may not set: path variables and the body.
    reserved_paths: frozenset[str] = field(default=frozenset())

    @property
    def full_method(self) -> str:
        """The gRPC method path, "/package.Service/Method"."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    def accepts_query(self) -> bool:
        return self.body != "*"


@dataclass(frozen=True)
class Match:
    route: Route
    variables: dict[str, str]


class RouteTable:
    """Routes indexed by (segment count, verb) for matching request paths."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        self._exact: dict[tuple[int, str | None], list[Route]] = {}
        self._multi: list[Route] = []
        seen: dict[tuple[str, str], Route] = {}
        for route in self.routes:
            key = (route.http_method, route.template.shape())
            if key in seen:
                raise RouteError(
                    f"{route.http_method} {route.template.text} is bound twice: "
                    f"{seen[key].method.full_name} and {route.method.full_name}"
                )
            seen[key] = route
            if route.template.has_multi:
                self._multi.append(route)
            else:
                slot = (len(route.template.segments), route.template.verb)
                self._exact.setdefault(slot, []).append(route)

    def match(self, http_method: str, raw_path: str) -> Match:
        """The route for a request, or a RestError (404, or 405 with Allow)."""
        parts, verb = _template.split_path(raw_path)
        allowed: list[str] = []
        candidates = self._exact.get((len(parts), verb), ())
        for route in (*candidates, *self._multi):
            variables = route.template.match(parts, verb)
            if variables is None:
                continue
            if route.http_method == http_method:
                return Match(route, variables)
            allowed.append(route.http_method)
        if allowed:
            raise _errors.method_not_allowed(http_method, raw_path, allowed)
        raise _errors.not_found_route(http_method, raw_path)


def http_rules(method: descriptor.MethodDescriptor) -> list[http_pb2.HttpRule]:
    """The method's HttpRule and its additional bindings; empty if unannotated."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def build_routes(services: Iterable[descriptor.ServiceDescriptor]) -> list[Route]:
    """Every HTTP binding of every method of `services`, in declaration order."""
    routes: list[Route] = []
    for service in services:
        for method in service.methods:
            for index, rule in enumerate(http_rules(method)):
                routes.append(_build_route(method, rule, index))
    return routes


def _build_route(
    method: descriptor.MethodDescriptor, rule: http_pb2.HttpRule, index: int
) -> Route:
    where = method.full_name
    if method.client_streaming:
        raise RouteError(f"{where}: client-streaming methods have no REST binding")
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise RouteError(f"{where}: HttpRule without a pattern")
    if kind == "custom":
        http_method = rule.custom.kind.upper()
        path = rule.custom.path
    elif kind in _METHOD_KINDS:
        http_method = kind.upper()
        path = getattr(rule, kind)
    else:
        raise RouteError(f"{where}: unsupported pattern {kind!r}")
    try:
        template = _template.parse_template(path)
    except _template.TemplateError as exc:
        raise RouteError(f"{where}: {exc}") from exc

    request_type = method.input_type
    path_fields = []
    for variable in template.variables:
        try:
            resolved = _fields.resolve(request_type, variable.field_path)
        except _fields.FieldError as exc:
            raise RouteError(
                f"{where}: path variable {variable.field_path}: {exc}"
            ) from exc
        if _fields.is_repeated(resolved.leaf):
            raise RouteError(f"{where}: path variable {variable.field_path} repeats")
        path_fields.append((variable.field_path, resolved))

    body_field = None
    if rule.body and rule.body != "*":
        body_field = request_type.fields_by_name.get(rule.body)
        if body_field is None:
            raise RouteError(f"{where}: body field {rule.body!r} does not exist")
    output_fields = method.output_type.fields_by_name
    if rule.response_body and rule.response_body not in output_fields:
        raise RouteError(f"{where}: no response field {rule.response_body!r}")

    reserved = {p.proto_path for _, p in path_fields}
    if body_field is not None:
        reserved.add(body_field.name)
    suffix = f"_{index}" if index else ""
    return Route(
        http_method=http_method,
        template=template,
        method=method,
        body=rule.body,
        response_body=rule.response_body,
        request_class=message_class(request_type),
        response_class=message_class(method.output_type),
        path_fields=tuple(path_fields),
        body_field=body_field,
        operation_id=f"{method.containing_service.name}_{method.name}{suffix}",
        reserved_paths=frozenset(reserved),
    )


def message_class(message: descriptor.Descriptor) -> type[Message]:
    """The generated (or built) message class of a descriptor."""
    cls: Any = message_factory.GetMessageClass(message)
    return cls  # type: ignore[no-any-return]
