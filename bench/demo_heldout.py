"""How the demo's champion does on the BANKING77 rows of its intents that the demo never trained on.

`make demo` trains on a few rows per intent (configs/banking77_lora.yaml: data.max_rows_per_label, then the
hash split). This trains nothing: it takes a registered version (the champion unless --version is given) from
the registry of $TUNEOPS_HOME, rebuilds that run's selection and split with tuneops' own code
(``select_subset``, ``assign_splits``), checks them against the split fingerprints the version was registered
with (so the rows are exactly the run's), and scores

  unseen   the rows of data.path with the config's labels that data.max_rows_per_label left out, less any whose
           normalised text is also in the run's train or validation split (none may leak in);
  + test   the same plus the run's test split (also never trained on, but the gate already saw it);

with the registered model (``tuneops.serving.scoring.score_texts``, the path `tuneops predict` takes) and with TF-IDF +
logistic regression fitted on the same training split (``fit_tfidf``, every run's baseline). Prints one line per
set: rows, accuracy of each, and a JSON line.

    TUNEOPS_HOME=.tuneops .venv/bin/python bench/demo_heldout.py [--config configs/banking77_lora.yaml] [--version N]
        [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs/banking77_lora.yaml"))
    parser.add_argument("--version", default=None, help="registered version (default: the champion)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the config overrides the version was trained with, as `tuneops train --set`")
    args = parser.parse_args()

    from tuneops import settings

    settings.configure_environment()
    import mlflow
    import numpy as np
    import pandas as pd

    from tuneops.config import load_config
    from tuneops.data.rows import fingerprint, select_subset
    from tuneops.data.splits import assign_splits, normalise
    from tuneops.data.storage import read_dataset
    from tuneops.families.classification import fit_tfidf
    from tuneops.serving.scoring import resolve_version, score_texts

    cfg = load_config(args.config, args.overrides)
    data, name = cfg.data, cfg.registry.model_name
    version = resolve_version(name, args.version)
    tags = mlflow.MlflowClient().get_model_version(name, version).tags

    full = read_dataset(data.path).reset_index(drop=True).assign(_row=lambda f: np.arange(len(f)))
    chosen = select_subset(full, data)  # the run's rows (select_subset keeps the extra column)
    assignment = assign_splits(chosen, cfg.split_data(), cfg.split).to_numpy()
    parts = {n: chosen[assignment == n] for n in ("train", "validation", "test")}
    for n, part in parts.items():
        recorded = tags.get(f"tuneops.split.{n}.fingerprint")
        if recorded != fingerprint(part.drop(columns="_row"), [data.text_column, data.label_column]):
            sys.exit(f"the {n} split rebuilt from {args.config} does not match {name} v{version}'s (fingerprint "
                     f"{recorded}); pass the config that version was trained with")

    labels = set(chosen[data.label_column].astype(str))
    rest = full[full[data.label_column].astype(str).isin(labels) & ~full["_row"].isin(chosen["_row"])]
    seen = set(normalise(parts["train"][data.text_column])) | set(normalise(parts["validation"][data.text_column]))
    leaked = normalise(rest[data.text_column]).isin(seen).to_numpy()
    unseen = rest[~leaked]
    train = parts["train"]
    baseline = fit_tfidf(train[data.text_column].astype(str).tolist(), train[data.label_column].astype(str).tolist())

    print(f"{name} v{version}: trained on {len(train)} rows ({len(labels)} intents), chose its epoch on "
          f"{len(parts['validation'])}; {int(leaked.sum())} left-out rows share a text with those and are skipped")
    results = {}
    for label, frame in (("unseen", unseen), ("unseen + test", pd.concat([unseen, parts["test"]], ignore_index=True))):
        truth = frame[data.label_column].astype(str).to_numpy()
        scored = score_texts(name, version, frame[[data.text_column]].reset_index(drop=True), data.text_column)
        model = float((scored["label"].astype(str).to_numpy() == truth).mean())
        tfidf = float((np.array(baseline(frame[data.text_column].astype(str).tolist())[0]) == truth).mean())
        results[label] = {"rows": len(frame), "accuracy": round(model, 4), "tfidf_accuracy": round(tfidf, 4)}
        print(f"{label:<14} {len(frame):>6} rows  champion accuracy {model:.4f}  TF-IDF + LR {tfidf:.4f}")
    print(json.dumps({"model": name, "version": version, "train_rows": len(train), **results}))


if __name__ == "__main__":
    main()
