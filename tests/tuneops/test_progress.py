import pandas as pd
import pytest

from tuneops import progress
from tuneops.data.storage import Source, count_rows
from tuneops.progress import Meter, duration, line, rate, remaining, training


@pytest.mark.parametrize("seconds, said", [(0, "0 s"), (0.3, "under 1 s"), (44.6, "45 s"), (60, "1 min"),
                                           (200, "3 min 20 s"), (599, "9 min 59 s"), (610, "10 min"),
                                           (3599, "1 h 00 min"), (3725, "1 h 02 min"), (90000, "25 h 00 min")])
def test_duration_is_said_as_a_person_would(seconds, said):
    assert duration(seconds) == said


@pytest.mark.parametrize("per_second, said", [(1234.4, "1,234"), (85.2, "85"), (8.54, "8.5"), (0.4234, "0.42")])
def test_rate_keeps_the_digits_that_matter(per_second, said):
    assert rate(per_second) == said


def test_the_estimate_is_the_pace_so_far():
    assert remaining(1200, 5000, 14.1) == pytest.approx(3800 * 14.1 / 1200)
    assert remaining(0, 5000, 3.0) is None and remaining(10, 5000, 0) is None
    assert remaining(6000, 5000, 10) == 0


def test_a_progress_line_says_how_far_how_fast_and_how_long():
    assert line(1200, 5000, 14.1) == "1,200/5,000 rows, 85 rows/s, about 45 s left"
    assert line(1200, None, 14.1) == "1,200 rows, 85 rows/s"
    assert line(5000, 5000, 58.8, "answers") == "5,000/5,000 answers, 85 answers/s, done in 59 s"
    assert line(0, 5000, 3.0) == "0/5,000 rows, 0 rows/s, no estimate yet"


def test_a_training_line_has_throughput_and_time_left():
    # 10 of 100 steps of 32 samples in 20 s: 16 samples/s, 90 steps at 2 s each left
    assert training(10, 100, 0, 20.0, 32) == "16 samples/s, about 3 min left"
    # resumed at step 50: only this process's 10 steps count for the pace
    assert training(60, 100, 50, 20.0, 32) == "16 samples/s, about 1 min 20 s left"
    assert training(100, 100, 0, 200.0, 32) == "16 samples/s, done in 3 min 20 s"
    assert training(50, 100, 50, 1.0, 32) == "no estimate yet"
    assert training(99, 100, 0, 9.9, 32) == "320 samples/s, under 1 s left"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_meter_reports_about_every_ten_seconds_and_once_at_the_end():
    said, clock = [], Clock()
    meter = Meter(100, "rows", said.append, clock=clock)
    for done, at in [(10, 4), (20, 9.9), (30, 10.5), (40, 15), (60, 21), (100, 24)]:
        clock.now = 100 + at
        meter(done)
    assert said == ["30/100 rows, 2.9 rows/s, about 24 s left", "60/100 rows, 2.9 rows/s, about 14 s left",
                    "100/100 rows, 4.2 rows/s, done in 24 s"]


def test_a_meter_says_nothing_about_work_that_ends_within_its_interval():
    said = []
    meter = Meter(3, "answers", said.append)
    for done, elapsed in [(1, 2.0), (2, 4.0), (3, 6.0)]:
        meter(done, elapsed)  # the scoring callback's form: the seconds come with the count
    assert said == []
    assert progress.EVERY_S == 10


def test_rows_are_counted_without_parsing_the_file(tmp_path):
    frame = pd.DataFrame({"text": ["one", "two,\nlines", "three"], "n": [1, 2, 3]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "a.csv").write_text((tmp_path / "a.csv").read_text() + "\n")  # a trailing blank line is no row
    frame.to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "c.parquet", index=False)
    for name in ("a.csv", "b.jsonl", "c.parquet"):
        assert count_rows([Source(str(tmp_path / name))]) == 3, name
    sources = [Source(str(tmp_path / n)) for n in ("a.csv", "b.jsonl", "c.parquet")]
    assert count_rows(sources) == 9
    assert count_rows([*sources, Source("s3://bucket/d.csv")]) is None  # counting would fetch it
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert count_rows([Source(str(tmp_path / "bad.parquet"))]) is None


def test_batch_scoring_logs_rows_rate_and_time_left_by_default(caplog):
    from tuneops.serving import scoring

    report = scoring.log_progress(5000)
    with caplog.at_level("INFO", logger="tuneops.serving.scoring"):
        report(1000, 4.0)  # within the first 10 s: nothing yet
        report(1200, 14.1)
    assert [r.getMessage() for r in caplog.records] == ["scored 1,200/5,000 rows, 85 rows/s, about 45 s left"]
