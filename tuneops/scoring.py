"""Score texts with a registered model: shared by `tuneops predict` and batch scoring."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tuneops.config import TuneopsConfig
from tuneops.errors import DataError, RegistryError


@dataclass
class Written:
    rows: int
    version: str


def resolve_version(name: str, version: str | None) -> str:
    """The requested version, or the champion's, with a clear error when there is none."""
    from tuneops import registry

    if version is not None:
        return str(version)
    champion = registry.alias_version(name, "champion")
    if champion is None:
        raise RegistryError(f"model {name} has no champion yet; train one (`tuneops train CONFIG`) or pass --version")
    return champion


def load_model(name: str, version: str):  # noqa: ANN201 - mlflow PyFuncModel
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    except MlflowException as exc:
        raise RegistryError(f"cannot load {name} v{version}: {exc.message}") from None


def score_frame(model, frame: pd.DataFrame, text_column: str, version: str) -> pd.DataFrame:  # noqa: ANN001
    if text_column not in frame.columns:
        raise DataError(f"input has no '{text_column}' column (columns: {list(frame.columns)}); "
                        "set data.text_column in the config")
    texts = frame[text_column].fillna("").astype(str)
    out = model.predict(pd.DataFrame({"text": texts}))
    return pd.DataFrame({"text": texts.to_numpy(), "label": out["label"].to_numpy(),
                         "confidence": out["confidence"].to_numpy(), "model_version": version})


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix in (".jsonl", ".json"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise DataError(f"output {path} has extension '{path.suffix}'; use .csv, .jsonl or .parquet")


def predict_file(cfg: TuneopsConfig, input_path: str, output_path: str, version: str | None = None) -> Written:
    """Score every text in a file with the champion (or ``version``) and write the predictions."""
    from tasks.data import read_table

    name = cfg.registry.model_name
    version = resolve_version(name, version)
    frame = read_table(input_path)
    scored = score_frame(load_model(name, version), frame, cfg.data.text_column, version)
    write_table(scored, output_path)
    return Written(len(scored), version)
