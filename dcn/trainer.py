"""The model, its optimizer and the compiled train and evaluation steps of one rank, with
the rank's share of the training state (snapshots, restore, broadcast, the best epoch).

Keras, TensorFlow and dcn.model are imported inside, so that importing this module (the
Spark driver of jobs/train.py does, through dcn.train) loads none of them. README.md,
"Training", is the specification.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from common.errors import UserInputError
from common.config import Config
from dcn import shards
from dcn.checkpoints import Checkpoint
from dcn.horovod_setup import backing
from dcn.plan import logit_correction, model_arguments, warmup_steps


class WarmupSchedule:
    """Linear warm-up to `peak` over `warmup_steps` optimizer steps, then constant."""

    def __new__(cls, peak: float, warmup_steps: int):
        import keras

        class _Schedule(keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                if warmup_steps <= 0:
                    return keras.ops.cast(peak, "float32")
                ramp = (keras.ops.cast(step, "float32") + 1.0) / float(warmup_steps)
                return peak * keras.ops.minimum(1.0, ramp)

            def get_config(self):
                return {"peak": peak, "warmup_steps": warmup_steps}

        return _Schedule()


class Trainer:
    """The model, its optimizer, and the compiled train and evaluation steps."""

    def __init__(self, cfg: Config, features: shards.Features, hvd):
        import keras
        import tensorflow as tf
        from dcn.model import build_dcn, model_spec
        from dcn.spec import input_columns

        self.hvd = hvd
        self.model = build_dcn(features.train.user_dim, features.train.news_dim,
                               **model_arguments(cfg, features))
        self.extra_inputs = input_columns(model_spec(self.model))
        total_steps = cfg["train.epochs"] * (cfg["train.steps_per_epoch"] or shards.steps_per_epoch(
            features.train.rows, cfg["train.batch_size"], hvd.size()))
        self.warmup_steps = warmup_steps(cfg, total_steps)
        self.correction = np.float32(logit_correction(features))
        # the global batch grows with the ranks, and the learning rate with it
        self.optimizer = keras.optimizers.Adam(learning_rate=WarmupSchedule(
            cfg["train.learning_rate"] * hvd.size(), self.warmup_steps))
        self.optimizer.build(self.model.trainable_variables)
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.examples = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        # the best epoch so far on the validation rows: (epoch, val_auc, model weights)
        self.best: tuple[int, float, list] | None = None
        spec = {"user_vec": tf.TensorSpec([None, features.train.user_dim], tf.float32),
                "news_vec": tf.TensorSpec([None, features.train.news_dim], tf.float32)}
        for name, width in self.extra_inputs.items():
            spec[name] = (tf.TensorSpec([None, width], tf.float32) if width
                          else tf.TensorSpec([None], tf.int32))
        label = tf.TensorSpec([None], tf.float32)
        self.train_step = tf.function(self._train_step, input_signature=[spec, label])
        self.eval_step = tf.function(self._eval_step, input_signature=[spec, label])

    def variables(self) -> list:
        """Every variable that defines the training state, in a fixed order."""
        return list(self.model.variables) + list(self.optimizer.variables)

    def variable_names(self) -> list[str]:
        return [getattr(v, "path", v.name) for v in self.variables()]

    def _train_step(self, features, labels):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            logits = tf.squeeze(self.model(features, training=True), -1)
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
            # the L2 penalty (train.l2), added inside the tape so it is differentiated
            total = loss + tf.add_n(self.model.losses) if self.model.losses else loss
        # One grouped allreduce per step: every Horovod collective has a fixed cost whatever
        # its size (Gloo over TCP), so one is much cheaper than one per gradient. The
        # embeddings' gradients (IndexedSlices) are made dense to join that group.
        tape = self.hvd.DistributedGradientTape(tape, num_groups=1, sparse_as_dense=True)
        trainable = self.model.trainable_variables
        gradients = tape.gradient(total, backing(trainable))
        self.optimizer.apply_gradients(zip(gradients, trainable))
        count = tf.cast(tf.shape(labels)[0], tf.float64)
        self.loss_sum.assign_add(tf.cast(loss, tf.float64) * count)
        self.examples.assign_add(count)
        return loss

    def _eval_step(self, features, labels):
        import tensorflow as tf

        # corrected for the negative sampling, like the exported model: a calibrated loss
        logits = tf.squeeze(self.model(features, training=False), -1) + self.correction
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.sigmoid(logits), tf.reduce_sum(tf.cast(losses, tf.float64))

    def take_train_loss(self) -> tuple[float, float]:
        """(sum of example losses, examples) since the last call, on this rank."""
        result = float(self.loss_sum.numpy()), float(self.examples.numpy())
        self.loss_sum.assign(0.0)
        self.examples.assign(0.0)
        return result

    def keep_if_best(self, epoch: int, val_auc) -> bool:
        """Remember the model's weights if this epoch's validation AUC is the best so far."""
        if val_auc is None or not math.isfinite(val_auc):
            return False
        if self.best is not None and val_auc <= self.best[1]:
            return False
        self.best = (epoch, float(val_auc), [np.array(v.numpy()) for v in self.model.variables])
        return True

    def use_best(self) -> None:
        """Put the best epoch's weights back into the model (before the export)."""
        if self.best is not None:
            for variable, value in zip(self.model.variables, self.best[2]):
                variable.assign(value)

    def finalize(self) -> None:
        """The model to export: the best epoch's weights, with the logit corrected for the
        negative sampling (see logit_correction) so its output is a click probability on
        real traffic."""
        self.use_best()
        if self.correction:
            bias = self.model.get_layer("logit").bias
            bias.assign(bias.numpy() + self.correction)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Assign a checkpoint's values; shapes and dtypes must match variable by variable
        (names are not compared: Keras numbers auto-named objects per process). The best
        epoch's weights, when the checkpoint holds them, come after the training state."""
        variables = self.variables()
        best = checkpoint.header.get("best")
        arrays = checkpoint.arrays
        if best:
            kept = len(arrays) - len(self.model.variables)
            self.best = (int(best["epoch"]), float(best["val_auc"]), list(arrays[kept:]))
            checkpoint = Checkpoint(checkpoint.header, arrays[:kept])
        if len(checkpoint.arrays) != len(variables):
            raise UserInputError(f"checkpoint holds {len(checkpoint.arrays)} variables, this "
                                 f"model and optimizer {len(variables)}")
        for variable, value in zip(variables, checkpoint.arrays):
            if tuple(variable.shape) != value.shape:
                raise UserInputError(f"checkpoint variable {getattr(variable, 'path', '?')} has "
                                     f"shape {value.shape}, the model {tuple(variable.shape)}")
        for variable, value in zip(variables, checkpoint.arrays):
            variable.assign(value.astype(variable.dtype))

    def decorrelate_dropout(self, rank: int) -> None:
        """Give each rank its own dropout masks: the broadcast made the seed states equal."""
        for variable in self.model.variables:
            if "seed_generator" in getattr(variable, "path", ""):
                state = variable.numpy()  # [seed, counter]
                state[0] += rank * 1_000_003
                variable.assign(state)

    def broadcast_from_root(self) -> None:
        self.hvd.broadcast_variables(backing(self.variables()), root_rank=0)

    def snapshot(self, header: dict) -> Checkpoint:
        arrays = [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in self.variables()]
        if self.best is not None:
            header = dict(header, best={"epoch": self.best[0], "val_auc": self.best[1]})
            arrays = arrays + list(self.best[2])
        return Checkpoint(dict(header, variables=self.variable_names()), arrays)

    def weights_checksum(self) -> str:
        """sha256 of the trainable weights (equal on every rank after each step)."""
        digest = hashlib.sha256()
        for variable in self.model.trainable_variables:
            digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
        return digest.hexdigest()
