"""Path templates, the route table and query parsing, on the real descriptors."""

from __future__ import annotations

import datetime
import itertools

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory

from mutate.gateway.rest import RestError, RouteError, RouteTable, build_routes
from mutate.gateway.rest import public_services as services
from mutate.gateway.rest._fields import FieldError, parse_field_mask, resolve, set_field
from mutate.gateway.rest._routes import http_rules
from mutate.gateway.rest._template import (
    TemplateError,
    parse_template,
    split_path,
)
from mutate.gateway.rest._transcode import RequestBuilder
from mutate.v1 import job_pb2, public_api_pb2

TABLE = RouteTable(build_routes(services()))


def _annotated_methods() -> list[str]:
    return [m.full_name for s in services() for m in s.methods if http_rules(m)]


# ---------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/jobs/{id}", "/v1/jobs/abc", {"id": "abc"}),
        ("/v1/jobs/{id}", "/v1/jobs/abc:cancel", None),
        ("/v1/jobs/{id}:cancel", "/v1/jobs/abc:cancel", {"id": "abc"}),
        ("/v1/jobs/{id}:cancel", "/v1/jobs/abc", None),
        ("/v1/jobs/{id}", "/v1/jobs/a%3Ab", {"id": "a:b"}),
        ("/v1/jobs/{id}", "/v1/jobs/", None),
        ("/v1/jobs/{id}", "/v1/jobs/a/b", None),
        ("/v1/deliveries:recover", "/v1/deliveries:recover", {}),
        (
            "/v1/{name=projects/*/jobs/*}",
            "/v1/projects/p1/jobs/j1",
            {"name": "projects/p1/jobs/j1"},
        ),
        ("/v1/{name=projects/*/jobs/*}", "/v1/projects/p1/other/j1", None),
        ("/v1/{path=files/**}", "/v1/files/a/b%2Fc/d", {"path": "files/a/b%2Fc/d"}),
        ("/v1/{path=files/**}", "/v1/files", {"path": "files"}),
        ("/v1/*/items/{a.b}:go", "/v1/x/items/7:go", {"a.b": "7"}),
    ],
)
def test_template_matching_follows_http_rule_grammar(
    template: str, path: str, expected: dict[str, str] | None
) -> None:
    parts, verb = split_path(path)

    assert parse_template(template).match(parts, verb) == expected


@pytest.mark.parametrize(
    "bad",
    ["v1/jobs", "/v1/{id", "/v1/{id}}", "/v1/**/x", "/v1/{a-b}", "/v1/jobs:"],
)
def test_template_grammar_errors(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(bad)


def test_template_openapi_path_and_shape() -> None:
    template = parse_template("/v1/configurations/{configuration.id}:test")
    clash = parse_template("/v1/{parent.id}/{child.id}")

    assert template.openapi_path() == "/v1/configurations/{id}:test"
    assert template.shape() == "/v1/configurations/single:test"
    assert clash.openapi_path() == "/v1/{parent_id}/{child_id}"


# ---------------------------------------------------------------- route table


def test_every_annotated_method_is_routable_at_its_template() -> None:
    routed = {r.method.full_name for r in TABLE.routes}

    assert routed == set(_annotated_methods())
    for route in TABLE.routes:
        path = route.template.openapi_path()
        for name in route.template.openapi_names().values():
            path = path.replace("{" + name + "}", "some_id")
        match = TABLE.match(route.http_method, path)
        assert match.route is route, path
        assert set(match.variables.values()) <= {"some_id"}


def test_the_public_api_has_the_documented_routes() -> None:
    routes = {(r.http_method, r.template.text) for r in TABLE.routes}

    assert len(routes) == 28
    for expected in [
        ("POST", "/v1/configurations"),
        ("PATCH", "/v1/configurations/{configuration.id}"),
        ("POST", "/v1/configurations/{id}:test"),
        ("GET", "/v1/jobs/{id}:watch"),
        ("POST", "/v1/queue/dead-letters:redrive"),
        ("POST", "/v1/webhook-secret:rotate"),
    ]:
        assert expected in routes


def test_unannotated_upload_job_has_no_route() -> None:
    assert "mutate.v1.JobService.UploadJob" not in {
        r.method.full_name for r in TABLE.routes
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/v1/jobs/x:cancel", 405, "POST"),
        ("POST", "/v1/jobs/x", 405, "DELETE, GET"),
        ("GET", "/v1/jobs/x:explode", 404, None),
        ("GET", "/v2/jobs", 404, None),
        ("GET", "/v1/jobs/x/y/z", 404, None),
    ],
)
def test_route_table_misses(
    method: str, path: str, status: int, allow: str | None
) -> None:
    with pytest.raises(RestError) as caught:
        TABLE.match(method, path)

    assert caught.value.http_status == status
    assert caught.value.headers.get("allow") == allow


_synthetic_files = itertools.count()


def _synthetic_service(
    rule: http_pb2.HttpRule, *, streaming: bool = False
) -> descriptor.ServiceDescriptor:
    """A one-method service with `rule`, in a new file of the default pool."""
    package = f"synthetic{next(_synthetic_files)}"
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{package}.proto",
        package=package,
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    request = proto.message_type.add(name="Request")
    request.field.add(name="id", number=1, type=9, label=1, json_name="id")
    request.field.add(name="tags", number=2, type=9, label=3, json_name="tags")
    method = proto.service.add(name="Things").method.add(
        name="Do",
        input_type=f".{package}.Request",
        output_type=f".{package}.Request",
        client_streaming=streaming,
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool = descriptor_pool.Default()
    pool.Add(proto)
    return pool.FindServiceByName(f"{package}.Things")


def test_additional_bindings_and_custom_verbs_become_routes() -> None:
    rule = http_pb2.HttpRule(get="/v1/things/{id}")
    rule.additional_bindings.add(
        custom=http_pb2.CustomHttpPattern(kind="SEARCH", path="/v1/things")
    )
    routes = build_routes([_synthetic_service(rule)])

    assert [(r.http_method, r.template.text) for r in routes] == [
        ("GET", "/v1/things/{id}"),
        ("SEARCH", "/v1/things"),
    ]
    assert [r.operation_id for r in routes] == ["Things_Do", "Things_Do_1"]


@pytest.mark.parametrize(
    "rule",
    [
        http_pb2.HttpRule(get="/v1/things/{missing}"),
        http_pb2.HttpRule(get="/v1/things/{tags}"),
        http_pb2.HttpRule(post="/v1/things", body="nothing"),
        http_pb2.HttpRule(get="/v1/things", response_body="nothing"),
        http_pb2.HttpRule(get="v1/things"),
    ],
)
def test_bad_annotations_fail_at_start_up(rule: http_pb2.HttpRule) -> None:
    with pytest.raises(RouteError):
        build_routes([_synthetic_service(rule)])


def test_client_streaming_binding_fails_at_start_up() -> None:
    rule = http_pb2.HttpRule(post="/v1/things", body="*")

    with pytest.raises(RouteError, match="client-streaming"):
        build_routes([_synthetic_service(rule, streaming=True)])


def test_same_route_bound_twice_fails() -> None:
    rule = http_pb2.HttpRule(get="/v1/things/{id}")
    rule.additional_bindings.add(get="/v1/things/{id=*}")

    with pytest.raises(RouteError, match="bound twice"):
        RouteTable(build_routes([_synthetic_service(rule)]))


def test_repeated_query_parameter_appends() -> None:
    service = _synthetic_service(http_pb2.HttpRule(get="/v1/things"))
    (route,) = build_routes([service])

    request = RequestBuilder(route).build({}, b"tags=a&tags=b&id=x", b"")

    assert list(request.tags) == ["a", "b"]  # type: ignore[attr-defined]
    assert request.id == "x"  # type: ignore[attr-defined]
    assert message_factory.GetMessageClass(service.methods[0].input_type)


# ---------------------------------------------------------------- fields


def test_resolve_accepts_json_and_proto_names() -> None:
    message = public_api_pb2.UpdateConfigurationRequest.DESCRIPTOR

    assert resolve(message, "configuration.readOptions.headerRow").proto_path == (
        "configuration.read_options.header_row"
    )
    assert resolve(message, "expected_version").json_path == "expectedVersion"


@pytest.mark.parametrize(
    "name", ["nope", "configuration", "configuration.rules.id", "updateMask.paths", ""]
)
def test_resolve_refuses_what_text_cannot_set(name: str) -> None:
    with pytest.raises(FieldError):
        resolve(public_api_pb2.UpdateConfigurationRequest.DESCRIPTOR, name)


def test_set_field_parses_each_type() -> None:
    message = public_api_pb2.ListJobsRequest()
    descriptor = message.DESCRIPTOR

    set_field(message, resolve(descriptor, "status"), "4")
    set_field(
        message, resolve(descriptor, "createdBefore"), "2024-02-01T00:00:00+01:00"
    )
    set_field(message, resolve(descriptor, "pageSize"), "-3")

    assert message.status == job_pb2.Job.FAILED
    assert message.created_before.ToDatetime(datetime.UTC) == datetime.datetime(
        2024, 1, 31, 23, tzinfo=datetime.UTC
    )
    assert message.page_size == -3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("pageSize", "2147483648"),
        ("pageSize", "1.5"),
        ("status", "99"),
        ("createdAfter", "2024-13-01T00:00:00Z"),
    ],
)
def test_set_field_refuses_bad_values(name: str, value: str) -> None:
    message = public_api_pb2.ListJobsRequest()

    with pytest.raises(FieldError):
        set_field(message, resolve(message.DESCRIPTOR, name), value)


def test_set_field_bool_bytes_and_duration() -> None:
    test = public_api_pb2.TestConfigurationRequest()
    set_field(test, resolve(test.DESCRIPTOR, "fileContent"), "aGk-")
    upload = public_api_pb2.CreateUploadRequest()
    set_field(upload, resolve(upload.DESCRIPTOR, "expiresIn"), "90s")

    assert test.file_content == b"hi>"
    assert upload.expires_in.seconds == 90


def test_field_mask_accepts_camel_and_snake_case() -> None:
    assert parse_field_mask("rules, outputFormat,read_options.header_row,") == [
        "rules",
        "output_format",
        "read_options.header_row",
    ]
