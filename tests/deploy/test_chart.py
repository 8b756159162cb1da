"""The Helm chart in deploy/k8s/mutate, rendered offline and checked.

Rendered with the default values, the production example and that example
with every credential given inline (so the chart makes its own Secrets). The
environment each pod gets is compared, both ways, with the settings classes
of the services themselves.
"""

from __future__ import annotations

import base64
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from mutate.common import settings as settings_module
from mutate.common import topology

from .deploy_support import (
    CHART,
    COMPONENTS,
    INLINE_SECRETS_VALUES,
    OTEL_PREFIX,
    RELEASE,
    SECRET_MARKERS,
    SETTINGS_CLASSES,
    TOPOLOGY_SETTINGS,
    EnvVar,
    Rendered,
    container_env,
    containers,
    hook_weight,
    pod_spec,
    render,
    resolved_env,
    scenarios,
    service_settings,
    settings_class,
    settings_classes,
    topology_settings,
    walk_strings,
)

SCENARIOS = scenarios()
# The default values plus credentials, so every service's settings load.
DEFAULTS_WITH_CREDENTIALS = INLINE_SECRETS_VALUES
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest the validator knows.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_RENDERS: dict[str, Rendered] = {}


@pytest.fixture
def rendered(scenario: str) -> Rendered:
    if scenario not in _RENDERS:
        _RENDERS[scenario] = render(SCENARIOS[scenario])
    return _RENDERS[scenario]


def _env_of(rendered: Rendered, component: str) -> dict[str, EnvVar]:
    deployment = rendered.deployments()[component]
    (container,) = pod_spec(deployment)["containers"]
    return container_env(rendered, container)


def _missing_hint(service: str, names: set[str]) -> str:
    found = [s for s in service_settings(service) if s.env in names]
    lines = [
        f"    # {s.help}\n    {s.env}: ...  (default {s.default!r} in code units)"
        for s in found
    ]
    return (
        "add them under `" + service + ".settings` in values.yaml (or derive "
        "them in templates/_helpers.tpl):\n" + "\n".join(lines)
    )


# -- lint, schema, Kubernetes schemas -----------------------------------------


def test_chart_lints_strictly(scenario: str) -> None:
    report = helm_python.lint(CHART, SCENARIOS[scenario] or None, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"], report["errors"]
    assert not problems, problems


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"objectStorage": {"provider": "gcs"}}, "/objectStorage/provider"),
        (
            {"containerSecurityContext": {"readOnlyRootFilesystem": False}},
            "readOnlyRootFilesystem",
        ),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"gateway": {"settings": {"not-an-env-name": "1"}}}, "not-an-env-name"),
        ({"gateway": {"replicaCount": -1}}, "replicaCount"),
        ({"logging": {"format": "xml"}}, "format"),
        ({"replicas": 3}, "replicas"),
    ],
    ids=["provider", "rootfs", "root", "env-name", "replicas", "log", "unknown"],
)
def test_values_schema_refuses_bad_values(values: dict[str, Any], where: str) -> None:
    chart = helm_python.Chart.load(CHART)
    with pytest.raises(helm_python.HelmValuesError, match=where):
        chart.render(values, name=RELEASE, namespace=RELEASE, is_install=True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateway": {"settings": {"MUTATE_GRPC_PORT": "1"}}}, "sets MUTATE_GRPC_PORT"),
        (
            {"notifier": {"settings": {"WEBHOOK_SECRET": "whsec_x"}}},
            "WEBHOOK_SECRET is a secret",
        ),
    ],
    ids=["derived", "secret"],
)
def test_settings_maps_refuse_chart_and_secret_variables(
    values: dict[str, Any], message: str
) -> None:
    chart = helm_python.Chart.load(CHART)
    with pytest.raises(helm_python.HelmRenderError, match=message):
        chart.render(values, name=RELEASE, namespace=RELEASE, is_install=True)


def _check_scaled_object(manifest: dict[str, Any], rendered: Rendered) -> None:
    """KEDA's CRD is not in the validator: check what KEDA requires."""
    assert manifest["apiVersion"] == "keda.sh/v1alpha1"
    spec = manifest["spec"]
    target = spec["scaleTargetRef"]["name"]
    assert rendered.find("Deployment", target), target
    assert spec["triggers"], "a ScaledObject needs at least one trigger"
    for trigger in spec["triggers"]:
        assert trigger["type"] == "nats-jetstream"
        metadata = trigger["metadata"]
        for field in ("natsServerMonitoringEndpoint", "account", "stream", "consumer"):
            assert metadata.get(field), f"nats-jetstream trigger needs {field}"
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert int(metadata["lagThreshold"]) > 0
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]


def test_manifests_match_kubernetes_schemas(rendered: Rendered) -> None:
    assert rendered.manifests
    for manifest in rendered.manifests:
        if manifest["apiVersion"].startswith("keda.sh/"):
            _check_scaled_object(manifest, rendered)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{manifest['kind']}/{manifest['metadata']['name']}"
                pytest.fail(f"{name} on Kubernetes {version}: {exc.message}")


# -- security, probes, resources ----------------------------------------------


def _workloads(rendered: Rendered) -> list[dict[str, Any]]:
    return [*rendered.of_kind("Deployment"), *rendered.of_kind("Job")]


def test_every_container_runs_non_root_read_only_with_resources(
    rendered: Rendered,
) -> None:
    for workload in _workloads(rendered):
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod.get("automountServiceAccountToken") is False, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), name
        for container in containers(workload):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security.get("runAsUser", 1) != 0, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security.get("privileged", False) is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert not security["capabilities"].get("add"), where
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), where
            assert "memory" in resources["limits"], where
            # A read-only root filesystem still needs somewhere to write.
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, where


def test_every_service_has_grpc_probes_on_its_port(rendered: Rendered) -> None:
    for component, deployment in rendered.deployments().items():
        (container,) = pod_spec(deployment)["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == ports["grpc"], (
                component,
                probe,
            )


# -- ports ---------------------------------------------------------------------


def test_ports_match_what_the_services_listen_on(rendered: Rendered) -> None:
    for component, deployment in rendered.deployments().items():
        service = COMPONENTS[component]
        env = _env_of(rendered, component)
        (container,) = pod_spec(deployment)["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        defaults = {s.env: s.default for s in service_settings(service)}

        assert env["MUTATE_GRPC_HOST"].value == "0.0.0.0"
        assert int(env["MUTATE_GRPC_PORT"].value or 0) == ports["grpc"], component
        # The chart keeps each service on its own default port.
        assert ports["grpc"] == defaults["MUTATE_GRPC_PORT"], component
        if "MUTATE_HTTP_PORT" in defaults:
            assert int(env["MUTATE_HTTP_PORT"].value or 0) == ports["http"]
            assert env["MUTATE_HTTP_HOST"].value == "0.0.0.0"
        else:
            assert "http" not in ports, component


def test_services_route_to_the_container_ports(rendered: Rendered) -> None:
    deployments = rendered.deployments()
    for svc in rendered.of_kind("Service"):
        selector = svc["spec"]["selector"]
        matched = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, f"{svc['metadata']['name']} selects {matched}"
        (container,) = pod_spec(matched[0])["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["port"] == ports[port["targetPort"]], port


def test_peer_addresses_name_the_peer_services(rendered: Rendered) -> None:
    services = {
        s["metadata"]["name"]: {p["name"]: p["port"] for p in s["spec"]["ports"]}
        for s in rendered.of_kind("Service")
    }
    seen = 0
    for component in rendered.deployments():
        for name, var in _env_of(rendered, component).items():
            if not name.endswith("_ADDRESS") or var.source != "configmap":
                continue
            host, _, port = (var.value or "").rpartition(":")
            assert host in services, f"{component} {name}={var.value}"
            assert int(port) == services[host]["grpc"], f"{component} {name}"
            seen += 1
    assert seen >= 4  # gateway's three peers and the transformer's storage


# -- environment versus settings classes, both ways ----------------------------


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_chart_sets_every_variable_the_service_reads(
    rendered: Rendered, component: str
) -> None:
    service = COMPONENTS[component]
    read = {s.env for s in service_settings(service)}
    unset = read - _env_of(rendered, component).keys()
    assert not unset, f"{component} reads {sorted(unset)}; " + _missing_hint(
        service, unset
    )


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_service_reads_every_variable_the_chart_sets(
    rendered: Rendered, component: str
) -> None:
    service = COMPONENTS[component]
    read = {s.env for s in service_settings(service)}
    extra = {
        name
        for name in _env_of(rendered, component)
        if name not in read and not name.startswith(OTEL_PREFIX)
    }
    assert not extra, (
        f"the chart sets {sorted(extra)} on {component}, which "
        f"{', '.join(SETTINGS_CLASSES[service])} do not read"
    )


def test_migration_jobs_get_their_service_environment(rendered: Rendered) -> None:
    jobs = {
        j["metadata"]["labels"]["app.kubernetes.io/component"]: j
        for j in rendered.hook_jobs()
    }
    for service in ("gateway", "notifier"):
        job = jobs[f"migrate-{service}"]
        (container,) = pod_spec(job)["containers"]
        assert container["args"] == ["migrate"]
        env = container_env(rendered, container)
        read = {s.env for s in service_settings(service)}
        names = {n for n in env if not n.startswith(OTEL_PREFIX)}
        assert names == read, (sorted(read - names), sorted(names - read))


def test_topology_job_gets_the_topology_settings(rendered: Rendered) -> None:
    (job,) = [
        j
        for j in rendered.hook_jobs()
        if j["metadata"]["labels"]["app.kubernetes.io/component"] == "topology"
    ]
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "mutate.common.topology",
        "ensure",
    ]
    env = container_env(rendered, container)
    # `ensure` reads TopologySettings and MUTATE_NATS_URL (its --nats-url).
    read = {s.env for s in topology_settings()} | {"MUTATE_NATS_URL"}
    assert env.keys() == read, (sorted(read - env.keys()), sorted(env.keys() - read))
    assert env["MUTATE_NATS_URL"].source == "secret"


def test_values_defaults_are_the_services_defaults() -> None:
    """Each `settings` map of values.yaml holds the service's own defaults.

    Compared through `load`, so units (ms in the environment, seconds in
    code) and types are the settings module's business, not this test's.
    """
    values = helm_python.Chart.load(CHART).values
    rendered = render(DEFAULTS_WITH_CREDENTIALS)
    for component, deployment in rendered.deployments().items():
        service = COMPONENTS[component]
        keys = set(values[service]["settings"]) | (
            set(values["topology"]["settings"]) if service == "transformer" else set()
        )
        if service == "transformer":
            # A role's own overrides differ from the defaults on purpose.
            role = "work" if component.endswith("-work") else "serve"
            keys -= set(values["transformer"][role].get("settings") or {})
        env = resolved_env(
            rendered,
            _env_of(rendered, component),
            pod_name=deployment["metadata"]["name"],
        )
        for cls in settings_classes(service):
            own = keys & {s.env for s in settings_module.describe(cls)}
            _assert_same_settings(cls, env, own, owner=f"{service}.settings")
    topology_values = values["topology"]["settings"]
    cls = settings_class(TOPOLOGY_SETTINGS)
    _assert_same_settings(cls, topology_values, set(topology_values), "topology")


def _assert_same_settings(
    cls: type, env: dict[str, str], keys: set[str], owner: str
) -> None:
    with_chart = settings_module.load(cls, env)
    without = settings_module.load(cls, {k: v for k, v in env.items() if k not in keys})
    by_env = {s.env: s.field for s in settings_module.describe(cls)}
    for name in sorted(keys):
        assert name in by_env, f"{owner}.{name} is not read by {cls.__name__}"
        chart, service = (
            getattr(with_chart, by_env[name]),
            getattr(without, by_env[name]),
        )
        assert (
            chart == pytest.approx(service)
            if isinstance(service, float)
            else (chart == service)
        ), (
            f"{owner}.{name}={env[name]!r} gives {chart!r}, "
            f"the service default is {service!r}"
        )


def test_chart_environment_is_valid_for_the_services() -> None:
    """Every pod's environment loads into its settings class without error."""
    rendered = render(SCENARIOS["inline-secrets-r2"])
    for component, deployment in rendered.deployments().items():
        service = COMPONENTS[component]
        env = resolved_env(
            rendered,
            _env_of(rendered, component),
            pod_name=f"{deployment['metadata']['name']}-5d9c8-x7k2p",
        )
        for cls in settings_classes(service):
            settings_module.load(cls, env)
        (main,) = settings_classes(service)[:1]
        assert settings_module.load(main, env).grpc_host == "0.0.0.0"


def test_shutdown_grace_ends_before_kubernetes_kills(rendered: Rendered) -> None:
    for component, deployment in rendered.deployments().items():
        grace_ms = float(_env_of(rendered, component)["MUTATE_SHUTDOWN_GRACE_MS"].value)
        limit_s = pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert grace_ms < limit_s * 1000, component


# -- secrets -------------------------------------------------------------------


def test_secret_settings_come_only_from_secrets(rendered: Rendered) -> None:
    for component in rendered.deployments():
        secret = {s.env for s in service_settings(COMPONENTS[component]) if s.secret}
        env = _env_of(rendered, component)
        for name in secret:
            assert env[name].source == "secret", f"{component} {name}"
    for configmap in rendered.of_kind("ConfigMap"):
        for service in SETTINGS_CLASSES:
            secret = {s.env for s in service_settings(service) if s.secret}
            assert not secret & (configmap.get("data") or {}).keys()


def test_secret_values_never_leave_secrets() -> None:
    rendered = render(SCENARIOS["inline-secrets-r2"])
    in_secrets: set[str] = set()
    for secret in rendered.of_kind("Secret"):
        in_secrets |= {base64.b64decode(v).decode() for v in secret["data"].values()}
    for marker in SECRET_MARKERS.values():
        assert marker in in_secrets, f"{marker} did not reach a Secret"
    texts = [t for n, t in rendered.files.items() if not n.endswith("secret.yaml")]
    for manifest in rendered.manifests:
        if manifest["kind"] == "Secret":
            continue
        texts += list(walk_strings(manifest))
    for marker in SECRET_MARKERS.values():
        leaks = [t for t in texts if marker in t]
        assert not leaks, f"a secret value appears outside a Secret: {leaks[:1]}"


def test_existing_secrets_are_referenced_not_copied() -> None:
    rendered = render(SCENARIOS["production"])
    made = {s["metadata"]["name"] for s in rendered.of_kind("Secret")}
    refs = {
        (var.secret, var.key)
        for component in rendered.deployments()
        for var in _env_of(rendered, component).values()
        if var.source == "secret" and not var.optional
    }
    assert ("mutate-postgresql", "url") in refs
    assert ("mutate-nats", "url") in refs
    assert ("mutate-object-storage", "secret-access-key") in refs
    assert not {name for name, _ in refs} & made


# -- hooks -----------------------------------------------------------------------


def test_hooks_find_their_secrets_before_they_run(rendered: Rendered) -> None:
    jobs = rendered.hook_jobs()
    assert {j["metadata"]["labels"]["app.kubernetes.io/component"] for j in jobs} == {
        "topology",
        "migrate-gateway",
        "migrate-notifier",
    }
    regular_secrets = {
        s["metadata"]["name"]
        for s in rendered.of_kind("Secret")
        if hook_weight(s) is None
    }
    for job in jobs:
        annotations = job["metadata"]["annotations"]
        assert set(annotations["helm.sh/hook"].split(",")) == {
            "pre-install",
            "pre-upgrade",
        }
        for container in containers(job):
            # Regular ConfigMaps and Secrets do not exist yet on first install.
            assert "envFrom" not in container
            for var in container_env(rendered, container).values():
                if var.source != "secret":
                    continue
                assert var.secret not in regular_secrets, var
                secret = rendered.find("Secret", var.secret or "")
                if secret is not None:
                    assert hook_weight(secret) is not None
                    assert hook_weight(secret) < hook_weight(job)  # type: ignore[operator]
                    assert var.key in secret["data"] or var.optional, var


def test_topology_runs_before_migrations(rendered: Rendered) -> None:
    weights = {
        j["metadata"]["labels"]["app.kubernetes.io/component"]: hook_weight(j)
        for j in rendered.hook_jobs()
    }
    assert weights["topology"] < weights["migrate-gateway"]  # type: ignore[operator]
    for component in rendered.deployments():
        env = _env_of(rendered, component)
        if "MUTATE_MIGRATE_ON_START" in env:
            assert env["MUTATE_MIGRATE_ON_START"].value == "false", component


# -- scaling, disruption, ingress, notes -----------------------------------------


def test_transformer_runs_as_serve_and_work_deployments(rendered: Rendered) -> None:
    deployments = rendered.deployments()
    for component, role in (("transformer", "serve"), ("transformer-work", "work")):
        (container,) = pod_spec(deployments[component])["containers"]
        assert container["args"] == [role]
        assert "mutate-transformer" in container["image"]
        env = _env_of(rendered, component)
        assert env["MUTATE_WORKER_ID"].source == "field"


def test_workers_autoscale(rendered: Rendered, scenario: str) -> None:
    worker = f"{RELEASE}-transformer-work"
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in rendered.of_kind("HorizontalPodAutoscaler")
    }
    scaled = rendered.of_kind("ScaledObject")
    if SCENARIOS[scenario].get("transformer", {}).get("work", {}).get("keda"):
        (scaled_object,) = scaled
        assert worker not in hpas  # KEDA makes its own
        assert scaled_object["spec"]["scaleTargetRef"]["name"] == worker
        (trigger,) = scaled_object["spec"]["triggers"]
        assert trigger["metadata"]["stream"] == topology.JOBS_STREAM
        assert trigger["metadata"]["consumer"] == topology.WORKERS_CONSUMER
    else:
        assert not scaled
        assert hpas[worker]["spec"]["maxReplicas"] > hpas[worker]["spec"]["minReplicas"]
    deployment = rendered.named("Deployment", worker)
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it


def test_every_deployment_has_a_disruption_budget(rendered: Rendered) -> None:
    budgets = rendered.of_kind("PodDisruptionBudget")
    for component, deployment in rendered.deployments().items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [
            b
            for b in budgets
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, component


def test_ingress_routes_to_the_rest_api() -> None:
    rendered = render(SCENARIOS["production"])
    (ingress,) = rendered.of_kind("Ingress")
    gateway = rendered.named("Service", f"{RELEASE}-gateway")
    ports = {p["name"] for p in gateway["spec"]["ports"]}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == gateway["metadata"]["name"]
            assert backend["port"]["name"] == "http" and "http" in ports


def test_notes_tell_how_to_reach_and_call_the_api(rendered: Rendered) -> None:
    notes = rendered.files["mutate/templates/NOTES.txt"]
    assert f"port-forward svc/{RELEASE}-gateway 8080:8080 50051:50051" in notes
    assert "grpcurl -plaintext" in notes
    assert "mutate.v1.ConfigurationService/ListConfigurations" in notes
