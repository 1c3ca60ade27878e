"""The MFCC pipeline against a hand-written, loop-by-loop reference (and librosa if installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellc.data.features import FeatureConfig, Normaliser, deltas, frame_count, mel_filterbank, mfcc_features


def synthetic_signal(n: int = 5200, seed: int = 0) -> np.ndarray:
    """A chirp with a loud and a quiet part plus noise, as 16-bit samples."""
    t = np.arange(n) / 16000
    chirp = np.sin(2 * np.pi * (200 + 3000 * t) * t) * np.where(t < 0.15, 8000, 800)
    return np.round(chirp + np.random.default_rng(seed).normal(0, 100, n)).astype(np.int16)


def reference_features(samples: np.ndarray) -> np.ndarray:
    """The same recipe written out in plain loops from the textbook formulas."""
    x = [float(v) for v in samples]
    emph = [x[0]] + [x[i] - 0.97 * x[i - 1] for i in range(1, len(x))]
    win, hop, nfft, nmel, ncep = 400, 160, 512, 26, 12
    hamming = [0.54 - 0.46 * math.cos(2 * math.pi * n / (win - 1)) for n in range(win)]
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    imel = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = [imel(mel(8000) * k / (nmel + 1)) for k in range(nmel + 2)]
    k = np.arange(nfft // 2 + 1)[:, None]
    n = np.arange(win)[None, :]
    cos_table, sin_table = np.cos(2 * np.pi * k * n / nfft), np.sin(2 * np.pi * k * n / nfft)
    rows = []
    for start in range(0, len(x) - win + 1, hop):
        frame = np.array([emph[start + i] * hamming[i] for i in range(win)])
        power = (cos_table @ frame) ** 2 + (sin_table @ frame) ** 2  # |DFT|^2, zero padded to 512
        bands = []
        for m in range(nmel):
            lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
            total = 0.0
            for b in range(nfft // 2 + 1):
                f = b * 16000 / nfft
                weight = (f - lo) / (mid - lo) if lo <= f <= mid else (hi - f) / (hi - mid) if mid < f <= hi else 0.0
                total += weight * power[b]
            bands.append(math.log(total))
        ceps = []
        for c in range(1, ncep + 1):
            s = sum(bands[j] * math.cos(math.pi * c * (j + 0.5) / nmel) for j in range(nmel))
            ceps.append(s * math.sqrt(2 / nmel))
        rows.append(ceps + [math.log(float(np.sum(frame**2)))])
    static = np.array(rows)

    def regression(feat: np.ndarray) -> np.ndarray:
        out = np.zeros_like(feat)
        T = len(feat)
        for t in range(T):
            acc = 0
            for d in (1, 2):
                acc = acc + d * (feat[min(t + d, T - 1)] - feat[max(t - d, 0)])
            out[t] = acc / 10
        return out

    d1 = regression(static)
    return np.concatenate([static, d1, regression(d1)], axis=1)


def test_matches_hand_written_reference():
    signal = synthetic_signal()
    ours = mfcc_features(signal)
    ref = reference_features(signal)
    assert ours.shape == ref.shape == (frame_count(len(signal), FeatureConfig()), 39)
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-3)
    # the loud part is 10x the quiet one in amplitude; pre-emphasis favours the quiet part's
    # higher chirp frequencies, so the log-energy gap is smaller than log(100) but clear
    assert ours[:5, 12].mean() - ours[-5:, 12].mean() > 1.0


def test_matches_librosa_when_installed():
    librosa = pytest.importorskip("librosa")
    signal = synthetic_signal().astype(np.float64)
    emph = np.append(signal[:1], signal[1:] - 0.97 * signal[:-1])
    # librosa centres the 400-sample window inside each 512-sample frame: shift by 56 so
    # that its frame t covers the same samples as ours
    emph = np.concatenate([np.zeros(56), emph])
    spec = np.abs(librosa.stft(emph, n_fft=512, hop_length=160, win_length=400, window=np.hamming(400), center=False)) ** 2
    fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=26, fmin=0, fmax=8000, htk=True, norm=None)
    log_mel = np.log(fb @ spec)
    from scipy.fft import dct

    ceps = dct(log_mel, type=2, norm="ortho", axis=0)[1:13].T
    ours = mfcc_features(signal)
    n = len(ceps)
    assert len(ours) - n <= 2
    np.testing.assert_allclose(ours[:n, :12], ceps, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(deltas(ours[:, :13], 2), librosa.feature.delta(ours[:, :13], width=5, axis=0, mode="nearest"), atol=1e-4)


def test_filterbank_shape_and_peaks():
    fb = mel_filterbank(FeatureConfig())
    assert fb.shape == (26, 257)
    assert np.all(fb >= 0) and np.allclose(fb.max(axis=1), 1.0, atol=0.2)
    assert np.all(np.diff(fb.argmax(axis=1)) >= 0)


def test_normaliser_uses_training_statistics_only():
    rng = np.random.default_rng(1)
    train = [rng.normal(5, 2, size=(50, 39)) for _ in range(4)]
    norm = Normaliser.fit(train)
    stacked = np.concatenate([norm(x) for x in train])
    assert np.allclose(stacked.mean(0), 0, atol=1e-5) and np.allclose(stacked.std(0), 1, atol=1e-4)
    shifted = norm(rng.normal(7, 2, size=(1000, 39)))  # a test split is not re-centred
    assert abs(shifted.mean() - 1.0) < 0.1


def test_shorter_than_a_window_gives_no_frames():
    assert mfcc_features(np.zeros(399, dtype=np.int16)).shape == (0, 39)
