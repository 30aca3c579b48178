"""The `tuneops` command. Heavy libraries are imported inside commands, never at start-up."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from tuneops.errors import TuneopsError

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig
    from tuneops.tasks.judge import TrainOutcome


def _strip_expected_tracebacks() -> None:
    """Expected failures (TuneopsError) reach the user as a message, not as a traceback in the logs."""

    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.exc_info and isinstance(record.exc_info[1], TuneopsError):
                record.exc_info, record.exc_text = None, None
            return True

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_Filter())


def check_services() -> None:
    """Fail fast, with the fix, when a configured server is unreachable."""
    import urllib.error
    import urllib.request

    targets = []
    if os.environ.get("PREFECT_API_URL"):
        targets.append(("Prefect API", os.environ["PREFECT_API_URL"].rstrip("/") + "/health", "PREFECT_API_URL"))
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith("http"):
        targets.append(("MLflow tracking server", uri.rstrip("/") + "/health", "MLFLOW_TRACKING_URI"))
    for what, url, var in targets:
        try:
            urllib.request.urlopen(url, timeout=5).close()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TuneopsError(f"{what} at {url} is unreachable ({reason}). Start it (`make up`) or unset "
                               f"{var} to use the embedded local defaults.") from None


def _prepare_training_run(args: argparse.Namespace) -> TuneopsConfig:
    """What `train` and `tune` do before their flow: the config (with --set), reachable services, ``model.base``
    resolved and accepted by the task family (else one message, exit 2), then the local Prefect server booting
    while the ML stack and the MLflow store load."""
    from tuneops.config import load_config

    cfg = load_config(args.config, args.set)
    check_services()
    from tuneops.training.base_models import preflight

    preflight(cfg.model.base, cfg.model.task, cfg.model.pooling)
    from tuneops.startup import prepare_training

    prepare_training(cfg.registry.experiment)
    return cfg


def train_summary(outcome: TrainOutcome) -> str:
    """What `tuneops train` prints when its flow is done: the version, test metrics, baseline, gate, merge check,
    aliases and run."""
    from tuneops.training.merge_check import MergeCheck, consequence

    r, d = outcome.registration, outcome.decision
    lines = ["", "=" * 72, f"model        {r.name} v{r.version}  ({r.model_uri})",
             "test         " + "  ".join(f"{k}={v:.4f}" for k, v in outcome.test_metrics.items()
                                         if k in ("accuracy", "macro_f1", "rouge_l", "exact_match", "set_match",
                                                  "micro_f1", "json_valid", "perplexity", "preference_accuracy",
                                                  "preference_margin"))]
    lift = next((c for c in d.checks if c["check"].startswith("lift over baseline")), None)
    if lift is not None:
        bar = f"bar {lift['bound']:+.4f} (gate.min_lift_over_baseline)" if lift["gated"] else "not gated"
        lines.append(f"baseline     {lift['check'].removeprefix('lift over baseline ')}: {lift['baseline']:.4f}, "
                     f"lift {lift['delta']:+.4f} (CI [{lift['ci_low']:+.4f}, {lift['ci_high']:+.4f}]; {bar})")
    lines.append(f"gate         {d.reason}")
    check = MergeCheck.from_tags(outcome.merge_check)
    if check is not None:
        lines.append(f"merge check  {check.verdict()}; {consequence(check.passed)}")
    lines.append(f"aliases      challenger -> v{r.version}" + (f", champion -> v{r.version}" if r.promoted else ""))
    lines.append(f"mlflow run   {outcome.run_id}")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _prepare_training_run(args)
    from tuneops.flows.train_model import train_model

    _strip_expected_tracebacks()
    print(train_summary(train_model(config=cfg)))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    cfg = _prepare_training_run(args)
    from tuneops.flows.tune_hyperparameters import tune_hyperparameters

    _strip_expected_tracebacks()
    outcome = tune_hyperparameters(config=cfg, output=args.output)
    metric = cfg.gate.primary_metric
    print("\n" + "=" * 72)
    for t in outcome.trials:
        mark = "*" if t is outcome.best else " "
        print(f"{mark} trial {t.number:>3}  validation {metric} {t.validation[metric]:.4f}  {t.overrides}")
    print(f"best config  {outcome.best_config_path}   (train it: tuneops train {outcome.best_config_path})")
    print(f"mlflow run   {outcome.run_id}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tuneops.config import load_config

    cfg = load_config(args.config, args.set)
    check_services()
    from tuneops.serving.scoring import predict_file

    written = predict_file(cfg, args.input, args.output, version=args.version)
    print(f"wrote {written.rows} predictions by {cfg.registry.model_name} v{written.version} (runtime "
          f"{written.runtime}) to {args.output}")
    return 0


def cmd_runtime_check(args: argparse.Namespace) -> int:
    from tuneops.config import load_config

    cfg = load_config(args.config, args.set)
    check_services()
    from tuneops.serving import runtime_check, runtimes
    from tuneops.serving.scoring import resolve_version

    version = resolve_version(cfg.registry.model_name, args.version)
    names = list(runtimes.RUNTIMES) if args.runtime == "all" else [runtimes.get(args.runtime).name]
    results = runtime_check.check(cfg, version, names, skip_unusable=args.runtime == "all")
    print(f"{cfg.registry.model_name} v{version}: each runtime against fp32 on the validation split")
    for r in results:
        print(f"  {r.runtime:<5} {'passed' if r.passed else 'FAILED'}  {r.summary()}")
    if not results:
        print("  no runtime other than fp32 can run this model here")
    print(f"serving.runtime: auto picks {runtime_check.choose(cfg, version, runtimes.AUTO)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from tuneops.serving.serving_file import requests_from
    from tuneops.serving.spec import build_specs

    requests, file_values, file_label = requests_from(args.config, args.serving_file, args.set, args.model_uri,
                                                      args.version)
    flags = {"host": args.host, "port": args.port, "workers": args.workers}
    specs = build_specs(requests, flags, file_values, file_label)
    if args.mlflow_command and len(specs) > 1:
        raise TuneopsError(f"--mlflow-command prints the `mlflow models serve` line of one model (MLflow serves one "
                           f"per process) and {len(specs)} are given; run it with each --config on its own")
    check_services()
    from tuneops.serving import model_slot, server

    if args.mlflow_command:
        import shlex

        argv, env = server.mlflow_serve_command(specs[0])
        shown = {**{k: shlex.quote(v) for k, v in env.items()},
                 "PATH": shlex.quote(os.path.dirname(argv[0])) + ':"$PATH"'}  # the venv's bin/, then the user's PATH
        print(" ".join(f"{k}={v}" for k, v in shown.items()) + " " + shlex.join(argv))
        return 0
    for spec in specs:  # no champion (or an unreachable registry) fails here, before anything starts
        model_slot.resolve(spec)
    serving = specs[0].settings()
    where = f"http://{serving.host}:{serving.port}"
    served = [f"{s.describe()} ({f'following @{s.alias}' if s.alias else 'pinned'})" for s in specs]
    logs = [s.log_output or "not logged" for s in specs]
    if len(specs) == 1:
        print(f"serving {served[0]} on {where} with {serving.workers} worker(s); online predictions -> {logs[0]}",
              flush=True)
    else:
        print(f"serving {len(specs)} models on {where} with {serving.workers} worker(s):", flush=True)
        for spec, line, out in zip(specs, served, logs, strict=True):
            print(f"  {where}{spec.route}  {line}; online predictions -> {out}", flush=True)
    server.serve(specs)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    check_services()
    from tuneops.registry import versions as registry

    if args.force and not args.reason:
        raise TuneopsError("--force needs a --reason that says why the gate is overridden")
    result = registry.promote(args.name, str(args.version), args.reason or "manual promotion",
                              gate_must_pass=not args.force)
    if not result.changed:
        print(f"{args.name} v{result.champion} is already the champion; nothing changed (previous: "
              f"{'v' + result.previous if result.previous else 'none'})", file=sys.stderr)
    print(json.dumps({"model": args.name, "champion": result.champion, "previous": result.previous,
                      "changed": result.changed}))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    check_services()
    from tuneops.registry import versions as registry

    restored, replaced = registry.rollback(args.name, args.reason)
    print(json.dumps({"model": args.name, "champion": restored, "previous": replaced}))
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    from tuneops.config import load_config

    cfg = load_config(args.config, args.set)
    check_services()
    from tuneops.families.preference.pairs import build_pairs

    result = build_pairs(cfg, args.champion, args.output, args.seed, args.extend)
    sources = ", ".join(f"{k} {v}" for k, v in sorted(result.sources.items()))
    print(f"wrote {result.rows} preference pairs from {result.training_prompts} training prompts of "
          f"{cfg.registry.model_name} ({result.champion}) to {result.path}: {sources}")
    if result.lengths:
        print("rejected answers against the chosen one: " + ", ".join(f"{k} {v}" for k, v in result.lengths.items()))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from tuneops.infra import stack

    stack.up(stack.StackSettings.from_env(host=args.host, prefect_port=args.prefect_port,
                                          mlflow_port=args.mlflow_port, mlflow_artifacts=args.mlflow_artifacts,
                                          database=args.database, workers=args.workers))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from tuneops.infra import stack

    stack.down(stack.StackSettings.from_env())
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from tuneops.config import load_config

    cfg = load_config(args.config, args.set)
    check_services()
    from datetime import UTC, datetime, timedelta

    from tuneops import settings
    from tuneops.monitoring.check import Window, run_check

    window = Window(datetime.now(UTC) - timedelta(hours=args.hours) if args.hours else None, None)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = args.report or str(settings.home() / "monitoring" / f"drift-{cfg.registry.model_name}-{stamp}.html")
    result, _ = run_check(cfg, args.input, window, report)
    print(json.dumps(result.summary()))
    return 0


VERBOSE = ("-v", "--verbose")
VERBOSE_OPTIONS = {"action": "store_true", "help": "show everything: tuneops' debug lines and the libraries' own "
                   "warnings, logs and progress bars (same as TUNEOPS_LOG_LEVEL=DEBUG)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuneops",
        description="Fine-tune language models on company data: validate, split, train, gate, register.",
        epilog="State lives under $TUNEOPS_HOME (default ./.tuneops) unless MLFLOW_TRACKING_URI / "
        "PREFECT_API_URL point at servers.")
    parser.add_argument(*VERBOSE, **VERBOSE_OPTIONS, default=False)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument(*VERBOSE, **VERBOSE_OPTIONS, default=argparse.SUPPRESS)  # after the command too
        p.set_defaults(func=func)
        return p

    p = add("train", cmd_train, "Run the train_model flow on a config.")
    p.add_argument("config", help="YAML config, e.g. configs/banking77_lora.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.epochs=2 (repeatable)")

    p = add("tune", cmd_tune, "Run the tune_hyperparameters flow over the config's search space.")
    p.add_argument("config", help="YAML config with a 'search' section, e.g. configs/banking77_search.yaml")
    p.add_argument("--output", help="where to write the best config (default: the run's folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")

    p = add("predict", cmd_predict, "Score a CSV/JSONL/Parquet of texts with the champion (or a version).")
    p.add_argument("--config", required=True, help="config naming the model and the text column")
    p.add_argument("--input", required=True, help="file, folder or s3:// prefix with a text column")
    p.add_argument("--output", required=True,
                   help="file or s3:// object (.csv, .jsonl or .parquet) to write text, label, confidence, "
                   "model_version to")
    p.add_argument("--version", help="registered version to use instead of the champion")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")

    p = add("serve", cmd_serve, "Serve the champion (or a version) over HTTP with MLflow's scoring contract "
            "(/invocations, /ping, /health, /version) plus /metadata; follows the champion alias. Several models "
            "(--config A --config B, or --serving-file) are served in one process, each at "
            "/models/NAME/invocations and following its own champion.")
    p.add_argument("--config", action="append", help="config naming the model (registry.model_name) and its "
                   "serving settings; repeat it to serve several models in one process")
    p.add_argument("--serving-file", metavar="FILE", help="YAML listing the models to serve (each a config, with an "
                   "optional version, alias or runtime) and the process's host, port and workers; instead of "
                   "--config (see the serving file reference)")
    p.add_argument("--model-uri", help="model to serve instead: models:/NAME@ALIAS (followed), models:/NAME/N, "
                   "runs:/... or a folder")
    p.add_argument("--version", help="serve this registered version instead of following the champion (one model)")
    p.add_argument("--host", help="address to bind (default serving.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default serving.port, 8080)")
    p.add_argument("--workers", type=int, help="worker processes, each with its model and alias poller (default "
                   "serving.workers, 1)")
    p.add_argument("--mlflow-command", action="store_true",
                   help="print the `mlflow models serve` command (with the environment it needs) that serves the "
                   "same model from the same store, and exit")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set serving.max_batch_size=16 (applied to every config served)")

    p = add("runtime-check", cmd_runtime_check, "Check inference runtimes against fp32 on a registered version's "
            "validation split and record the result on the version (serving.runtime may then use them).")
    p.add_argument("--config", required=True, help="config naming the model and the serving thresholds")
    p.add_argument("--version", help="registered version to check instead of the champion")
    p.add_argument("--runtime", default="all", help="runtime to check (int8, onnx, bf16, ...) or all (default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")

    p = add("promote", cmd_promote, "Point the 'champion' alias at a version (the old one becomes 'previous').")
    p.add_argument("name", help="registered model name")
    p.add_argument("version", help="version number")
    p.add_argument("--reason", help="why; recorded as an audit tag")
    p.add_argument("--force", action="store_true", help="promote even though the version failed its gate")

    p = add("rollback", cmd_rollback, "Make the 'previous' version champion again.")
    p.add_argument("name", help="registered model name")
    p.add_argument("--reason", default="rollback", help="why; recorded as an audit tag")

    p = add("pairs", cmd_pairs, "Build preference pairs from a causal_lm config's training prompts: chosen = the "
            "reference, rejected = the champion's own wrong answer (or a near miss where it is right).")
    p.add_argument("--config", required=True, help="the supervised causal_lm config, e.g. "
                   "configs/nlupp_intents_llm.yaml")
    p.add_argument("--champion", help="model to generate with (default models:/<registry.model_name>@champion)")
    p.add_argument("--output", help="JSONL file to write (default $TUNEOPS_HOME/pairs/<registry.model_name>.jsonl)")
    p.add_argument("--seed", type=int, default=0, help="seed of the near misses (default 0)")
    p.add_argument("--extend", metavar="PAIRS", help="an earlier round's pairs file: keep its pairs and add this "
                   "model's wrong answers on the prompts the earlier model got right (iterative DPO: --champion "
                   "names the preference-tuned version)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")

    p = add("up", cmd_up, "Start the local stack (Prefect server + worker, MLflow server) and deploy the flows.")
    p.add_argument("--host", help="address to bind (default 127.0.0.1, or TUNEOPS_HOST)")
    p.add_argument("--prefect-port", type=int, help="Prefect server port (default 4200, or TUNEOPS_PREFECT_PORT)")
    p.add_argument("--mlflow-port", type=int, help="MLflow server port (default 5000, or TUNEOPS_MLFLOW_PORT)")
    p.add_argument("--mlflow-artifacts", help="artifact destination: a folder or s3://bucket/prefix (default "
                   "$TUNEOPS_HOME/mlartifacts, or TUNEOPS_MLFLOW_ARTIFACTS)")
    p.add_argument("--database", metavar="postgresql://USER[:PASSWORD]@HOST:PORT",
                   help="PostgreSQL server for both backends: MLflow uses its database 'mlflow', Prefect its "
                   "database 'prefect' (default: SQLite under $TUNEOPS_HOME, or TUNEOPS_DATABASE)")
    p.add_argument("--workers", type=int, help="process workers on the pool (default 1, or TUNEOPS_WORKERS)")
    add("down", cmd_down, "Stop everything `tuneops up` started from this TUNEOPS_HOME.")
    p = add("monitor", cmd_monitor, "Check a prediction log for drift against the champion's training data.")
    p.add_argument("--config", required=True, help="config naming the model and the monitoring thresholds")
    p.add_argument("--input", required=True, help="prediction-log file, folder or s3:// prefix (score_batch output)")
    p.add_argument("--report", help="HTML report path (default $TUNEOPS_HOME/monitoring/drift-NAME-TIME.html)")
    p.add_argument("--hours", type=float, help="only rows of the last HOURS hours (default: every row)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tuneops import console, settings

    try:
        console.configure(verbose=args.verbose)  # before any library loads; a TUNEOPS_LOG_LEVEL must be a level
        settings.configure_environment()
        return args.func(args)
    except TuneopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """Console entry point: run, flush, run exit handlers, and leave without interpreter teardown.

    After a training run, CPython's finalisation of torch and tokenizers state takes about 3 s on
    2 cores and does nothing useful for a process that is about to end.
    """
    import atexit

    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    entry()
