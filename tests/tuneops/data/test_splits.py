import pandas as pd
import pytest

from tuneops.config import DataConfig, SplitConfig
from tuneops.data.splits import assign_splits, check_leakage, split_frame
from tuneops.errors import DataError

DATA = DataConfig(path="x.csv", text_column="text", label_column="label")
SPLIT = SplitConfig(validation_ratio=0.1, test_ratio=0.2)


def frame(n: int, labels: int = 5, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"query number {i}" for i in range(start, start + n)],
                         "label": [f"l{i % labels}" for i in range(start, start + n)]})


def test_deterministic_and_ratios_close():
    df = frame(5000)
    a, b = assign_splits(df, DATA, SPLIT), assign_splits(df.sample(frac=1, random_state=1), DATA, SPLIT)
    assert a.equals(b.sort_index())
    shares = a.value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.02 and abs(shares["validation"] - 0.1) < 0.02


def test_stratified_per_label():
    df = frame(10000, labels=4)
    s = assign_splits(df, DATA, SPLIT)
    per_label = pd.crosstab(df.label, s, normalize="index")
    assert ((per_label["test"] - 0.2).abs() < 0.03).all()


def test_appended_rows_never_move_old_rows():
    old = frame(2000)
    grown = pd.concat([old, frame(500, start=2000)], ignore_index=True)
    before = assign_splits(old, DATA, SPLIT)
    after = assign_splits(grown, DATA, SPLIT)
    assert after.iloc[: len(old)].equals(before)


def test_identical_normalised_texts_share_a_split():
    df = pd.DataFrame({"text": ["Where is my card?"] * 3 + ["  where IS my   card? "] + [f"t{i}" for i in range(200)],
                       "label": ["a"] * 204, "id": [str(i) for i in range(204)]})
    data = DataConfig(path="x", text_column="text", label_column="label", id_column="id")
    s = assign_splits(df, data, SPLIT)
    assert s.iloc[:4].nunique() == 1


def test_salt_changes_assignment():
    df = frame(1000)
    other = SplitConfig(validation_ratio=0.1, test_ratio=0.2, salt="other")
    assert not assign_splits(df, DATA, SPLIT).equals(assign_splits(df, DATA, other))


def test_leakage_check_fails_when_test_text_in_train():
    parts = {"train": pd.DataFrame({"text": ["a b", "c"]}), "validation": pd.DataFrame({"text": ["d"]}),
             "test": pd.DataFrame({"text": ["A  B"]})}
    with pytest.raises(DataError, match="1 test texts also appear in train"):
        check_leakage(parts, "text")


def test_split_frame_writes_files_and_reports(tmp_path):
    result = split_frame(frame(600), DATA, SPLIT, tmp_path)
    assert sum(result.sizes.values()) == 600
    for name, path in result.paths.items():
        assert len(pd.read_parquet(path)) == result.sizes[name]
    assert len(set(result.fingerprints.values())) == 3


def test_empty_split_is_an_error(tmp_path):
    with pytest.raises(DataError, match="split is empty"):
        split_frame(frame(2), DATA, SPLIT, tmp_path)


def test_group_rows_stay_together():
    df = pd.DataFrame({"text": [f"message {i}" for i in range(3000)], "label": ["a", "b", "c"] * 1000,
                       "customer": [f"c{i // 6}" for i in range(3000)]})
    data = DataConfig(path="x", text_column="text", label_column="label", group_column="customer")
    s = assign_splits(df, data, SPLIT)
    assert (s.groupby(df.customer).nunique() == 1).all()
    assert abs((s == "test").mean() - 0.2) < 0.05


def test_time_split_puts_most_recent_rows_in_test():
    df = frame(1000).assign(ts=pd.date_range("2026-01-01", periods=1000, freq="h").astype(str))
    data = DataConfig(path="x", text_column="text", label_column="label", timestamp_column="ts")
    s = assign_splits(df, data, SplitConfig(validation_ratio=0.1, test_ratio=0.2, strategy="time"))
    assert (s.iloc[800:] == "test").all() and (s.iloc[700:800] == "validation").all()
    assert (s.iloc[:700] == "train").all()
