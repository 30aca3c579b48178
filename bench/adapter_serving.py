"""Adapter-only registry versions and many models in one server, side by side in one run (issue 29's figures).

Three LoRA classifiers on the packaged MiniLM: the demo config (configs/banking77_lora.yaml) trained with
`tuneops train` on three 10-intent subsets of its 30 intents, in a fresh TUNEOPS_HOME, each registered under its
own name. Then:

1. Registry bytes per version: each registered model folder (MLmodel, code/, artifacts/) against the same
   version in the former layout: the adapter merged into a full copy of the base and saved beside it, which is
   what tuneops registered before adapter-only versions (rebuilt here from the version's own adapter, so both
   sides hold the same model) -> goal: adapter-only at most 5% of the former. SmolLM2-135M-Instruct with the
   instruct config's LoRA (r 16 on every linear layer): the adapter folder as training writes it against the
   merged model; these sizes do not depend on training, so the adapter is the initial one (no 20-minute run).
2. Load time: `mlflow.pyfunc.load_model` of an adapter-only version against the former-layout copy of the same
   model logged as a pyfunc, each in a fresh process (imports excluded: timed inside the process), best of 3.
3. Serving: one `tuneops serve --config A --config B --config C` against three `mlflow models serve` processes
   (one per model), same store, same versions, one worker each; `--clients` closed-loop clients, request n to
   model n mod 3; the phases alternate (tuneops, mlflow, mlflow, tuneops for --rounds 2). Resident memory is the
   sum of VmRSS over each side's processes after its load phase -> goal: one process at most half the memory of
   three, at no lower requests/s.

    .venv/bin/python bench/adapter_serving.py [--duration 20] [--clients 8] [--rounds 2] [--keep]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_http import percentile, start, stop  # noqa: E402

from tuneops.ports import free_port  # noqa: E402

CONFIG = ROOT / "configs/banking77_lora.yaml"
LLM_CONFIG = ROOT / "configs/banking77_instruct.yaml"
NAMES = ("bench-cards", "bench-transfers", "bench-account")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def train_three(env: dict[str, str]) -> list[Path]:
    """The demo config on three 10-intent subsets, each registered under its own name; returns their configs."""
    import yaml

    raw = yaml.safe_load(CONFIG.read_text())
    intents = raw["data"]["select_labels"]
    configs = []
    for i, name in enumerate(NAMES):
        cfg = json.loads(json.dumps(raw))
        cfg["data"]["select_labels"] = intents[i::3]
        cfg["data"]["path"] = str(ROOT / raw["data"]["path"])
        cfg["registry"]["model_name"] = name
        path = Path(env["TUNEOPS_HOME"]) / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tuneops.cli", "train", str(path)], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        print(f"trained and registered {name} ({len(cfg['data']['select_labels'])} intents) in "
              f"{time.perf_counter() - began:.0f} s", flush=True)
        configs.append(path)
    return configs


def champion_folder(name: str, work: Path) -> Path:
    """The registered model folder of NAME@champion, downloaded whole (what the registry stores for it)."""
    import mlflow

    target = work / f"registered-{name}"
    mlflow.artifacts.download_artifacts(f"models:/{name}@champion", dst_path=str(target))
    return target


def former_layout(registered: Path, work: Path) -> Path:
    """The same model in the layout of versions registered before adapter-only ones: the registered folder with
    the adapter merged into a full copy of the base saved beside it (model.safetensors + config), merged by the
    loader a runtime that merges uses."""
    from transformers import AutoModelForSequenceClassification

    import tuneops.families.classification.pooling  # noqa: F401 - the mean-pooled model type, as the predictor
    from tuneops.training.model_loading import load_saved_model

    former = work / f"former-{registered.name.removeprefix('registered-')}"
    shutil.copytree(registered, former)
    model_dir = next(p.parent for p in (former / "artifacts").rglob("tuneops_base.json"))
    load_saved_model(model_dir, AutoModelForSequenceClassification, merge=True).save_pretrained(str(model_dir))
    for pin in model_dir.glob("tuneops_base*"):  # the former layout had no pinned base: merged weights load alone
        pin.unlink()
    return former


def llm_bytes(work: Path) -> tuple[int, int]:
    """(adapter folder, merged model folder) bytes of SmolLM2 with the instruct config's LoRA."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneops import methods
    from tuneops.config import load_config
    from tuneops.training.base_models import resolve

    cfg = load_config(LLM_CONFIG)
    base = resolve(cfg.model.base)
    model = methods.get("lora").prepare(AutoModelForCausalLM.from_pretrained(base), cfg.training.method_settings(),
                                        "CAUSAL_LM")
    adapter, merged = work / "llm-adapter", work / "llm-merged"
    methods.get("lora").save(model, adapter)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.save_pretrained(adapter)
    model.merge_and_unload().save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    return folder_bytes(adapter), folder_bytes(merged)


LOAD_SNIPPET = """
import sys, time, mlflow
t = time.perf_counter()
model = mlflow.pyfunc.load_model(sys.argv[1])
print(time.perf_counter() - t)
"""


def load_seconds(uri: str, env: dict[str, str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, uri], env=env, cwd=ROOT, capture_output=True,
                             text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return min(times)


def log_former(former: Path, name: str) -> str:
    """The former-layout copy logged as a pyfunc model of its own run (the same class and artifacts layout)."""
    import mlflow

    from tuneops.families.classification.pyfunc import TextClassifierModel

    with mlflow.start_run(run_name=f"{name}-former-layout") as run:
        mlflow.pyfunc.log_model(name="model", python_model=TextClassifierModel(),
                                artifacts={"model": str(next(p.parent.parent for p in (former / "artifacts").rglob(
                                    "adapter/tuneops_method.json")))})
    return f"runs:/{run.info.run_id}/model"


def rss_bytes(pgid: int) -> int:
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            total += next(int(line.split()[1]) * 1024 for line in (entry / "status").read_text().splitlines()
                          if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            continue
    return total


def load_phase(targets: list[tuple[str, int, str]], texts: list[str], clients: int, duration: float) -> dict:
    """Closed loop over several models: request n goes to targets[n % len(targets)] (host, port, path)."""
    lock, counter = threading.Lock(), iter(range(10**9))
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + duration
    gate = threading.Barrier(clients + 1)

    def client() -> None:
        conns: dict[tuple[str, int], http.client.HTTPConnection] = {}
        gate.wait()
        while time.monotonic() < deadline:
            with lock:
                n = next(counter)
            host, port, path = targets[n % len(targets)]
            conn = conns.get((host, port)) or conns.setdefault((host, port), http.client.HTTPConnection(
                host, port, timeout=120))
            body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[texts[n % len(texts)]]]}})
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                raw = response.read()
                error = None if response.status == 200 else f"HTTP {response.status}: {raw[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                error = repr(exc)
                conns.pop((host, port)).close()
            with lock:
                if error:
                    errors.append(error)
                else:
                    latencies.append((time.perf_counter() - t0) * 1000)
        for conn in conns.values():
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    gate.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    return {"requests": len(latencies), "seconds": seconds, "rps": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99), "errors": len(errors),
            "first_error": errors[0] if errors else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per phase (default 20)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent closed-loop clients (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds: 2 runs A B B A (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (default: removed)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="adapter-bench-"))
    home = work / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env.update(TUNEOPS_HOME=str(home), HF_HUB_OFFLINE="1")
    os.environ.update(env)
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        os.environ.pop(key, None)
    from tuneops import settings

    settings.configure_environment()
    env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]
    print(f"working folder {work}", flush=True)
    try:
        configs = train_three(env)
        print("\n1. registry bytes per version")
        rows = []
        for name in NAMES:
            registered = champion_folder(name, work)
            former = former_layout(registered, work)
            rows.append((name, folder_bytes(registered), folder_bytes(former), former))
            print(f"  {name}: adapter-only {folder_bytes(registered) / 1e6:.2f} MB, former layout "
                  f"{folder_bytes(former) / 1e6:.2f} MB ({folder_bytes(registered) / folder_bytes(former):.1%}; "
                  "goal <= 5%)", flush=True)
        adapter, merged = llm_bytes(work)
        print(f"  SmolLM2 LoRA (instruct config): adapter folder {adapter / 1e6:.2f} MB, merged model "
              f"{merged / 1e6:.1f} MB ({adapter / merged:.1%}; goal <= 5%)", flush=True)

        print("\n2. load time, mlflow.pyfunc.load_model in a fresh process, best of 3")
        former_uri = log_former(rows[0][3], NAMES[0])
        new_s, old_s = load_seconds(f"models:/{NAMES[0]}@champion", env), load_seconds(former_uri, env)
        print(f"  adapter-only {new_s:.2f} s, former layout (merged weights) {old_s:.2f} s ({new_s / old_s:.2f}x)",
              flush=True)

        print(f"\n3. serving three models: {args.clients} clients, {args.duration:g} s per phase, {args.rounds} "
              "round(s)")
        import pandas as pd

        from tuneops.config import ServingConfig
        from tuneops.serving.server import mlflow_serve_command
        from tuneops.serving.spec import build_spec

        texts = pd.read_csv(ROOT / "data/banking77/train.csv").text.tolist()
        port = free_port()
        argv = [sys.executable, "-m", "tuneops.cli", "serve", *(x for c in configs for x in ("--config", str(c))),
                "--port", str(port), "--workers", "1"]
        sides = {"tuneops serve (one process)": [start("tuneops-serve", argv, env, f"http://127.0.0.1:{port}",
                                                       work)]}
        targets = {"tuneops serve (one process)": [("127.0.0.1", port, f"/models/{n}/invocations") for n in NAMES],
                   "mlflow models serve (three)": []}
        sides["mlflow models serve (three)"] = []
        for name in NAMES:
            spec = build_spec(None, ServingConfig(workers=1, port=free_port()), model_uri=f"models:/{name}@champion")
            mlflow_argv, mlflow_env = mlflow_serve_command(spec)
            url = f"http://127.0.0.1:{spec.serving['port']}"
            sides["mlflow models serve (three)"].append(start(f"mlflow-{name}", mlflow_argv, {**env, **mlflow_env},
                                                              url, work))
            targets["mlflow models serve (three)"].append(("127.0.0.1", spec.serving["port"], "/invocations"))
        results: dict[str, list[dict]] = {side: [] for side in sides}
        try:
            for side in sides:
                load_phase(targets[side], texts, 1, 10)  # warm-up: every model answers once
            order = []
            for r in range(args.rounds):
                order += list(sides) if r % 2 == 0 else list(reversed(sides))
            for side in order:
                phase = load_phase(targets[side], texts, args.clients, args.duration)
                phase["rss"] = sum(rss_bytes(p.pid) for p in sides[side])
                results[side].append(phase)
                print(f"  {side}: {phase['requests']} requests, {phase['rps']:.1f}/s, p50 {phase['p50_ms']:.0f} ms, "
                      f"p99 {phase['p99_ms']:.0f} ms, {phase['errors']} errors, RSS {phase['rss'] / 2**20:.0f} MB"
                      + (f" (first error {phase['first_error']})" if phase["errors"] else ""), flush=True)
        finally:
            for procs in sides.values():
                for proc in procs:
                    stop(proc)
        one, three = (results[s] for s in sides)
        rps_one, rps_three = (sum(p["rps"] for p in r) / len(r) for r in (one, three))
        rss_one, rss_three = (max(p["rss"] for p in r) for r in (one, three))
        print(f"\n  memory one / three: {rss_one / rss_three:.2f}x ({rss_one / 2**20:.0f} MB vs "
              f"{rss_three / 2**20:.0f} MB; goal <= 0.5x); requests/s one / three: {rps_one / rps_three:.2f}x "
              f"({rps_one:.1f} vs {rps_three:.1f}; goal >= 1.0x)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
