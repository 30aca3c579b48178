"""HTTP serving benchmark: `tuneops serve` against `mlflow models serve` on the same registered version.

Both servers are started from the same store with the same number of workers, on free loopback ports, and given
the same closed-loop load: CLIENTS concurrent clients, each sending one text per request (a persistent HTTP/1.1
connection each, as a load balancer keeps), the next as soon as the answer is back. The load phases alternate
(tuneops, mlflow, mlflow, tuneops, ... for --rounds) so a machine whose load changes during the run hurts both
alike; each phase lasts --duration seconds or --max-requests requests, whichever comes first. Printed per server:
requests, requests/s, p50 and p99 latency, errors; and the ratio. ``--family causal`` serves a causal-LM
champion with one prompt per request and adds prompts/s and generated tokens/s.

    # after `make demo` (the classifier champion in ./.tuneops):
    .venv/bin/python bench/serve_http.py                                  # 20 s per phase, 8 clients, 1 worker
    .venv/bin/python bench/serve_http.py --duration 60 --workers 2
    # any registered version, any store:
    .venv/bin/python bench/serve_http.py --model-uri models:/banking77-intent/3 --tracking-uri sqlite:///x/mlflow.db
    # no model yet: train the demo first (a few minutes on 2 cores)
    .venv/bin/python bench/serve_http.py --train
    # after `make demo-llm`:
    .venv/bin/python bench/serve_http.py --family causal --model-uri models:/banking77-instruct@champion
    # after `make demo-dpo` (its supervised NLU++ champion answers bare customer messages):
    .venv/bin/python bench/serve_http.py --family causal --config configs/nlupp_intents_llm.yaml \
        --prompt-template '{text}'

The texts are BANKING77 training queries (a causal LM gets them through --prompt-template), cycled.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuneops import settings  # noqa: E402
from tuneops.ports import free_port  # noqa: E402

DEMO_CONFIGS = {"classifier": "configs/banking77_lora.yaml", "causal": "configs/banking77_instruct.yaml"}


@dataclass
class Phase:
    server: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    tokens: int = 0
    first_error: str | None = None


def load(url: str, column: str, texts: list[str], clients: int, duration: float, max_requests: int,
         server: str) -> Phase:
    """Closed loop: each client sends one text, waits for the answer, sends the next."""
    host, port = url.removeprefix("http://").split(":")
    phase, lock = Phase(server), threading.Lock()
    counter = iter(range(max_requests))
    deadline = time.monotonic() + duration
    start_gate = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        start_gate.wait()
        while time.monotonic() < deadline:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            body = json.dumps({"dataframe_split": {"columns": [column], "data": [[texts[n % len(texts)]]]}})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                raw = response.read()
                ok = response.status == 200
                answer = json.loads(raw) if ok else None
                error = None if ok else f"HTTP {response.status}: {raw[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                ok, answer, error = False, None, repr(exc)
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                if ok:
                    phase.latencies_ms.append(elapsed)
                    phase.tokens += sum(int(p.get("response_tokens", 0)) for p in answer["predictions"])
                else:
                    phase.errors += 1
                    phase.first_error = phase.first_error or error
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    phase.seconds = time.perf_counter() - t0
    return phase


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by every live process of a process group: the server and its workers.
    On a shared machine this says what each request cost the server, whatever share of the CPU it was given."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...; utime, stime are 12 and 13
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start(name: str, argv: list[str], env: dict[str, str], url: str, folder: Path) -> subprocess.Popen:
    from tuneops.serving.server import wait_until_ready

    log = (folder / f"{name}.log").open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(url, 600, alive=lambda: proc.poll() is None)
    except (RuntimeError, TimeoutError) as exc:
        stop(proc)
        sys.exit(f"{name} did not start ({exc}); its log: {folder / f'{name}.log'}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=("classifier", "causal"), default="classifier",
                        help="classifier: one text per request; causal: one prompt per request (default classifier)")
    parser.add_argument("--model-uri", help="models:/NAME@ALIAS or models:/NAME/N (default: the demo config's "
                        "champion)")
    parser.add_argument("--config", help="config whose champion and serving settings are served (default: the "
                        "family's demo config, configs/banking77_lora.yaml or configs/banking77_instruct.yaml)")
    parser.add_argument("--tracking-uri", help="MLflow store (default MLFLOW_TRACKING_URI, else $TUNEOPS_HOME's)")
    parser.add_argument("--train", action="store_true", help="train the demo config first (`tuneops train`)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per phase (default 20, at "
                        "most 60)")
    parser.add_argument("--max-requests", type=int, default=20_000, help="request cap per phase (default 20000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent closed-loop clients (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each server (default 1)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; 2 runs A B B A (default 1: A B)")
    parser.add_argument("--warmup", type=int, default=16, help="requests sent to each server before timing")
    parser.add_argument("--prompt-template", default="Which intent: {text}",
                        help="how a causal LM gets each query, '{text}' replaced (default 'Which intent: {text}'; "
                        "the NLU++ extractor of configs/nlupp_intents_llm.yaml takes the bare message: '{text}')")
    parser.add_argument("--max-wait-ms", type=float, help="serving.max_wait_ms of `tuneops serve` (default: the "
                        "config's, 2 ms unless it says otherwise)")
    parser.add_argument("--runtime", default="fp32", help="serving.runtime of `tuneops serve` (int8, onnx, auto, ...; "
                        "default fp32): checked against fp32 on the version first, so it needs the demo config; "
                        "mlflow models serve always runs fp32")
    args = parser.parse_args()
    if not 0 < args.duration <= 60:
        parser.error("--duration must be between 0 and 60 seconds")
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    settings.configure_environment()
    if args.train:
        subprocess.run([sys.executable, "-m", "tuneops.cli", "train", args.config or DEMO_CONFIGS[args.family]],
                       check=True, cwd=ROOT)

    import pandas as pd

    from tuneops.config import ServingConfig, load_config
    from tuneops.serving.model_slot import resolve
    from tuneops.serving.server import mlflow_serve_command
    from tuneops.serving.spec import build_spec

    config_path = ROOT / (args.config or DEMO_CONFIGS[args.family])
    cfg = load_config(config_path) if args.model_uri is None else None
    serving = ServingConfig(workers=args.workers, port=free_port(), log_predictions=True)
    spec = build_spec(cfg, serving, model_uri=args.model_uri)
    version = resolve(spec)
    pinned = spec.model_uri or f"models:/{spec.model_name}/{version}"  # both servers serve this exact version
    queries = pd.read_csv(ROOT / "data/banking77/train.csv").text.tolist()
    column = "prompt" if args.family == "causal" else "text"
    texts = [args.prompt_template.replace("{text}", q) for q in queries] if args.family == "causal" else queries

    folder = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    env = {**os.environ, "TUNEOPS_HOME": str(folder / "home")}  # the online prediction log goes there
    tuneops_url = f"http://127.0.0.1:{serving.port}"
    overrides = ([f"serving.runtime={args.runtime}"] if args.runtime != "fp32" else []) + (
        [f"serving.max_wait_ms={args.max_wait_ms:g}"] if args.max_wait_ms is not None else [])
    if args.model_uri is None:  # the config's serving settings, pinned to the version both servers serve
        tuneops_argv = [sys.executable, "-m", "tuneops.cli", "serve", "--config", str(config_path),
                        "--version", str(version), "--port", str(serving.port), "--workers", str(args.workers),
                        *(x for o in overrides for x in ("--set", o))]
    elif overrides:  # a runtime's agreement check is recorded on the version, under the config's rules
        parser.error("--runtime and --max-wait-ms apply a config's serving settings: give --config, not --model-uri")
    else:
        tuneops_argv = [sys.executable, "-m", "tuneops.cli", "serve", "--model-uri", pinned, "--port",
                        str(serving.port), "--workers", str(args.workers)]
    mlflow_spec = build_spec(None, ServingConfig(workers=args.workers, port=free_port()), model_uri=pinned)
    mlflow_argv, mlflow_env = mlflow_serve_command(mlflow_spec)
    mlflow_url = f"http://127.0.0.1:{mlflow_spec.serving['port']}"
    print(f"{pinned} (tuneops serve on {args.runtime}) from {os.environ['MLFLOW_TRACKING_URI']}: {args.clients} "
          f"clients, {args.workers} worker(s), "
          f"{args.duration:g} s or {args.max_requests} requests per phase, {args.rounds} round(s); logs in {folder}",
          flush=True)
    servers = {"tuneops serve": (tuneops_url, start("tuneops-serve", tuneops_argv, env, tuneops_url, folder)),
               "mlflow models serve": (mlflow_url, start("mlflow-models-serve", mlflow_argv, {**env, **mlflow_env},
                                                         mlflow_url, folder))}
    phases: dict[str, list[Phase]] = {name: [] for name in servers}
    try:
        for name, (url, _) in servers.items():
            load(url, column, texts, 1, 600, args.warmup, name)
        order = []
        for r in range(args.rounds):
            order += list(servers) if r % 2 == 0 else list(reversed(servers))
        for name in order:
            url, proc = servers[name]
            cpu = group_cpu_seconds(proc.pid)
            phase = load(url, column, texts, args.clients, args.duration, args.max_requests, name)
            phase.cpu_seconds = group_cpu_seconds(proc.pid) - cpu
            phases[name].append(phase)
            print(f"  {name}: {len(phase.latencies_ms)} requests in {phase.seconds:.1f} s, {phase.errors} errors, "
                  f"server CPU {phase.cpu_seconds:.1f} s", flush=True)
        with urllib.request.urlopen(f"{tuneops_url}/metadata", timeout=30) as response:
            worker = json.loads(response.read())["worker"]
        per_call = worker["rows"] / max(1, worker["model_calls"])
        print(f"tuneops serve (one worker's counters): {worker['rows']} rows in {worker['model_calls']} model calls "
              f"({per_call:.1f} rows a call, largest {worker['largest_call_rows']})")
    finally:
        for _, proc in servers.values():
            stop(proc)

    unit = "prompts" if args.family == "causal" else "requests"
    print(f"\n{'server':<22}{unit:>10}{unit + '/s':>14}{'tokens/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'CPU ms/req':>12}")
    summary = {}
    for name, runs in phases.items():
        latencies = [x for p in runs for x in p.latencies_ms]
        seconds = sum(p.seconds for p in runs)
        errors = sum(p.errors for p in runs)
        rate = len(latencies) / seconds
        tokens = sum(p.tokens for p in runs) / seconds
        summary[name] = {"requests": len(latencies), "per_s": rate, "tokens_per_s": tokens,
                         "p50_ms": statistics.median(latencies) if latencies else float("nan"),
                         "p99_ms": percentile(latencies, 0.99), "errors": errors,
                         "cpu_ms_per_request": 1000 * sum(p.cpu_seconds for p in runs) / max(1, len(latencies)),
                         "first_error": next((p.first_error for p in runs if p.first_error), None)}
        s = summary[name]
        print(f"{name:<22}{s['requests']:>10}{s['per_s']:>14.1f}{s['tokens_per_s']:>10.1f}{s['p50_ms']:>9.1f}"
              f"{s['p99_ms']:>9.1f}{s['errors']:>8}{s['cpu_ms_per_request']:>12.1f}")
    ours, theirs = summary["tuneops serve"], summary["mlflow models serve"]
    ratio = ours["per_s"] / theirs["per_s"] if theirs["per_s"] else float("inf")
    cpu_ratio = theirs["cpu_ms_per_request"] / ours["cpu_ms_per_request"] if ours["cpu_ms_per_request"] else 0.0
    print(f"\ntuneops serve / mlflow models serve: {ratio:.2f}x {unit}/s, p99 {ours['p99_ms']:.1f} vs "
          f"{theirs['p99_ms']:.1f} ms (goal: >= 2x at an equal or lower p99, 0 errors); server CPU per request "
          f"{cpu_ratio:.2f}x less")
    for name, s in summary.items():
        if s["first_error"]:
            print(f"first error of {name}: {s['first_error']}")
    print(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"), "model": pinned,
                      "family": args.family, "clients": args.clients, "workers": args.workers,
                      "duration_s": args.duration, "rounds": args.rounds, "ratio": ratio, "cpu_ratio": cpu_ratio,
                      "tuneops_worker": worker, "servers": summary}))


if __name__ == "__main__":
    main()
