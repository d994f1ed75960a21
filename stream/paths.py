"""Where fusewatch finds the shared data folder (UCSD Ped2, CCTV clip, UCF-Crime sample features).

``$FUSEWATCH_SHARED`` if set, else ``shared/`` beside the repository (``../shared`` from the project
root, where CI and the README expect it)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    env = os.environ.get("FUSEWATCH_SHARED")
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared"


def shared_data(*parts: str) -> Path:
    """``shared_dir()/data/<parts>``."""
    return shared_dir().joinpath("data", *parts)
