"""The names of the fusion choices are defined once (``fusewatch.engines.fusion.names``) on the
engine side; the camera-side config keeps its own literal lists (``stream`` never imports
``engines``). These tests keep the two in agreement."""

from __future__ import annotations

import typing

import pytest

from fusewatch.cli import build_parser
from fusewatch.engines.fusion.factory import MODEL_CLASSES
from fusewatch.engines.fusion.names import EXPANSIONS, FUSIONS
from fusewatch.stream.config import ConfigError, ModelConfig, load_config


def _config_choices(field: str) -> set[str]:
    """The values the config schema accepts for ``field`` (its ``Literal`` choices)."""
    ann = ModelConfig.__pydantic_fields__[field].annotation
    return {a for a in typing.get_args(ann) if isinstance(a, str)}


def test_config_rejects_other_names_with_one_line():
    with pytest.raises(ConfigError, match="model.fusion"):
        load_config(None, overrides=[("model.fusion", "no-such-choice")])


@pytest.mark.parametrize("field, names", [("fusion", FUSIONS), ("expansion", EXPANSIONS)])
def test_config_accepts_exactly_the_engine_names(field, names):
    for n in names:
        ModelConfig(**{field: n})
    assert _config_choices(field) == set(names)


def test_factory_and_cli_use_the_names():
    assert tuple(MODEL_CLASSES) == FUSIONS
    parser = build_parser()
    for bad in ("no-such-fusion",):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--data", "d", "--out", "o", "--fusion", bad])
    for n in FUSIONS:
        assert parser.parse_args(["train", "--data", "d", "--out", "o", "--fusion", n]).fusion == n
