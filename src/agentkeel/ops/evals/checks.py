"""What a reply must be to pass a turn of an evaluation: it names an accepted
answer, and it is written in English.

Both checks are deliberately plain, so a failure is easy to read:

- ``names_answer``: one of the accepted answers appears in the reply as whole
  words, ignoring case (``"7"`` matches "7 days" but not "17"; ``"seven"``
  matches "Seven." but not "seventeen").
- ``english_problem``: ``None`` for a reply that reads as English, else why not.
  A reply fails when more than a tenth of its letters are outside ASCII, or
  when it uses more function words of French, Spanish, Italian, German or
  Portuguese than a third of its English ones. Small models that drift
  mostly drift into French ("la France est une région de l'Europe"), and
  these short words are what gives that away in one sentence, where
  statistical language detectors are unreliable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def _word_list(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Common English words that are not words of the other languages below.
_ENGLISH = _word_list(
    """
    the a an is are was were be been of and or to in on at it its this that these
    those with for from by as not no yes there here which who what when where how
    has have had do does did will would can could should you your i we they he she
    them his her our their my me us than then so but if about into also only very
    all some any more most other just because while after before over
    """
)

# Function words of the languages a small model drifts into, none of them English.
_FOREIGN = _word_list(
    """
    le la les un une des du est sont et dans pour avec sur pas qui au aux cette ces
    ce de il elle nous vous ils elles mais ou où très été être avoir l' d' qu' c' n' s' j'
    el los las es son del por con una pero muy está están como
    lo gli della delle di che è sono nel nella per
    der die das und ist sind ein eine nicht mit auf dem den zu von
    os é são um uma não com em
    """
)

_MAX_NON_ASCII_LETTERS = 0.1
_FOREIGN_PER_ENGLISH = 1 / 3


def names_answer(reply: str, accepted: Sequence[str]) -> str | None:
    """The first of ``accepted`` that ``reply`` contains as whole words, ignoring case."""
    for answer in accepted:
        pattern = rf"(?<!\w){re.escape(answer.strip())}(?!\w)"
        if re.search(pattern, reply, flags=re.IGNORECASE):
            return answer
    return None


def english_problem(reply: str) -> str | None:
    """Why ``reply`` does not read as English, or ``None`` when it does.

    >>> english_problem("The capital of France is Paris.") is None
    True
    >>> english_problem("La France est une région de l'Europe.")
    'not English: 5 French/Spanish/Italian/German/Portuguese function words, 0 English ones'
    """
    letters = [ch for ch in reply if ch.isalpha()]
    if letters:
        foreign_letters = sum(1 for ch in letters if not ch.isascii())
        if foreign_letters / len(letters) > _MAX_NON_ASCII_LETTERS:
            return f"not English: {foreign_letters} of {len(letters)} letters are not ASCII"
    english = foreign = 0
    for word in _words(reply):
        if word in _ENGLISH:
            english += 1
        elif word in _FOREIGN or _elided(word):
            foreign += 1
    if foreign and foreign > english * _FOREIGN_PER_ENGLISH:
        return (
            f"not English: {foreign} French/Spanish/Italian/German/Portuguese function "
            f"words, {english} English ones"
        )
    return None


def _words(text: str) -> list[str]:
    return [match.group(0).lower().replace("\u2019", "'") for match in _WORD.finditer(text)]


def _elided(word: str) -> bool:
    """French elisions such as ``l'europe`` or ``d'italie``."""
    head, sep, _ = word.partition("'")
    return bool(sep) and f"{head}'" in _FOREIGN
