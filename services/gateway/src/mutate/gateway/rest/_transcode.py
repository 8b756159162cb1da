"""Requests and responses between HTTP/JSON and protobuf messages.

A request message is assembled in HttpRule order: the body first (`*` fills the
whole request, a field name fills that field), then the path variables (which
win over the body, as in grpc-gateway), then the query parameters, which may
set any other field. Responses are proto3 JSON with camelCase names, fields
without presence printed with their defaults, so a list that came back empty
still has its key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.message import Message

from mutate.gateway.rest import _body_errors, _errors, _fields, _json
from mutate.gateway.rest._routes import Route

# Resolved query parameter names kept per route; more names than this are
# resolved on every request (someone is probing with random names).
_QUERY_CACHE_LIMIT = 256


class RequestBuilder:
    """Builds the request message of one route from path, query and body."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self._query_cache: dict[str, _fields.FieldPath | str] = {}

    def build(
        self, variables: Mapping[str, str], query_string: bytes, body: bytes
    ) -> Message:
        route = self.route
        request = route.request_class()
        if route.body:
            self._apply_body(request, body)
        for name, path in route.path_fields:
            try:
                _fields.set_field(request, path, variables[name])
            except _fields.FieldError as exc:
                raise _errors.bad_request(
                    f"path variable {name}: {exc}", field=name
                ) from None
        if query_string:
            self._apply_query(request, query_string)
        return request

    def _apply_body(self, request: Message, body: bytes) -> None:
        route = self.route
        if not body.strip():
            # An empty body is an empty object: `curl -X POST .../jobs/x:cancel`.
            return
        try:
            data = _json.loads(body)
        except _json.JsonDecodeError as exc:
            raise _errors.bad_request(
                f"request body is not valid JSON: {exc}", field="body"
            ) from None
        if route.body_field is None:
            if not isinstance(data, dict):
                raise _errors.bad_request(
                    "request body must be a JSON object", field="body"
                )
            target: Any = data
            field_name = "body"
        else:
            target = {route.body_field.json_name: data}
            field_name = route.body_field.json_name
        try:
            json_format.ParseDict(target, request, ignore_unknown_fields=False)
        except (
            json_format.Error,
            ValueError,
            TypeError,
            OverflowError,  # 1e999 where an integer goes
            RecursionError,  # nesting deeper than the decoder got
        ) as exc:
            raise self._body_error(data, exc, field_name) from None

    def _body_error(self, data: Any, exc: Exception, field_name: str) -> Exception:
        """A 400 that says which field is wrong and how, for a person."""
        body_field = self.route.body_field
        try:
            problem = (
                _body_errors.explain(self.route.method.input_type, data)
                if body_field is None
                else _body_errors.explain_field(body_field, data)
            )
        except RecursionError:  # as deep as what protobuf gave up on
            problem = None
        if problem is None:
            text = _body_errors.protobuf_text(exc)
            return _errors.bad_request(
                f"invalid request body: {text}", field=field_name
            )
        return _errors.bad_request(
            f"invalid request body: {problem.message}", field=problem.field
        )

    def _apply_query(self, request: Message, query_string: bytes) -> None:
        try:
            pairs = parse_qsl(
                query_string.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
            )
        except UnicodeDecodeError:
            raise _errors.bad_request(
                "query string is not UTF-8", field="query"
            ) from None
        seen: set[str] = set()
        for name, value in pairs:
            path = self._resolve_query(name)
            if not _fields.is_repeated(path.leaf):
                if path.proto_path in seen:
                    raise _errors.bad_request(
                        f"query parameter {name!r} is given more than once",
                        field=name,
                    )
                seen.add(path.proto_path)
            try:
                _fields.set_field(request, path, value)
            except _fields.FieldError as exc:
                raise _errors.bad_request(
                    f"query parameter {name!r}: {exc}", field=name
                ) from None

    def _resolve_query(self, name: str) -> _fields.FieldPath:
        cached = self._query_cache.get(name)
        if cached is None:
            cached = self._resolve_uncached(name)
            if len(self._query_cache) < _QUERY_CACHE_LIMIT:
                self._query_cache[name] = cached
        if isinstance(cached, str):
            raise _errors.bad_request(cached, field=name)
        return cached

    def _resolve_uncached(self, name: str) -> _fields.FieldPath | str:
        """The field a query parameter sets, or the message refusing it."""
        route = self.route
        if not route.accepts_query():
            return (
                f"unknown query parameter {name!r}: "
                f"{route.http_method} {route.template.text} takes every field "
                "in the JSON body"
            )
        try:
            path = _fields.resolve(route.method.input_type, name)
        except _fields.FieldError as exc:
            return f"unknown query parameter {name!r}: {exc}"
        proto_path = path.proto_path
        for reserved in route.reserved_paths:
            if proto_path == reserved or proto_path.startswith(reserved + "."):
                return (
                    f"query parameter {name!r} is not allowed: "
                    "that field comes from the path or the body"
                )
        return path


def encode_message(route: Route, message: Message) -> bytes:
    """The proto3 JSON of a response (or of its `response_body` field)."""
    return _json.dumps(message_to_json(route, message))


def message_to_json(route: Route, message: Message) -> Any:
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    if route.response_body:
        field = route.method.output_type.fields_by_name[route.response_body]
        return data.get(field.json_name)
    return data
