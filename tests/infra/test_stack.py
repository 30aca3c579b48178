"""`make up` for real: MLflow server, Prefect server and process worker on loopback, the deployments of
infra/prefect.yaml, a train_model run executed by the worker, and the two UIs in headless Chromium.

Tests run in file order on one stack (module fixture); the last one is `tuneops down`.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.infra.conftest import alive, page_text

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# The deployment whose schedule the UI must show (the monitoring one), and how the Prefect UI words its cron
# (`monitoring.schedule` of the demo config, "0 * * * *"; the UI shows e.g. "At 06:00 AM every day" for "0 6 * * *").
SCHEDULED_DEPLOYMENT = "monitor_production/scheduled"
SCHEDULE_TEXT = "Every hour"

DEPLOYMENTS = {"train_model/manual", "train_model/retrain", "promote_model/manual", "score_batch/nightly",
               "monitor_production/scheduled"}


def deployment(stack, name: str) -> dict:
    response = httpx.get(f"{stack.api}/deployments/name/{name}")
    assert response.status_code == 200, f"{name} not deployed: {response.text}"
    return response.json()


def test_up_prints_urls_and_a_second_up_is_harmless(stack):
    before = stack.pids()
    assert set(before) == {"mlflow", "prefect", "worker"}
    proc = stack.cli("up", "--prefect-port", stack.prefect_url.rsplit(":", 1)[1],
                     "--mlflow-port", stack.mlflow_url.rsplit(":", 1)[1])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("already running") == 3, proc.stdout
    assert stack.prefect_url in proc.stdout and stack.mlflow_url in proc.stdout
    assert stack.pids() == before, "a second `up` must keep the running services"
    assert httpx.get(f"{stack.mlflow_url}/health").status_code == 200
    assert httpx.get(f"{stack.api}/health").status_code == 200
    assert (stack.home / "stack" / "worker.log").stat().st_size > 0


def test_deployments_pools_limits_and_typed_parameters(stack):
    flows = {f["id"]: f["name"] for f in httpx.post(f"{stack.api}/flows/filter", json={}).json()}
    deployed = {f"{flows[d['flow_id']]}/{d['name']}": d
                for d in httpx.post(f"{stack.api}/deployments/filter", json={}).json()}
    assert DEPLOYMENTS <= set(deployed)
    assert {d["work_pool_name"] for d in deployed.values()} == {"tuneops-process"}
    retrain = deployed["train_model/retrain"]
    assert retrain["global_concurrency_limit"]["limit"] == 1  # what `concurrency_limit: {limit: 1}` becomes
    assert retrain["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    assert deployed["train_model/manual"]["global_concurrency_limit"]["limit"] == 1
    queue = httpx.get(f"{stack.api}/work_pools/tuneops-process/queues/training").json()
    assert queue["concurrency_limit"] == 1
    assert retrain["work_queue_name"] == deployed["train_model/manual"]["work_queue_name"] == "training"
    # The train_model form is the TuneopsConfig schema, described field by field, filled with the demo config.
    schema = deployed["train_model/manual"]["parameter_openapi_schema"]
    assert schema["properties"]["config"]["$ref"] == "#/definitions/TuneopsConfig"
    lora = schema["definitions"]["LoraSettings"]["properties"]["r"]
    assert lora["type"] == "integer" and lora["description"].startswith("Adapter rank")
    from tuneops.config import load_config

    demo = load_config("configs/banking77_lora.yaml").model_dump(mode="json")
    assert deployed["train_model/manual"]["parameters"] == {"config": demo}
    assert retrain["parameters"] == {"config": demo}
    assert deployed["score_batch/nightly"]["schedules"][0]["schedule"]["cron"] == "0 1 * * *"
    # The server enforces the typed schema: a wrong type in the form is refused before any run exists.
    demo["training"]["epochs"] = "many"
    refused = httpx.post(f"{stack.api}/deployments/{retrain['id']}/create_flow_run",
                         json={"parameters": {"config": demo}})
    assert refused.status_code == 409 and "epochs" in refused.text, refused.text


def test_deployment_run_trains_gates_and_registers_on_the_servers(stack, trained_run, ui_model_name):
    """A run created like the UI's Run button is executed by the process worker and logs to the MLflow server."""
    assert trained_run["state"]["type"] == "COMPLETED", trained_run["state"]
    assert trained_run["work_queue_name"] == "training"
    artifacts = httpx.post(f"{stack.api}/artifacts/filter",
                           json={"artifacts": {"flow_run_id": {"any_": [trained_run["id"]]}}}).json()
    assert {"data-validation", "data-split", "training-outcome"} <= {a["key"] for a in artifacts}
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    champion = client.get_model_version_by_alias(ui_model_name, "champion")
    assert champion.tags["tuneops.gate.passed"] == "True"
    run = client.get_run(champion.run_id)
    assert run.info.status == "FINISHED"
    assert "gate/decision.json" in {a.path for a in client.list_artifacts(run.info.run_id, "gate")}
    # The server, not a local file store, holds the run: its database is the stack's mlflow.db.
    assert (stack.home / "mlflow.db").exists()


def test_prefect_ui_lists_the_deployments_and_the_schedule(stack, browser, screenshot):
    browser.get(f"{stack.prefect_url}/deployments")
    text = page_text(browser, "Deployments", "retrain", "nightly", "train_model", "promote_model", "score_batch")
    assert "manual" in text
    screenshot(browser, "prefect-deployments")
    scheduled = deployment(stack, SCHEDULED_DEPLOYMENT)
    browser.get(f"{stack.prefect_url}/deployments/deployment/{scheduled['id']}")
    page_text(browser, "Schedules", SCHEDULE_TEXT, "Scheduled for", "auto-scheduled")
    screenshot(browser, "prefect-schedule")


def test_prefect_ui_run_form_is_typed_and_described(stack, browser, screenshot):
    manual = deployment(stack, "train_model/manual")
    browser.get(f"{stack.prefect_url}/deployments/deployment/{manual['id']}/run")
    page_text(browser, "Parameters", "Dataset file (CSV, JSONL or Parquet", "Adapter rank",
              "Move the 'champion' alias to the new version when the gate passes.")
    screenshot(browser, "prefect-run-form")


def test_prefect_ui_shows_the_finished_run_and_its_artifacts(stack, trained_run, browser, screenshot,
                                                             ui_model_name):
    browser.set_window_size(1280, 1500)  # the artifact cards render only once they are in view
    try:
        browser.get(f"{stack.prefect_url}/runs/flow-run/{trained_run['id']}")
        page_text(browser, trained_run["name"], "Completed", "train_model", "manual")
        browser.find_element("id", "artifacts").click()  # the run page's "Artifacts" tab
        page_text(browser, "Task runs", "training-outcome", "data-validation", "data-split", "evaluation-report")
        screenshot(browser, "prefect-flow-run")
    finally:
        browser.set_window_size(1280, 800)
    outcome = httpx.post(f"{stack.api}/artifacts/filter", json={"artifacts": {
        "flow_run_id": {"any_": [trained_run["id"]]}, "key": {"any_": ["training-outcome"]}}}).json()[0]
    browser.get(f"{stack.prefect_url}/artifacts/artifact/{outcome['id']}")
    page_text(browser, f"{ui_model_name} v1", "Promoted to champion", "accuracy")
    screenshot(browser, "prefect-training-outcome")


def test_mlflow_ui_shows_the_registered_model_with_its_champion_alias(stack, trained_run, browser, screenshot,
                                                                     ui_model_name):
    browser.get(f"{stack.mlflow_url}/#/models/{ui_model_name}")
    page_text(browser, ui_model_name, "Version 1", "@ champion", "@ challenger")
    for close in browser.find_elements("css selector", "button[aria-label='Close']"):
        if close.is_displayed():
            close.click()
    screenshot(browser, "mlflow-champion")


def test_down_stops_everything_even_a_running_flow(stack, tiny_model, company_csv):
    from tests.conftest import tiny_config
    from tuneops.infra.stack import _children

    slow = tiny_config(company_csv, tiny_model, "interrupted-by-down", training={"epochs": 500})
    retrain = deployment(stack, "train_model/retrain")
    run = httpx.post(f"{stack.api}/deployments/{retrain['id']}/create_flow_run",
                     json={"parameters": {"config": slow.model_dump(mode="json")}}).json()
    deadline = time.monotonic() + 120
    while httpx.get(f"{stack.api}/flow_runs/{run['id']}").json()["state"]["type"] != "RUNNING":
        assert time.monotonic() < deadline, "the retrain run never started"
        time.sleep(1)
    pids = stack.pids()
    flow_processes = _children(pids["worker"])
    assert flow_processes, "the worker should be running the flow in a child process"
    proc = stack.cli("down", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["stopped"] * 3, proc.stdout
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert not [pid for pid in flow_processes if alive(pid)], "a flow run survived `down`"
    assert not list((stack.home / "stack").glob("*.pid"))
    for url in (stack.mlflow_url, stack.api):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)
    again = stack.cli("down")
    assert again.returncode == 0 and "was not running" in again.stdout
