"""Audio representation: log-mel band statistics of the clip's mono audio (numpy only).

Short-time spectrum: 25 ms Hann windows every 10 ms (FFT size: next power of two), power
spectrum, 40 triangular mel bands (HTK mel scale, 20 Hz … min(8 kHz, rate/2), Slaney-style
area normalisation off: each band's triangle peaks at 1), natural log of the band power with a
floor of 1e-10. The feature (``dim = 80``) is the per-band mean over the clip's windows (0:40)
followed by the per-band standard deviation (40:80).

Audio shorter than one window is zero-padded to one window. ``audio is None`` (the source has
no audio track) or an empty array yields None: the representation is absent for that clip.
"""

from __future__ import annotations

import threading

import numpy as np

from .base import Extractor

N_MELS = 40
DIM = 2 * N_MELS
WIN_S = 0.025
HOP_S = 0.010
FMIN = 20.0
FMAX = 8000.0
LOG_FLOOR = 1e-10
VERSION = "logmel40-1"


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(rate: int, n_fft: int, n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) triangular mel filters (peak 1) for power spectra at ``rate`` Hz."""
    fmax = min(fmax, rate / 2.0)
    fmin = min(fmin, fmax / 2.0)
    freqs = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)
    pts = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    up = (freqs[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs[None]) / np.maximum(hi - mid, 1e-9)
    fb = np.clip(np.minimum(up, down), 0.0, None)
    # very low rates / large FFT bins: make sure every band sees at least its nearest bin
    empty = fb.sum(1) == 0
    if empty.any():
        idx = np.abs(freqs[None] - mid[empty]).argmin(1)
        fb[np.nonzero(empty)[0], idx] = 1.0
    return fb.astype(np.float32)


class AudioExtractor(Extractor):
    """Mean and std over the clip of 40 log-mel bands (80-d); None without audio."""

    name = "audio"
    dim = DIM
    version = VERSION
    needs_audio = True

    def __init__(self, cfg=None) -> None:
        self._cache: dict[int, tuple[int, int, int, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def _setup(self, rate: int):
        with self._lock:
            if rate not in self._cache:
                win = max(8, int(round(WIN_S * rate)))
                hop = max(1, int(round(HOP_S * rate)))
                n_fft = 1 << (win - 1).bit_length()
                window = np.hanning(win + 2)[1:-1].astype(np.float32)  # no zero end points
                self._cache[rate] = (win, hop, n_fft, window, mel_filterbank(rate, n_fft))
            return self._cache[rate]

    def logmel(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """(frames, 40) natural-log mel band power of mono ``audio`` at ``rate`` Hz."""
        win, hop, n_fft, window, fb = self._setup(int(rate))
        x = np.nan_to_num(np.asarray(audio, np.float32).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
        if len(x) < win:
            x = np.pad(x, (0, win - len(x)))
        n = 1 + (len(x) - win) // hop
        frames = np.lib.stride_tricks.as_strided(
            x, shape=(n, win), strides=(x.strides[0] * hop, x.strides[0]), writeable=False
        )
        spec = np.fft.rfft(frames * window, n=n_fft, axis=1)
        power = (spec.real**2 + spec.imag**2).astype(np.float32)
        return np.log(np.maximum(power @ fb.T, LOG_FLOOR))

    def extract(self, frames, audio, audio_rate):
        if audio is None:
            return None
        audio = np.asarray(audio)
        if audio.ndim == 2:  # tolerate (samples, channels) / (channels, samples): down-mix
            audio = audio.mean(axis=int(np.argmin(audio.shape)))
        if audio.size == 0:
            return None
        if not audio_rate or audio_rate <= 0:
            raise ValueError(f"audio: a positive audio_rate is required with audio (got {audio_rate!r})")
        lm = self.logmel(audio, int(audio_rate))
        return np.concatenate([lm.mean(0), lm.std(0)]).astype(np.float32)
