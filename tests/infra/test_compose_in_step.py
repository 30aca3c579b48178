"""infra/docker-compose.yml describes the configuration that tests/infra/test_stack_postgres.py runs: the same
environment variable names, backend URIs and S3 settings as infra/stack.py gives its processes (backend_env),
for the compose file's own endpoints. No container engine runs here, so this comparison is what keeps the
untested images' configuration from drifting away from the tested one."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from tests.conftest import ROOT
from tuneops.infra import stack

COMPOSE = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# compose service -> the stack's service of the same role
ROLES = {"mlflow": "mlflow", "prefect-server": "prefect", "prefect-worker": "worker"}
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def env_of(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service].get("environment", {}).items()}


def port_of(service: str) -> str:
    command = SERVICES[service]["command"]
    flag = next(arg for arg in command if arg.startswith("--port"))
    return flag.split("=", 1)[1] if "=" in flag else command[command.index(flag) + 1]


def expected() -> dict[str, dict[str, str]]:
    """What `tuneops up --database ... --mlflow-artifacts s3://mlflow/artifacts` would pass, at compose's addresses."""
    postgres = env_of("postgres")
    assert postgres["POSTGRES_DB"] == stack.PREFECT_DATABASE
    user = postgres["POSTGRES_USER"].split(":", 1)[0] + "}"  # ${POSTGRES_USER:?...} -> ${POSTGRES_USER}
    password = postgres["POSTGRES_PASSWORD"].split(":", 1)[0] + "}"
    minio = SERVICES["minio"]["command"]
    assert minio[:2] == ["server", "/data"]
    return stack.backend_env(
        home=Path(env_of("prefect-worker")["TUNEOPS_HOME"]),
        mlflow_url=f"http://mlflow:{port_of('mlflow')}",
        prefect_api=f"http://prefect-server:{port_of('prefect-server')}/api",
        database=f"postgresql://{user}:{password}@postgres:5432",
        mlflow_artifacts="s3://mlflow/artifacts",
        s3={"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "us-east-1",
            # the credentials are MinIO's root user, whatever infra/.env says: compared by reference below
            "AWS_ACCESS_KEY_ID": env_of("minio")["MINIO_ROOT_USER"],
            "AWS_SECRET_ACCESS_KEY": env_of("minio")["MINIO_ROOT_PASSWORD"]})


def test_each_service_gets_the_variables_and_values_the_tested_stack_uses():
    want = expected()
    for compose_name, role in ROLES.items():
        have = env_of(compose_name)
        missing = set(want[role]) - set(have)
        assert not missing, f"{compose_name} lacks {sorted(missing)} that infra/stack.py sets for its {role}"
        wrong = {k: (have[k], v) for k, v in want[role].items() if have[k] != v}
        assert not wrong, f"{compose_name}: compose vs stack.backend_env: {wrong}"


def test_the_backend_uris_use_the_tested_drivers_and_databases():
    mlflow = env_of("mlflow")["MLFLOW_BACKEND_STORE_URI"]
    prefect = env_of("prefect-server")["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert mlflow.startswith("postgresql+psycopg2://") and mlflow.endswith(f"/{stack.MLFLOW_DATABASE}")
    assert prefect.startswith("postgresql+asyncpg://") and prefect.endswith(f"/{stack.PREFECT_DATABASE}")
    # one source for each setting: no command-line flag beside the environment, no stale or second DB variable
    command = " ".join(SERVICES["mlflow"]["command"])
    assert "--backend-store-uri" not in command and "--artifacts-destination" not in command
    for name, service in SERVICES.items():
        keys = {k for k in service.get("environment", {}) if k.endswith("DATABASE_CONNECTION_URL")}
        assert keys <= {"PREFECT_SERVER_DATABASE_CONNECTION_URL"}, f"{name}: {keys}"
    assert f"CREATE DATABASE {stack.MLFLOW_DATABASE};" in (ROOT / "infra" / "postgres" / "init.sql").read_text()


def test_the_s3_settings_are_exactly_the_stacks():
    s3 = COMPOSE["x-s3-env"]
    assert set(s3) == set(stack.S3_ENV), "compose's S3 variables and infra/stack.py's S3_ENV differ"
    assert s3["MLFLOW_S3_ENDPOINT_URL"] == s3["AWS_ENDPOINT_URL"]  # what the stack derives when unset
    for service in ("mlflow", "prefect-worker"):
        assert {k: v for k, v in env_of(service).items() if k in stack.S3_ENV} == {k: str(v) for k, v in s3.items()}
    assert set(CREDENTIALS) <= set(stack.S3_ENV)


def test_our_image_is_tagged_with_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    ours = {SERVICES[name]["image"] for name, service in SERVICES.items() if "build" in service}
    assert ours == {f"tuneops:{version}"}, ours
    assert f"-t tuneops:{version} ." in (ROOT / "infra" / "Dockerfile").read_text()
    assert "tuneops:latest" not in (ROOT / "infra" / "docker-compose.yml").read_text()
