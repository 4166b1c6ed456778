"""``crossentropy score`` on several files at once: a directory, a glob, a list of paths, a Parquet data set.

The figures of a data set of many files equal those of one file holding the concatenation of
their rows (to float64 rounding: the sums are added in another order); errors name the file
that holds the bad cell and the row and line within it; every file must have the same columns.
Most cases run the command in this process (``main([...])``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="crossentropy score reads files with pyarrow (the cli extra)")
import pyarrow.csv as pa_csv  # noqa: E402
import pyarrow.dataset as pa_dataset  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from crossentropy.cli._sources import InputError, MultiSource, expand_inputs, open_inputs  # noqa: E402
from tests._support import assert_one_line, assert_same_score_figures, run_score, score_figures  # noqa: E402

CLASSES = np.array(["cat", "dog", "owl"])


def table(n: int, seed: int, *, logits: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, 3)) * 2
    labels = rng.integers(0, 3, n)
    scores[np.arange(n), labels] += 1.5
    values = scores if logits else np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    columns = {"label": CLASSES[labels], **{name: values[:, k] for k, name in enumerate(CLASSES)}}
    columns["w"] = rng.uniform(0.5, 2.0, n)
    return pa.table(columns)


def write(path: Path, data: pa.Table) -> Path:
    """``data`` as CSV, Parquet (row groups of 70 rows) or ``.npz`` (one member per column), by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        pa_csv.write_csv(data, path)
    elif path.suffix == ".parquet":
        pq.write_table(data, path, row_group_size=70)
    else:
        np.savez(path, **{name: np.asarray(data.column(name).to_pylist()) for name in data.column_names})
    return path


@pytest.fixture
def data_set(tmp_path):
    """Three files of different formats and sizes, and one Parquet file of all their rows in order."""
    tables = [table(120, 1), table(257, 2), table(33, 3)]
    folder = tmp_path / "preds"
    files = [
        write(folder / "a.csv", tables[0]),
        write(folder / "b.parquet", tables[1]),
        write(folder / "c.npz", tables[2]),
    ]
    whole = write(tmp_path / "whole.parquet", pa.concat_tables(tables))
    return folder, files, whole


# ---------------------------------------------------------------------------------------------
# Figures


@pytest.mark.parametrize("how", ["directory", "glob", "paths"])
def test_a_data_set_of_files_scores_as_their_concatenation(capsys, data_set, how):
    folder, files, whole = data_set
    inputs = {"directory": [folder], "glob": [folder / "*.*"], "paths": files}[how]
    options = ["--target", "label", "--probs", "cat,dog,owl", "--sample-weight", "w"]
    got = score_figures(capsys, *inputs, *options)
    assert_same_score_figures(got, score_figures(capsys, whole, *options))
    assert got["rows"] == 120 + 257 + 33
    assert got["source"]["format"] == "CSV, Parquet, npz"


def test_csv_files_take_the_fast_path_each_and_still_add_up(capsys, tmp_path):
    tables = [table(5000, seed) for seed in range(4)]
    paths = [write(tmp_path / "parts" / f"part-{k:05d}.csv", t) for k, t in enumerate(tables)]
    whole = write(tmp_path / "whole.csv", pa.concat_tables(tables))
    options = ["--target", "label", "--probs", "cat,dog,owl"]
    got = score_figures(capsys, tmp_path / "parts" / "part-*.csv", *options)
    assert_same_score_figures(got, score_figures(capsys, whole, *options))
    assert [str(p) for p in paths] == [str(p.path) for p in expand_inputs([tmp_path / "parts"])]


def test_hive_partitioned_parquet_data_set_with_spark_markers(capsys, tmp_path):
    """A directory of ``label=cat/part-0.parquet`` files: the partition key is a column (here the target)."""
    data = table(400, 7)
    root = tmp_path / "dataset"
    pa_dataset.write_dataset(
        data, root, format="parquet", partitioning=["label"], partitioning_flavor="hive", max_rows_per_group=64
    )
    (root / "_SUCCESS").write_text("")
    (root / "label=cat" / ".part-0.parquet.crc").write_bytes(b"\0\1")
    (root / "_temporary").mkdir()
    (root / "_temporary" / "junk.csv").write_text("not,a,prediction\n")
    source = open_inputs([root])
    assert isinstance(source, MultiSource)
    assert sorted(source.columns) == ["cat", "dog", "label", "owl", "w"]
    assert len(source.parts) == 3
    options = ["--target", "label", "--probs", "cat,dog,owl", "--sample-weight", "w"]
    got = score_figures(capsys, root, *options)
    # The same rows, grouped by label in the order of the directories (cat, dog, owl).
    order = np.argsort(data.column("label").to_numpy(), kind="stable")
    expected = score_figures(capsys, write(tmp_path / "sorted.parquet", data.take(order)), *options)
    assert_same_score_figures(got, expected)


def test_a_partition_value_is_read_as_a_number_where_a_number_is_asked(capsys, tmp_path):
    data = table(50, 8)
    for weight in ("0.5", "2"):
        write(tmp_path / "ds" / f"w={weight}" / "part.parquet", data.drop_columns(["w"]))
    got = score_figures(capsys, tmp_path / "ds", "--target", "label", "--probs", "cat,dog,owl", "--sample-weight", "w")
    assert got["weight"] == pytest.approx(50 * 2.5)
    single = score_figures(capsys, write(tmp_path / "one.parquet", data), "--target", "label", "--probs", "cat,dog,owl")
    assert got["log_loss_nats"] == pytest.approx(single["log_loss_nats"], rel=1e-12)


def test_binary_labels_learn_the_negative_class_across_files(capsys, tmp_path):
    rng = np.random.default_rng(3)
    for k in range(3):
        p = rng.uniform(0.01, 0.99, 40)
        clicked = np.where(rng.uniform(size=40) < p, "yes", "no")
        write(tmp_path / "clicks" / f"{k}.csv", pa.table({"clicked": clicked, "yes": p}))
    got = score_figures(capsys, tmp_path / "clicks", "--target", "clicked", "--probs", "yes")
    assert got["classes"] == ["no", "yes"]
    assert got["rows"] == 120


# ---------------------------------------------------------------------------------------------
# Errors: the file, and the row and column within it


def test_a_bad_cell_is_named_by_its_file_row_and_line(capsys, data_set):
    folder, _, _ = data_set
    (folder / "d.csv").write_text("label,cat,dog,owl,w\ncat,0.2,0.3,0.5,1\n\ndog,0.2,x,0.5,1\n")
    code, _, err = run_score(capsys, folder, "--target", "label", "--probs", "cat,dog,owl")
    assert_one_line(code, err, f"{folder / 'd.csv'}: row 2 (line 4), column 'dog'", "'x' is not a number")


def test_a_bad_probability_in_a_later_parquet_row_group_names_the_row_in_its_file(capsys, data_set):
    folder, _, _ = data_set
    bad = table(200, 9)
    owl = bad.column("owl").to_numpy().copy()
    owl[150] = 1.5
    write(folder / "e.parquet", bad.set_column(3, "owl", pa.array(owl)))
    code, _, err = run_score(capsys, folder, "--target", "label", "--probs", "cat,dog,owl")
    assert_one_line(code, err, f"{folder / 'e.parquet'}: row 151, column 'owl'", "not a probability")


def test_files_with_other_columns_are_refused_by_name(capsys, data_set):
    folder, _, _ = data_set
    write(folder / "f.csv", table(10, 4).rename_columns(["label", "cat", "dog", "bird", "w"]))
    code, _, err = run_score(capsys, folder, "--target", "label")
    assert_one_line(
        code,
        err,
        f"{folder / 'f.csv'}:",
        "must have the columns of the first",
        f"{folder / 'a.csv'}",
        "lacks column 'owl'",
        "'bird'",
    )


@pytest.mark.parametrize(
    ("inputs", "fragments"),
    [
        (["nothing-*.csv"], ("nothing-*.csv: no file matches",)),
        (["empty"], ("empty: the directory holds no", "--format")),
        (["a.csv", "a.csv"], ("a.csv: is named twice",)),
        (["a.csv", "missing.csv"], ("missing.csv: no such file",)),
        (["a.csv", "notes.md"], ("notes.md: unknown file type '.md'",)),
    ],
    ids=["glob-matches-nothing", "empty-directory", "twice", "missing", "unknown-suffix"],
)
def test_inputs_that_name_no_data(capsys, tmp_path, monkeypatch, inputs, fragments):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.csv", table(5, 0))
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.md").write_text("# notes\n")
    code, _, err = run_score(capsys, *inputs, "--target", "label")
    assert_one_line(code, err, *fragments)


def test_format_reads_every_file_of_a_directory_whatever_its_name(capsys, tmp_path):
    """Hive and Spark write files without a suffix (``000000_0``); ``--format`` reads them."""
    tables = [table(30, 5), table(40, 6)]
    (tmp_path / "out").mkdir()
    for k, data in enumerate(tables):
        pq.write_table(data, tmp_path / "out" / f"00000{k}_0")
    code, _, err = run_score(capsys, tmp_path / "out", "--target", "label")
    assert_one_line(code, err, "holds no .csv", "--format")
    options = ["--target", "label", "--probs", "cat,dog,owl"]
    got = score_figures(capsys, tmp_path / "out", *options, "--format", "parquet")
    assert_same_score_figures(
        got, score_figures(capsys, write(tmp_path / "whole.parquet", pa.concat_tables(tables)), *options)
    )


def test_a_normalization_warning_names_the_file_of_its_first_row(capsys, tmp_path):
    write(tmp_path / "ok" / "a.csv", table(10, 0))
    (tmp_path / "ok" / "b.csv").write_text("label,cat,dog,owl,w\ncat,0.2,0.3,0.5,1\ndog,0.2,0.3,0.4,1\n")
    code, _, err = run_score(capsys, tmp_path / "ok", "--target", "label", "--probs", "cat,dog,owl")
    assert code == 0
    assert "1 of 12 rows of predicted probabilities do not sum to 1" in err
    assert f"first: {tmp_path / 'ok' / 'b.csv'}: row 2" in err


def test_every_file_empty_is_an_error_naming_the_data_set(capsys, tmp_path):
    for name in ("a.csv", "b.csv"):
        (tmp_path / "d").mkdir(exist_ok=True)
        (tmp_path / "d" / name).write_text("label,cat,dog\n")
    code, _, err = run_score(capsys, tmp_path / "d", "--target", "label")
    assert_one_line(code, err, f"{tmp_path / 'd'}: has a header but no rows")


def test_open_inputs_keeps_one_file_a_plain_source(tmp_path):
    path = write(tmp_path / "a.csv", table(5, 0))
    assert not isinstance(open_inputs([path]), MultiSource)
    assert isinstance(open_inputs([tmp_path]), MultiSource)
    with pytest.raises(InputError, match="no such file"):
        open_inputs([tmp_path / "b.csv"])
