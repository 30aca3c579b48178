"""What a split produced: plain data shared by the split task, the trainers and distributed workers."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "validation", "test")


@dataclass
class SplitResult:
    """Where the split files are, and what is in them."""

    paths: dict[str, str]
    sizes: dict[str, int]
    fingerprints: dict[str, str]
    class_counts: dict[str, dict[str, int]]

    def to_markdown(self) -> str:
        rows = ["| split | rows | labels | fingerprint |", "|---|---|---|---|"]
        rows += [f"| {s} | {self.sizes[s]} | {len(self.class_counts[s])} | `{self.fingerprints[s]}` |"
                 for s in SPLITS]
        return "# Data split\n\n" + "\n".join(rows)
