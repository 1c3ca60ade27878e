"""A minimal ctypes binding of eSpeak NG (the engine bundled in the ``espeakng-loader`` wheel).

Synthesises text to 16-bit samples and returns eSpeak's phoneme events with their times,
which is what makes a phone-aligned proxy corpus possible without any aligner. One
:class:`ESpeak` per process: the C library holds global state, so the instance guards it.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import numpy as np

from cellc.errors import DataError

AUDIO_OUTPUT_RETRIEVAL = 1
INITIALIZE_PHONEME_EVENTS = 0x0001
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4
POS_CHARACTER = 1
CHARS_UTF8 = 1


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of the utterance
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # the phoneme mnemonic for phoneme events
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class PhonemeEvent:
    time_ms: int
    phoneme: str  # eSpeak mnemonic, with stress marks, e.g. "'aU", "@2", "_:"


@dataclass(frozen=True)
class Synthesis:
    samples: np.ndarray  # int16
    sample_rate: int
    events: list[PhonemeEvent]


def library_paths() -> tuple[str, str]:
    """(shared library, data folder) of the bundled eSpeak NG; DataError with an install hint."""
    try:
        import espeakng_loader
    except ImportError:
        raise DataError("the speech proxy needs eSpeak NG: `pip install espeakng-loader` (it bundles the engine)") from None
    try:
        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except RuntimeError as err:
        raise DataError(f"eSpeak NG from espeakng-loader is incomplete ({err})") from None


@functools.cache
def shared_engine() -> "ESpeak":
    """The process's one engine. The C library is process-global (one callback, one voice,
    state that survives re-initialisation), so a second instance would break the first."""
    return ESpeak()


class ESpeak:
    """eSpeak NG through ctypes. Use :func:`shared_engine`: one instance per process."""

    def __init__(self) -> None:
        library, data = library_paths()
        try:
            self._lib = ctypes.CDLL(library)
        except OSError as err:
            raise DataError(f"eSpeak NG from espeakng-loader could not be loaded ({err})") from None
        data_path = data.encode()
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_RETRIEVAL, 0, data_path, INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise DataError("eSpeak NG failed to initialise (espeak_Initialize returned an error)")
        self._chunks: list[np.ndarray] = []
        self._events: list[PhonemeEvent] = []
        self._callback = _CALLBACK(self._on_audio)  # kept referenced: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, n, events) -> int:  # called from C
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_PHONEME:
                name = events[i].id.decode("ascii", "replace")
                self._events.append(PhonemeEvent(events[i].audio_position, name))
            i += 1
        return 0

    def synthesise(
        self, text: str, voice: str, rate: int = 160, pitch: int = 50, pitch_range: int = 50, seed: int = 0
    ) -> Synthesis:
        """Speak ``text`` with ``voice`` (e.g. ``"en-us+f3"``) at ``rate`` words/min.

        ``seed`` seeds eSpeak's noise source (breathiness of some voices), for reproducibility."""
        if hasattr(self._lib, "espeak_ng_SetRandSeed"):
            self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise DataError(f"eSpeak NG has no voice {voice!r}")
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range), (PARAM_VOLUME, 100)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise DataError(f"eSpeak NG failed to synthesise {text!r} (status {status})")
        return Synthesis(np.concatenate(self._chunks), self.sample_rate, list(self._events))
