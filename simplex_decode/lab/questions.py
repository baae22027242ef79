"""Question sets for SmolLM2-135M-Instruct whose answer is one token.

Each question is a few-shot completion prompt (three solved examples, which are not
themselves asked) whose correct continuation is a single
token of the SmolLM2 tokenizer (checked when the set is built: questions whose answer is
not one token are dropped, and the count is reported). The answer is read from the
*first generated token*, so a decoder's single-sample accuracy is exactly ``q(answer)``
and pass@k is ``1 − (1 − q(answer))^k`` — no sampling noise, and one forward per question
serves every decoder.

Sets (build with :func:`build`; :data:`SETS` lists them):

* ``add`` — ``a + b`` for single digits with ``a + b ≤ 9`` (52 problems; answer one digit).
* ``sub`` — ``a − b`` for single digits with ``a ≥ b`` (52 problems).
* ``mul`` — ``a × b`` for digits ``1…9`` with ``a·b ≤ 9`` (20 problems).
* ``capital`` — "The capital of X is" for countries whose capital is one token.
* ``opposite`` — the antonym of a common adjective (one-token antonyms).

Chance levels (:func:`chance`): the accuracy of always giving the set's most frequent
answer, and of a uniform guess among the set's distinct answers.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import numpy as np

__all__ = ["QuestionSet", "SETS", "build", "chance"]

_CAPITALS = [
    ("France", "Paris"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("England", "London"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Greece", "Athens"), ("Austria", "Vienna"),
    ("Portugal", "Lisbon"), ("Norway", "Oslo"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("Ireland", "Dublin"), ("Sweden", "Stockholm"), ("Denmark", "Copenhagen"), ("Finland", "Helsinki"),
    ("Poland", "Warsaw"), ("Hungary", "Budapest"), ("Czechia", "Prague"), ("Belgium", "Brussels"),
    ("Netherlands", "Amsterdam"), ("Switzerland", "Bern"), ("Turkey", "Ankara"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Jordan", "Amman"),
    ("Israel", "Jerusalem"), ("Saudi Arabia", "Riyadh"), ("India", "Delhi"), ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"), ("Afghanistan", "Kabul"), ("China", "Beijing"), ("South Korea", "Seoul"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Philippines", "Manila"),
    ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Ghana", "Accra"), ("Ethiopia", "Addis"),
    ("Morocco", "Rabat"), ("Algeria", "Algiers"), ("Tunisia", "Tunis"), ("Libya", "Tripoli"),
    ("Sudan", "Khartoum"), ("Cuba", "Havana"), ("Mexico", "Mexico"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Argentina", "Buenos"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"),
    ("Ecuador", "Quito"), ("Ukraine", "Kyiv"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Scotland", "Edinburgh"), ("Wales", "Cardiff"),
    ("Iceland", "Reykjavik"), ("Nepal", "Kathmandu"), ("Mongolia", "Ulaanbaatar"), ("Uganda", "Kampala"),
    ("Zimbabwe", "Harare"), ("Senegal", "Dakar"), ("Qatar", "Doha"), ("Oman", "Muscat"),
    ("Yemen", "Sanaa"), ("Malaysia", "Kuala"), ("Singapore", "Singapore"), ("Brazil", "Brasilia"),
    ("Jamaica", "Kingston"), ("Estonia", "Tallinn"), ("Latvia", "Riga"), ("Lithuania", "Vilnius"),
]
_CAPITAL_SHOTS = [("Italy", "Rome"), ("Japan", "Tokyo"), ("Egypt", "Cairo")]

_OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"), ("old", "new"),
    ("long", "short"), ("light", "dark"), ("hard", "soft"), ("rich", "poor"), ("early", "late"),
    ("strong", "weak"), ("wet", "dry"), ("full", "empty"), ("open", "closed"), ("high", "low"),
    ("thick", "thin"), ("clean", "dirty"), ("loud", "quiet"), ("heavy", "light"), ("good", "bad"),
    ("true", "false"), ("young", "old"), ("wide", "narrow"), ("deep", "shallow"), ("safe", "dangerous"),
    ("cheap", "expensive"), ("easy", "difficult"), ("first", "last"), ("inside", "outside"), ("left", "right"),
    ("black", "white"), ("day", "night"), ("win", "lose"), ("love", "hate"), ("buy", "sell"),
    ("push", "pull"), ("north", "south"), ("east", "west"), ("near", "far"), ("alive", "dead"),
    ("male", "female"), ("sweet", "sour"), ("tall", "short"), ("best", "worst"), ("more", "less"),
    ("always", "never"), ("top", "bottom"), ("front", "back"), ("before", "after"), ("question", "answer"),
]
_OPPOSITE_SHOTS = [("wet", "dry"), ("up", "down"), ("happy", "sad")]


class QuestionSet(NamedTuple):
    """``prompts`` (lists of token ids), ``answers`` (one token id each), the ``texts``
    of the questions, their ``answer_texts``, and the ``dropped`` questions whose answer
    is not one token."""

    name: str
    prompts: list
    answers: np.ndarray
    texts: list
    answer_texts: list
    dropped: list

    def __len__(self):
        return len(self.answers)


def _arith(op):
    shots = {"add": [(2, 3), (4, 1), (0, 6)], "sub": [(7, 3), (5, 5), (9, 2)], "mul": [(2, 3), (1, 4), (3, 3)]}[op]
    sym = {"add": "+", "sub": "-", "mul": "*"}[op]
    f = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b}[op]
    lo = 1 if op == "mul" else 0
    probs = [(a, b) for a in range(lo, 10) for b in range(lo, 10) if 0 <= f(a, b) <= 9 and (a, b) not in shots]
    head = "".join(f"{a} {sym} {b} = {f(a, b)}\n" for a, b in shots)
    return [(head + f"{a} {sym} {b} = ", str(f(a, b)), f"{a} {sym} {b}") for a, b in probs]


def _capital():
    head = "".join(f"The capital of {c} is {k}.\n" for c, k in _CAPITAL_SHOTS)
    return [(head + f"The capital of {c} is", " " + k, c) for c, k in _CAPITALS if (c, k) not in _CAPITAL_SHOTS]


def _opposite():
    head = "".join(f"The opposite of {a} is {b}.\n" for a, b in _OPPOSITE_SHOTS)
    return [(head + f"The opposite of {a} is", " " + b, a) for a, b in _OPPOSITES if (a, b) not in _OPPOSITE_SHOTS]


SETS = {"add": lambda: _arith("add"), "sub": lambda: _arith("sub"), "mul": lambda: _arith("mul"),
        "capital": _capital, "opposite": _opposite}


def build(name: str, tokenizer) -> QuestionSet:
    """The set ``name`` (a key of :data:`SETS`) tokenised for ``tokenizer`` (a
    :class:`~simplex_decode.models.GGUFTokenizer`): questions whose answer is not one
    token are dropped (listed in ``dropped``)."""
    if name not in SETS:
        raise ValueError(f"build: `name` must be one of {sorted(SETS)}, got {name!r}")
    prompts, answers, texts, atexts, dropped = [], [], [], [], []
    for prompt, answer, text in SETS[name]():
        ids = tokenizer.encode(answer)
        if len(ids) != 1:
            dropped.append(text)
            continue
        prompts.append(list(tokenizer.encode(prompt)))
        answers.append(ids[0])
        texts.append(text)
        atexts.append(answer.strip())
    return QuestionSet(name, prompts, np.asarray(answers, np.int64), texts, atexts, dropped)


def chance(answers) -> dict:
    """Chance levels of a set: ``most_frequent`` (always answer the modal answer) and
    ``uniform`` (guess uniformly among the distinct answers)."""
    counts = Counter(np.asarray(answers).tolist())
    return {"most_frequent": max(counts.values()) / len(answers), "uniform": 1.0 / len(counts)}
