"""A minimal ctypes binding to the eSpeak NG library shipped by the ``espeakng-loader`` wheel.

Only what the demo corpus needs: synthesise text with a voice, rate and pitch, and turn
text into IPA phonemes. The library keeps one global voice, so one :class:`ESpeak` per process.

Determinism: eSpeak NG's output for a sentence depends on what the process synthesised before
(internal synthesis state) and on its random generator (breathy voices, Klatt noise). Audio is
reproducible when a *fresh* process seeds the generator before its first synthesis, which is
what :func:`speak` expects to be run in. This module imports only numpy and ctypes, so spawning
such a process is cheap.
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_ESPEAK_CHARS_AUTO = 0
_ESPEAK_ENDPAUSE = 0x1000
_PHONEMES_IPA = 0x02
_SEPARATOR = "_"
_STRESS = str.maketrans("", "", "ˈˌ")

_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class ESpeakError(RuntimeError):
    """eSpeak NG could not be loaded or refused a request."""


@cache
def _library() -> tuple[ctypes.CDLL, int]:
    try:
        import espeakng_loader
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("the demo corpus needs `pip install espeakng-loader`") from err
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_int,
        ctypes.c_int,
    ]
    data = espeakng_loader.get_data_path().encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
    if rate <= 0:
        raise ESpeakError(f"espeak_Initialize failed ({rate}) with data at {data.decode()}")
    return lib, rate


class ESpeak:
    """Synthesise speech with eSpeak NG; ``seed`` seeds its random generator.

    Attributes:
        sample_rate: the library's output rate in Hz (22050 for eSpeak NG).
    """

    def __init__(self, seed: int) -> None:
        self._lib, self.sample_rate = _library()
        self._lib.espeak_ng_SetRandSeed(seed)
        self._chunks: list[np.ndarray] = []
        self._callback = _Callback(self._collect)  # keep a reference: C holds a pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, _events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def set_voice(self, voice: str, rate_wpm: int, pitch: int) -> None:
        """Select a voice such as ``en-gb-scotland+f2``; rate in words/min, pitch in 0..100."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ESpeakError(f"eSpeak NG has no voice {voice!r}")
        self._lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)
        self._lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)

    def synthesize(self, text: str) -> np.ndarray:
        """Speak ``text`` with the current voice: int16 samples at :attr:`sample_rate`."""
        self._chunks = []
        raw = text.encode()
        flags = _ESPEAK_CHARS_AUTO | _ESPEAK_ENDPAUSE
        status = self._lib.espeak_Synth(raw, len(raw) + 1, 0, 0, 0, flags, None, None)
        if status != 0:
            raise ESpeakError(f"espeak_Synth failed ({status}) on {text!r}")
        if not self._chunks:
            raise ESpeakError(f"eSpeak NG produced no audio for {text!r}")
        return np.concatenate(self._chunks)

    def phonemes(self, text: str) -> list[str]:
        """IPA phonemes of ``text`` for the current voice's accent, stress marks removed."""
        mode = _PHONEMES_IPA | (ord(_SEPARATOR) << 8)
        pointer = ctypes.c_char_p(text.encode())
        out: list[str] = []
        while pointer.value:
            chunk = self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _ESPEAK_CHARS_AUTO, mode)
            for word in chunk.decode().translate(_STRESS).split():
                out.extend(p for p in word.split(_SEPARATOR) if p)
        return out


def speak(
    voice: str, rate_wpm: int, pitch: int, seed: int, texts: list[str]
) -> tuple[int, list[np.ndarray], list[list[str]]]:
    """Synthesise ``texts`` with one voice; run it in a fresh process for reproducible audio.

    Returns:
        The sample rate, int16 audio per text and IPA phonemes per text.
    """
    engine = ESpeak(seed)
    engine.set_voice(voice, rate_wpm, pitch)
    audio = [engine.synthesize(text) for text in texts]
    return engine.sample_rate, audio, [engine.phonemes(text) for text in texts]
