"""Checkpoints: the last complete one in a folder, and their mirror on S3 (resume on another machine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COMPLETE = "_COMPLETE"  # written last into a mirrored checkpoint: its presence means the copy is whole


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was written completely; a half-written one (killed mid-save) is removed."""
    import shutil

    candidates = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for candidate in candidates:
        try:  # the Trainer writes trainer_state.json last: parseable means the checkpoint is whole
            json.loads((candidate / "trainer_state.json").read_text())
            if any(candidate.glob("rng_state*.pth")):
                return str(candidate)
        except (OSError, ValueError):
            pass
        shutil.rmtree(candidate, ignore_errors=True)
    return None


def fetch_remote_checkpoint(uri: str, local: Path) -> str | None:
    """Download the newest complete mirrored checkpoint under ``uri`` into ``local``; None if there is none."""
    from tuneops.data import storage

    complete = sorted({key.split("/")[0] for key in storage.list_keys(uri) if key.endswith(f"/{COMPLETE}")},
                      key=lambda name: int(name.split("-")[-1]))
    if not complete:
        return None
    newest = complete[-1]
    storage.download_folder(f"{uri.rstrip('/')}/{newest}", local / newest)
    (local / newest / COMPLETE).unlink(missing_ok=True)
    return last_complete_checkpoint(local)


def checkpoint_mirror(uri: str) -> Any:
    """A callback that copies each new checkpoint to ``uri`` and drops mirrored ones the Trainer rotated away."""
    from transformers import TrainerCallback

    from tuneops.data import storage

    class Mirror(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero:
                return
            local = Path(args.output_dir)
            newest = local / f"checkpoint-{state.global_step}"
            if newest.is_dir():
                storage.upload_folder(newest, f"{uri.rstrip('/')}/{newest.name}")
                storage.write_bytes(b"", f"{uri.rstrip('/')}/{newest.name}/{COMPLETE}")
            kept = {p.name for p in local.glob("checkpoint-*")}
            for name in {key.split("/")[0] for key in storage.list_keys(uri)} - kept:
                storage.delete_folder(f"{uri.rstrip('/')}/{name}")

    return Mirror()
