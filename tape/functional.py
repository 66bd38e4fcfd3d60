"""The functional namespace, ``import tape.functional as F``: ops as plain functions."""

from .ops.elementwise import (  # noqa: F401
    abs, clip, cos, elu, erf, exp, gelu, leaky_relu, log, maximum, minimum, relu, sigmoid, silu,
    sin, softplus, sqrt, tanh, where,
)
from .ops.linalg import einsum, matmul  # noqa: F401
from .ops.losses import (  # noqa: F401
    binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, huber_loss, kl_div,
    l1_loss, mse_loss, nll_loss, smooth_l1_loss,
)
from .ops.nn import (  # noqa: F401
    batch_norm, dropout, embedding, group_norm, layer_norm, linear, log_softmax, rms_norm,
    softmax,
)
from .ops.reduce import (  # noqa: F401
    argmax, argmin, logsumexp, max, mean, min, prod, std, sum, var,
)
from .ops.shape import (  # noqa: F401
    broadcast_to, concatenate, expand, flatten, pad, permute, reshape, split, squeeze, stack,
    swapaxes, transpose, unsqueeze,
)
from .ops.conv import conv2d  # noqa: F401
from .ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d  # noqa: F401
from .ops.conv import conv1d, conv_transpose2d  # noqa: F401
from .ops.interpolate import interpolate  # noqa: F401
from .ops.attention import scaled_dot_product_attention  # noqa: F401
