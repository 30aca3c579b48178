"""May a runtime other than fp32 serve a registered version? Its agreement with fp32 on the version's validation
split decides, measured once and recorded on the version.

A classifier agrees when it gives fp32's label on at least ``serving.runtime_min_label_agreement`` of the
validation rows and its top-class probability is within ``serving.runtime_confidence_tolerance`` of fp32's on
every row. A causal LM agrees when it gives fp32's greedy answer, character for character, on at least
``serving.runtime_min_answer_agreement`` of a seeded sample of ``serving.runtime_check_prompts`` validation
prompts. The validation split is the one logged with the version's training run (``splits/validation.parquet``).

The check runs when a runtime is first asked for a version (:func:`verified`) or by
``tuneops runtime-check``; its figures (agreement, tolerance, rows, seconds, rows/s of the runtime and of fp32
on the same rows, pass/fail) become tags ``tuneops.runtime.<name>.*`` of the version, so the next load reads
them instead of measuring again (unless the thresholds changed). A runtime that failed is refused with its
figures. ``serving.runtime: auto`` picks the fastest runtime that passed, fp32 when none did.
:func:`tuneops.serving.scoring.load_verified` is the loading path that applies all this.

A runtime that merges an adapter into the weights (``Runtime.merges``: bf16, int8, onnx) is refused, before any
measuring, for a version whose merged-vs-unmerged check failed at training time (the tags
``tuneops.merge_check.*``, :mod:`tuneops.training.merge_check`), and ``auto`` skips it there. A version without
that check (registered before it existed, with merged weights; full fine-tuning; a method that cannot merge) is not
refused for it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tuneops.serving import runtimes
from tuneops.serving.runtimes import AUTO, REFERENCE, RuntimeRefused
from tuneops.training.merge_check import MergeCheck

if TYPE_CHECKING:
    from tuneops.config import ServingConfig, TuneopsConfig

log = logging.getLogger("tuneops.serving.runtime_check")
PREFIX = "tuneops.runtime"


@dataclass
class Agreement:
    """One runtime's agreement with fp32 on a version's validation split (what its tags hold)."""

    runtime: str
    kind: str
    """'label' (a classifier: same label, confidences within tolerance) or 'answer' (a causal LM: same greedy
    answer)."""
    rows: int
    agreement: float
    min_agreement: float
    tolerance: float | None
    max_confidence_diff: float | None
    seconds: float
    rows_per_s: float
    reference_rows_per_s: float
    passed: bool
    checked_at: str = ""

    def tags(self) -> dict[str, str]:
        """Tags in write order: ``passed`` last, so a version never holds a verdict without its figures."""
        values = {"kind": self.kind, "rows": str(self.rows), "agreement": f"{self.agreement:.6f}",
                  "min_agreement": f"{self.min_agreement:g}",
                  "tolerance": "" if self.tolerance is None else f"{self.tolerance:g}",
                  "max_confidence_diff": "" if self.max_confidence_diff is None else f"{self.max_confidence_diff:.6f}",
                  "seconds": f"{self.seconds:.3f}", "rows_per_s": f"{self.rows_per_s:.2f}",
                  "fp32_rows_per_s": f"{self.reference_rows_per_s:.2f}", "checked_at": self.checked_at,
                  "passed": str(self.passed)}
        return {f"{PREFIX}.{self.runtime}.{k}": v for k, v in values.items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str], runtime: str) -> Agreement | None:
        """The recorded check of ``runtime``, or None when the version holds none (or an incomplete one)."""
        get = {k.removeprefix(f"{PREFIX}.{runtime}."): v for k, v in tags.items()
               if k.startswith(f"{PREFIX}.{runtime}.")}
        if "passed" not in get:
            return None
        try:
            return cls(runtime, get["kind"], int(get["rows"]), float(get["agreement"]), float(get["min_agreement"]),
                       float(get["tolerance"]) if get.get("tolerance") else None,
                       float(get["max_confidence_diff"]) if get.get("max_confidence_diff") else None,
                       float(get["seconds"]), float(get["rows_per_s"]), float(get["fp32_rows_per_s"]),
                       get["passed"] == "True", get.get("checked_at", ""))
        except (KeyError, ValueError):
            return None

    def under(self, serving: ServingConfig) -> bool:
        """Whether this record was measured against the thresholds configured now (else it is measured again)."""
        if self.kind == "label":
            return (self.min_agreement == float(f"{serving.runtime_min_label_agreement:g}")
                    and self.tolerance == float(f"{serving.runtime_confidence_tolerance:g}"))
        return self.min_agreement == float(f"{serving.runtime_min_answer_agreement:g}")

    def summary(self) -> str:
        what = "same label" if self.kind == "label" else "same greedy answer"
        text = f"{what} on {self.agreement:.2%} of {self.rows} validation rows (needs {self.min_agreement:.2%})"
        if self.kind == "label":
            text += f", top-class probability within {self.max_confidence_diff:.4f} of fp32 (tolerance " \
                    f"{self.tolerance:g})"
        return text + f"; {self.rows_per_s:.1f} rows/s vs fp32 {self.reference_rows_per_s:.1f} rows/s"


def _tags(name: str, version: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    from tuneops.errors import RegistryError
    from tuneops.registry.tracking import client

    try:
        return dict(client().get_model_version(name, version).tags)
    except MlflowException:
        raise RegistryError(f"model {name} has no version {version}; list versions in the MLflow UI") from None


def recorded(name: str, version: str, runtime: str) -> Agreement | None:
    """The check of ``runtime`` recorded on the version, if any."""
    return Agreement.from_tags(_tags(name, version), runtime)


def validation_split(name: str, version: str, out_dir: Path) -> pd.DataFrame:
    """The validation split logged with the version's training run (as evaluation and export saw it)."""
    from mlflow.exceptions import MlflowException

    from tuneops.errors import RegistryError
    from tuneops.registry.tracking import client

    mv = client().get_model_version(name, version)
    try:
        return pd.read_parquet(client().download_artifacts(mv.run_id, "splits/validation.parquet", str(out_dir)))
    except (MlflowException, OSError):
        raise RegistryError(f"{name} v{version} has no validation split logged with its run ({mv.run_id}), so no "
                            "runtime can be checked against fp32; serve it with serving.runtime: fp32") from None


def download(name: str, version: str, out_dir: Path) -> str:
    """The registered pyfunc's files in a local folder (loaded once per runtime without downloading again)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tuneops.errors import RegistryError

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(out_dir))
    except MlflowException as exc:
        raise RegistryError(f"cannot load {name} v{version}: {exc.message}") from None


def load_pyfunc(uri: str, runtime: str, serving: ServingConfig) -> Any:
    import mlflow

    model = mlflow.pyfunc.load_model(uri, model_config={"runtime": runtime, "batch_size": serving.scoring_batch_size})
    runtimes.require_model_config(model, runtime, "this version")
    return model


def _predict(model: Any, texts: list[str]) -> pd.DataFrame:
    """The pyfunc's answers for the texts, sent under the input name its signature declares."""
    schema = model.metadata.get_input_schema()
    name = schema.input_names()[0] if schema is not None and schema.input_names() else "text"
    return model.predict(pd.DataFrame({name: texts})).reset_index(drop=True)


def _timed(model: Any, frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame, float]:
    texts = frame[column].astype(str).tolist()
    _predict(model, texts[:8])  # warm-up: first-call allocations, lazy kernels
    began = time.perf_counter()
    out = _predict(model, texts)
    return out, time.perf_counter() - began


def measure(local: str, runtime: str, frame: pd.DataFrame, column: str, serving: ServingConfig,
            reference: tuple[pd.DataFrame, float] | None = None) -> tuple[Agreement, tuple[pd.DataFrame, float]]:
    """Score the rows with fp32 (unless given) and with ``runtime``; compare. Returns the agreement and fp32's
    scores (so several runtimes share one fp32 pass)."""
    if reference is None:
        reference = _timed(load_pyfunc(local, REFERENCE, serving), frame, column)
    ref, ref_seconds = reference
    got, seconds = _timed(load_pyfunc(local, runtime, serving), frame, column)
    rows = len(frame)
    if {"label", "confidence"} <= set(ref.columns):
        same = float((ref["label"].astype(str) == got["label"].astype(str)).mean())
        diff = float((ref["confidence"].astype(float) - got["confidence"].astype(float)).abs().max())
        minimum, tolerance = serving.runtime_min_label_agreement, serving.runtime_confidence_tolerance
        agreement = Agreement(runtime, "label", rows, same, minimum, tolerance, diff, seconds, rows / seconds,
                              rows / ref_seconds, same >= minimum and diff <= tolerance)
    elif "response" in ref.columns:
        same = float((ref["response"].astype(str) == got["response"].astype(str)).mean())
        minimum = serving.runtime_min_answer_agreement
        agreement = Agreement(runtime, "answer", rows, same, minimum, None, None, seconds, rows / seconds,
                              rows / ref_seconds, same >= minimum)
    else:
        raise RuntimeRefused(f"runtime {runtime} has no agreement rule for a model that answers "
                             f"{list(ref.columns)}; serve it with serving.runtime: fp32")
    agreement.checked_at = datetime.now(UTC).isoformat(timespec="seconds")
    return agreement, reference


def check_rows(frame: pd.DataFrame, cfg: TuneopsConfig, generating: bool) -> pd.DataFrame:
    """The validation rows compared: every row of a classifier's split up to runtime_check_rows, a seeded sample
    of runtime_check_prompts for a causal LM (generation is slow)."""
    limit = cfg.serving.runtime_check_prompts if generating else cfg.serving.runtime_check_rows
    return frame.sample(n=limit, random_state=0) if len(frame) > limit else frame


def check(cfg: TuneopsConfig, version: str, names: list[str], skip_unusable: bool = True) -> list[Agreement]:
    """Measure each runtime against fp32 on the version's validation split and record the result on the version.

    Runtimes this machine or this kind of model cannot run are skipped with a log line (nothing recorded), or
    refused when ``skip_unusable`` is false.
    """
    from tuneops import families
    from tuneops.registry.tracking import client

    name = cfg.registry.model_name
    column = families.of(cfg).input_column(cfg)
    tags = _tags(name, version)
    for runtime in list(names):
        blocked = merge_refusal(name, version, runtime, tags)
        if blocked is not None:
            if not skip_unusable:
                raise blocked
            log.warning("%s", blocked)
            names = [n for n in names if n != runtime]
    with tempfile.TemporaryDirectory() as tmp:
        local = download(name, version, Path(tmp) / "model")
        split = validation_split(name, version, Path(tmp) / "split")
        reference = None
        results = []
        generating = "response" in _output_columns(local)
        rows = check_rows(split, cfg, generating)
        noun = "causal LM" if generating else "classifier"
        for runtime in names:
            if runtime == REFERENCE:
                continue
            try:
                runtimes.usable(runtime, noun, for_generation=generating)
            except RuntimeRefused as exc:
                if not skip_unusable:
                    raise
                log.warning("%s", exc)
                continue
            began = time.perf_counter()
            agreement, reference = measure(local, runtime, rows, column, cfg.serving, reference)
            for key, value in agreement.tags().items():
                client().set_model_version_tag(name, version, key, value)
            log.info("runtime %s on %s v%s: %s (%s) in %.1f s", runtime, name, version, agreement.summary(),
                     "passed" if agreement.passed else "FAILED", time.perf_counter() - began)
            results.append(agreement)
    return results


def _output_columns(local: str) -> list[str]:
    from mlflow.models import Model

    schema = Model.load(local).get_output_schema()
    return schema.input_names() if schema is not None else []


def merge_refusal(name: str, version: str, runtime: str, tags: dict[str, str]) -> RuntimeRefused | None:
    """Why a runtime that merges the adapter into the weights may not serve this version (its merged-vs-unmerged
    check failed at training time), or None: the runtime does not merge, the check passed, or the version has none
    (registered before the check existed, with merged weights; full fine-tuning; a method that cannot merge)."""
    if runtime in (REFERENCE, AUTO) or not runtimes.get(runtime).merges:
        return None
    found = MergeCheck.from_tags(tags)
    if found is None or found.passed:
        return None
    return RuntimeRefused(f"runtime {runtime} merges the adapter into the base weights, and {name} v{version} failed "
                          f"its merged-vs-unmerged check at training time ({found.summary()}): merged, it does not "
                          "answer as it was trained; serve it with serving.runtime: fp32 (which does not merge: a "
                          "version that stores its adapter is served as it was trained), or find why merging changes "
                          "it and train it again")


def refusal(name: str, version: str, agreement: Agreement) -> RuntimeRefused:
    return RuntimeRefused(f"runtime {agreement.runtime} failed its agreement check with fp32 on {name} v{version}: "
                          f"{agreement.summary()}; serve it with serving.runtime: fp32 (or another runtime that "
                          "passed: `tuneops runtime-check --config CONFIG --runtime all`)")


def verified(cfg: TuneopsConfig, version: str, runtime: str) -> Agreement:
    """The recorded check of ``runtime`` under the configured thresholds, measured now if there is none; a
    runtime that failed is refused with its figures, and so is a runtime that merges where the version's
    merged-vs-unmerged check failed."""
    name = cfg.registry.model_name
    tags = _tags(name, version)
    blocked = merge_refusal(name, version, runtime, tags)
    if blocked is not None:
        raise blocked
    found = Agreement.from_tags(tags, runtime)
    if found is None or not found.under(cfg.serving):
        log.info("runtime %s has no agreement check on %s v%s under these thresholds; checking it against fp32 on "
                 "the validation split", runtime, name, version)
        found = check(cfg, version, [runtime], skip_unusable=False)[0]
    if not found.passed:
        raise refusal(name, version, found)
    return found


def choose(cfg: TuneopsConfig, version: str, wanted: str | None = None) -> str:
    """The runtime to serve with: ``wanted`` (default ``serving.runtime``), or for auto the fastest runtime recorded
    as passed under the configured thresholds that this machine can run and that the version's merged-vs-unmerged
    check does not rule out (fp32 when none is faster than fp32)."""
    wanted = wanted or cfg.serving.runtime
    if wanted != AUTO:
        return wanted
    tags = _tags(cfg.registry.model_name, version)
    best, best_speed = REFERENCE, 0.0
    for runtime in runtimes.RUNTIMES:
        found = Agreement.from_tags(tags, runtime)
        if found is None or not found.passed or not found.under(cfg.serving) or runtimes.get(runtime).unavailable():
            continue
        if merge_refusal(cfg.registry.model_name, version, runtime, tags) is not None:
            continue
        speedup = found.rows_per_s / found.reference_rows_per_s
        if speedup > 1.0 and speedup > best_speed:
            best, best_speed = runtime, speedup
    return best
