"""A user's labelled files (rnndrop.data.labeled): every format reads to the same examples, every
mistake a user can make is one line naming the file, labels become classes or numbers, the
seeded stratified split, its fingerprinted record, and the text encoder."""
import csv
import io
import json

import pytest
import torch

from rnndrop.data._download import DataError
from rnndrop.data.imdb import tokenize
from rnndrop.data.labeled import (FORMATS, LabeledTexts, LabelSpace, TextEncoder, fingerprint,
                                  infer_label_space, load_split, read_labeled, save_split,
                                  stratified_split)

# Ordered as the folder and per-class readers read them (classes sorted, then file order), so
# that every format must give exactly these lists. Commas, quotes, a tab and non-ASCII text
# exercise CSV/TSV quoting and the decoder; per-line formats forbid newlines (tested apart).
EXAMPLES = [("Dull, and far too long.", "neg"),
            ('He said "never again".', "neg"),
            ("tab\there", "neg"),
            ("A great film!", "pos"),
            ("Naïve but charming — 10/10", "pos")]
TEXTS = [t for t, _ in EXAMPLES]
LABELS = [lab for _, lab in EXAMPLES]


def table(rows, delimiter=",", header=("text", "label")):
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=delimiter)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_all_formats(d):
    """Each layout of EXAMPLES under ``d``; returns {name: kwargs for read_labeled}."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "data.csv").write_text(table(EXAMPLES), encoding="utf-8", newline="")
    (d / "data.tsv").write_text(table(EXAMPLES, "\t"), encoding="utf-8", newline="")
    (d / "data.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in EXAMPLES) + "\n",
        encoding="utf-8")
    for i, (t, lab) in enumerate(EXAMPLES):
        (d / "folder" / lab).mkdir(parents=True, exist_ok=True)
        (d / "folder" / lab / f"{i:03d}.txt").write_text(t + "\n", encoding="utf-8")
    (d / "rt").mkdir()
    for lab in ("neg", "pos"):
        lines = "\n\n".join(t for t, y in EXAMPLES if y == lab) + "\n"  # blank lines skipped
        (d / "rt" / f"rt-polarity.{lab}").write_text(lines, encoding="utf-8")
    (d / "rt" / "README").write_text("not data")
    return {"csv": dict(path=d / "data.csv"), "tsv": dict(path=d / "data.tsv"),
            "jsonl": dict(path=d / "data.jsonl"), "folder": dict(path=d / "folder"),
            "suffix files": dict(path=d / "rt"),
            "--files": dict(path=None, files=[f"{d}/rt/rt-polarity.neg:neg",
                                              f"{d}/rt/rt-polarity.pos:pos"])}


def one_line(excinfo, *names):
    """The error's message: one line, naming each of ``names``, raised without a chained
    traceback from inside csv/json/codecs."""
    e = excinfo.value
    msg = str(e)
    assert "\n" not in msg, msg
    for name in names:
        assert str(name) in msg, (name, msg)
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__), msg
    return msg


# --------------------------------------------------------------------------- formats

def test_every_format_reads_the_same_examples(tmp_path):
    logs = []
    for name, kw in write_all_formats(tmp_path).items():
        data = read_labeled(**kw, log=logs.append)
        assert isinstance(data, LabeledTexts) and len(data) == len(EXAMPLES)
        assert data.texts == TEXTS, name
        assert data.labels == LABELS, name
    assert any("README" in line for line in logs)  # the file beside rt-polarity.* is named
    assert set(FORMATS) == {"auto", "csv", "tsv", "jsonl", "folder", "files"}


def test_sources_describe_the_data(tmp_path):
    kws = write_all_formats(tmp_path)
    assert read_labeled(**kws["csv"]).source == "data.csv (CSV, 5 examples)"
    assert read_labeled(**kws["jsonl"]).source == "data.jsonl (JSONL, 5 examples)"
    assert read_labeled(**kws["folder"]).source == "folder/ (folder per class, 5 examples)"
    assert read_labeled(**kws["suffix files"], log=lambda s: None).source == \
        "rt-polarity.{neg,pos} (one file per class, 5 examples)"


def test_explicit_format_overrides_the_suffix(tmp_path):
    (tmp_path / "reviews.txt").write_text(table(EXAMPLES), encoding="utf-8", newline="")
    assert read_labeled(tmp_path / "reviews.txt", format="csv").texts == TEXTS


def test_csv_quoted_newlines_crlf_and_bom(tmp_path):
    body = table([("two\r\nlines, quoted", "a"), ("", "b"), ("x", " a ")])
    assert "\r\n" in body
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    data = read_labeled(p)
    assert data.texts == ["two\r\nlines, quoted", "", "x"]  # empty text kept
    assert data.labels == ["a", "b", "a"]  # surrounding whitespace of a label dropped
    j = tmp_path / "bom.jsonl"
    j.write_bytes(b"\xef\xbb\xbf" + b'{"text": "t", "label": "a"}\n')
    assert read_labeled(j).texts == ["t"]


def test_custom_columns_and_json_labels(tmp_path):
    p = tmp_path / "tickets.csv"
    p.write_text(table([("1", "Printer on fire", "3"), ("2", "Cannot log in", "1")],
                       header=("id", "body", "priority")), encoding="utf-8")
    data = read_labeled(p, text_column="body", label_column="priority")
    assert data.texts == ["Printer on fire", "Cannot log in"] and data.labels == ["3", "1"]
    j = tmp_path / "r.ndjson"
    j.write_text('{"review": "a", "stars": 4}\n\n{"review": "b", "stars": 0.25}\n'
                 '{"review": "c", "stars": "5"}\n', encoding="utf-8")
    data = read_labeled(j, text_column="review", label_column="stars")
    assert data.texts == ["a", "b", "c"] and data.labels == ["4", "0.25", "5"]
    unlabelled = read_labeled(j, text_column="review", label_column=None)
    assert unlabelled.labels == [None, None, None]


def test_unsup_and_empty_class_folders_are_skipped_and_logged(tmp_path):
    train = tmp_path / "aclImdb" / "train"
    for sub, n in (("pos", 3), ("neg", 2), ("unsup", 4)):
        (train / sub).mkdir(parents=True)
        for i in range(n):
            (train / sub / f"{i}_7.txt").write_text(f"{sub} review {i}<br />ok")
    (train / "empty").mkdir()
    (train / "pos" / "notes.md").write_text("not an example")
    logs = []
    data = read_labeled(train, log=logs.append)
    assert data.labels == ["neg"] * 2 + ["pos"] * 3
    assert data.texts[0] == "neg review 0<br />ok"
    assert any("unsup" in line and "skip" in line for line in logs)
    assert any("empty" in line and "skip" in line for line in logs)
    assert len(logs) == 2
    with pytest.raises(DataError) as e:  # aclImdb/ itself: the error points one level down
        read_labeled(tmp_path / "aclImdb")
    one_line(e, "aclImdb", "train/", "rt-polarity.pos")


def test_files_split_on_the_last_colon(tmp_path):
    (tmp_path / "a:b.txt").write_text("x\ny\n")
    (tmp_path / "c.txt").write_text("z\n")
    data = read_labeled(None, files=[f"{tmp_path}/a:b.txt:first", f"{tmp_path}/c.txt:second"])
    assert data.texts == ["x", "y", "z"] and data.labels == ["first", "first", "second"]
    with pytest.raises(DataError) as e:
        read_labeled(None, files=[f"{tmp_path}/c.txt"])
    one_line(e, "c.txt", "FILE:LABEL")


# --------------------------------------------------------------------------- one-line errors

def test_non_utf8_names_the_exact_byte_and_latin1_reads_it(tmp_path):
    head = "text,label\nhello,pos\ncaf".encode()
    p = tmp_path / "latin.csv"
    p.write_bytes(head + b"\xe9,neg\n")
    with pytest.raises(DataError) as e:
        read_labeled(p)
    msg = one_line(e, p, "--encoding latin-1")
    assert msg == (f"{p}: not valid utf-8 at byte {len(head)}; pass --encoding latin-1 "
                   f"(or the file's encoding)")
    data = read_labeled(p, encoding="latin-1")
    assert data.texts == ["hello", "café"] and data.labels == ["pos", "neg"]
    # A BOM counts: the offset is into the file, not into the text after the BOM.
    p.write_bytes(b"\xef\xbb\xbf" + head + b"\xe9,neg\n")
    with pytest.raises(DataError, match=f"at byte {3 + len(head)};"):
        read_labeled(p)
    # Excel's "Unicode text" (UTF-16, tab-separated): the hint is utf-16, which then reads it.
    u = tmp_path / "excel.tsv"
    u.write_bytes(table(EXAMPLES, "\t").encode("utf-16"))
    with pytest.raises(DataError) as e:
        read_labeled(u)
    one_line(e, u, "at byte 0;", "--encoding utf-16")
    assert read_labeled(u, encoding="utf-16").texts == TEXTS
    # cp1252's 0x85 ('…') decoded as latin-1 is U+0085, which must not split a line.
    f = tmp_path / "x.pos"
    f.write_bytes(b"one\x85 two\nthree\n")
    (tmp_path / "x.neg").write_bytes(b"four\n")
    assert read_labeled(tmp_path, encoding="latin-1").texts == ["four", "one\x85 two", "three"]
    with pytest.raises(DataError) as e:  # a folder file: the offset within that file
        read_labeled(tmp_path)
    one_line(e, f, "at byte 3;")


def _one_class(d):
    p = d / "one.csv"
    p.write_text("text,label\na,pos\nb,pos\n")
    data = read_labeled(p)
    infer_label_space(data.labels, source=data.source)


def _csv(d, name, body):
    (d / name).write_text(body, encoding="utf-8")
    return read_labeled(d / name)


ERRORS = {  # name: (what the user did, what the one line must name)
    "empty file": (lambda d: _csv(d, "empty.csv", "\n  \n"), ["empty.csv", "empty"]),
    "header only": (lambda d: _csv(d, "h.csv", "text,label\n"), ["h.csv", "no examples"]),
    "one class": (_one_class, ["one.csv", "only one class", "'pos'", "--task regression"]),
    "no label column": (lambda d: _csv(d, "nolabel.csv", "text,stars\na,1\n"),
                        ["nolabel.csv", "'label'", "'text', 'stars'", "--label-column"]),
    "no text column": (lambda d: _csv(d, "notext.csv", "body,label\na,1\n"),
                       ["notext.csv", "'text'", "--text-column"]),
    "empty label": (lambda d: _csv(d, "el.csv", "text,label\na,x\n\nb,\n"),
                    ["el.csv", "line 4", "empty label"]),
    "unquoted comma": (lambda d: _csv(d, "uq.csv", "text,label\nGood, really,pos\n"),
                       ["uq.csv", "line 2", "3 fields", "header has 2"]),
    "unclosed quote": (lambda d: _csv(d, "open.csv", 'text,label\n"Good,pos\nok,neg\n'),
                       ["open.csv", "line 2", "quote"]),
    "bad JSON line": (lambda d: _csv(d, "bad.jsonl", '{"text": "a", "label": 1}\n\n'
                                     '{"text": "b", "label": 2\n'), ["bad.jsonl", "line 3"]),
    "JSON not an object": (lambda d: _csv(d, "arr.jsonl", '["a", 1]\n'),
                           ["arr.jsonl", "line 1", "object"]),
    "JSON missing key": (lambda d: _csv(d, "k.jsonl", '{"text": "a", "y": 1}\n'),
                         ["k.jsonl", "line 1", "'label'", "'y'"]),
    "JSON bool label": (lambda d: _csv(d, "b.jsonl", '{"text": "a", "label": true}\n'),
                        ["b.jsonl", "line 1", "true"]),
    "unknown suffix": (lambda d: _csv(d, "data.txt", "text,label\na,b\n"),
                       ["data.txt", "'.txt'", ".csv", "--format"]),
    "missing path": (lambda d: read_labeled(d / "nowhere.csv"), ["nowhere.csv", "not found"]),
    "missing --files file": (lambda d: read_labeled(None, files=[f"{d}/gone.txt:a"]),
                             ["gone.txt", "not found"]),
    "empty per-class file": (lambda d: (d / "e.pos").write_text("a\n") and
                             (d / "e.neg").write_text("\n\n") and read_labeled(d),
                             ["e.neg", "no examples", "'neg'"]),
    "no layout": (lambda d: (d / "notes.md").write_text("x") and read_labeled(d),
                  ["no data layout", "<label>/*.txt", "--files"]),
    "xlsx named .csv": (lambda d: (d / "x.csv").write_bytes(b"PK\x03\x04\x14\x00\xff\xfe") and
                        read_labeled(d / "x.csv"), ["x.csv", "save it as CSV"]),
    "unknown encoding": (lambda d: (d / "u.csv").write_text("text,label\n") and
                         read_labeled(d / "u.csv", encoding="klingon"), ["u.csv", "klingon"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line_naming_the_file(tmp_path, case):
    make, names = ERRORS[case]
    with pytest.raises(DataError) as e:
        make(tmp_path)
    one_line(e, *names)


# --------------------------------------------------------------------------- labels

def test_label_inference():
    assert infer_label_space(["0", "1", "1"]) == LabelSpace("classification", ["0", "1"])
    stars = infer_label_space([str(i) for i in (5, 1, 2, 3, 4, 10)])
    assert stars.task == "classification" and stars.classes == ["1", "2", "3", "4", "5", "10"]
    reg = infer_label_space(["0.13", "0.5", "0.9", "0.5"])
    assert reg == LabelSpace("regression", []) and reg.num_outputs == 1
    assert infer_label_space([str(i) for i in range(1, 21)]).task == "regression"  # > 10 values
    names = infer_label_space(["pos", "neg", "pos"])
    assert names.classes == ["neg", "pos"] and names.num_outputs == 2
    forced = infer_label_space(["0.5", "0.25"], task="classification")
    assert forced.classes == ["0.25", "0.5"]
    with pytest.raises(DataError) as e:
        infer_label_space(["0.5", "pos"], task="regression", source="r.csv (CSV)")
    one_line(e, "r.csv", "'pos'", "example 2")
    with pytest.raises(DataError) as e:  # numbers with a typo: not silently 4 classes
        infer_label_space(["0.5", "0.75", "0.1", "n/a"], source="s.csv")
    one_line(e, "s.csv", "'n/a'", "--task classification")
    with pytest.raises(DataError) as e:  # the text column taken for the label
        infer_label_space([f"review {i}" for i in range(100)], source="t.csv")
    one_line(e, "t.csv", "--label-column")


def test_label_space_encode_decode_and_round_trip():
    space = infer_label_space(["b", "a", "c", "a"])
    y = space.encode(["c", "a"], source="x")
    assert y.dtype == torch.long and y.tolist() == [2, 0]
    assert space.decode(y[0]) == "c" and space.decode(1) == "b"
    assert LabelSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    with pytest.raises(DataError) as e:
        space.encode(["a", "zebra"], source="test.csv (CSV)")
    one_line(e, "test.csv", "'zebra'", "example 2")
    reg = LabelSpace("regression")
    v = reg.encode(["0.5", "2"])
    assert v.dtype == torch.float32 and v.tolist() == [0.5, 2.0] and reg.decode(v[1]) == 2.0
    with pytest.raises(DataError) as e:
        reg.encode(["1", "nan"], source="v.jsonl")
    one_line(e, "v.jsonl", "'nan'")


# --------------------------------------------------------------------------- split

LABELS_SPLIT = ["a"] * 50 + ["b"] * 30 + ["c"] * 7 + ["d"] * 3 + ["e"] * 1
LABELS_SPLIT = [LABELS_SPLIT[(i * 37) % len(LABELS_SPLIT)] for i in range(len(LABELS_SPLIT))]


def test_stratified_split_is_seeded_disjoint_covering_and_proportional():
    s = stratified_split(LABELS_SPLIT, 0.1, 0.2, seed=3)
    assert s == stratified_split(LABELS_SPLIT, 0.1, 0.2, seed=3)
    assert s != stratified_split(LABELS_SPLIT, 0.1, 0.2, seed=4)
    parts = [s["train"], s["valid"], s["test"]]
    assert all(p == sorted(p) for p in parts)
    assert sorted(i for p in parts for i in p) == list(range(len(LABELS_SPLIT)))
    for c in "abcde":
        n = LABELS_SPLIT.count(c)
        got = {k: sum(LABELS_SPLIT[i] == c for i in v) for k, v in s.items()}
        assert abs(got["valid"] - 0.1 * n) <= 1 and abs(got["test"] - 0.2 * n) <= 1, (c, got)
        if n >= 3:
            assert min(got.values()) >= 1, (c, got)
        assert got["train"] >= 1
    none = stratified_split(LABELS_SPLIT, 0.0, 0.1)
    assert none["valid"] == [] and len(none["test"]) > 0
    for bad in ((1.0, 0.0), (-0.1, 0.1), (0.5, 0.5)):
        with pytest.raises(ValueError):
            stratified_split(LABELS_SPLIT, *bad)


def test_stratified_split_regression_bins_cover_the_range():
    values = [f"{(i * 7919) % 200 / 200:.3f}" for i in range(200)]  # k / 200 shuffled
    s = stratified_split(values, 0.1, 0.1, seed=0, task="regression")
    assert sorted(s["train"] + s["valid"] + s["test"]) == list(range(200))
    assert len(s["valid"]) == len(s["test"]) == 20
    for part in ("valid", "test"):  # two from each decile
        deciles = sorted(round(float(values[i]) * 200) // 20 for i in s[part])
        assert deciles == sorted(list(range(10)) * 2), (part, deciles)
    with pytest.raises(DataError):
        stratified_split(["0.5", "x"], task="regression")


def test_fingerprint_and_split_file_round_trip(tmp_path):
    data = LabeledTexts(list(TEXTS), list(LABELS), "x")
    fp = fingerprint(data)
    assert fp == fingerprint(LabeledTexts(list(TEXTS), list(LABELS), "another source"))
    assert fp != fingerprint(LabeledTexts(TEXTS[:-1] + ["changed"], list(LABELS), "x"))
    assert fp != fingerprint(LabeledTexts(list(TEXTS), LABELS[:-1] + ["neg"], "x"))
    assert fp != fingerprint(LabeledTexts(["ab", "c"], ["x", "x"], "")) and \
        fingerprint(LabeledTexts(["ab", "c"], ["x", "x"], "")) != \
        fingerprint(LabeledTexts(["a", "bc"], ["x", "x"], ""))
    split = stratified_split(LABELS, 0.2, 0.2)
    path = tmp_path / "split.json"
    save_split(path, split, fp, {"seed": 0, "source": data.source})
    assert load_split(path, fp) == split == load_split(path)
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]  # no temporary left
    changed = fingerprint(data.subset([1, 0, 2, 3, 4]))
    with pytest.raises(DataError) as e:
        load_split(path, changed)
    one_line(e, path, "the data changed since the run was split")
    path.write_text(path.read_text()[:30])
    with pytest.raises(DataError) as e:
        load_split(path, fp)
    one_line(e, path, "damaged")
    with pytest.raises(DataError) as e:
        load_split(tmp_path / "gone.json")
    one_line(e, "gone.json", "not found")


# --------------------------------------------------------------------------- encoder

def test_word_tokens_are_imdb_tokens_on_ascii_and_keep_non_ascii_words():
    for text in ("I didn't like it<br />at ALL... 10/10, rock'n'roll_fan!", "  ", "A-b c'd'e"):
        assert TextEncoder().tokenize(text) == tokenize(text)
    assert TextEncoder().tokenize("Naïve, für") == ["naïve", ",", "für"]
    assert TextEncoder(lower=False).tokenize("Don't GO") == ["Don't", "GO"]
    assert TextEncoder(level="char").tokenize("Ab c") == ["a", "b", " ", "c"]
    assert TextEncoder(level="char", lower=False).tokenize("Ab") == ["A", "b"]


def test_encoder_fits_on_train_truncates_and_round_trips(tmp_path):
    enc = TextEncoder(max_len=3, max_vocab=None).fit(["the cat sat", "the dog"])
    assert enc.vocab.itos[:3] == ["<pad>", "<unk>", "the"]
    out = enc.encode(["the zebra sat on the mat", ""], torch.tensor([1, 0]))
    ids = out.tokens.tolist()
    stoi = enc.vocab.stoi
    assert ids[0] == [stoi["the"], 1, stoi["sat"]]  # unseen in train -> <unk> = 1
    assert ids[1] == [1, 0, 0] and out.lengths.tolist() == [3, 1]  # empty text: one <unk>
    assert out.targets.tolist() == [1, 0]
    for keep, kept in (("first", ["a", "b"]), ("last", ["b", "c"])):
        e = TextEncoder(max_len=2, keep=keep).fit(["a b c"])
        assert e.vocab.decode(e.encode(["a b c"]).tokens[0]) == kept
    short = TextEncoder(max_len=50).fit(["a b"]).encode(["a", "a b"])
    assert short.tokens.shape == (2, 2)  # padding no row uses is trimmed
    small = TextEncoder(min_count=2, max_vocab=3).fit(["x x y y y z"])
    assert small.vocab.itos == ["<pad>", "<unk>", "y"]

    char = TextEncoder(level="char", max_len=10).fit(["abc"])
    texts = ["the cat", "a zebra sat", "Cab"]
    for e in (enc, char):
        d = e.to_dict()
        json.dumps(d)  # JSON-able
        torch.save({"encoder": d}, tmp_path / "e.pt")
        back = torch.load(tmp_path / "e.pt", weights_only=True)["encoder"]
        again = TextEncoder.from_dict(back)
        assert again.to_dict() == d
        a, b = e.encode(texts), again.encode(texts)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths)
    with pytest.raises(RuntimeError, match="fit"):
        TextEncoder().encode(["x"])
    with pytest.raises(ValueError):
        TextEncoder(level="bytes")


def test_tsv_made_with_paste_keeps_its_quotes_and_lines(tmp_path):
    """A review that starts with a quoted title, as in Pang & Lee's scale data: CSV-style
    parsing would drop the quotes or merge lines; the file is read one example per line."""
    f = tmp_path / "ratings.tsv"
    f.write_text('label\ttext\n0.3\t" gun shy " puts in a lot of effort\n0.5\tplain\n'
                 '0.7\t" open your eyes\n0.9\tend "\n', encoding="utf-8")
    logged = []
    data = read_labeled(f, log=logged.append)
    assert data.texts == ['" gun shy " puts in a lot of effort', "plain", '" open your eyes',
                          'end "']
    assert data.labels == ["0.3", "0.5", "0.7", "0.9"]
    assert len(logged) == 1 and "read without quoting" in logged[0]


def test_csv_with_a_stray_quote_is_one_line_not_a_merged_row(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('text,label\n" gun shy " is fine,pos\nok,neg\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d.csv, line 2: cannot parse the row") as e:
        read_labeled(f)
    assert "\n" not in str(e.value)
