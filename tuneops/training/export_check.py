"""The exported folder must predict as the trained model did: the check every family's ``verify_export`` ends in."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuneops.config import TuneopsConfig


def require_same_loss(got: float, expected_loss: float, cfg: TuneopsConfig) -> None:
    """A TrainingError unless the reloaded export's validation loss is the trained model's, within
    ``training.export_tolerance`` (nothing is registered then)."""
    from tuneops.errors import TrainingError

    if abs(got - expected_loss) > cfg.training.export_tolerance:
        raise TrainingError(
            f"the exported model does not reproduce the trained one: validation loss {got:.4f} after reloading vs "
            f"{expected_loss:.4f} in training (tolerance {cfg.training.export_tolerance}); the export of method "
            f"'{cfg.training.method}' is broken, nothing was registered")
