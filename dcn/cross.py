"""The cross layer of the Deep & Cross Network, in its three forms (DCN's vector, DCN-V2's full
and low-rank matrix). Its docstring states the equation; dcn/model.py builds the network."""
from __future__ import annotations

import numbers
from typing import Any, Optional

import keras
from keras import ops

CROSS_KINDS = ("vector", "matrix")


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)



def normalize_rank(rank: Any) -> int:
    """``None`` or ``0`` -> 0 (full matrix); a positive int -> itself; anything else -> error."""
    if rank is None:
        return 0
    if not is_int(rank) or rank < 0:
        raise ValueError(
            f"Cross: rank must be None, 0 (full matrix) or a positive integer (low rank), got {rank!r}"
        )
    return int(rank)



def _derived_initializer(initializer: keras.initializers.Initializer, offset: int):
    """A fresh copy of ``initializer``; an integer seed is shifted by ``offset``.

    Keras 3 seeded initializers return the same values on every call, so the two factors of
    a low-rank layer must not share one initializer object (U and V would be correlated).
    """
    config = initializer.get_config()
    if is_int(config.get("seed")):
        config["seed"] = int(config["seed"]) + offset
    return initializer.__class__.from_config(config)



@keras.saving.register_keras_serializable(package="dcn")
class Cross(keras.layers.Layer):
    """One layer of a cross network: explicit, bounded-degree feature crosses.

    ``call(x0, x)`` takes the network's input ``x0`` and the previous cross layer's output
    ``x = x_l`` (``x`` defaults to ``x0`` for the first layer), both [batch, d], and returns
    ``x_{l+1}`` [batch, d].  ``*`` / ``⊙`` is the elementwise product; vectors are columns
    (the papers' notation); the batched form on row vectors ``X`` is given in brackets.

    ``kind="vector"`` (DCN, Wang et al. 2017, https://arxiv.org/abs/1708.05123)::

        x_{l+1} = x0 * (x_l . w) + b + x_l        [X0 * (X_l @ w[:, None]) + b + X_l]

    with weights ``w`` [d] and ``b`` [d]; ``x_l . w`` is one scalar per example.

    ``kind="matrix"``, ``rank`` None or 0 (DCN-V2, Wang et al. 2021,
    https://arxiv.org/abs/2008.13535)::

        x_{l+1} = x0 ⊙ (W x_l + b) + x_l          [X0 * (X_l @ W.T + b) + X_l]

    with ``W`` [d, d], ``W[i, j]`` the weight from input feature j to output feature i (the
    transpose of a Keras Dense kernel), and ``b`` [d].

    ``kind="matrix"``, ``rank = r`` with ``0 < r < d`` (DCN-V2's low-rank form), ``W = U V``::

        x_{l+1} = x0 ⊙ (U (V x_l) + b) + x_l      [X0 * (X_l @ V.T @ U.T + b) + X_l]

    with ``U`` [d, r], ``V`` [r, d], ``b`` [d].  (The DCN-V2 paper writes ``U (V^T x_l)``
    with a d x r ``V``; our ``V`` is that matrix transposed.  The paper's mixture of
    low-rank experts is not implemented.)

    Args:
      kind: ``"vector"`` or ``"matrix"``.
      rank: ``None``/``0`` for a full matrix, ``r > 0`` for low rank (matrix kind only;
        must be smaller than the input width d, checked when the layer is built).
      kernel_initializer: for ``w``, ``W``, ``U`` and ``V`` (default Glorot uniform).  ``V``
        gets a copy whose integer seed is shifted by one, so ``U`` and ``V`` differ.  Keras
        computes fans from shape ``[rows, cols]`` as ``(fan_in, fan_out)``; Glorot
        (symmetric in the two fans) is unaffected by our transposed orientation.
      bias_initializer: for ``b`` (default zeros).
      kernel_regularizer, bias_regularizer: optional Keras regularizers.
      **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        kind: str = "vector",
        rank: Optional[int] = None,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kind not in CROSS_KINDS:
            raise ValueError(f"Cross: kind must be one of {CROSS_KINDS}, got {kind!r}")
        rank = normalize_rank(rank)
        if kind == "vector" and rank:
            raise ValueError(
                f"Cross: rank applies to kind='matrix' only; kind='vector' got rank={rank}"
            )
        self.kind = kind
        self.rank = rank
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    @property
    def form(self) -> str:
        """``"vector"``, ``"full"`` or ``"low_rank"``."""
        if self.kind == "vector":
            return "vector"
        return "low_rank" if self.rank else "full"

    def build(self, x0_shape, x_shape=None):
        d = x0_shape[-1]
        if d is None:
            raise ValueError("Cross: the last dimension of x0 must be known")
        d = int(d)
        if x_shape is not None and x_shape[-1] != d:
            raise ValueError(
                f"Cross: x0 and x must have the same width, got x0 width {d} and x width {x_shape[-1]}"
            )
        if self.rank and self.rank >= d:
            raise ValueError(
                f"Cross: low rank must be smaller than the input width, got rank={self.rank} "
                f"for width d={d} (use rank=0 for a full matrix)"
            )

        def kernel(name, shape, offset):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=_derived_initializer(self.kernel_initializer, offset),
                regularizer=self.kernel_regularizer,
                trainable=True,
            )

        if self.form == "vector":
            self.w = kernel("w", (d,), 0)
        elif self.form == "full":
            self.W = kernel("W", (d, d), 0)
        else:
            self.U = kernel("U", (d, self.rank), 0)
            self.V = kernel("V", (self.rank, d), 1)
        self.b = self.add_weight(
            name="b",
            shape=(d,),
            initializer=self.bias_initializer,
            regularizer=self.bias_regularizer,
            trainable=True,
        )

    def call(self, x0, x=None):
        if x is None:
            x = x0
        if x0.shape[-1] != x.shape[-1]:
            raise ValueError(
                f"Cross: x0 and x must have the same width, got x0 width {x0.shape[-1]} "
                f"and x width {x.shape[-1]}"
            )
        if self.form == "vector":
            scale = ops.matmul(x, ops.expand_dims(self.w, -1))  # [batch, 1] = x_l . w
            return x0 * scale + self.b + x
        if self.form == "full":
            projected = ops.matmul(x, ops.transpose(self.W))  # (W x_l) per row
        else:
            projected = ops.matmul(ops.matmul(x, ops.transpose(self.V)), ops.transpose(self.U))
        return x0 * (projected + self.b) + x

    def compute_output_shape(self, x0_shape, x_shape=None):
        return tuple(x0_shape)

    def weight_arrays(self) -> dict:
        """The layer's weights as numpy arrays keyed by name (``w``/``W``/``U``/``V`` and ``b``)."""
        return {v.name: keras.ops.convert_to_numpy(v) for v in self.weights}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kind": self.kind,
                "rank": self.rank,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config
