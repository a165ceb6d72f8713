"""Answer grammars: the exact strings a classification answer may take, as tiny automata over characters.

Constrained decoding (``constrained.py``) walks the tokenizer's vocabulary along these automata, so a
coarse answer can only be ``negative``/``positive``/``surprise``, an AU list only distinct known AU names
(in any order) joined by ``", "``, and the joint answer only its exact template. The automata are
non-deterministic (a matcher holds a set of states), which keeps each piece a few lines long:

- ``OneOf(strings)``: one of a fixed set of strings (labels, literals);
- ``AUList(names, min_items, max_items)``: distinct names in any order, joined by a separator;
- ``Seq(parts)``: the parts one after another.

``answer_grammar(question)`` builds the grammar of an organiser question from its kind's ``form`` and
labels in the registry (``megc_vqa.qa.kinds``); free questions (the 2026 analysis prompt, unknown
wording) get ``None``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

from megc_vqa.labels import COARSE_CLASSES, FINE_DATASETS, KNOWN_FINE
from megc_vqa.qa import templates as T
from megc_vqa.qa.kinds import AU_NAMES_IN_ORDER, KINDS, MAX_COUNT, TRAINING_FINE_LABELS, au_item_bounds

State = Hashable
_MAX_MOVES = 500_000  # remembered matcher moves per grammar (a bound on memory, never reached in a run)


def _escape(text: str) -> str:
    """Regex-escape metacharacters only (not spaces), for the widest regex-dialect support."""
    return re.sub(r"([.^$*+?{}\[\]\\|()-])", r"\\\1", text)


class Grammar(ABC):
    """A non-deterministic automaton over characters; states must be hashable."""

    @abstractmethod
    def start(self) -> State: ...

    def closure(self, state: State) -> Iterable[State]:
        """States reachable without reading a character (including ``state`` itself)."""
        yield state

    @abstractmethod
    def step(self, state: State, char: str) -> Iterable[State]: ...

    @abstractmethod
    def next_chars(self, state: State) -> set[str]: ...

    @abstractmethod
    def accepting(self, state: State) -> bool: ...

    @abstractmethod
    def regex(self) -> str:
        """A regular expression for backends with regex-guided decoding (vLLM). It may accept more than
        the grammar (an AU list in any order); answers are normalised afterwards."""


class OneOf(Grammar):
    """Exactly one of ``strings``; a state is the prefix read so far."""

    def __init__(self, strings: Iterable[str]) -> None:
        self.labels = tuple(dict.fromkeys(strings))  # in the order given (label scores are logged so)
        self.strings = frozenset(self.labels)
        if not self.strings or "" in self.strings:
            raise ValueError("OneOf needs non-empty strings")
        self._next: dict[str, set[str]] = {}
        for s in self.strings:
            for i in range(len(s)):
                self._next.setdefault(s[:i], set()).add(s[i])

    def start(self) -> State:
        return ""

    def step(self, state: State, char: str) -> Iterable[State]:
        if char in self._next.get(state, ()):  # type: ignore[arg-type]
            yield state + char  # type: ignore[operator]

    def next_chars(self, state: State) -> set[str]:
        return self._next.get(state, set())  # type: ignore[arg-type]

    def accepting(self, state: State) -> bool:
        return state in self.strings

    def regex(self) -> str:
        return "(?:" + "|".join(_escape(t) for t in sorted(self.strings, key=lambda t: (-len(t), t))) + ")"


def Literal(text: str) -> OneOf:  # reads like a grammar constructor
    return OneOf([text])


class AUList(Grammar):
    """Between ``min_items`` and ``max_items`` distinct names of ``names``, joined by ``sep``.

    Any order is accepted (the organisers keep the order in which a release codes the AUs, so no order
    is the right one); a name is never repeated. ``ordered=True`` asks for the names' given order (a
    strictly increasing subsequence) instead. A state is ``(names used so far, how many, text of the
    item being read)``; an item is a name, preceded by ``sep`` after the first.
    """

    def __init__(
        self,
        names: Sequence[str] = AU_NAMES_IN_ORDER,
        min_items: int = 1,
        max_items: int | None = None,
        sep: str = T.AU_SEPARATOR,
        ordered: bool = False,
    ) -> None:
        self.names = tuple(dict.fromkeys(names))
        self.min_items = min_items
        self.max_items = len(self.names) if max_items is None else min(max_items, len(self.names))
        self.sep = sep
        self.ordered = ordered
        self._cache: dict[tuple[frozenset[int], int], list[tuple[int, str]]] = {}

    def _items(self, used: frozenset[int], count: int) -> list[tuple[int, str]]:
        hit = self._cache.get((used, count))
        if hit is not None:
            return hit
        items: list[tuple[int, str]] = []
        if count < self.max_items:
            prefix = self.sep if count else ""
            first = max(used) + 1 if self.ordered and used else 0
            items = [(j, prefix + self.names[j]) for j in range(first, len(self.names)) if j not in used]
        if len(self._cache) < _MAX_MOVES:
            self._cache[(used, count)] = items
        return items

    def start(self) -> State:
        return (frozenset(), 0, "")

    def closure(self, state: State) -> Iterable[State]:
        yield state
        used, count, buf = state  # type: ignore[misc]
        if buf:
            for j, item in self._items(used, count):
                if item == buf:
                    yield (used | {j}, count + 1, "")

    def step(self, state: State, char: str) -> Iterable[State]:
        used, count, buf = state  # type: ignore[misc]
        text = buf + char
        if any(item.startswith(text) for _, item in self._items(used, count)):
            yield (used, count, text)

    def next_chars(self, state: State) -> set[str]:
        used, count, buf = state  # type: ignore[misc]
        n = len(buf)
        return {item[n] for _, item in self._items(used, count) if len(item) > n and item.startswith(buf)}

    def accepting(self, state: State) -> bool:
        _, count, buf = state  # type: ignore[misc]
        return buf == "" and self.min_items <= count <= self.max_items

    def regex(self) -> str:
        # A regular expression cannot say "distinct" compactly: it accepts repeats (and, unless
        # ``ordered``, any order); normalisation drops repeated names afterwards.
        name = OneOf(self.names).regex()
        return f"{name}(?:{_escape(self.sep)}{name}){{{self.min_items - 1},{self.max_items - 1}}}"


class Seq(Grammar):
    """The parts one after another; a state is ``(part index, state of that part)``."""

    def __init__(self, parts: Sequence[Grammar]) -> None:
        if not parts:
            raise ValueError("Seq needs at least one part")
        self.parts = tuple(parts)

    def start(self) -> State:
        return (0, self.parts[0].start())

    def closure(self, state: State) -> Iterable[State]:
        i, inner = state  # type: ignore[misc]
        for s in self.parts[i].closure(inner):
            yield (i, s)
            if self.parts[i].accepting(s) and i + 1 < len(self.parts):
                yield from self.closure((i + 1, self.parts[i + 1].start()))

    def step(self, state: State, char: str) -> Iterable[State]:
        i, inner = state  # type: ignore[misc]
        for s in self.parts[i].step(inner, char):
            yield (i, s)

    def next_chars(self, state: State) -> set[str]:
        i, inner = state  # type: ignore[misc]
        return self.parts[i].next_chars(inner)

    def accepting(self, state: State) -> bool:
        i, inner = state  # type: ignore[misc]
        return i == len(self.parts) - 1 and self.parts[i].accepting(inner)

    def regex(self) -> str:
        return "".join(p.regex() for p in self.parts)


@dataclass
class Matcher:
    """Runs a grammar: the set of live states after the text read so far."""

    grammar: Grammar
    states: frozenset = field(default_factory=frozenset)

    @classmethod
    def begin(cls, grammar: Grammar) -> Matcher:
        return cls(grammar, frozenset(grammar.closure(grammar.start())))

    def advance(self, text: str) -> Matcher:
        # Decoding walks the same few state sets with the same token strings over and over (every row
        # of a kind starts alike): the moves are remembered per grammar, so a repeat is one lookup.
        moves: dict[tuple[frozenset, str], frozenset] = self.grammar.__dict__.setdefault("_moves", {})
        key = (self.states, text)
        states = moves.get(key)
        if states is None:
            states = self.states
            for char in text:
                stepped = {t for s in states for t in self.grammar.step(s, char)}
                states = frozenset(c for t in stepped for c in self.grammar.closure(t))
                if not states:
                    break
            if len(moves) < _MAX_MOVES:
                moves[key] = states
        return Matcher(self.grammar, states)

    @property
    def alive(self) -> bool:
        return bool(self.states)

    @property
    def complete(self) -> bool:
        return any(self.grammar.accepting(s) for s in self.states)

    def next_chars(self) -> set[str]:
        return set().union(*(self.grammar.next_chars(s) for s in self.states)) if self.states else set()


def fullmatch(grammar: Grammar, text: str) -> bool:
    """Whether ``text`` is a complete answer of ``grammar``."""
    m = Matcher.begin(grammar).advance(text)
    return m.alive and m.complete


@dataclass(frozen=True)
class AnswerVocabulary:
    """Label sets the grammars draw on; change ``fine`` when you know the test's fine vocabulary."""

    coarse: tuple[str, ...] = COARSE_CLASSES
    fine: tuple[str, ...] = TRAINING_FINE_LABELS
    au_names: tuple[str, ...] = AU_NAMES_IN_ORDER

    def for_dataset(self, dataset: str | None) -> AnswerVocabulary:
        """This vocabulary with ``fine`` cut to the labels ``dataset`` itself uses (``labels.KNOWN_FINE``:
        a SAMM clip is never answered ``repression``, a CASME II clip never ``anger`` or ``contempt``).
        Unchanged for a dataset without fine labels (``None``, SMIC, a long-video set) or when none of
        its labels is in ``fine``."""
        own = KNOWN_FINE[dataset] if dataset in FINE_DATASETS else frozenset()
        fine = tuple(f for f in self.fine if f in own)
        return replace(self, fine=fine) if fine else self


DEFAULT_VOCAB = AnswerVocabulary()


def joint_grammar(plural: bool, vocab: AnswerVocabulary = DEFAULT_VOCAB) -> Grammar:
    """The joint answer's exact template; the question's wording fixes singular (one AU) or plural (two+)."""
    head, rest = (T.JOINT_ANSWER_PLURAL if plural else T.JOINT_ANSWER_SINGULAR).split("{aus}")
    middle, tail = rest.split("{fine}")
    middle2, end = tail.split("{coarse}")
    return Seq(
        [
            Literal(head),
            AUList(vocab.au_names, *((2, None) if plural else (1, 1))),
            Literal(middle),
            OneOf(vocab.fine),
            Literal(middle2),
            OneOf(vocab.coarse),
            Literal(end),
        ]
    )


def vocab_labels(kind: str, vocab: AnswerVocabulary = DEFAULT_VOCAB) -> tuple[str, ...]:
    """The label set of a kind under ``vocab``: the registry's ``run_vocabulary`` names the field a run may
    swap (coarse, fine, AU names); other kinds keep their registry labels."""
    spec = KINDS[kind]  # type: ignore[index]
    return getattr(vocab, spec.run_vocabulary) if spec.run_vocabulary else spec.labels


def kind_grammar(kind: str, plural: bool = False, vocab: AnswerVocabulary = DEFAULT_VOCAB) -> Grammar | None:
    """The grammar of answers of ``kind`` (``plural``: the AU-list or joint question's plural wording)."""
    spec = KINDS[kind]  # type: ignore[index]
    if spec.form == "label":
        return OneOf(vocab_labels(kind, vocab))
    if spec.form == "au_list":
        return AUList(vocab.au_names, *au_item_bounds(spec.name, plural))
    if spec.form == "joint":
        return joint_grammar(plural, vocab)
    if spec.form == "count":
        return OneOf(str(n) for n in range(MAX_COUNT + 1))
    return None  # analysis and unknown questions are answered free-form


@lru_cache(maxsize=1024)
def answer_grammar(
    question: str, vocab: AnswerVocabulary = DEFAULT_VOCAB, kind: str | None = None
) -> Grammar | None:
    """The grammar of valid answers to ``question``, or ``None`` for a free-form question.

    ``kind`` saves classifying the question again when the caller already knows it. Cached, so rows
    asking the same question share one grammar (and its token lookups).
    """
    return kind_grammar(kind or T.classify_question(question), T.is_plural(question), vocab)
