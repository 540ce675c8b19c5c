"""Every logged value is the mean over ranks, `time` and `data_time` included, and a loss put as a float is
checked where every rank takes part: a NaN on one rank stops every rank at the same point."""

from __future__ import annotations

from test_launch import configs, lazytrain, metrics  # noqa: F401  (configs: a fixture)


def test_data_time_is_the_mean_over_ranks_so_a_slow_rank_shows(tmp_path, configs):  # noqa: F811
    (configs / "slow.py").write_text(
        "from .toy import *\nfrom lazytrain.config import L\nfrom dist_helpers import SlowOnRank1\n"
        "dataloader.train.dataset = L(SlowOnRank1)(dataset=dataloader.train.dataset, seconds=0.01)\n"
    )
    out = tmp_path / "run"
    r = lazytrain("train", configs / "slow.py", "--num-procs", 2, "train.max_iter=4", "train.log_period=2",
                  "train.eval_period=0", f"--output-dir={out}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [row for row in metrics(out) if "data_time" in row]
    # rank 1 sleeps 32 x 0.01 s per batch, rank 0 loads in about a millisecond: the mean is over 0.16 s
    assert rows and all(row["data_time"] > 0.1 for row in rows), rows


def test_a_nan_float_loss_on_one_rank_stops_every_rank_naming_the_iteration(tmp_path, configs):  # noqa: F811
    (configs / "nan.py").write_text(
        "from .toy import *\nfrom lazytrain.config import L\nfrom dist_helpers import PutNonFiniteFloatAt\n"
        "hooks = [L(PutNonFiniteFloatAt)(iteration=2, rank=1)]\n"
    )
    r = lazytrain("train", configs / "nan.py", "--num-procs", 2, "train.max_iter=8", "train.log_period=4",
                  f"--output-dir={tmp_path / 'run'}")  # fmt: skip
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    # every rank saw the mean over ranks and stopped at the same point: the job's error, no rank singled out
    assert last.startswith("error: non-finite loss at iteration 3: "), r.stderr
    assert "loss_python=nan" in last and "rank" not in last
