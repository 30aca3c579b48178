"""The drift check on real text: BANKING77 against itself stays quiet, hotel-booking queries drift."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import MINILM
from tuneops.config import MonitoringConfig
from tuneops.errors import DataError
from tuneops.families.classification import prediction_drift
from tuneops.monitoring.drift import check_drift as check_drift_with
from tuneops.monitoring.signals import describe, embed
from tuneops.monitoring.standin import StandIn

ROOT = Path(__file__).resolve().parents[2]
BASE = MINILM


def check_drift(reference, current, cfg, base, report_file=None):
    """The classifier's check: input signals, and predicted labels and confidences against the reference's."""
    return check_drift_with(reference, current, cfg, base, prediction_drift(reference, current), report_file)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    bank = pd.read_csv(ROOT / "data/banking77/train.csv").sample(frac=1, random_state=1).reset_index(drop=True)
    hotels = pd.read_json(ROOT / "data/nlupp/hotels.jsonl", lines=True)
    # The model is trained on other rows than the reference, as the champion's held-out rows are.
    model = StandIn(bank.text.iloc[:2000], bank.category.iloc[:2000])
    return {"reference": model.score(bank.text.iloc[2000:3500]), "same": model.score(bank.text.iloc[3500:4300]),
            "hotels": model.score(hotels.text.iloc[:800])}


def test_descriptors_are_computed_offline():
    d = describe(pd.Series(["Hello world", "ab 12!!", "", "ﬃ☃☃☃"]), BASE)
    assert d.length.tolist() == [11, 7, 0, 4]
    assert d.word_count.tolist() == [2, 2, 0, 1]
    assert d.non_letter_share.tolist() == pytest.approx([0, 4 / 7, 0, 0.75])
    assert d.unknown_token_share.iloc[0] == 0 and d.unknown_token_share.iloc[3] > 0
    repeated = describe(pd.Series(["ab 12!!", None, "Hello world", "ab 12!!"], index=[7, 3, 5, 1]), BASE)
    assert repeated.index.tolist() == [7, 3, 5, 1]  # rows keep their index; each text is described once
    assert repeated.length.tolist() == [7, 0, 11, 7] and repeated.loc[1].equals(repeated.loc[7])


def test_embeddings_encode_each_distinct_text_once_in_input_order():
    texts = ["where is my new card", "top up failed", "where is my new card", "a much longer question about fees"]
    vectors = embed(texts, BASE)
    assert vectors.shape == (4, 384)
    assert (vectors[0] == vectors[2]).all() and not (vectors[0] == vectors[1]).all()
    alone = embed([texts[3]], BASE)[0]  # batch composition and order do not change a text's vector
    assert abs(vectors[3] - alone).max() < 1e-5 and abs((vectors ** 2).sum(1) - 1).max() < 1e-5


def test_same_distribution_is_quiet_and_other_domain_drifts(frames, tmp_path):
    cfg = MonitoringConfig(embedding_sample=300, min_rows=100)
    quiet = check_drift(frames["reference"], frames["same"], cfg, BASE, tmp_path / "quiet.html")
    assert not quiet.drift, str(quiet.drifting)
    loud = check_drift(frames["reference"], frames["hotels"], cfg, BASE, tmp_path / "loud.html")
    assert loud.drift
    assert {"text", "embedding", "length"} <= set(loud.drifting), loud.summary()
    assert loud.signals["text"].score > 0.9 and quiet.signals["text"].score < 0.55
    html = Path(loud.report).read_text()
    assert "tuneops drift check: DRIFT" in html and len(html) > 10_000
    json.dumps(loud.summary())  # the CLI prints it as one JSON line


def test_thresholds_come_from_config(frames):
    from tuneops.monitoring.drift import distance_noise_floor

    lax = MonitoringConfig(embedding_sample=0, min_rows=100, thresholds={"length": 0.9})
    result = check_drift(frames["reference"], frames["hotels"], lax, BASE)
    assert "embedding" not in result.signals
    assert result.signals["length"].threshold == 0.9 and not result.signals["length"].drift
    # A threshold below the chance level of this window's size is raised to that level, not used as is.
    strict = MonitoringConfig(embedding_sample=0, min_rows=100, thresholds={"length": 0.0001})
    result = check_drift(frames["reference"], frames["same"], strict, BASE)
    floor = distance_noise_floor(len(frames["reference"]), len(frames["same"]))
    assert result.signals["length"].threshold == pytest.approx(floor, abs=1e-6) and floor > 0.0001


def test_too_few_rows_and_missing_columns_are_clear_errors(frames):
    with pytest.raises(DataError, match="fewer than monitoring.min_rows"):
        check_drift(frames["reference"], frames["same"].head(20), MonitoringConfig(min_rows=100), BASE)
    with pytest.raises(DataError, match="lacks column"):
        check_drift(frames["reference"], frames["same"].drop(columns="confidence"), MonitoringConfig(), BASE)
