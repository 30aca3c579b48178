"""The classification family's data policies (validation.conflicting_labels, invalid_texts, rare_classes) and its
TF-IDF baseline, on their own: what each policy keeps, what the report and the recorded decision say."""

from __future__ import annotations

import pandas as pd

from tests.conftest import tiny_config
from tests.tuneops.families.classification.test_family import frame
from tuneops import families
from tuneops.config import DataConfig, SplitConfig
from tuneops.data.splits import assign_splits
from tuneops.families.classification import apply_policies, fit_tfidf, prepare

FAMILY = families.get("classification")



def conflicted() -> pd.DataFrame:
    """'No thanks' three times with two labels (a majority), 'ok' twice with two labels (a tie)."""
    df = frame({"a": 8, "b": 8})
    extra = pd.DataFrame({"text": ["No thanks", "no  THANKS", "No thanks", "ok", "OK"],
                          "category": ["a", "a", "b", "a", "b"]})
    return pd.concat([df, extra], ignore_index=True)


def cfg_with(tiny_model, **validation):
    return tiny_config("x.csv", tiny_model, "unit", validation={"min_rows_per_class": 5, "min_rows": 10,
                                                               **validation})


def test_fail_is_the_default_and_names_the_setting(tiny_model):
    cfg = cfg_with(tiny_model)
    assert cfg.validation.conflicting_labels == "fail" and cfg.validation.rare_classes == "fail"
    assert cfg.validation.invalid_texts == "fail"
    report = FAMILY.validate(conflicted(), cfg, None)
    assert not report.passed and report.kept_rows == 21 and report.policies == {}
    assert "validation.conflicting_labels: drop" in report.summary() and "'No thanks' labelled a x2, b x1" in \
        report.summary()


def test_drop_removes_every_row_of_a_conflicting_text(tiny_model):
    cfg = cfg_with(tiny_model, conflicting_labels="drop")
    df = conflicted()
    report = FAMILY.validate(df, cfg, None)
    assert report.passed, report.summary()
    check = next(c for c in report.checks if c.name == "conflicting labels")
    assert check.failing_rows == 5 and check.severity == "warning" and "2 texts" in check.detail
    assert report.kept_rows == 16 and report.policies["conflicting_labels"] == "drop: 5 rows removed (2 texts)"
    assert "16 kept for the split after the data policies" in report.to_markdown()
    kept = prepare(df, cfg)
    assert len(kept) == 16 and not kept.text.str.lower().isin(["no thanks", "ok"]).any()


def test_majority_keeps_the_most_frequent_label_and_drops_ties(tiny_model):
    cfg = cfg_with(tiny_model, conflicting_labels="majority")
    df = conflicted()
    kept, decisions = apply_policies(df, cfg)
    (decision,) = decisions
    assert decision.record == "majority: 3 rows removed (2 texts, 1 ties)"
    thanks = kept[kept.text.str.lower().str.split().str.join(" ") == "no thanks"]
    assert sorted(thanks.category) == ["a", "a"]  # the majority label's rows, both spellings
    assert not kept.text.str.lower().eq("ok").any()  # a tie: no label wins, every row goes
    assert "1 ties" in decision.check.detail and any("kept 'a'" in e for e in decision.check.examples)
    report = FAMILY.validate(df, cfg, None)
    assert report.passed and report.kept_rows == 18


def test_warn_keeps_every_row_and_records_it(tiny_model):
    cfg = cfg_with(tiny_model, conflicting_labels="warn")
    report = FAMILY.validate(conflicted(), cfg, None)
    assert report.passed and report.kept_rows == 21
    assert [c.name for c in report.warnings()].count("conflicting labels") == 1
    assert report.policies == {"conflicting_labels": "warn: 5 rows kept"}
    assert len(prepare(conflicted(), cfg)) == 21


def test_invalid_texts_and_rare_classes_drop(tiny_model):
    df = pd.concat([frame({"a": 8, "b": 8, "rare": 2}),
                    pd.DataFrame({"text": [None, "   ", "x" * 3000], "category": ["a", "b", "a"]})],
                   ignore_index=True)
    strict = FAMILY.validate(df, cfg_with(tiny_model), None)
    assert {"text not null", "text not blank", "text length", "rows per class"} <= {c.name for c in strict.failures()}
    assert "validation.invalid_texts: drop" in strict.summary() and "validation.rare_classes: drop" in strict.summary()
    cfg = cfg_with(tiny_model, invalid_texts="drop", rare_classes="drop")
    report = FAMILY.validate(df, cfg, None)
    assert report.passed, report.summary()
    assert report.policies == {"invalid_texts": "drop: 3 rows removed (1 null, 1 blank, 1 longer than 2000 "
                                                "characters)", "rare_classes": "drop: 2 rows removed (1 labels)"}
    assert sorted(prepare(df, cfg).category.unique()) == ["a", "b"]


def test_a_kept_row_keeps_its_split(tiny_model):
    """Policies remove rows before the split; the hash-keyed split of every other row does not move."""
    df = conflicted()
    data, split = DataConfig(path="x", label_column="category"), SplitConfig()
    before = assign_splits(df, data, split)
    kept, _ = apply_policies(df, cfg_with(tiny_model, conflicting_labels="majority"))
    assert (assign_splits(kept, data, split) == before[kept.index]).all()


def test_tfidf_baseline_learns_keywords_in_seconds():
    texts = [f"please {w} my order number {i}" for i in range(40) for w in ("cancel", "track")]
    labels = [w for _ in range(40) for w in ("cancel", "track")]
    predict = fit_tfidf(texts, labels)
    got, confidence = predict(["can you cancel it", "where is it? track it", "TRACK order"])
    assert got == ["cancel", "track", "track"]
    assert all(0.5 < c <= 1 for c in confidence)
    assert predict([]) == ([], [])
