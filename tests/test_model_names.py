"""The names of the fusion choices are defined once (``fusewatch.engines.fusion.names``) on the
engine side; the camera-side config keeps its own literal lists (``stream`` never imports
``engines``). These tests keep the two in agreement."""
from __future__ import annotations

import re

import pytest

from fusewatch.cli import build_parser
from fusewatch.engines.fusion.factory import MODEL_CLASSES
from fusewatch.engines.fusion.names import EXPANSIONS, FUSIONS
from fusewatch.stream.config import ModelConfig


def _config_choices(field: str) -> set[str]:
    """The values ``ModelConfig.validate`` accepts for ``field``, read from its error message."""
    with pytest.raises(Exception) as e:
        ModelConfig(**{field: "no-such-choice"}).validate()
    m = re.search(r"one of (.+?) \(got", str(e.value))
    assert m, f"unexpected error message: {e.value}"
    return {s.strip() for s in m.group(1).split(",")}


@pytest.mark.parametrize("field, names", [("fusion", FUSIONS), ("expansion", EXPANSIONS)])
def test_config_accepts_exactly_the_engine_names(field, names):
    for n in names:
        ModelConfig(**{field: n}).validate()
    assert _config_choices(field) == set(names)


def test_factory_and_cli_use_the_names():
    assert tuple(MODEL_CLASSES) == FUSIONS
    parser = build_parser()
    for bad in ("no-such-fusion",):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--data", "d", "--out", "o", "--fusion", bad])
    for n in FUSIONS:
        assert parser.parse_args(["train", "--data", "d", "--out", "o", "--fusion", n]).fusion == n
