"""docs/config.md and docs/data.md are generated; `rlhfkit config [SECTION]` prints the same keys."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.config import docs as config_docs
from rlhfkit.config.stages import RunConfig
from rlhfkit.data import docs as data_docs

REGENERATE = "out of date: run `make docs` (python -m rlhfkit.config.docs; python -m rlhfkit.data.docs) and commit it"


@pytest.mark.parametrize("module", [config_docs, data_docs], ids=["config.md", "data.md"])
def test_generated_docs_are_up_to_date(module):
    if not module.DOCS_PATH.parent.is_dir():
        pytest.skip("not a source checkout (no docs/ directory)")
    assert module.DOCS_PATH.is_file(), f"{module.DOCS_PATH} is missing: {REGENERATE}"
    assert module.DOCS_PATH.read_text(encoding="utf-8") == module.markdown(), f"{module.DOCS_PATH} is {REGENERATE}"


def _leaf_keys(model, prefix=""):
    """Every non-section key, walked independently of config/docs.py."""
    keys = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        sub = config_docs._section_type(field.annotation)
        if sub is None:
            keys.append(prefix + name)
        else:
            keys += _leaf_keys(value if value is not None else sub(), f"{prefix}{name}.")
    return keys


def test_every_key_is_listed_once_with_a_description():
    listed = [k for s in config_docs.sections() for k in s.keys]
    assert sorted(k.name for k in listed) == sorted(_leaf_keys(RunConfig()))
    assert len({k.name for k in listed}) == len(listed)
    assert all(k.description for k in listed)
    assert "lora" in {s.name.split(".")[-1] for s in config_docs.sections()}  # optional sections included


def test_defaults_and_types_are_each_stages_own():
    keys = {k.name: k for s in config_docs.sections() for k in s.keys}
    assert keys["sft.optim.learning_rate"].default == "2e-05"  # the stage's default_factory, not OptimSection's class default
    assert keys["rm.optim.learning_rate"].default == "1e-05"
    assert keys["ppo.kl.estimator"].type == '"k1" | "k2" | "k3"'
    assert keys["ppo.value_learning_rate"].type == "float or empty" and keys["ppo.value_learning_rate"].default == "empty"
    assert keys["stages"].default == '["sft", "rm", "ppo"]'


def test_config_command_prints_a_section_and_refuses_unknown_ones():
    result = CliRunner().invoke(app, ["config", "ppo.kl"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ppo.kl.target" in result.output and "Target KL" in result.output and "6.0" in result.output
    assert "ppo.learning_rate" not in result.output  # only the section asked for
    result = CliRunner().invoke(app, ["config", "nope"])
    assert result.exit_code == 2 and "no config section 'nope'" in result.output
