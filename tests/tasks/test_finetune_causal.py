"""Export verification of a causal LM: a reloaded model that does not reproduce training fails the run."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.finetune_causal import verify_export
from tests.conftest import causal_config
from tuneops.engine import TrainingError
from tuneops.generation import GenerationSettings, Generator


def test_export_that_does_not_reproduce_validation_loss_fails(tiny_causal_lm, instruction_csv, tmp_path):
    import shutil

    cfg = causal_config(instruction_csv, tiny_causal_lm, "export-check")
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_causal_lm, model_dir)
    GenerationSettings(cfg.model.prompt_template, cfg.model.max_length, cfg.model.max_new_tokens).save(model_dir)
    validation = pd.read_csv(instruction_csv).head(20)
    sums, counts = Generator(model_dir).response_nll(validation.prompt.tolist(), validation.response.tolist())
    loss = sum(sums) / sum(counts)
    verify_export(model_dir, validation, cfg, loss)  # the same weights reproduce their own loss
    with pytest.raises(TrainingError, match="does not reproduce the trained one: validation loss"):
        verify_export(model_dir, validation, cfg, loss - 0.5)
