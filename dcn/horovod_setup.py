"""A training rank's set-up (TensorFlow threads, Horovod) and the collectives the training
runs besides the gradient tape: rank 0's decisions broadcast to every rank, and sums over
all ranks.

TensorFlow and Horovod are imported inside the functions, so that importing this module (the
Spark driver of jobs/train.py does, through dcn.train) loads neither. README.md, "Training",
is the specification.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from common.errors import UserInputError

log = logging.getLogger("dcn.train")  # the training's one logger (dcn.train sets it up)


def configure_threads(threads: int) -> None:
    """TensorFlow intra/inter-op threads of this rank (0: TensorFlow's default).

    Must run before TensorFlow executes anything; if it already has (a caller that used
    TensorFlow in this process), the setting is left as it is, with a warning.
    """
    import tensorflow as tf

    if threads <= 0:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as err:
        log.warning("cannot set TensorFlow threads to %d (%s)", threads, err)


def init_horovod():
    """The low-level `horovod.tensorflow` API, initialized. Not `horovod.tensorflow.keras`:
    with Keras 3 it silently stops averaging gradients (README.md, "Dependencies")."""
    import horovod.tensorflow as hvd

    hvd.init()
    return hvd


def backing(variables) -> list:
    """The tf.Variables behind Keras 3 variables, which Horovod needs (no `.ref()` otherwise)."""
    import tensorflow as tf

    return [v if isinstance(v, tf.Variable) else v.value for v in variables]


class RootDecision:
    """Run something on rank 0 only and broadcast its result, or its error, to every rank.

    Only rank 0 touches shared state (checkpoints, TensorBoard, the export). Every rank then
    returns the same value or raises the same error, so all ranks act alike and a failure on
    rank 0 ends all ranks instead of leaving them waiting in the next collective. Errors about
    the input (UserInputError, ValueError, FileNotFoundError) become UserInputError: one
    clear message, no traceback.
    """

    USER_ERRORS = (UserInputError, ValueError, FileNotFoundError)

    def __init__(self, hvd):
        self.hvd = hvd

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        outcome: tuple = ("ok", None)
        if self.hvd.rank() == 0:
            try:
                outcome = ("ok", fn())
            except Exception as err:  # every rank must learn about it, then raise
                user_error = isinstance(err, self.USER_ERRORS)
                if self.hvd.size() == 1 and not user_error:
                    raise
                if not user_error:
                    log.exception("rank 0 failed during %s", name)
                outcome = ("error", type(err).__name__, str(err), user_error)
        if self.hvd.size() > 1:
            outcome = self.hvd.broadcast_object(outcome, root_rank=0, name=f"decision.{name}")
        if outcome[0] == "error":
            _, kind, message, user_error = outcome
            if user_error:
                raise UserInputError(message)
            raise RuntimeError(f"rank 0 failed during {name}: {kind}: {message}")
        return outcome[1]


def allreduce_sum(hvd, values: np.ndarray, name: str) -> np.ndarray:
    """The element-wise sum of `values` over all ranks (float64), on every rank."""
    import tensorflow as tf

    reduced = hvd.allreduce(tf.constant(np.asarray(values, dtype=np.float64)), op=hvd.Sum,
                            name=name)
    return reduced.numpy()
