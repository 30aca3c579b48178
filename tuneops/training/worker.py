"""One worker of a distributed training launch: ``python -m torch.distributed.run ... -m tuneops.training.worker JOB``.

torchrun sets RANK, WORLD_SIZE and the rendezvous address; the Trainer picks them up (DDP, or the
DeepSpeed engine when the config asks for it). Rank 0 writes the result file the launching task reads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path


def main(job_file: str) -> None:
    from tuneops import settings
    from tuneops.config import TuneopsConfig
    from tuneops.data.splits import SplitResult
    from tuneops.training.trainer import train

    settings.configure_environment()
    # Our own handler: DeepSpeed configures the root logger on import, so basicConfig would do nothing.
    rank = os.environ.get("RANK", "0")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank{rank} %(message)s"))
    engine_log = logging.getLogger("tuneops")
    engine_log.addHandler(handler)
    engine_log.setLevel(logging.INFO)
    engine_log.propagate = False
    job = json.loads(Path(job_file).read_text())
    cfg = TuneopsConfig.model_validate(job["config"])
    result = train(cfg, SplitResult(**job["splits"]), Path(job["out_dir"]), job["run_id"])
    if result is not None:
        Path(job["result"]).write_text(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    main(sys.argv[1])
