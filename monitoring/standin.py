"""A fast stand-in classifier (TF-IDF + logistic regression) for drift-rate benchmarks and unit tests.

It produces real predicted labels and confidences for thousands of windows in seconds, where the
fine-tuned transformer would take minutes; the drift check treats its output exactly like the
champion's. Production monitoring always uses the champion itself (:mod:`monitoring.check`).
"""

from __future__ import annotations

import pandas as pd


class StandIn:
    def __init__(self, texts: pd.Series, labels: pd.Series, seed: int = 0) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True),
                                  LogisticRegression(max_iter=300, C=10, random_state=seed))
        self.pipe.fit(texts.astype(str), labels.astype(str))

    def score(self, texts: pd.Series) -> pd.DataFrame:
        """text, label, confidence per row, like a prediction-log row."""
        proba = self.pipe.predict_proba(texts.astype(str))
        classes = self.pipe.classes_
        return pd.DataFrame({"text": texts.astype(str).to_numpy(), "label": classes[proba.argmax(1)],
                             "confidence": proba.max(1)})
