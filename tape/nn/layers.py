"""The built-in layers: Linear, Flatten, activations, Dropout, norms, Embedding.

Each initialises its parameters as PyTorch does (``reset_parameters``), with the
library RNG; ``device=`` and ``dtype=`` (default float32) place and type them.
Convolution and pooling layers are in ``conv.py`` (built with ``_empty`` and ``init``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .. import backend
from .. import functional as F
from ..tensor import Tensor, wrap
from . import init
from .module import Module, count
from .parameter import Parameter


def _empty(shape, device=None, dtype=None):
    """A new (uninitialised) parameter array of ``shape``, float32 unless told; inside
    ``init.shapes_only()``, a zero-byte placeholder of that shape."""
    dtype = np.dtype(dtype or np.float32)
    if init.building_shapes_only():
        one = backend.to_device(np.zeros(1, dtype), device)
        return backend.xp(one).lib.stride_tricks.as_strided(one, shape, (0,) * len(shape))
    return backend.to_device(np.empty(shape, dtype=dtype), device)


def add_weight_and_bias(module, weight_shape, bias, device=None, dtype=None):
    """Give ``module`` a ``weight`` of ``weight_shape`` and, if ``bias``, a ``bias`` as long
    as its first axis (or a registered None), then initialise them (Linear, Conv2d)."""
    module.weight = Parameter(_empty(weight_shape, device, dtype))
    if bias:
        module.bias = Parameter(_empty(tuple(weight_shape[:1]), device, dtype))
    else:
        module.register_parameter("bias", None)
    module.reset_parameters()


def reset_weight_and_bias(weight, bias):
    """torch's default for Linear and Conv2d: weight kaiming_uniform_(a=sqrt(5)), that is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias uniform in the same bounds."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


# ----- linear and reshaping -----
class Linear(Module):
    """``y = x @ weight.T + bias``; weight (out_features, in_features), initialised
    U(-1/sqrt(in_features), 1/sqrt(in_features)) as torch (kaiming_uniform_, a=sqrt(5))."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = count(in_features, "in_features", "Linear")
        self.out_features = count(out_features, "out_features", "Linear")
        add_weight_and_bias(self, (self.out_features, self.in_features), bias, device, dtype)

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Identity(Module):
    """The input, unchanged (a placeholder); arguments are accepted and ignored, as torch."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def _config(self):
        return {}  # the arguments are ignored, so nothing to rebuild it with

    def forward(self, x):
        return x


class Flatten(Module):
    """Merge axes ``start_dim`` to ``end_dim`` (by default all but the batch axis)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# ----- activations -----
class ReLU(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace  # accepted for torch compatibility; never in place

    def forward(self, x):
        return F.relu(x)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x):
        return F.leaky_relu(x, negative_slope=self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class SiLU(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace  # accepted for torch compatibility; never in place

    def forward(self, x):
        return F.silu(x)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ELU(Module):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


def _softmax_dim(dim, ndim, name):
    if dim is not None:
        return dim
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call "
                  "to include dim=X as an argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1  # torch's legacy choice


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, axis=_softmax_dim(self.dim, x.ndim, "softmax"))

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return F.log_softmax(x, axis=_softmax_dim(self.dim, x.ndim, "log_softmax"))


class Dropout(Module):
    """Zero each element with probability ``p`` in training (scaling the rest by
    1/(1-p)); the identity in eval mode."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


# ----- normalisation -----
def _affine_parameters(module, shape, affine, bias, device, dtype):
    """A normalisation's per-feature ``weight`` and ``bias`` of ``shape`` (None where
    ``affine`` or ``bias`` is off, as torch registers them), initialised."""
    module.register_parameter("weight", Parameter(_empty(shape, device, dtype)) if affine
                              else None)
    module.register_parameter("bias", Parameter(_empty(shape, device, dtype))
                              if affine and bias else None)
    module.reset_parameters()


def _reset_affine(module):
    """Weight ones, bias zeros: a normalisation that starts as the identity scale."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


class LayerNorm(Module):
    """Normalise over the last axes (``normalized_shape``); weight ones, bias zeros."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        _affine_parameters(self, self.normalized_shape, elementwise_affine, bias, device, dtype)

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalise (N, C, ...) over groups of ``num_channels // num_groups`` channels (and
    every axis after them), then scale and shift per channel; weight ones, bias zeros."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        self.num_groups = count(num_groups, "num_groups", "GroupNorm", least=1)
        self.num_channels = count(num_channels, "num_channels", "GroupNorm")
        if num_channels % num_groups != 0:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        self.eps, self.affine = eps, affine
        _affine_parameters(self, (num_channels,), affine, bias, device, dtype)

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")


class RMSNorm(Module):
    """Divide by the root mean square over the last axes (``normalized_shape``), then
    scale; weight ones. ``eps=None``: the input dtype's machine epsilon, as torch."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None,
                 dtype=None):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(_empty(self.normalized_shape, device, dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, x):
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class _BatchNorm(Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features = count(num_features, "num_features", type(self).__name__, least=1)
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(_empty((num_features,), device, dtype))
            if bias:
                self.bias = Parameter(_empty((num_features,), device, dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", wrap(_empty((num_features,), device, dtype)))
            self.register_buffer("running_var", wrap(_empty((num_features,), device, dtype)))
            self.register_buffer("num_batches_tracked",
                                 wrap(backend.to_device(np.zeros((), np.int64), device)))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            init.zeros_(self.num_batches_tracked)

    def reset_parameters(self):
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def _check_input_dim(self, x):
        raise NotImplementedError

    def forward(self, x):
        self._check_input_dim(x)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}: the input of shape {tuple(x.shape)} has {x.shape[1]} "
                f"channels (axis 1), the layer was built for num_features={self.num_features}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
            if self.momentum is None:  # a cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked.item())
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        return F.batch_norm(
            x, self.running_mean if use_running else None,
            self.running_var if use_running else None, self.weight, self.bias, batch_stats,
            factor, self.eps,
        )

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs, per channel C."""

    def _check_input_dim(self, x):
        if x.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d: expected 2D or 3D input (got {x.ndim}D input)")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) images, per channel C."""

    def _check_input_dim(self, x):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d: expected 4D input (got {x.ndim}D input)")


# ----- lookup -----
class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``, looked up by
    integer index; initialised N(0, 1), the ``padding_idx`` row zero (and never trained)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None,
                 dtype=None, _weight=None):
        super().__init__()
        self.num_embeddings = count(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = count(embedding_dim, "embedding_dim", "Embedding")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError("Embedding: padding_idx must be within num_embeddings")
            padding_idx = padding_idx % num_embeddings
        self.padding_idx = padding_idx
        if _weight is None:
            self.weight = Parameter(_empty((num_embeddings, embedding_dim), device, dtype))
            self.reset_parameters()
        else:
            self.weight = Parameter(_weight)
            if tuple(self.weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: _weight of shape {self.weight.shape} does not "
                                 f"match ({num_embeddings}, {embedding_dim})")

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding holding ``embeddings`` (2-D); frozen unless ``freeze=False``."""
        data = embeddings.data if isinstance(embeddings, Tensor) else embeddings
        m = cls(data.shape[0], data.shape[1], padding_idx=padding_idx, _weight=data)
        m.weight.requires_grad = not freeze
        return m

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, indices):
        return F.embedding(indices, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"
