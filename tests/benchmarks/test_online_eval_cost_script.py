"""benchmarks/online_eval_cost.py at a toy size: the ratio it reports is the log's, and the limit sets the exit status."""
import json

import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/online_eval_cost.py")


TOY = ["--method", "byol", "--epochs", "2", "--num-train", "16", "--image-size", "16", "--arch", "convnet-small",
       "--batch-size", "8", "--eval-bank", "20", "--eval-size", "12"]   # a bank of all 16 training faces


@pytest.mark.slow
def test_toy_run_rows_json_and_limit(script, tmp_path, capsys):
    out = tmp_path / "cost.json"
    assert script.main(TOY + ["--limit", "1e-9", "--json", str(out)]) == 1      # nothing is that cheap
    assert "MISSES the 1e-07 % limit (byol)" in capsys.readouterr().out
    record = json.load(open(out))
    (row,) = record["rows"]
    # 16 faces in batches of 8: 2 steps an epoch, so an evaluation at steps 2 and 4.
    assert row["steps"] == 4 and row["evaluations"] == 2 and [s for s, _ in row["knn_acc"]] == [2, 4]
    assert (row["eval_bank"], row["eval_size"]) == (16, 12) and record["recipe"]["eval_size"] == 12
    assert row["ratio"] == pytest.approx(row["eval_s"] / row["train_s"]) and 0 < row["setup_s"] < row["eval_s"]
    assert script.main(TOY + ["--limit", "1000"]) == 0
    assert "meets the 100000 % limit" in capsys.readouterr().out
