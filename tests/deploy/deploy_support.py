"""Rendering the Helm chart offline and reading what its pods would run with.

The services' own settings classes are the reference: which variables each
reads comes from `mutate.common.settings.describe`, never from a copied list.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from mutate.common.settings import SettingInfo, describe

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "k8s" / "mutate"
PRODUCTION_VALUES = REPO / "deploy" / "k8s" / "values-production.yaml"

TOPOLOGY_SETTINGS = "mutate.common.topology:TopologySettings"
# The settings classes each service loads in its `main`, by import path, so a
# service whose settings are not written yet is skipped by name instead of
# breaking collection.
SETTINGS_CLASSES = {
    "gateway": ("mutate.gateway.settings:GatewaySettings",),
    "transformer": (
        "mutate.transformer.settings:TransformerSettings",
        TOPOLOGY_SETTINGS,
    ),
    "storage": ("mutate.storage.settings:StorageSettings",),
    "notifier": ("mutate.notifier.settings:NotifierSettings",),
}

# Deployments of the chart (the app.kubernetes.io/component label) and the
# service package each one runs.
COMPONENTS = {
    "gateway": "gateway",
    "transformer": "transformer",
    "transformer-work": "transformer",
    "storage": "storage",
    "notifier": "notifier",
}

# Standard OpenTelemetry variables: read by the OpenTelemetry SDK itself, not
# by a Mutate settings class.
OTEL_PREFIX = "OTEL_"

RELEASE = "mutate"
NAMESPACE = "mutate"


def settings_class(path: str) -> type:
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        pytest.skip(f"{module_name} is not written yet ({exc})")
    return getattr(module, name)  # type: ignore[no-any-return]


def settings_classes(service: str) -> list[type]:
    return [settings_class(path) for path in SETTINGS_CLASSES[service]]


def service_settings(service: str) -> list[SettingInfo]:
    """Every variable `service` reads, over all its settings classes."""
    return [info for cls in settings_classes(service) for info in describe(cls)]


def topology_settings() -> list[SettingInfo]:
    return describe(settings_class(TOPOLOGY_SETTINGS))


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, as Helm merges several values files."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def production_values() -> dict[str, Any]:
    return yaml.safe_load(PRODUCTION_VALUES.read_text())  # type: ignore[no-any-return]


# Credentials given inline, so the chart makes its Secrets: each value is a
# marker that must never show up outside a Secret.
SECRET_MARKERS = {
    "nats": "nats://mutate:nats-marker-7f3a@nats.nats.svc:4222",
    "postgres": "postgresql://mutate:pg-marker-91c2@db.internal:5432/mutate",
    "r2_key": "r2-key-marker-5d1e",
    "r2_secret": "r2-secret-marker-c0b8",
    "webhook": "whsec_d2ViaG9vay1tYXJrZXItNGE5Yg==",
    "encryption": "ZW5jcnlwdGlvbi1tYXJrZXItMzJieXRlcy14eHh4eHg=",
}

INLINE_SECRETS_VALUES: dict[str, Any] = {
    "nats": {"url": SECRET_MARKERS["nats"], "existingSecret": {"name": ""}},
    "postgresql": {"url": SECRET_MARKERS["postgres"], "existingSecret": {"name": ""}},
    "objectStorage": {
        "provider": "r2",
        "r2": {
            "endpoint": "https://0123456789abcdef.r2.cloudflarestorage.com",
            "bucket": "mutate",
            "accessKeyId": SECRET_MARKERS["r2_key"],
            "secretAccessKey": SECRET_MARKERS["r2_secret"],
        },
        "existingSecret": {"name": ""},
    },
    "webhooks": {
        "secret": SECRET_MARKERS["webhook"],
        "encryptionKey": SECRET_MARKERS["encryption"],
        "existingSecret": {"name": ""},
    },
}


def scenarios() -> dict[str, dict[str, Any]]:
    """Values sets the chart is rendered with: name → user values."""
    production = production_values()
    return {
        "default": {},
        "production": production,
        "inline-secrets-r2": deep_merge(production, INLINE_SECRETS_VALUES),
    }


@dataclasses.dataclass(frozen=True)
class Rendered:
    """The manifests of one render, parsed."""

    files: dict[str, str]
    manifests: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        for m in self.of_kind(kind):
            if m["metadata"]["name"] == name:
                return m
        raise KeyError(f"no {kind} {name}")

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.named(kind, name)
        except KeyError:
            return None

    def deployments(self) -> dict[str, dict[str, Any]]:
        """Deployments by component label."""
        return {
            d["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in self.of_kind("Deployment")
        }

    def hook_jobs(self) -> list[dict[str, Any]]:
        return [j for j in self.of_kind("Job") if hook_weight(j) is not None]


def render(values: Mapping[str, Any]) -> Rendered:
    import helm_python

    chart = helm_python.Chart.load(CHART)
    files = chart.render(
        dict(values), name=RELEASE, namespace=NAMESPACE, is_install=True
    )
    manifests = []
    for name, text in sorted(files.items()):
        if not name.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests.append(doc)
    return Rendered(files=files, manifests=manifests)


def hook_weight(manifest: Mapping[str, Any]) -> int | None:
    annotations = manifest["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in annotations:
        return None
    return int(annotations.get("helm.sh/hook-weight", "0"))


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


@dataclasses.dataclass(frozen=True)
class EnvVar:
    """One variable of a container and where its value comes from."""

    name: str
    source: str  # "configmap", "value", "secret" or "field"
    value: str | None = None  # for configmap and value
    secret: str | None = None
    key: str | None = None
    optional: bool = False


def container_env(
    rendered: Rendered, container: Mapping[str, Any]
) -> dict[str, EnvVar]:
    """Every variable a container gets, later sources overriding earlier."""
    env: dict[str, EnvVar] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref, f"unexpected envFrom {source}"
        data = rendered.named("ConfigMap", ref["name"]).get("data") or {}
        for name, value in data.items():
            env[name] = EnvVar(name, "configmap", value=value)
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = EnvVar(name, "value", value=item["value"])
            continue
        value_from = item["valueFrom"]
        if "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            env[name] = EnvVar(
                name,
                "secret",
                secret=ref["name"],
                key=ref["key"],
                optional=bool(ref.get("optional", False)),
            )
        elif "fieldRef" in value_from:
            env[name] = EnvVar(name, "field", value=value_from["fieldRef"]["fieldPath"])
        else:
            raise AssertionError(f"unexpected valueFrom {value_from}")
    return env


def resolved_env(
    rendered: Rendered, env: Mapping[str, EnvVar], *, pod_name: str
) -> dict[str, str]:
    """The values a pod would see; secrets of unrendered Secrets are absent."""
    out: dict[str, str] = {}
    for name, var in env.items():
        if var.source in ("configmap", "value"):
            assert var.value is not None
            out[name] = var.value
        elif var.source == "field":
            out[name] = pod_name
        else:
            secret = rendered.find("Secret", var.secret or "")
            data = (secret or {}).get("data") or {}
            if var.key in data:
                out[name] = base64.b64decode(data[var.key]).decode()
    return out


def walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield str(key)
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)
