"""Export verification of a causal LM (a reloaded model that does not reproduce training fails the run), and its
resume through the shared training loop."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import causal_config
from tuneops.errors import TrainingError
from tuneops.families.causal_lm import verify_export
from tuneops.families.causal_lm.generation import GenerationSettings, Generator


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


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(tiny_causal_lm, instruction_csv, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    from tuneops import settings
    from tuneops.data.splits import split_frame
    from tuneops.training import engine
    from tuneops.training.trainer import checkpoint_key, train

    cfg = causal_config(instruction_csv, tiny_causal_lm, "resume", training={"epochs": 2})
    splits = split_frame(pd.read_csv(instruction_csv), cfg.split_data(), cfg.split, tmp_path / "splits")

    class Killed(RuntimeError):
        pass

    class KillAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            raise Killed(f"killed after saving step {state.global_step}")

    shared = engine.callbacks
    monkeypatch.setattr(engine, "callbacks", lambda c, r: [*shared(c, r), KillAfterFirstCheckpoint()])
    with pytest.raises(Killed):
        train(cfg, splits, tmp_path / "first")
    checkpoints = settings.checkpoints_dir() / checkpoint_key(cfg, splits)
    saved = sorted(p.name for p in checkpoints.glob("checkpoint-*"))
    assert len(saved) == 1

    monkeypatch.setattr(engine, "callbacks", shared)
    result = train(cfg, splits, tmp_path / "second")
    assert result.resumed_from == saved[0] and result.epochs_run == pytest.approx(2)
    assert not checkpoints.exists()  # cleaned up once the export is verified
