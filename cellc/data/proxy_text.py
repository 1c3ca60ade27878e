"""Deterministic English-like sentences for the proxy corpora (same seed, same text).

A small fixed vocabulary and a few sentence patterns: enough variety that a recogniser
must learn phones or letters rather than memorise lines, small enough to stay offline.
"""

from __future__ import annotations

import random

DETERMINERS = "the a this that every some one my your our their his her".split()
ADJECTIVES = (
    "old young small large quiet bright dark green yellow heavy light quick slow warm cold "
    "happy busy careful gentle strong simple clever tired early late rough smooth narrow wide"
).split()
NOUNS = (
    "dog cat horse bird child farmer teacher doctor friend neighbour sister brother garden river "
    "house window table letter story song road bridge city village market kitchen school ship "
    "train island mountain forest morning evening winter summer answer question picture paper "
    "water stone money music lamp chair apple orange basket wagon engine clock"
).split()
VERBS = (
    "saw found carried painted opened closed watched followed wrote read bought sold "
    "cleaned built moved pushed pulled lifted visited remembered forgot loved needed washed"
).split()
INTRANSITIVE = "waited smiled laughed slept arrived left worked sang walked rested".split()
PREPOSITIONS = "near behind under above beside across through along after before".split()
ADVERBS = "quickly slowly quietly often never soon always gladly early yesterday".split()
NAMES = "Anna Peter Maria James Laura Henry Sophie Oliver Emma Daniel".split()


def _noun_phrase(rng: random.Random) -> str:
    words = [rng.choice(DETERMINERS)]
    if rng.random() < 0.6:
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    return " ".join(words)


def sentence(rng: random.Random, max_chars: int | None = None) -> str:
    """One lower-case sentence of roughly 4-10 words, no punctuation (for speech), cut at a
    word boundary to at most ``max_chars`` characters when given."""
    text = _sentence(rng)
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars + 1].rsplit(" ", 1)[0]
    return text


def _sentence(rng: random.Random) -> str:
    pattern = rng.randrange(4)
    subject = _noun_phrase(rng)
    if pattern == 0:
        return f"{subject} {rng.choice(VERBS)} {_noun_phrase(rng)}"
    if pattern == 1:
        return f"{subject} {rng.choice(INTRANSITIVE)} {rng.choice(PREPOSITIONS)} {_noun_phrase(rng)}"
    if pattern == 2:
        return f"{subject} {rng.choice(ADVERBS)} {rng.choice(VERBS)} {_noun_phrase(rng)}"
    return f"{rng.choice(NAMES).lower()} {rng.choice(VERBS)} {_noun_phrase(rng)} {rng.choice(PREPOSITIONS)} {_noun_phrase(rng)}"


def text_line(rng: random.Random, max_chars: int = 40) -> str:
    """One written line: capitalised, sometimes with a name, a number, or punctuation."""
    words = _sentence(rng).split()
    if rng.random() < 0.3:
        words.insert(rng.randrange(1, len(words)), str(rng.randrange(2, 100)))
    line = " ".join(words)
    for name in NAMES:
        line = line.replace(name.lower(), name)
    line = line[0].upper() + line[1:]
    if len(line) > max_chars:  # cut at a word boundary: long lines make slow trials
        line = line[: max_chars + 1].rsplit(" ", 1)[0]
    return line + rng.choice([".", ".", ",", "!", "?", ""])
