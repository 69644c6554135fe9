"""One measurement of bench/train_bench.py, in the process it measures.

    python -m bench.train_worker SPEC_JSON

(under horovodrun for several ranks). The spec names the measurement (`kind`: train,
train_local, read, allreduce, matmul) and its settings; rank 0 prints a JSON line `RESULT {...}`.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def worker(spec: dict) -> None:
    """One measurement in this process (under horovodrun for several ranks); rank 0 prints
    a JSON line `RESULT {...}`."""
    if spec.get("pin"):
        pin_to_one_core()
    from common.config import load_config
    from dcn import shards
    from dcn.horovod_setup import configure_threads, init_horovod
    from dcn.trainer import Trainer

    cfg = load_config(overrides=[f"paths.work={spec['work']}",
                                 f"train.threads_per_rank={spec['threads']}",
                                 f"train.reader_threads={spec['reader_threads']}",
                                 f"train.batch_size={spec['batch_size']}",
                                 f"model.features={json.dumps(spec.get('features', []))}"])
    configure_threads(spec["threads"])
    if spec["kind"] == "matmul":
        return _emit(matmul_rate(spec["threads"], spec["seconds"]))
    hvd = init_horovod()
    features = shards.current_features(cfg)
    table = features.train
    batch = cfg["train.batch_size"]
    if spec["kind"] == "allreduce":
        return _emit(allreduce_latency(hvd, Trainer(cfg, features, hvd), spec["steps"]))
    if spec.get("passes"):  # time whole passes over the shard, as training epochs are
        spec = dict(spec, steps=spec["passes"] * shards.steps_per_epoch(table.rows, batch, hvd.size())
                    - spec["warmup"])
    if spec["kind"] == "read":
        with _batches(spec["source"], table, cfg, hvd, spec.get("cache", False), {}) as batches:
            rate = _timed(lambda: next(batches), spec["warmup"], spec["steps"]) * batch
        return _emit({"rows_per_second": rate, "cores_busy": CPU_USED[0]})
    trainer = Trainer(cfg, features, hvd)
    trainer.broadcast_from_root()
    step = _local_step(trainer) if spec["kind"] == "train_local" else trainer.train_step
    with _batches(spec["source"], table, cfg, hvd, spec.get("cache", False),
                  trainer.extra_inputs) as batches:
        steps_per_second = _timed(lambda: step(*next(batches)), spec["warmup"], spec["steps"])
    if hvd.rank() == 0:
        from dcn.model import model_spec
        from dcn.spec import count_flops_per_example

        _emit({"examples_per_second": steps_per_second * batch * hvd.size(),
               "steps_per_second": steps_per_second, "ranks": hvd.size(),
               "rank0_cores_busy": CPU_USED[0],
               "flops_per_example_forward": count_flops_per_example(model_spec(trainer.model))})


def pin_to_one_core() -> None:
    """Keep this process (every thread it starts from now on: TensorFlow's, the reader's,
    Horovod's) on one core, rank r on the r-th allowed core: each rank then has exactly one
    core whatever the others do, so N ranks against one rank compares equal resources per
    rank, as one slot per rank on a cluster does. Called before TensorFlow starts threads."""
    cores = sorted(os.sched_getaffinity(0))
    index = int(os.environ.get("BENCH_CORE_INDEX", os.environ.get("HOROVOD_LOCAL_RANK", "0")))
    os.sched_setaffinity(0, {cores[index % len(cores)]})


def _local_step(trainer):
    """The training step without Horovod (plain GradientTape): for the hardware ceiling."""
    import tensorflow as tf

    model, optimizer = trainer.model, trainer.optimizer

    @tf.function
    def step(features, labels):
        with tf.GradientTape() as tape:
            logits = tf.squeeze(model(features, training=True), -1)
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


class _batches:
    """Petastorm or in-memory batches of this rank's shard, as a context manager."""

    def __init__(self, source, table, cfg, hvd, cache=False, extra_inputs=None):
        from dcn import data as D
        from dcn import shards

        self.args = (source, table, cfg, hvd)
        self.extra = extra_inputs or {}
        self.cache = cache
        self.D, self.shards = D, shards
        self.context = None

    def __enter__(self):
        source, table, cfg, hvd = self.args
        if source == "petastorm":
            self.context = self.D.petastorm_batches(
                table.uri, table.user_dim, table.news_dim, rank=hvd.rank(), size=hvd.size(),
                batch_size=cfg["train.batch_size"], reader_threads=cfg["train.reader_threads"],
                shuffle_buffer=cfg["train.shuffle_buffer"], cache=self.cache,
                extra_inputs=self.extra)
            return self.context.__enter__()
        arrays = self.D.load_rows(table.uri, hvd.rank(), hvd.size(), extra_inputs=self.extra)
        names = self.shards.input_widths(table.user_dim, table.news_dim, self.extra)
        return iter(self.D.memory_batches(dict(zip(names, arrays[:-1])), arrays[-1],
                                          cfg["train.batch_size"]))

    def __exit__(self, *exc):
        if self.context is not None:
            return self.context.__exit__(*exc)
        return False


CPU_USED: list = []  # cores this process kept busy during the last timed loop


def _timed(step, warmup: int, steps: int) -> float:
    """Steps per second of `step` over `steps` calls after `warmup` untimed ones; also records
    the cores this process used meanwhile (CPU seconds / wall seconds) in CPU_USED."""
    import psutil

    for _ in range(warmup):
        step()
    process = psutil.Process()
    cpu = sum(process.cpu_times()[:2])
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    CPU_USED[:] = [(sum(process.cpu_times()[:2]) - cpu) / seconds]
    return steps / seconds


def allreduce_latency(hvd, trainer, calls: int) -> dict:
    """Seconds per Horovod allreduce of a buffer the size of the model's gradients (one
    grouped allreduce, as the training step does), with nothing else running."""
    import tensorflow as tf

    size = sum(int(np.prod(v.shape)) for v in trainer.model.trainable_variables)
    buffer = [tf.ones([size], tf.float32)]
    reduce = tf.function(lambda x: hvd.grouped_allreduce(x, op=hvd.Average))
    for _ in range(20):
        reduce(buffer)
    start = time.perf_counter()
    for _ in range(calls):
        reduce(buffer)[0].numpy()
    return {"seconds_per_allreduce": (time.perf_counter() - start) / calls, "floats": size}


def matmul_rate(threads: int, seconds: float, n: int = 1024) -> dict:
    """float32 FLOP/s of tf.matmul on n x n matrices (2 n^3 per product)."""
    import tensorflow as tf

    a = tf.random.normal([n, n], seed=1)
    b = tf.random.normal([n, n], seed=2)
    product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    product(a, b).numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        product(a, b).numpy()
        count += 1
    return {"flops_per_second": 2 * n ** 3 * count / (time.perf_counter() - start),
            "threads": threads, "n": n}


def _emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
