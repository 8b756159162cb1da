"""OpenAPI 3.1 generated from the same route table that serves requests.

Paths and operations come from the HttpRules (`_routes`); parameters, request
bodies and responses from the message descriptors, as proto3 JSON: int64 as a
string, bytes as base64, enums by name, Timestamp as a date-time string,
Duration and FieldMask as strings, maps as objects, oneofs as "at most one of".
`field_behavior` REQUIRED marks required properties and OUTPUT_ONLY read-only
ones. Errors share one schema, `{code, message, details}`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from google.api import field_behavior_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor

from mutate.gateway.rest import _fields
from mutate.gateway.rest._app import FILE_FIELD, FILE_PART, MULTIPART_TARGETS
from mutate.gateway.rest._routes import Route

FD = descriptor.FieldDescriptor

_PACKAGE_PREFIX = "mutate.v1."
_REF = "#/components/schemas/"
_MAX_QUERY_DEPTH = 4

_INT32 = {FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32}
_UINT32 = {FD.TYPE_UINT32, FD.TYPE_FIXED32}
_INT64 = {FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64}
_UINT64 = {FD.TYPE_UINT64, FD.TYPE_FIXED64}

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "examples": ["3.5s"],
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths, e.g. `rules,outputFormat`.",
    },
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "format": "int64"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "format": "byte"},
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A failed call: the gRPC status code, a message, and the "
    "google.rpc.Status details (BadRequest, RetryInfo, ErrorInfo, ...).",
    "properties": {
        "code": {
            "type": "integer",
            "format": "int32",
            "description": "The gRPC status code (google.rpc.Code).",
        },
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "required": ["@type"],
            },
        },
    },
    "required": ["code", "message", "details"],
}

_ERROR_RESPONSES = {
    "400": "The request is invalid: a bad parameter, body or precondition.",
    "401": "No valid API key: send `Authorization: Bearer mk_…` or `X-Api-Key`.",
    "403": "The API key may not do this.",
    "404": "No such resource in the caller's organization.",
    "405": "The path exists with another method.",
    "409": "A conflict: it exists already, or a concurrent change won.",
    "413": "The request body, or the input file it carries, is over the limit.",
    "429": "Too many requests; see `Retry-After`.",
    "4XX": "Another client error.",
    "500": "An internal error.",
    "503": "A dependency is unavailable; retry later (see `Retry-After`).",
    "5XX": "Another server error.",
}


def build_openapi(
    routes: Sequence[Route], *, title: str = "Mutate API", version: str = "v1"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`."""
    builder = _Builder()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = route.template.openapi_path()
        paths.setdefault(path, {})[route.http_method.lower()] = builder.operation(route)
    paths.update(_fixed_paths())
    tags = sorted({r.method.containing_service.name for r in routes})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "REST/JSON transcoding of the Mutate gRPC API, "
            "generated from its google.api.http annotations. Field names are "
            "the proto3 JSON (camelCase) names; query parameters also accept "
            "the snake_case names.",
        },
        "tags": [{"name": name} for name in tags],
        "security": [{"bearerAuth": []}, {"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA, **builder.schemas},
            "responses": {
                "Error": {
                    "description": "An error.",
                    "content": {
                        "application/json": {"schema": {"$ref": _REF + "Error"}}
                    },
                }
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`mk_…`) as a bearer token.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


def schema_name(message: descriptor.Descriptor | descriptor.EnumDescriptor) -> str:
    """The components/schemas key of a message or enum."""
    name = message.full_name
    return name[len(_PACKAGE_PREFIX) :] if name.startswith(_PACKAGE_PREFIX) else name


class _Builder:
    """Collects component schemas while building operations."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    # ------------------------------------------------------------ operations

    def operation(self, route: Route) -> dict[str, Any]:
        method = route.method
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "tags": [method.containing_service.name],
            # TODO: no descriptions: generated _pb2 modules carry no comments
            # (source info); reading the .proto files would supply them.
            "summary": _words(method.name),
            "parameters": self._parameters(route),
            "responses": self._responses(route),
        }
        body = self._request_body(route)
        if body is not None:
            operation["requestBody"] = body
        return operation

    def _parameters(self, route: Route) -> list[dict[str, Any]]:
        params: list[dict[str, Any]] = []
        names = route.template.openapi_names()
        for name, path in route.path_fields:
            params.append(
                {
                    "name": names[name],
                    "in": "path",
                    "required": True,
                    "description": f"Sets `{path.json_path}`.",
                    "schema": self._field_schema(path.leaf, for_query=True),
                }
            )
        if route.accepts_query():
            for json_path, field in _query_fields(route):
                schema = self._field_schema(field, for_query=True)
                param: dict[str, Any] = {
                    "name": json_path,
                    "in": "query",
                    "required": False,
                    "schema": schema,
                }
                if _fields.is_repeated(field):
                    param.update(style="form", explode=True)
                params.append(param)
        if "idempotency_key" in route.method.input_type.fields_by_name:
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "Makes retries safe: the same key and body "
                    "return the same result.",
                    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]*$"},
                }
            )
        return params

    def _request_body(self, route: Route) -> dict[str, Any] | None:
        if not route.body:
            return None
        message = route.method.input_type
        if route.body == "*":
            path_roots = {p.fields[0].name for _, p in route.path_fields}
            if path_roots:
                schema = self._object_schema(message, exclude=path_roots)
            else:
                schema = self._message_ref(message)
            required = False
        else:
            assert route.body_field is not None
            schema = self._field_schema(route.body_field)
            required = True
        content: dict[str, Any] = {"application/json": {"schema": schema}}
        if method_full_name(route) in MULTIPART_TARGETS:
            content["multipart/form-data"] = self._multipart(message)
        return {"required": required, "content": content}

    def _multipart(self, message: descriptor.Descriptor) -> dict[str, Any]:
        properties: dict[str, Any] = {
            FILE_PART: {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": "The file; streamed to the server in chunks.",
            }
        }
        for field in message.fields:
            if field.name == FILE_FIELD or field.cpp_type == FD.CPPTYPE_MESSAGE:
                continue
            properties[field.json_name] = self._field_schema(field, for_query=True)
        return {
            "schema": {
                "type": "object",
                "properties": properties,
                "required": [FILE_PART]
                + [f.json_name for f in message.fields if _is_required(f)],
            },
            "encoding": {FILE_PART: {"contentType": "application/octet-stream"}},
        }

    def _responses(self, route: Route) -> dict[str, Any]:
        output = route.method.output_type
        if route.response_body:
            schema = self._field_schema(output.fields_by_name[route.response_body])
        else:
            schema = self._message_ref(output)
        if route.server_streaming:
            ok: dict[str, Any] = {
                "description": "Server-Sent Events: one `event: "
                f"{output.name.lower()}` frame per {output.name} (its JSON in "
                "`data:`), an `event: error` frame with an Error if the stream "
                "fails after it started; comment lines keep it alive. Errors "
                "before the first message are ordinary JSON errors.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        else:
            ok = {
                "description": "OK",
                "content": {"application/json": {"schema": schema}},
            }
        responses: dict[str, Any] = {"200": ok}
        for status, description in _ERROR_RESPONSES.items():
            responses[status] = {
                "description": description,
                "content": {"application/json": {"schema": {"$ref": _REF + "Error"}}},
            }
        return responses

    # ------------------------------------------------------------ schemas

    def _message_ref(self, message: descriptor.Descriptor) -> dict[str, Any]:
        known = _WELL_KNOWN.get(message.full_name)
        if known is not None:
            return dict(known)
        name = schema_name(message)
        if name not in self.schemas:
            self.schemas[name] = {}  # a placeholder first: messages may recurse
            self.schemas[name] = self._object_schema(message)
        return {"$ref": _REF + name}

    def _enum_ref(self, enum: descriptor.EnumDescriptor) -> dict[str, Any]:
        name = schema_name(enum)
        if name not in self.schemas:
            self.schemas[name] = {
                "type": "string",
                "enum": [v.name for v in enum.values],
            }
        return {"$ref": _REF + name}

    def _object_schema(
        self,
        message: descriptor.Descriptor,
        *,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in message.fields:
            if field.name in exclude:
                continue
            properties[field.json_name] = self._field_schema(field)
            if _is_required(field):
                required.append(field.json_name)
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            schema["required"] = required
        one_ofs = []
        for oneof in message.oneofs:
            members = [f.json_name for f in oneof.fields if f.name not in exclude]
            if len(members) < 2:
                continue  # proto3 `optional` fields sit in one-member oneofs
            pairs = [
                {"required": [a, b]}
                for i, a in enumerate(members)
                for b in members[i + 1 :]
            ]
            one_ofs.append(
                {
                    "description": f"oneof {oneof.name}: at most one of "
                    + ", ".join(members),
                    "not": {"anyOf": pairs},
                }
            )
        if one_ofs:
            schema["allOf"] = one_ofs
        return schema

    def _field_schema(self, field: FD, *, for_query: bool = False) -> dict[str, Any]:
        if _fields.is_map(field):
            value_field = _fields.message_type(field).fields_by_name["value"]
            return {
                "type": "object",
                "additionalProperties": self._single_schema(value_field, for_query),
            }
        schema = self._single_schema(field, for_query)
        if _fields.is_repeated(field):
            schema = {"type": "array", "items": schema}
        if _is_output_only(field) and not for_query:
            schema = {**schema, "readOnly": True}
        return schema

    def _single_schema(self, field: FD, for_query: bool) -> dict[str, Any]:
        if field.type == FD.TYPE_MESSAGE or field.type == FD.TYPE_GROUP:
            return self._message_ref(_fields.message_type(field))
        if field.type == FD.TYPE_ENUM:
            return self._enum_ref(_fields.enum_type(field))
        return _scalar_schema(field)


def method_full_name(route: Route) -> str:
    return str(route.method.full_name)


def _scalar_schema(field: FD) -> dict[str, Any]:
    kind = field.type
    if kind in _INT32:
        return {
            "type": "integer",
            "format": "int32",
            "minimum": -(2**31),
            "maximum": 2**31 - 1,
        }
    if kind in _UINT32:
        return {
            "type": "integer",
            "format": "int64",
            "minimum": 0,
            "maximum": 2**32 - 1,
        }
    if kind in _INT64:
        return {"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,18}$"}
    if kind in _UINT64:
        return {"type": "string", "format": "uint64", "pattern": "^[0-9]{1,19}$"}
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return {"type": "number"}
    if kind == FD.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == FD.TYPE_BYTES:
        return {"type": "string", "format": "byte", "contentEncoding": "base64"}
    return {"type": "string"}


def _query_fields(route: Route) -> Iterator[tuple[str, FD]]:
    """(JSON path, leaf field) for every field a query parameter may set."""

    def walk(
        message: descriptor.Descriptor,
        prefix: str,
        proto_prefix: str,
        depth: int,
        seen: tuple[str, ...],
    ) -> Iterator[tuple[str, FD]]:
        for field in message.fields:
            proto_path = proto_prefix + field.name
            if any(
                proto_path == r or proto_path.startswith(r + ".")
                for r in route.reserved_paths
            ):
                continue
            json_path = prefix + field.json_name
            if _fields.is_map(field):
                continue
            if _fields.is_plain_message(field) and not _fields.is_well_known(field):
                nested = _fields.message_type(field)
                name = nested.full_name
                if depth < _MAX_QUERY_DEPTH and name not in seen:
                    yield from walk(
                        nested,
                        json_path + ".",
                        proto_path + ".",
                        depth + 1,
                        (*seen, name),
                    )
                continue
            repeated_message = (
                field.cpp_type == FD.CPPTYPE_MESSAGE and _fields.is_repeated(field)
            )
            if repeated_message and not _fields.is_well_known(field):
                continue
            yield json_path, field

    message = route.method.input_type
    yield from walk(message, "", "", 0, (message.full_name,))


def _behaviors(field: FD) -> list[int]:
    # A repeated extension: always readable, empty when unset.
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _is_required(field: FD) -> bool:
    return field_behavior_pb2.REQUIRED in _behaviors(field)


def _is_output_only(field: FD) -> bool:
    return field_behavior_pb2.OUTPUT_ONLY in _behaviors(field)


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name)


def _fixed_paths() -> dict[str, Any]:
    def plain(summary: str, codes: dict[str, str]) -> dict[str, Any]:
        responses = {
            code: {
                "description": text,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
            for code, text in codes.items()
        }
        return {
            "get": {
                "summary": summary,
                "tags": ["Health"],
                "security": [],
                "operationId": "Health_" + summary.replace(" ", ""),
                "responses": responses,
            }
        }

    return {
        "/healthz": plain("Liveness", {"200": "The process is alive."}),
        "/readyz": plain(
            "Readiness",
            {"200": "The gRPC backend is serving.", "503": "It is not."},
        ),
        "/openapi.json": plain("OpenAPI", {"200": "This document."}),
    }
