"""dcn.train end to end: real processes (python -m dcn.train, horovodrun with 2 ranks), real
Petastorm readers, real checkpoints and exports.

Data: the synthetic MIND sample (python -m synthetic, scale tiny) through embed_news and
build_features, and, where a test needs control over row groups or widths, feature rows
written with pyarrow and published as a build_features run.
"""
from __future__ import annotations

import glob
import math
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from common import storage
from common.errors import UserInputError
from common.config import load_config
from tests.builders import publish_features, rows_root, tiny_work, train_uri_of

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
HOROVODRUN = str(VENV_BIN / "horovodrun")
TIMEOUT = 240  # seconds for one training command; a hang fails the test
ENV = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2",
           PYTHONPATH=str(ROOT))
# Small and quick: the tiny sample has about 3,300 train and 7,700 dev rows.
# Vectors only and every epoch run: these tests are about the distributed loop (the side
# features and early stopping have their own test).
QUICK = ["model.deep_units=[64,32]", "model.dropout=0.0", "train.warmup_steps=10",
         "train.threads_per_rank=1", "train.reader_threads=1", "train.shuffle_buffer=1024",
         "model.features=[]", "train.patience=0"]


# --------------------------------------------------------------------------- helpers

def settings(work, *extra) -> list[str]:
    args = []
    for item in [f"paths.work={work}", *QUICK, *extra]:
        args += ["--set", item]
    return args


def train_command(work, *extra, ranks: int = 1, force: bool = False) -> list[str]:
    python = [sys.executable, "-m", "dcn.train", *settings(work, *extra)]
    if force:
        python.append("--force")
    if ranks == 1:
        return python
    return [HOROVODRUN, "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo", *python]


def run(command, env=None, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    """Run a training command; on timeout kill its whole process group (horovodrun's ranks
    included) and fail."""
    proc = subprocess.Popen(command, cwd=ROOT, env=env or ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(command[:8])}... did not finish within {timeout}s (a hang?)\n"
                    f"{err[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def summary_of(result: subprocess.CompletedProcess) -> dict:
    """Rank 0's JSON summary from stdout (horovodrun prefixes lines with `[0]<stdout>:`)."""
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [re.sub(r"^\[\d+\]<stdout>:", "", line) for line in result.stdout.splitlines()]
    text = "\n".join(lines)
    return json.loads(text[text.index("{"):text.rindex("}") + 1])


def features_cfg(work):
    return load_config(overrides=[f"paths.work={work}"])


def rows_marker_file(work) -> Path:
    """The commit marker of the newest rows run (what publish_features writes)."""
    run_id = storage.current_run(rows_root(work), "build_features")["run_id"]
    return Path(storage.committed_marker_uri(rows_root(work), run_id).replace("file://", ""))


def rank_process(horovodrun: subprocess.Popen, rank: int) -> psutil.Process:
    """The python process of one rank under a horovodrun (found by its HOROVOD_RANK)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        for child in psutil.Process(horovodrun.pid).children(recursive=True):
            try:
                if (child.environ().get("HOROVOD_RANK") == str(rank)
                        and "dcn.train" in " ".join(child.cmdline())
                        and child.name().startswith("python")):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.1)
    pytest.fail(f"no process of rank {rank} found")


def checkpoints(work) -> list[str]:
    return sorted(glob.glob(f"{work}/checkpoints/*/ckpt-*.npz"))


def step_of(path: str) -> int:
    return int(re.search(r"ckpt-(\d+)\.npz$", path).group(1))


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tiny_features(spark, tmp_path_factory):
    """The tiny synthetic MIND sample through embed_news and build_features (32-d vectors,
    8 row groups per table): a work folder whose current features run the tests train on."""
    return tiny_work(spark, tmp_path_factory.mktemp("train_tiny"))[1]


def fresh_work(tiny_features, tmp_path) -> Path:
    """A work folder holding only a copy of the tiny features (each test its own runs)."""
    work = tmp_path / "work"
    shutil.copytree(tiny_features / "features", work / "features")
    return work


# --------------------------------------------------------------------------- tests

@pytest.mark.slow
def test_single_rank_learns_and_exports(tmp_path):
    """Plain python, one rank, on rows with a planted user-news interaction: the loss falls
    and the dev AUC passes 0.7 (an untrained model scores about 0.5)."""
    from dcn.export import load_model, model_folder

    work = tmp_path / "work"
    run_id = publish_features(work, [800] * 4, [400] * 4, dim=16)
    result = run(train_command(work, "train.epochs=10", "train.batch_size=64",
                               "train.learning_rate=0.003"))
    summary = summary_of(result)
    history = summary["history"]
    assert summary["status"] == "trained" and summary["ranks"] == 1
    assert summary["steps_per_epoch"] == 50  # ceil(3200 / 64)
    assert len(history) == 10 and summary["global_step"] == 500
    assert history[-1]["train_loss"] < 0.75 * history[0]["train_loss"], history
    assert summary["metrics"]["val_auc"] > 0.7, history
    assert history[-1]["val_rows"] == 1600
    assert re.search(r"epoch 10/10: .* steps/s, .* examples/s, loss .*, val loss .*, val AUC",
                     result.stderr)
    # signs of life between epochs: every train.log_every_steps (100) steps
    assert re.findall(r"step (\d+): \d+ examples/s, running loss \d\.\d{4}", result.stderr) == [
        "100", "200", "300", "400", "500"]
    assert glob.glob(f"{work}/tensorboard/{summary['run_key']}/events.out.tfevents.*")

    model, metadata = load_model(model_folder(features_cfg(work)))
    assert metadata["version"] == summary["version"]
    assert (metadata["user_dim"], metadata["news_dim"]) == (16, 16)
    assert metadata["model_spec"]["deep_units"] == [64, 32]
    assert metadata["features"]["run_id"] == run_id == summary["features_run_id"]
    assert metadata["features"]["train_rows"] == 3200
    assert metadata["features"]["train_uri"].endswith(f"/rows/runs/{run_id}/train")
    assert metadata["horovod_size"] == 1 and metadata["seconds"] > 0
    assert metadata["config"]["train"]["epochs"] == 10
    assert metadata["metrics"]["val_auc"] == pytest.approx(summary["metrics"]["val_auc"])
    assert model.count_params() > 0


def summary_rows(work, table) -> int:
    from common import outputs
    from common.config import load_config as _load
    pointer = outputs.latest_rows(_load(overrides=[f"paths.work={work}"]))
    return pointer["summary"]["rows"][table]["rows"]


@pytest.mark.slow
@pytest.mark.horovod
@pytest.mark.spark
def test_two_ranks_end_with_identical_weights(tiny_features, tmp_path):
    work = fresh_work(tiny_features, tmp_path)
    dump = tmp_path / "weights"
    env = dict(ENV, NEWSREC_TRAIN_WEIGHTS_DUMP=str(dump))
    summary = summary_of(run(train_command(work, "train.epochs=2", "train.batch_size=64",
                                           "model.dropout=0.2", ranks=2), env=env))
    assert summary["ranks"] == 2
    # ceil(rows / batch / ranks) steps per epoch on every rank
    assert summary["steps_per_epoch"] == -(-summary_rows(work, "train") // (64 * 2))
    ranks = [json.loads((dump / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == summary["global_step"]
    # the export is rank 0's model: its weights hash the same
    from dcn.export import load_model, model_folder
    import hashlib

    model, metadata = load_model(model_folder(features_cfg(work)))
    digest = hashlib.sha256()
    for variable in model.trainable_variables:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    assert digest.hexdigest() == ranks[0]["sha256"]
    assert metadata["horovod_size"] == 2
    # the same run distilled the cascade's retrieval tower from the exported model
    from dcn.export import load_factorized, load_retrieval
    from dcn.retrieval import scorer_digest

    folder = model_folder(features_cfg(work))
    tower = load_retrieval(folder)
    assert tower is not None
    assert tower.teacher == scorer_digest(load_factorized(folder)) == metadata["retrieval"]["teacher"]


@pytest.mark.slow
@pytest.mark.horovod
def test_uneven_shards_do_not_hang(tmp_path):
    from dcn import data

    work = tmp_path / "work"
    # row group i goes to rank i % 2: rank 0 gets 4 x 1500 rows, rank 1 gets 4 x 40
    publish_features(work, [1500, 40] * 4, [600, 30] * 2, dim=8)
    train_uri = train_uri_of(work)
    shard_rows = [len(data.load_rows(train_uri, rank, 2)[2]) for rank in (0, 1)]
    assert shard_rows == [6000, 160]
    dump = tmp_path / "weights"
    env = dict(ENV, NEWSREC_TRAIN_WEIGHTS_DUMP=str(dump))
    started = time.time()
    summary = summary_of(run(train_command(work, "train.epochs=2", "train.batch_size=64",
                                           "train.learning_rate=0.003", ranks=2),
                             env=env, timeout=180))
    assert time.time() - started < 180
    assert summary["steps_per_epoch"] == -(-6160 // (64 * 2))
    assert summary["global_step"] == 2 * summary["steps_per_epoch"]
    assert summary["history"][-1]["val_rows"] == 2 * 630
    ranks = [json.loads((dump / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert summary["metrics"]["val_auc"] > 0.65  # it learned (the planted rule: about 0.8)


@pytest.mark.slow
@pytest.mark.horovod
@pytest.mark.spark
def test_killed_rank_then_resume_then_no_retraining(tiny_features, tmp_path):
    work = fresh_work(tiny_features, tmp_path)
    extra = ("train.epochs=6", "train.batch_size=16", "train.checkpoint_every_steps=20",
             "train.keep_checkpoints=2")
    command = train_command(work, *extra, ranks=2)

    # 1. kill -9 rank 1 as soon as the first checkpoint exists: the run fails
    with open(tmp_path / "first.err", "w") as err:
        first = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                 stderr=err, start_new_session=True)
        try:
            victim = rank_process(first, 1)
            deadline = time.time() + TIMEOUT
            while not checkpoints(work) and first.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert checkpoints(work), "no checkpoint was written"
            victim.send_signal(signal.SIGKILL)
            code = first.wait(timeout=120)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
    assert code != 0
    assert not glob.glob(f"{work}/checkpoints/*/FINISHED.json")
    assert not storage.committed_runs(str(work / "models"))
    saved = step_of(checkpoints(work)[-1])
    assert saved > 0

    # 2. the same command resumes from the newest checkpoint and exports
    resumed = run(command)
    summary = summary_of(resumed)
    assert summary["status"] == "trained"
    assert summary["resumed_from_step"] == saved
    assert re.search(rf"resuming at global step {saved}\b", resumed.stderr)
    assert summary["global_step"] == 6 * summary["steps_per_epoch"] > saved
    assert len(checkpoints(work)) == 2  # keep_checkpoints
    version = summary["version"]
    assert storage.current_run(str(work / "models"), "train")["run_id"] == version

    # 3. once more: finished, nothing trains, the same version is reported
    again = run(command)
    summary = summary_of(again)
    assert summary["status"] == "already_trained" and summary["version"] == version
    assert "epoch 1/6" not in again.stderr
    assert len([p for p in (work / "models" / "runs").iterdir() if p.is_dir()]) == 1


@pytest.mark.slow
def test_checkpoint_of_another_width_is_a_clear_error(tmp_path):
    from dcn.checkpoints import run_identity

    work = tmp_path / "work"
    publish_features(work, [300] * 4, [100] * 4, dim=16)
    first = summary_of(run(train_command(work, "train.epochs=1", "train.batch_size=64",
                                         "train.checkpoint_every_steps=2")))
    saved = checkpoints(work)[-1]
    # new features, 24 wide; plant the 16-wide checkpoint under the new run's key
    run_id = publish_features(work, [300] * 4, [100] * 4, dim=24, seed=5)
    cfg = load_config(overrides=[f"paths.work={work}", *QUICK, "train.epochs=1",
                                 "train.batch_size=64", "train.checkpoint_every_steps=2"])
    key, _ = run_identity(cfg, run_id, 1)
    assert key != first["run_key"]
    (work / "checkpoints" / key).mkdir(parents=True)
    shutil.copy(saved, work / "checkpoints" / key / Path(saved).name)
    result = run(train_command(work, "train.epochs=1", "train.batch_size=64",
                               "train.checkpoint_every_steps=2"))
    assert result.returncode == 1
    assert "model expects user_vec width 16 and news_vec width 16, but the data has " \
           "user_vec width 24 and news_vec width 24" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.horovod
def test_fewer_row_groups_than_ranks_is_a_clear_error(tmp_path):
    work = tmp_path / "work"
    publish_features(work, [500], [100, 100], dim=8)
    result = run(train_command(work, "train.epochs=1", ranks=2), timeout=120)
    assert result.returncode != 0
    assert re.search(r"train has 1 Parquet row groups but 2 ranks need at least one each.*"
                     r"features.min_row_groups >= 2", result.stderr)
    assert "NoDataAvailableError" not in result.stderr


def test_check_shardable_names_the_setting(tmp_path):
    from dcn import shards

    work = tmp_path / "work"
    publish_features(work, [50, 50, 50], [20, 20], dim=4)
    features = shards.current_features(features_cfg(work))
    assert (features.train.rows, features.train.row_groups) == (150, 3)
    assert (features.train.user_dim, features.train.news_dim) == (4, 4)
    shards.check_shardable(features.train, 3)
    with pytest.raises(UserInputError, match=r"3 Parquet row groups but 4 ranks .*"
                                             r"features.min_row_groups >= 4"):
        shards.check_shardable(features.train, 4)


def test_summary_dim_must_match_the_parquet(tmp_path):
    from dcn import shards

    work = tmp_path / "work"
    publish_features(work, [50, 50], [20, 20], dim=4)
    pointer_file = rows_marker_file(work)
    pointer = json.loads(pointer_file.read_text())
    pointer["summary"]["dim"] = 128
    pointer_file.write_text(json.dumps(pointer))
    with pytest.raises(UserInputError, match="summary says dim 128 but news_vec is 4 wide"):
        shards.current_features(features_cfg(work))


def test_run_key_follows_the_command(tmp_path):
    from dcn.checkpoints import run_identity

    base = load_config(overrides=[f"paths.work={tmp_path}"])
    key = run_identity(base, "run-a", 2)[0]
    assert key == run_identity(load_config(overrides=[f"paths.work={tmp_path}"]), "run-a", 2)[0]
    # settings that do not change the model keep the run (a rerun may tune them)
    assert key == run_identity(base.with_overrides(["train.reader_threads=7",
                                                    "train.checkpoint_every_steps=3"]),
                               "run-a", 2)[0]
    for other in (run_identity(base, "run-b", 2), run_identity(base, "run-a", 4),
                  run_identity(base.with_overrides(["model.cross_layers=2"]), "run-a", 2),
                  run_identity(base.with_overrides(["train.learning_rate=0.01"]), "run-a", 2)):
        assert other[0] != key


def test_checkpoint_store_ignores_partial_and_damaged_files(tmp_path):
    from dcn.checkpoints import Checkpoint, CheckpointStore

    store = CheckpointStore(str(tmp_path / "ckpts"), keep=2)
    assert store.latest() is None
    for step in (10, 20, 30):
        store.save(Checkpoint({"global_step": step}, [np.full(3, step, np.float32)]))
    assert sorted(os.listdir(tmp_path / "ckpts")) == ["ckpt-0000000020.npz", "ckpt-0000000030.npz"]
    # a write killed half-way leaves only a hidden temporary file: never read
    (tmp_path / "ckpts" / ".ckpt-0000000040.npz.tmp-dead").write_bytes(b"PK\x03\x04partial")
    latest = store.latest()
    assert latest.header["global_step"] == 30 and latest.arrays[0].tolist() == [30.0] * 3
    store.remove_temporaries()
    assert not [n for n in os.listdir(tmp_path / "ckpts") if ".tmp-" in n]
    # a damaged file under a real name (not written by us) falls back to the previous one
    (tmp_path / "ckpts" / "ckpt-0000000050.npz").write_bytes(b"garbage")
    assert store.latest().header["global_step"] == 30


@pytest.mark.slow
@pytest.mark.horovod
@pytest.mark.spark
def test_spark_submit_train_runs_horovod_on_executors(tmp_path):
    """./spark-submit.sh train: two ranks as Spark tasks (horovod.spark.run), the same summary
    and identical weights (resume and finished-run detection are the same code as above)."""
    work = tmp_path / "work"
    publish_features(work, [400] * 4, [100] * 4, dim=8)
    dump = tmp_path / "weights"
    env = dict(ENV, NEWSREC_TRAIN_WEIGHTS_DUMP=str(dump))
    command = [str(ROOT / "spark-submit.sh"), "train",
               *settings(work, "train.epochs=2", "train.batch_size=64",
                         "train.spark_num_proc=2", "spark.master=local[2]",
                         "spark.driver_memory=1g")]
    summary = json.loads(run(command, env=env).stdout)
    assert summary["status"] == "trained" and summary["ranks"] == 2
    assert summary["spark_num_proc"] == 2
    assert summary["steps_per_epoch"] == 13  # ceil(1600 / 64 / 2)
    ranks = [json.loads((dump / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert (work / "models" / "runs" / summary["version"] / "model.keras").exists()


@pytest.mark.slow
@pytest.mark.spark
def test_side_features_export_the_best_epoch_calibrated(tiny_features, tmp_path):
    """The default model (every side feature) on real build_features rows: the exported
    epoch is the best on the validation rows, the warm-up fits the run, and the exported
    logit carries log(negative keep rate), which brings its mean prediction on the validation
    rows (every candidate, as traffic is) closer to their click rate than without it."""
    from dcn import data as D
    from dcn import shards
    from dcn.export import load_model, model_folder
    from dcn.model import model_spec
    from dcn.spec import input_columns

    work = fresh_work(tiny_features, tmp_path)
    summary = summary_of(run(train_command(work, "model.features=[user_stats,news_stats,category,dot,topic]",
                                           "train.patience=2", "train.epochs=6",
                                           "train.warmup_steps=1000")))
    history = summary["history"]
    aucs = [r["val_auc"] for r in history]
    assert summary["metrics"]["epoch"] == 1 + aucs.index(max(aucs))
    assert summary["metrics"]["val_auc"] == max(aucs)
    stopped = len(history) < 6
    assert not stopped or summary["metrics"]["epoch"] == len(history) - 2
    model, metadata = load_model(model_folder(features_cfg(work)))
    assert metadata["model_spec"]["features"] == ["user_stats", "news_stats", "category", "dot", "topic"]
    total = 6 * summary["steps_per_epoch"]
    assert metadata["warmup_steps"] == total // 10 < 1000
    rate = metadata["sampling"]["negative_keep_rate"]
    assert 0 < rate < 1 and metadata["logit_correction"] == pytest.approx(math.log(rate))

    features = shards.current_features(features_cfg(work))
    extra = input_columns(model_spec(model))
    arrays = D.load_rows(features.valid.uri, extra_inputs=extra)
    names = shards.input_widths(features.valid.user_dim, features.valid.news_dim, extra)
    logits = np.asarray(model.predict_on_batch(dict(zip(names, arrays[:-1])))).ravel()
    observed = float(arrays[-1].mean())
    corrected = float(np.mean(1 / (1 + np.exp(-logits))))
    uncorrected = float(np.mean(1 / (1 + np.exp(-(logits - metadata["logit_correction"])))))
    assert abs(corrected - observed) < abs(uncorrected - observed), (corrected, uncorrected, observed)
