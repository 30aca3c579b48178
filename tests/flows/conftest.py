"""A champion shared by the scoring and serving tests, so the session trains it once."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_config

CHAMPION_NAME = "scoring-champion"


@pytest.fixture(scope="session")
def champion(prefect_server, tiny_model, company_csv) -> str:
    """Train and register the tiny model once under its own name; returns the registered model name."""
    from tuneops.flows.train_model import train_model

    outcome = train_model(config=tiny_config(company_csv, tiny_model, CHAMPION_NAME))
    assert outcome.registration.promoted, outcome.decision.reason
    return CHAMPION_NAME
