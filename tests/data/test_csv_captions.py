"""CSV/TSV (filepath, title) reader with open_clip's defaults."""

from __future__ import annotations

import pytest

from polyfuse.data import CsvCaptionsReader, DataFileError
from polyfuse.data.errors import BadSample

from .media import decode_all, write_image


def test_tsv_with_open_clip_default_columns(tmp_path, pipelines):
    write_image(tmp_path / "images" / "a.jpg", seed=1)
    write_image(tmp_path / "images" / "b.png", seed=2)
    absolute = write_image(tmp_path / "elsewhere" / "c.webp", seed=3)
    (tmp_path / "train.tsv").write_text(
        "filepath\ttitle\n"
        "images/a.jpg\tA red car.\n"
        "images/b.png\tNA\n"              # a caption that pandas would turn into NaN stays text
        f"{absolute}\ttwo dogs\n"
        "images/a.jpg\textra\tfield\n"    # malformed: 3 fields
        "\tno image\n"                    # no path
        "images/b.png\t\n")               # empty caption: bad when decoded
    reader = CsvCaptionsReader(tmp_path / "train.tsv")
    assert len(reader) == 4 and reader.targets == ()
    assert [b.source.rsplit(" ", 1)[-1] for b in reader.bad_records] == ["5", "6"]
    assert "malformed row" in reader.bad_records[0].reason
    assert reader[0]["image"] == str(tmp_path / "images" / "a.jpg") and reader[1]["text"] == "NA"
    assert reader[2]["image"] == str(absolute)
    samples = decode_all(reader, pipelines)
    assert all(not isinstance(s, BadSample) for s in samples[:3])
    assert isinstance(samples[3], BadSample) and "train.tsv, line 7" in samples[3].source


def test_csv_with_comma_separator_labels_and_image_root(tmp_path):
    write_image(tmp_path / "imgs" / "x.jpg")
    (tmp_path / "meta.csv").write_text('path,caption,label\nx.jpg,"a dog, with a cat",3\nx.jpg,cat,notanint\n')
    reader = CsvCaptionsReader(tmp_path / "meta.csv", image_key="path", caption_key="caption", separator=",",
                               image_root=tmp_path / "imgs", label_key="label")
    assert reader.targets == ("label",) and len(reader) == 1
    assert reader[0]["text"] == "a dog, with a cat" and reader[0]["label"] == 3
    assert "not an integer" in reader.bad_records[0].reason


def test_missing_column_names_the_file_and_the_header(tmp_path):
    (tmp_path / "train.csv").write_text("filepath,title\nx.jpg,cat\n")
    with pytest.raises(DataFileError, match=r"train.csv: no column\(s\) \['filepath', 'title'\]; the header has \['filepath,title'\]"):
        CsvCaptionsReader(tmp_path / "train.csv")
