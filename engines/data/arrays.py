"""Read one feature file (``.npy`` / ``.npz`` / ``.txt``) as a ``T×D`` float32 array."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from fusewatch.errors import DataNotFoundError, DatasetError

MAX_CROPS = 10
"""Largest crop count assumed when guessing the crop axis of 3-D feature arrays (10-crop I3D)."""


def load_feature_array(path: str | Path, crop_axis: int | None = None) -> np.ndarray:
    """One feature file → T×D float32.

    2-D arrays are returned as they are. 3-D arrays are averaged over the crop axis: ``crop_axis``
    if given, else T×crops×D (RTFM I3D ``T×10×2048``: axis 1) unless the middle axis is longer than
    ``MAX_CROPS`` while the first is not (crops×T×D: axis 0). 1-D arrays are one clip (1×D).
    A missing file raises :class:`DataNotFoundError`; an empty, truncated, non-numeric or otherwise
    unreadable one :class:`DatasetError` (naming the file).
    """
    p = Path(path)
    try:
        if p.suffix == ".txt":
            a = np.loadtxt(p, dtype=np.float32, ndmin=2)
        elif p.suffix == ".npz":
            with np.load(p) as z:
                if not z.files:
                    raise DatasetError(f"feature file {p}: empty .npz (no arrays)")
                key = "feats" if "feats" in z else sorted(z.files)[0]
                a = np.asarray(z[key])
        else:
            a = np.load(p, allow_pickle=False)
        if a.dtype.kind not in "biuf":  # strings, objects, records, complex: not features
            raise DatasetError(f"feature file {p}: expected numbers, got dtype {a.dtype}")
        a = np.asarray(a, dtype=np.float32)
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DataNotFoundError(f"feature file {p}: not found") from None
    except EOFError:
        raise DatasetError(f"feature file {p}: empty or truncated") from None
    except IsADirectoryError:
        raise DatasetError(f"feature file {p}: is a directory, not a file") from None
    except (OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f"feature file {p}: unreadable ({e})") from None
    except (TypeError, ValueError) as e:  # not a .npy/.npz, pickled objects, non-numeric text
        raise DatasetError(f"feature file {p}: unreadable ({e})") from None
    if a.ndim == 1:
        a = a[None, :]
    elif a.ndim == 3:
        if crop_axis is None:
            crop_axis = 0 if (a.shape[1] > MAX_CROPS and a.shape[0] <= MAX_CROPS) else 1
        a = a.mean(axis=crop_axis)
    elif a.ndim != 2:
        raise DatasetError(f"feature file {p}: expected T×D or T×crops×D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DatasetError(f"feature file {p}: contains NaN or inf")
    return np.ascontiguousarray(a, dtype=np.float32)
