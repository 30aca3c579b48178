"""Log the trained model as an MLflow pyfunc, register it, and move aliases per the gate."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.gate import GateDecision
from tuneops.config import TuneopsConfig
from tuneops.splits import SplitResult
from tuneops.training import TrainResult

PIP_REQUIREMENTS = ["torch==2.13.0", "transformers>=5.20,<6", "peft>=0.21,<0.22", "pandas>=2.2,<3", "mlflow>=3.17,<4"]


@dataclass
class Registration:
    """What the registry now holds for this run."""

    name: str
    version: str
    model_uri: str
    promoted: bool
    previous_champion: str | None


def provenance_tags(cfg: TuneopsConfig, data_fingerprint: str, splits: SplitResult, metrics: dict[str, float],
                    decision: GateDecision, code_version: str) -> dict[str, str]:
    """Tags that let every version say which data, code, config, base model, metrics and verdict."""
    tags = {
        "tuneops.task": cfg.model.task,
        "tuneops.data.path": cfg.data.path,
        "tuneops.data.fingerprint": data_fingerprint,
        "tuneops.code_version": code_version,
        "tuneops.config_hash": cfg.fingerprint(),
        "tuneops.base_model": cfg.model.base,
        "tuneops.method": cfg.training.method,
        "tuneops.gate.passed": str(decision.passed),
        "tuneops.gate.reason": decision.reason[:5000],
    }
    tags.update({f"tuneops.split.{n}.fingerprint": f for n, f in splits.fingerprints.items()})
    tags.update({f"tuneops.metric.test_{k}": f"{v:.6f}" for k, v in metrics.items() if not k.startswith("seconds")})
    return tags


def model_card(cfg: TuneopsConfig, tags: dict[str, str], splits: SplitResult, metrics: dict[str, float],
               trained: TrainResult) -> str:
    """A markdown model card: data, method, metrics, gate decision, intended use and limits."""
    labels = ", ".join(trained.labels[:20]) + (f" and {len(trained.labels) - 20} more" if len(trained.labels) > 20
                                                else "")
    return "\n".join([
        f"# Model card: {cfg.registry.model_name}", "",
        "## Intended use",
        f"Classify short customer texts into {len(trained.labels)} labels ({labels}). Input: a DataFrame with a "
        "`text` column; output: `label` and `confidence` (softmax probability) per row.", "",
        "## Data",
        f"- source `{cfg.data.path}`, fingerprint `{tags['tuneops.data.fingerprint']}`",
        "- split (hash-based, stable as data grows): " + ", ".join(
            f"{n} {splits.sizes[n]} rows (`{splits.fingerprints[n]}`)" for n in ("train", "validation", "test")),
        "", "## Training",
        f"- base model `{cfg.model.base}`, method `{cfg.training.method}`, {cfg.training.epochs:g} epochs, "
        f"lr {cfg.training.learning_rate:g}, max length {cfg.model.max_length} tokens",
        f"- trainable parameters {trained.trainable_params:,} of {trained.total_params:,}",
        f"- code `{tags['tuneops.code_version']}`, config hash `{tags['tuneops.config_hash']}`", "",
        "## Test metrics",
        f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, expected calibration error "
        f"{metrics['ece']:.4f}; per-class metrics and the confusion matrix are in the run's `evaluation/` folder.", "",
        "## Gate decision", tags["tuneops.gate.reason"], "",
        "## Limits",
        "- Knows only the labels above; every input gets one of them, however unrelated (watch confidence and "
        "drift).",
        f"- Texts longer than {cfg.model.max_length} tokens are truncated.",
        "- Quality was measured on held-out rows of the same source; other channels or periods may differ.",
    ])


def log_and_register(trained: TrainResult, cfg: TuneopsConfig, tags: dict[str, str], splits: SplitResult,
                     metrics: dict[str, float], promote: bool, run_id: str) -> Registration:
    """Log the pyfunc, register one version (reused on retry), set 'challenger', maybe 'champion'."""
    import mlflow
    from mlflow.models import infer_signature

    import tuneops
    from tuneops import registry
    from tuneops.serving import TextClassifierModel
    from tuneops.tracking import client

    name = cfg.registry.model_name
    version = registry.version_for_run(name, run_id)
    if version is None:
        if cfg.model.task == "causal_lm":
            from tasks.registry_causal import generator_card, generator_model

            card = generator_card(cfg, tags, splits, metrics, trained)
            python_model, example, output = generator_model()
        else:
            card = model_card(cfg, tags, splits, metrics, trained)
            python_model = TextClassifierModel()
            example = pd.DataFrame({"text": ["I still have not received my new card"]})
            output = pd.DataFrame({"label": ["card_arrival"], "confidence": [0.9]})
        (Path(trained.model_dir) / "MODEL_CARD.md").write_text(card)
        signature = infer_signature(example, output)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=python_model,
                artifacts={"model": trained.model_dir},
                code_paths=[str(Path(tuneops.__file__).parent)],
                signature=signature,
                input_example=example,
                pip_requirements=PIP_REQUIREMENTS,
            )
            # Tags go in with the version in one call: no version ever exists without its provenance.
            version = str(mlflow.register_model(info.model_uri, name, tags=tags).version)
        client().update_model_version(name, version, description=card)
        client().log_text(run_id, card, "MODEL_CARD.md")
    c = client()
    c.set_registered_model_alias(name, "challenger", version)
    previous = registry.alias_version(name, "champion")
    if promote:
        registry.promote(name, version, tags["tuneops.gate.reason"], gate_must_pass=True)
    return Registration(name, version, f"models:/{name}/{version}", promote, previous)


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def register_model(trained: TrainResult, cfg: TuneopsConfig, data_fingerprint: str, splits: SplitResult,
                   metrics: dict[str, float], decision: GateDecision, run_id: str) -> Registration:
    """Register the challenger with its provenance; promote it if the gate passed and config allows."""
    from tuneops import tracking

    tags = provenance_tags(cfg, data_fingerprint, splits, metrics, decision, tracking.code_version())
    tracking.set_tags(run_id, tags)
    tracking.log_text(run_id, json.dumps(cfg.model_dump(mode="json"), indent=2), "config/resolved_config.json")
    result = log_and_register(trained, cfg, tags, splits, metrics, decision.passed and cfg.gate.auto_promote, run_id)
    shutil.rmtree(Path(trained.model_dir).parent, ignore_errors=True)
    return result
