"""train_model: from a company dataset to a registered, gated model in MLflow."""

from __future__ import annotations

from prefect import flow

from tuneops import settings
from tuneops.config import TuneopsConfig
from tuneops.registry import tracking
from tuneops.tasks.data import load_dataset
from tuneops.tasks.finetune import check_base_model, fine_tune
from tuneops.tasks.judge import TrainOutcome, judge_and_register, record_config, report_outcome
from tuneops.tasks.splits import split_dataset
from tuneops.tasks.validation import validate_data


@flow(name="train_model", log_prints=True)
def train_model(config: TuneopsConfig) -> TrainOutcome:
    """Validate the data, split it, fine-tune, evaluate, gate against the champion, register.

    1. check that ``model.base`` resolves and fits the task family; load the dataset named in ``config.data``;
    2. validate it against the task family's data contract with Great Expectations (the flow stops here on
       bad data: nothing is trained);
    3. split it deterministically into train / validation / test (keyed on what the family names: the text
       of a classifier, the prompt of a causal LM);
    4. fine-tune the base model with the configured method (one trainer for every family, in this process
       or in a torchrun / DeepSpeed launch);
    5. evaluate on the test split with the family's metrics, and re-score the champion on the same split;
    6. gate: floors, a confidence interval on the difference to the champion, per-class and per-slice
       non-regression, and no forgetting on the champion's own test split; publish the report;
    7. register the version as 'challenger'; move 'champion' if the gate passed.
    """
    check_base_model(config)
    with tracking.run(config.registry.experiment, run_name=config.registry.model_name) as run_id:
        record_config(config, run_id)
        data = validate_data(load_dataset(config.data), config, run_id)
        work = settings.runs_dir() / run_id
        splits = split_dataset(data, config.split_data(), config.split, work / "splits", run_id)
        trained = fine_tune(config, splits, work, run_id)
        outcome = judge_and_register(config, data, splits, trained, work, run_id)
    report_outcome(outcome)
    return outcome
