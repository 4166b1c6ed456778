"""``crossentropy score --engine dask`` and ``crossentropy.dask.score`` on a local Dask cluster of 2 worker processes.

The oracle is the single-process command (itself checked against scikit-learn in
``test_score.py``): the same figures to float64 rounding, the same error messages (file, row,
column) and exit code 2 for bad partitions. One cluster serves the module; the command reaches
it with ``--scheduler``, and one test lets the command start its own (``--workers 2``).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="crossentropy score reads files with pyarrow (the cli extra)")
distributed = pytest.importorskip("distributed", reason="the dask extra: pip install 'crossentropy[dask]'")
dd = pytest.importorskip("dask.dataframe", reason="the dask extra: pip install 'crossentropy[dask]'")
import pandas as pd  # noqa: E402
import pyarrow.csv as pa_csv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import crossentropy.dask as ce_dask  # noqa: E402
from crossentropy.cli._sources import open_inputs  # noqa: E402
from crossentropy.cli.score import Selection, score_source  # noqa: E402
from tests._support import assert_one_line, assert_same_score_figures, run_score, score_figures  # noqa: E402

CLASSES = np.array(["cat", "dog", "owl"])


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=40
    )
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


def table(n: int, seed: int, *, logits: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, 3)) * 2
    labels = rng.integers(0, 3, n)
    scores[np.arange(n), labels] += 1.5
    values = scores if logits else np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    return pa.table(
        {"label": CLASSES[labels], **{name: values[:, k] for k, name in enumerate(CLASSES)}, "w": rng.uniform(0, 2, n)}
    )


def write(path: Path, data: pa.Table, row_group_size: int = 500) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        pa_csv.write_csv(data, path)
    else:
        pq.write_table(data, path, row_group_size=row_group_size)
    return path


@pytest.fixture(scope="module")
def data_set(tmp_path_factory):
    """A directory of 2 CSV and 3 Parquet files (one of 6 row groups)."""
    folder = tmp_path_factory.mktemp("dask") / "preds"
    tables = [table(800 + 37 * k, k) for k in range(5)]
    for k, data in enumerate(tables):
        write(folder / (f"part-{k}.csv" if k % 2 else f"part-{k}.parquet"), data, row_group_size=150)
    return folder


def assert_result_is_report(result, report: dict) -> None:
    """A :class:`ScoreResult` of ``crossentropy.dask.score`` against the command's JSON figures."""
    assert result.rows == report["rows"]
    assert list(result.classes) == report["classes"]
    assert [entry.label for entry in result.per_class] == report["classes"]
    for mine, theirs in (
        (result.log_loss, report["log_loss_nats"]),
        (result.accuracy, report["accuracy"]),
        (result.brier_score, report["brier_score"]),
        (result.expected_calibration_error, report["expected_calibration_error"]),
        (result.weight, report["weight"]),
    ):
        assert math.isclose(mine, theirs, rel_tol=1e-12, abs_tol=1e-15)


# ---------------------------------------------------------------------------------------------
# The command


def test_the_command_on_dask_equals_the_local_engine(capsys, client, data_set):
    options = ["--target", "label", "--probs", "cat,dog,owl", "--sample-weight", "w"]
    local = score_figures(capsys, data_set, *options)
    remote = score_figures(capsys, data_set, *options, "--engine", "dask", "--scheduler", client.scheduler.address)
    assert_same_score_figures(remote, local)
    assert remote["source"] == local["source"]


def test_the_command_starts_its_own_cluster_of_two_workers(capsys, data_set):
    options = ["--target", "label", "--probs", "cat,dog,owl"]
    local = score_figures(capsys, data_set / "part-1.csv", data_set / "part-2.parquet", *options)
    remote = score_figures(
        capsys,
        data_set / "part-1.csv",
        data_set / "part-2.parquet",
        *options,
        "--engine",
        "dask",
        "--workers",
        "2",
        "--progress",
    )
    assert_same_score_figures(remote, local)


@pytest.mark.parametrize(
    ("name", "row", "value", "fragments"),
    [
        ("part-3.csv", 700, "x", ("part-3.csv: row 701 (line 702), column 'dog'", "'x' is not a number")),
        ("part-4.parquet", 620, 1.5, ("part-4.parquet: row 621, column 'dog'", "not a probability in [0, 1]")),
    ],
    ids=["csv-cell", "parquet-probability"],
)
def test_a_bad_partition_gives_the_local_engine_s_error_and_exit_code_2(
    capsys, client, tmp_path, data_set, name, row, value, fragments
):
    folder = tmp_path / "bad"
    for path in sorted(data_set.iterdir()):
        data = pq.read_table(path) if path.suffix == ".parquet" else pa_csv.read_csv(path)
        if path.name == name:
            dog = data.column("dog").to_pylist()
            dog[row] = value
            data = data.set_column(2, "dog", pa.array([str(v) for v in dog] if path.suffix == ".csv" else dog))
        write(folder / path.name, data, row_group_size=150)
    options = ["--target", "label", "--probs", "cat,dog,owl"]
    local = assert_one_line(*run_score(capsys, folder, *options)[::2], *fragments)
    remote = assert_one_line(
        *run_score(capsys, folder, *options, "--engine", "dask", "--scheduler", client.scheduler.address)[::2],
        *fragments,
    )
    assert remote == local


def test_a_third_binary_label_in_a_later_partition_is_the_local_error(capsys, client, tmp_path):
    rng = np.random.default_rng(5)
    for k, negative in enumerate(["no", "no", "nope"]):
        p = rng.uniform(0.05, 0.95, 200)
        clicked = np.where(rng.uniform(size=200) < p, "yes", negative)
        write(tmp_path / "clicks" / f"{k}.csv", pa.table({"clicked": clicked, "yes": p}))
    options = ["--target", "clicked", "--probs", "yes"]
    local = assert_one_line(
        *run_score(capsys, tmp_path / "clicks", *options)[::2], "2.csv: row", "'nope' is a third label"
    )
    remote = assert_one_line(
        *run_score(capsys, tmp_path / "clicks", *options, "--engine", "dask", "--scheduler", client.scheduler.address)[
            ::2
        ]
    )
    assert remote == local


def test_logits_fit_the_same_temperature_and_a_sample_is_merged_across_partitions(capsys, client, tmp_path):
    for k in range(3):
        write(tmp_path / "logits" / f"{k}.parquet", table(1000, 10 + k, logits=True).drop_columns(["w"]))
    options = ["--target", "label", "--logits", "cat,dog,owl"]
    dask_options = ["--engine", "dask", "--scheduler", client.scheduler.address]
    local = score_figures(capsys, tmp_path / "logits", *options)
    remote = score_figures(capsys, tmp_path / "logits", *options, *dask_options)
    assert_same_score_figures(remote, local)
    assert local["temperature"]["rows"] == remote["temperature"]["rows"] == 3000
    assert math.isclose(remote["temperature"]["value"], local["temperature"]["value"], rel_tol=1e-9)
    sampled = score_figures(capsys, tmp_path / "logits", *options, *dask_options, "--temperature-rows", "500")
    assert sampled["temperature"]["rows"] == 500
    assert sampled["temperature"]["sampled"]
    assert 0.5 * local["temperature"]["value"] < sampled["temperature"]["value"] < 2 * local["temperature"]["value"]


def test_hive_partition_columns_reach_the_workers(capsys, client, tmp_path):
    import pyarrow.dataset as pa_dataset

    pa_dataset.write_dataset(
        table(900, 21), tmp_path / "hive", format="parquet", partitioning=["label"], partitioning_flavor="hive"
    )
    options = ["--target", "label", "--probs", "cat,dog,owl", "--sample-weight", "w"]
    local = score_figures(capsys, tmp_path / "hive", *options)
    remote = score_figures(
        capsys, tmp_path / "hive", *options, "--engine", "dask", "--scheduler", client.scheduler.address
    )
    assert_same_score_figures(remote, local)


def test_engine_options_need_the_dask_engine(capsys, data_set):
    assert_one_line(*run_score(capsys, data_set, "--target", "label", "--workers", "2")[::2], "add --engine dask")
    code, _, err = run_score(
        capsys, data_set, "--target", "label", "--engine", "dask", "--workers", "2", "--scheduler", "x"
    )
    assert_one_line(code, err, "either --workers N")


def test_an_unreachable_scheduler_is_a_one_line_error(capsys, data_set, monkeypatch):
    monkeypatch.setattr(ce_dask, "_CONNECT_TIMEOUT", "1s")
    code, _, err = run_score(
        capsys, data_set, "--target", "label", "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9"
    )
    assert_one_line(code, err, "--scheduler tcp://127.0.0.1:9: cannot connect")


# ---------------------------------------------------------------------------------------------
# crossentropy.dask.score


@pytest.fixture(scope="module")
def local_report(data_set):
    source = open_inputs([data_set])
    selection = Selection(predictions=tuple(CLASSES), classes=tuple(CLASSES), target="label", sample_weight="w")
    return score_source(source, selection).as_dict()


def test_score_on_a_directory_a_glob_and_a_list(client, data_set, local_report):
    options = {"target": "label", "probs": ["cat", "dog", "owl"], "sample_weight": "w", "client": client}
    assert_result_is_report(ce_dask.score(data_set, **options), local_report)
    assert_result_is_report(ce_dask.score(str(data_set / "part-*"), **options), local_report)
    assert_result_is_report(ce_dask.score(sorted(data_set.iterdir()), **options), local_report)


def test_score_cuts_a_parquet_file_into_runs_of_row_groups(client, tmp_path, monkeypatch):
    path = write(tmp_path / "big.parquet", table(3000, 3), row_group_size=250)
    selection = Selection(predictions=tuple(CLASSES), classes=tuple(CLASSES), target="label")
    local = score_source(open_inputs([path]), selection).as_dict()
    monkeypatch.setattr(ce_dask, "_PARTITION_BYTES", 3 * pq.ParquetFile(path).metadata.row_group(0).total_byte_size)
    assert_result_is_report(ce_dask.score(path, target="label", probs="cat,dog,owl", client=client), local)
    owl = pq.read_table(path).column("owl").to_numpy().copy()
    owl[2100] = np.nan
    pq.write_table(pq.read_table(path).set_column(3, "owl", pa.array(owl)), path, row_group_size=250)
    with pytest.raises(ValueError, match=r"big\.parquet: row 2101, column 'owl': the prediction nan is NaN"):
        ce_dask.score(path, target="label", probs="cat,dog,owl", client=client)


def test_score_on_a_dask_dataframe_stays_on_the_workers(client, data_set, local_report):
    frame = dd.read_parquet(sorted(str(p) for p in data_set.glob("*.parquet")))
    frame = dd.concat([frame, dd.read_csv(sorted(str(p) for p in data_set.glob("*.csv")))])
    result = ce_dask.score(frame, target="label", probs="cat,dog,owl", sample_weight="w", client=client, base=2)
    # The rows in another order than the directory's: the same sums.
    assert result.rows == local_report["rows"]
    assert math.isclose(result.log_loss * math.log(2), local_report["log_loss_nats"], rel_tol=1e-12)
    assert math.isclose(result.brier_score, local_report["brier_score"], rel_tol=1e-12)
    assert result.classes == ("cat", "dog", "owl")


def test_a_dataframe_s_bad_row_is_named_by_its_partition(client):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(2), 60)
    pandas = pd.DataFrame({"y": rng.integers(0, 2, 60), "0": probs[:, 0], "1": probs[:, 1]})
    pandas.loc[47, "1"] = -0.25
    frame = dd.from_pandas(pandas, npartitions=3)
    with pytest.raises(ValueError, match=r"partition 3: row 8, column '1': the prediction -0\.25 is not a probability"):
        ce_dask.score(frame, target="y", client=client)


def test_score_without_a_distributed_client_uses_dask_s_scheduler(data_set, local_report):
    result = ce_dask.score(data_set, target="label", probs="cat,dog,owl", sample_weight="w")
    assert_result_is_report(result, local_report)


def test_importing_crossentropy_does_not_import_dask_and_a_missing_dask_says_how_to_install(data_set):
    script = (
        "import sys\n"
        "import crossentropy, crossentropy.cli, crossentropy.dask\n"
        "assert 'dask' not in sys.modules and 'distributed' not in sys.modules\n"
        "sys.modules['distributed'] = None\n"
        "try:\n"
        f"    crossentropy.dask.score({str(data_set)!r}, target='label')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
        "from crossentropy.cli import main\n"
        f"sys.exit(main(['score', {str(data_set)!r}, '--target', 'label', '--engine', 'dask']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60)
    assert "pip install 'crossentropy[dask]'" in result.stdout, result.stderr
    assert_one_line(result.returncode, result.stderr, "--engine dask: ", "pip install 'crossentropy[dask]'")
