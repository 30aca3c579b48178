"""combine_adapters: one candidate from LoRA adapters trained on different data, gated like any other."""

from __future__ import annotations

from prefect import flow

from tuneops import settings
from tuneops.config import TuneopsConfig
from tuneops.registry import tracking
from tuneops.tasks.combine import combine_adapters_task
from tuneops.tasks.data import load_dataset
from tuneops.tasks.judge import TrainOutcome, judge_and_register, record_config, report_outcome
from tuneops.tasks.splits import split_dataset
from tuneops.tasks.validation import validate_data


@flow(name="combine_adapters", log_prints=True)
def combine_adapters(config: TuneopsConfig, sources: list[str], weights: list[float]) -> TrainOutcome:
    """Combine registered LoRA versions (``NAME/VERSION`` or ``NAME@ALIAS``) with weights, then judge the result.

    1. load, validate and split the config's dataset exactly as train_model does;
    2. combine the sources' adapters with PEFT's weighted combination and merge them into the base model;
    3. evaluate on the test split, re-score the champion, gate, report and register, as for a trained model.
    """
    with tracking.run(config.registry.experiment, run_name=f"combine-{config.registry.model_name}",
                      tags={"tuneops.combined_from": ",".join(sources)}) as run_id:
        record_config(config, run_id)
        data = validate_data(load_dataset(config.data), config, run_id)
        work = settings.runs_dir() / run_id
        splits = split_dataset(data, config.split_data(), config.split, work / "splits", run_id)
        combined = combine_adapters_task(config, sources, weights, work, run_id)
        outcome = judge_and_register(config, data, splits, combined, work, run_id)
    report_outcome(outcome)
    return outcome
