"""The team deployment files, checked without a Docker engine: infra/docker-compose.yml and
infra/Dockerfile are parsed and cross-checked (services, images, env, volumes, ports, depends_on,
healthchecks, the project install, the entrypoint), and infra/prefect.yaml against the flows it deploys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tuneops.infra import stack

INFRA = ROOT / "infra"
COMPOSE = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PREFECT = yaml.safe_load((INFRA / "prefect.yaml").read_text())
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return out


DOCKERFILE = dockerfile_instructions(INFRA / "Dockerfile")


def env_of(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: use a mapping for environment"
    return {k: str(v) for k, v in env.items()}


def test_compose_has_the_team_stack():
    assert {"postgres", "minio", "minio-init", "prefect-server", "prefect-worker", "mlflow", "deploy"} <= set(SERVICES)
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, f"{name} has neither image nor build"


def test_external_images_are_pinned_and_ours_is_built_from_the_dockerfile():
    for name, service in SERVICES.items():
        image = service["image"]
        if "build" in service:
            assert image.startswith("tuneops:")
            build = service["build"]
            assert (INFRA / build["context"] / build["dockerfile"]).resolve() == (INFRA / "Dockerfile").resolve()
        else:
            repo, _, tag = image.rpartition(":")
            assert repo and tag and tag != "latest", f"{name}: pin {image} to a version"
    prefect_tag = SERVICES["prefect-server"]["image"].split(":")[1]
    assert prefect_tag.startswith(PREFECT["prefect-version"]), "server image and prefect.yaml disagree on Prefect"


def test_depends_on_targets_exist_and_health_conditions_have_healthchecks():
    for name, service in SERVICES.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target} to be healthy: no healthcheck"
            if condition == "service_completed_successfully":
                assert "restart" not in SERVICES[target], f"{target} is one-shot and must not restart"
    worker = SERVICES["prefect-worker"]["depends_on"]
    assert {"prefect-server", "mlflow", "deploy"} <= set(worker)


def test_volumes_are_declared_and_ports_unique():
    declared = set(COMPOSE.get("volumes", {}))
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (INFRA / source).exists(), f"{name} mounts missing file {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    assert {"postgres-data", "minio-data"} <= declared
    published = [p.split(":")[-2] for s in SERVICES.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), f"a host port is published twice: {published}"


def test_every_variable_is_documented_in_the_env_example_and_no_secret_is_inline():
    example = {line.split("=", 1)[0] for line in (INFRA / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    text = (INFRA / "docker-compose.yml").read_text()
    used = set(VARIABLE.findall(text))
    assert used <= example, f"variables missing from infra/.env.example: {used - example}"
    for service in ("postgres", "minio"):
        for key, value in env_of(service).items():
            if "PASSWORD" in key:
                assert value.startswith("${"), f"{service}.{key} must come from infra/.env, not the YAML"
    assert "infra/.env" in (ROOT / ".gitignore").read_text().split()


def test_services_point_at_each_other_consistently():
    db_user = "${POSTGRES_USER}"
    assert env_of("postgres")["POSTGRES_DB"] == "prefect"
    assert "CREATE DATABASE mlflow" in (INFRA / "postgres" / "init.sql").read_text()
    prefect_db = env_of("prefect-server")["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith(f"postgresql+asyncpg://{db_user}:") and prefect_db.endswith("@postgres:5432/prefect")
    mlflow_args = " ".join(SERVICES["mlflow"]["command"])
    mlflow_db = env_of("mlflow")["MLFLOW_BACKEND_STORE_URI"]  # the rest: tests/infra/test_compose_in_step.py
    assert mlflow_db.startswith(f"postgresql+psycopg2://{db_user}:") and mlflow_db.endswith("@postgres:5432/mlflow")
    assert env_of("mlflow")["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://mlflow/")
    assert "--serve-artifacts" in mlflow_args
    assert "local/mlflow" in SERVICES["minio-init"]["command"][0]
    server_port = SERVICES["prefect-server"]["command"][SERVICES["prefect-server"]["command"].index("--port") + 1]
    for name in ("prefect-worker", "deploy"):
        assert env_of(name)["PREFECT_API_URL"] == f"http://prefect-server:{server_port}/api"
    worker = env_of("prefect-worker")
    assert worker["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and "mlflow:5000" in mlflow_args
    for service in ("prefect-worker", "mlflow"):
        assert env_of(service)["AWS_ENDPOINT_URL"] == env_of(service)["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env_of(service)["AWS_ACCESS_KEY_ID"] == env_of("minio")["MINIO_ROOT_USER"]
    assert SERVICES["prefect-worker"]["command"][:4] == ["worker", "start", "--pool", stack.WORK_POOL]
    assert "--prefect-file infra/prefect.yaml" in SERVICES["deploy"]["command"][0]
    assert f"training --pool {stack.WORK_POOL} --limit 1" in SERVICES["deploy"]["command"][0]
    for name, service in SERVICES.items():
        for mapping in service.get("ports", []):
            container = mapping.rsplit(":", 1)[1]
            assert container in {"4200", "5000", "9000", "9001"}, f"{name} publishes unexpected port {mapping}"


def test_dockerfile_builds_the_worker_image():
    keywords = [k for k, _ in DOCKERFILE]
    base = dict(DOCKERFILE)["FROM"]
    assert re.fullmatch(r"python:3\.11[-.\w]*", base), f"base image {base} must be Python 3.11 like the project"
    workdir = dict(DOCKERFILE)["WORKDIR"]
    assert workdir == "/app"
    for name in ("prefect-worker", "deploy"):
        assert SERVICES[name]["working_dir"] == workdir, "the pull step runs flows in the image's code folder"
    runs = " ".join(args for k, args in DOCKERFILE if k == "RUN")
    assert "pip install" in runs and re.search(r"pip install [^&]*-e \.", runs), "the project must be installed"
    copies = [args for k, args in DOCKERFILE if k == "COPY"]
    assert "pyproject.toml README.md ./" in copies and ". ." in copies
    assert keywords.index("USER") > keywords.index("RUN"), "drop root after installing"
    assert dict(DOCKERFILE)["USER"] != "root"
    entrypoint = json.loads(dict(DOCKERFILE)["ENTRYPOINT"])  # exec form, so signals reach the worker
    assert entrypoint[-1] == "prefect"
    cmd = json.loads(dict(DOCKERFILE)["CMD"])
    assert cmd[:4] == ["worker", "start", "--pool", stack.WORK_POOL]
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".venv", ".tuneops", ".git"} <= set(ignored), "local state must stay out of the build context"
    assert "data" not in ignored and "configs" not in ignored, "the demo config and data ship in the image"


@pytest.mark.parametrize("deployment", PREFECT["deployments"], ids=lambda d: d["name"] + ":" + d["entrypoint"])
def test_prefect_yaml_deploys_existing_flows_on_the_pool(deployment):
    import importlib

    path, function = deployment["entrypoint"].split(":")
    assert (ROOT / path).is_file()  # the worker loads the entrypoint by path from the repository root
    module = importlib.import_module("tuneops." + path.removesuffix(".py").replace("/", "."))  # flows/ is tuneops.flows
    flow = getattr(module, function)
    assert flow.name == function, "the deployment name in the UI is <flow name>/<deployment name>"
    assert deployment["work_pool"]["name"] == stack.WORK_POOL
    assert deployment["description"]
    parameters = set(deployment.get("parameters", {}))
    assert parameters <= set(flow.parameters.properties), f"unknown parameters {parameters}"


def test_prefect_yaml_names_limits_and_the_monitoring_schedule():
    names = {(d["entrypoint"].rsplit(":", 1)[1], d["name"]) for d in PREFECT["deployments"]}
    assert {("train_model", "manual"), ("train_model", "retrain"), ("promote_model", "manual"),
            ("score_batch", "nightly"), ("monitor_production", "scheduled")} <= names
    by_name = {(d["entrypoint"].rsplit(":", 1)[1], d["name"]): d for d in PREFECT["deployments"]}
    assert by_name[("train_model", "retrain")]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    for key in (("train_model", "manual"), ("train_model", "retrain")):
        assert by_name[key]["work_pool"]["work_queue_name"] == stack.TRAINING_QUEUE
    monitor = by_name[("monitor_production", "scheduled")]
    assert monitor["schedules"][0]["cron"] == "{{ demo.config.monitoring.schedule }}"  # the cron lives in the config
    assert set(monitor["parameters"]) == {"config", "predictions"}
    from tuneops.config import TuneopsConfig

    # the deployment monitoring triggers is the one with the concurrency limit of 1
    assert TuneopsConfig.model_fields["monitoring"].default_factory().retrain.deployment == "train_model/retrain"


def test_the_build_step_gives_the_demo_config_as_default_parameters():
    from tuneops.config import load_config as load
    from tuneops.infra.deploy_steps import load_config

    step = PREFECT["build"][0]["tuneops.infra.deploy_steps.load_config"]
    out = load_config(step["path"])
    assert out["config"] == load(ROOT / "configs/banking77_lora.yaml").model_dump(mode="json")
    assert Path(out["root"]) == ROOT
    assert PREFECT["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ demo.root }}"
