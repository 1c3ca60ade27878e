"""Speech features as in the LSTM study: 12 MFCCs + log energy, with Δ and ΔΔ (39 per frame).

25 ms Hamming windows every 10 ms, pre-emphasis 0.97, a 26-band HTK-style mel filterbank
over a 512-point FFT, DCT-II of the log band energies keeping coefficients 1..12, the log
energy of the windowed frame, and HTK's regression deltas over ±2 frames. HTK's cepstral
liftering is left out on purpose: it scales each coefficient by a constant, which the
per-dimension normalisation with training-set statistics undoes anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import dct

from cellc.data.timit_corpus import PhoneSegment
from cellc.data.timit_phones import PHONE_INDEX


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    window_ms: float = 25.0
    hop_ms: float = 10.0
    preemphasis: float = 0.97
    n_fft: int = 512
    n_mels: int = 26
    n_ceps: int = 12
    delta_window: int = 2

    @property
    def window(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def dim(self) -> int:
        return 3 * (self.n_ceps + 1)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """Triangular filters equally spaced on the mel scale from 0 Hz to Nyquist: (n_mels, n_fft//2+1)."""
    edges_hz = mel_to_hz(np.linspace(0.0, hz_to_mel(cfg.sample_rate / 2), cfg.n_mels + 2))
    bins_hz = np.arange(cfg.n_fft // 2 + 1) * cfg.sample_rate / cfg.n_fft
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bins_hz[None, :]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def frame_count(n_samples: int, cfg: FeatureConfig) -> int:
    return 0 if n_samples < cfg.window else 1 + (n_samples - cfg.window) // cfg.hop


def frame_signal(signal: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Overlapping frames (n_frames, window); the tail shorter than a window is dropped."""
    n = frame_count(len(signal), cfg)
    starts = np.arange(n)[:, None] * cfg.hop
    return signal[starts + np.arange(cfg.window)[None, :]]


def deltas(features: np.ndarray, window: int) -> np.ndarray:
    """HTK regression deltas: sum_n n (c[t+n] - c[t-n]) / (2 sum_n n^2), edges replicated."""
    t = len(features)
    padded = np.concatenate([np.repeat(features[:1], window, 0), features, np.repeat(features[-1:], window, 0)])
    num = sum(n * (padded[window + n : window + n + t] - padded[window - n : window - n + t]) for n in range(1, window + 1))
    return num / (2 * sum(n * n for n in range(1, window + 1)))


def mfcc_features(samples: np.ndarray, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """39 features per 10 ms frame, float32 (n_frames, 39): [12 MFCC, log E, Δ..., ΔΔ...]."""
    x = np.asarray(samples, dtype=np.float64)
    emphasised = np.append(x[:1], x[1:] - cfg.preemphasis * x[:-1])
    frames = frame_signal(emphasised, cfg) * np.hamming(cfg.window)[None, :]
    power = np.abs(np.fft.rfft(frames, n=cfg.n_fft, axis=1)) ** 2
    tiny = np.finfo(np.float64).tiny
    log_mel = np.log(np.maximum(power @ mel_filterbank(cfg).T, tiny))
    ceps = dct(log_mel, type=2, norm="ortho", axis=1)[:, 1 : cfg.n_ceps + 1]
    log_energy = np.log(np.maximum((frames**2).sum(axis=1), tiny))
    static = np.concatenate([ceps, log_energy[:, None]], axis=1)
    d1 = deltas(static, cfg.delta_window) if len(static) else static
    d2 = deltas(d1, cfg.delta_window) if len(static) else static
    return np.concatenate([static, d1, d2], axis=1).astype(np.float32)


def frame_labels(segments: list[PhoneSegment], n_frames: int, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """The 61-class label of each frame: the phone at the frame's centre sample.

    Centres before the first segment or after the last take the nearest segment's phone
    (TIMIT's files begin and end with h#)."""
    centres = np.arange(n_frames) * cfg.hop + cfg.window // 2
    begins = np.array([s.begin for s in segments])
    index = np.clip(np.searchsorted(begins, centres, side="right") - 1, 0, len(segments) - 1)
    ids = np.array([PHONE_INDEX[s.phone] for s in segments], dtype=np.int64)
    return ids[index]


@dataclass(frozen=True)
class Normaliser:
    """Per-dimension zero mean, unit variance, with statistics of the training set only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, sequences: list[np.ndarray]) -> "Normaliser":
        total = np.concatenate(sequences, axis=0).astype(np.float64)
        std = total.std(axis=0)
        return cls(mean=total.mean(axis=0), std=np.where(std > 1e-8, std, 1.0))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)
