"""deploy/ cannot run here (no Docker engine, no cluster), so these tests check that it agrees with the
code: ports, probe paths, env var names, model names, the gunicorn app path, and that the ConfigMap's
TOML loads with the gateway's own models loader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from flask_server.config import _ENV_NAMES, GatewayConfig
from flask_server.model_config import DEFAULT_MODEL_NAME, DEFAULT_ROUTE, load_model_specs
from scripts.auto_cmd import DEFAULT_GATEWAY_PORT, GATEWAY_APP, GUNICORN_CONF
from scripts.export_saved_model import DEFAULT_BASE_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
TF_SERVING_REST_PORT = 8501  # the official tensorflow/serving image's REST port
TF_SERVING_IMAGE = "tensorflow/serving"
MODEL_SERVER_HOST = "model-server"
MODEL_SERVER_URL = f"http://{MODEL_SERVER_HOST}:{TF_SERVING_REST_PORT}"
MODEL_STATUS_PATH = f"/v1/models/{DEFAULT_MODEL_NAME}"
HEALTHZ, READYZ = "/healthz", "/readyz"
ENV_VARS = set(_ENV_NAMES.values())


def gateway_routes() -> set[str]:
    from flask_server.app import create_app

    return {rule.rule for rule in create_app({"MODEL_SERVER_URL": "http://127.0.0.1:1"}).url_map.iter_rules()}


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict]:
    """Every manifest under deploy/k8s by (kind, name)."""
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in docs, f"{key} defined twice"
                docs[key] = doc
    return docs


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def container(deployment: dict) -> dict:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(spec: dict) -> dict[str, str]:
    env = spec.get("env") or spec.get("environment") or {}
    return env if isinstance(env, dict) else {item["name"]: item.get("value") for item in env}


# --- Dockerfile --------------------------------------------------------------------------------------

def test_dockerfile_builds_a_slim_non_root_gateway_without_tensorflow():
    text = (DEPLOY / "Dockerfile.gateway").read_text()
    assert re.search(r"^FROM python:[\d.]+-slim\b", text, re.M)
    assert "requirements-gateway.txt" in text and "requirements.txt " not in text
    requirements = (REPO_ROOT / "requirements-gateway.txt").read_text().splitlines()
    assert not [r for r in requirements if re.match(r"(tensorflow|keras)", r.strip(), re.I)]
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"^HEALTHCHECK .*127\.0\.0\.1:{DEFAULT_GATEWAY_PORT}{HEALTHZ}", text, re.M | re.S)
    assert f"EXPOSE {DEFAULT_GATEWAY_PORT}" in text and f"0.0.0.0:{DEFAULT_GATEWAY_PORT}" in text
    cmd = re.search(r"^CMD (.*)$", text, re.M).group(1)
    assert GATEWAY_APP in cmd and str(GUNICORN_CONF.relative_to(REPO_ROOT)) in cmd
    assert "PROMETHEUS_MULTIPROC_DIR" in text


# --- docker compose ----------------------------------------------------------------------------------

def test_compose_model_server_is_the_official_image_with_our_model(compose):
    server = compose["services"][MODEL_SERVER_HOST]
    assert TF_SERVING_IMAGE in server["image"]
    assert env_of(server)["MODEL_NAME"] == DEFAULT_MODEL_NAME
    [volume] = server["volumes"]
    source, target = volume.split(":")[:2]
    assert (DEPLOY / source).resolve() == DEFAULT_BASE_PATH.resolve()
    assert target == f"/models/{DEFAULT_MODEL_NAME}"
    assert f"{TF_SERVING_REST_PORT}:{TF_SERVING_REST_PORT}" in server["ports"]


def test_compose_gateway_points_at_the_model_server(compose):
    gateway = compose["services"]["gateway"]
    assert (DEPLOY / gateway["build"]["context"]).resolve() == REPO_ROOT
    assert (REPO_ROOT / gateway["build"]["dockerfile"]).is_file()
    env = env_of(gateway)
    assert env["MODEL_SERVER_URL"] == MODEL_SERVER_URL
    assert set(env) <= ENV_VARS, set(env) - ENV_VARS
    assert env["GATEWAY_RATELIMIT_STORAGE_URI"].startswith("redis://redis:")
    assert f"{DEFAULT_GATEWAY_PORT}:{DEFAULT_GATEWAY_PORT}" in gateway["ports"]


# --- kubernetes --------------------------------------------------------------------------------------

def test_model_server_deployment_probes_the_model(k8s):
    spec = container(k8s[("Deployment", MODEL_SERVER_HOST)])
    assert TF_SERVING_IMAGE in spec["image"]
    assert env_of(spec)["MODEL_NAME"] == DEFAULT_MODEL_NAME
    assert spec["readinessProbe"]["httpGet"] == {"path": MODEL_STATUS_PATH, "port": TF_SERVING_REST_PORT}
    assert any(m["mountPath"] == f"/models/{DEFAULT_MODEL_NAME}" for m in spec["volumeMounts"])


def test_gateway_deployment_probes_env_and_resources(k8s):
    spec = container(k8s[("Deployment", "gateway")])
    assert spec["readinessProbe"]["httpGet"] == {"path": READYZ, "port": DEFAULT_GATEWAY_PORT}
    assert spec["livenessProbe"]["httpGet"] == {"path": HEALTHZ, "port": DEFAULT_GATEWAY_PORT}
    assert {HEALTHZ, READYZ} <= gateway_routes()
    assert [p["containerPort"] for p in spec["ports"]] == [DEFAULT_GATEWAY_PORT]
    env = env_of(spec)
    assert set(env) - {"PROMETHEUS_MULTIPROC_DIR", "GATEWAY_WORKERS"} <= ENV_VARS
    assert env["MODEL_SERVER_URL"] == MODEL_SERVER_URL
    assert {"requests", "limits"} <= set(spec["resources"])
    assert spec["resources"]["requests"]["cpu"]  # the HPA's utilisation is relative to this


def test_services_select_their_deployments_and_ports(k8s):
    for name, port in ((MODEL_SERVER_HOST, TF_SERVING_REST_PORT), ("gateway", DEFAULT_GATEWAY_PORT)):
        service, deployment = k8s[("Service", name)], k8s[("Deployment", name)]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert port in {p["targetPort"] for p in service["spec"]["ports"]}
    # MODEL_SERVER_URL's host:port is this Service
    assert TF_SERVING_REST_PORT in {p["port"] for p in k8s[("Service", MODEL_SERVER_HOST)]["spec"]["ports"]}


def test_hpa_scales_the_gateway_on_cpu(k8s):
    hpa = k8s[("HorizontalPodAutoscaler", "gateway")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_configmap_toml_loads_with_the_gateway_loader(k8s, tmp_path):
    deployment = k8s[("Deployment", "gateway")]
    spec = container(deployment)
    models_config = Path(env_of(spec)["MODELS_CONFIG"])
    mount = next(m for m in spec["volumeMounts"] if Path(m["mountPath"]) == models_config.parent)
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    configmap = k8s[("ConfigMap", volume["configMap"]["name"])]
    toml = tmp_path / models_config.name
    toml.write_text(configmap["data"][models_config.name])

    specs = load_model_specs(GatewayConfig(models_config=str(toml)))
    assert DEFAULT_ROUTE in specs
    model = specs[DEFAULT_ROUTE]
    assert model.model_name == DEFAULT_MODEL_NAME
    assert model.model_server_url == MODEL_SERVER_URL


def test_redis_service_matches_the_gateway_storage_uri(k8s):
    uri = env_of(container(k8s[("Deployment", "gateway")]))["GATEWAY_RATELIMIT_STORAGE_URI"]
    host, port = re.match(r"redis://([^:/]+):(\d+)", uri).groups()
    assert int(port) in {p["port"] for p in k8s[("Service", host)]["spec"]["ports"]}


def gateway_settings(env: dict[str, str]) -> GatewayConfig:
    """The deploy file's gateway settings as the gateway reads them (files it mounts left out)."""
    mounted = {"MODELS_CONFIG", "GATEWAY_API_KEYS_FILE"}
    return GatewayConfig.from_mapping({name: value for name, value in env.items()
                                       if name in ENV_VARS - mounted and "${" not in value})


def compose_default(value: str) -> str:
    """``${NAME-default}`` or ``${NAME:-default}`` -> default (what compose uses when NAME is unset)."""
    match = re.fullmatch(r"\$\{\w+:?-(.*)\}", value)
    return match.group(1) if match else value


def test_cache_and_trusted_proxies_settings_are_valid_and_use_the_redis_service(k8s, compose):
    from flask_server.proxies import parse_trusted_proxies
    from flask_server.cache_stores import RedisCache
    from flask_server.response_cache import open_cache

    k8s_env = env_of(container(k8s[("Deployment", "gateway")]))
    compose_env = {name: compose_default(value) for name, value in env_of(compose["services"]["gateway"]).items()}
    for env, redis_ports in ((k8s_env, {p["port"] for p in k8s[("Service", "redis")]["spec"]["ports"]}),
                             (compose_env, {6379})):
        config = gateway_settings(env)
        parse_trusted_proxies(config.trusted_proxies)
        assert isinstance(open_cache(config.cache, config.cache_ttl), RedisCache)
        host, port, db = re.fullmatch(r"redis://([^:/]+):(\d+)/(\d+)", config.cache).groups()
        assert host == "redis" and int(port) in redis_ports
        # its own database on the limits' server, so flushing the cache never resets a budget
        assert config.ratelimit_storage_uri.startswith(f"redis://{host}:{port}/")
        assert not config.ratelimit_storage_uri.endswith(f"/{db}")


def test_readme_names_every_file():
    readme = (DEPLOY / "README.md").read_text()
    for path in [*DEPLOY.glob("*"), *(DEPLOY / "k8s").glob("*")]:
        if path.is_file() and path.name != "README.md":
            assert path.name in readme, path.name
