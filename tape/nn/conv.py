"""Convolution, pooling and upsampling layers (NCL and NCHW), on ``F.conv2d``,
``F.conv1d``, ``F.conv_transpose2d``, the pooling ops and ``F.interpolate``."""

from __future__ import annotations

from kernels import pair

from .. import functional as F
from ..ops.conv import _single
from .layers import _empty, add_weight_and_bias, reset_weight_and_bias
from .module import Module, count
from .parameter import Parameter


class Conv2d(Module):
    """2-D convolution; weight (out_channels, in_channels // groups, kh, kw), initialised
    as torch: kaiming_uniform_(a=sqrt(5)), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_channels = count(in_channels, "in_channels", "Conv2d", least=1)
        self.out_channels = count(out_channels, "out_channels", "Conv2d", least=1)
        self.groups = count(groups, "groups", "Conv2d", least=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels={in_channels} and out_channels="
                             f"{out_channels} must both be divisible by groups={groups}")
        self.kernel_size = _positive(pair(kernel_size, "kernel_size", "Conv2d"), "kernel_size")
        self.stride = _positive(pair(stride, "stride", "Conv2d"), "stride")
        self.dilation = _positive(pair(dilation, "dilation", "Conv2d"), "dilation")
        self.padding = pair(padding, "padding", "Conv2d")
        if min(self.padding) < 0:
            raise ValueError(f"Conv2d: padding must not be negative, got {padding}")
        shape = (self.out_channels, self.in_channels // groups) + self.kernel_size
        add_weight_and_bias(self, shape, bias, device, dtype)

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + ("" if self.bias is not None else ", bias=False")


def _positive(value, name, layer="Conv2d"):
    if min(value) < 1:
        raise ValueError(f"{layer}: {name} must be positive, got {value}")
    return value


def _channels(layer, in_channels, out_channels, groups, padding_mode):
    """The checked (in_channels, out_channels, groups) of a convolution layer."""
    if padding_mode != "zeros":
        raise NotImplementedError(f"{layer}: padding_mode={padding_mode!r} is not supported; "
                                  "only 'zeros'")
    cin = count(in_channels, "in_channels", layer, least=1)
    cout = count(out_channels, "out_channels", layer, least=1)
    groups = count(groups, "groups", layer, least=1)
    if cin % groups or cout % groups:
        raise ValueError(f"{layer}: in_channels={cin} and out_channels={cout} must both be "
                         f"divisible by groups={groups}")
    return cin, cout, groups


def _tuple1(value, name, layer, least):
    value = (_single(value, name, layer),)
    if value[0] < least:
        raise ValueError(f"{layer}: {name} must be at least {least}, got {value[0]}")
    return value


class Conv1d(Module):
    """1-D convolution over (N, C, L); weight (out_channels, in_channels // groups, k),
    initialised as torch (as Conv2d). Sizes are kept as 1-tuples, as torch keeps them."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = _channels(
            "Conv1d", in_channels, out_channels, groups, padding_mode)
        self.padding_mode = padding_mode
        self.kernel_size = _tuple1(kernel_size, "kernel_size", "Conv1d", 1)
        self.stride = _tuple1(stride, "stride", "Conv1d", 1)
        self.padding = _tuple1(padding, "padding", "Conv1d", 0)
        self.dilation = _tuple1(dilation, "dilation", "Conv1d", 1)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        add_weight_and_bias(self, shape, bias, device, dtype)

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        return _conv_repr(self)


class ConvTranspose2d(Module):
    """Transposed 2-D convolution; weight (in_channels, out_channels // groups, kh, kw),
    bias (out_channels,), initialised as torch: kaiming_uniform_(a=sqrt(5)) on the weight
    (whose fan_in is out_channels // groups * kh * kw) and the bias in the same bounds."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__()
        layer = "ConvTranspose2d"
        self.in_channels, self.out_channels, self.groups = _channels(
            layer, in_channels, out_channels, groups, padding_mode)
        self.padding_mode = padding_mode
        self.kernel_size = _positive(pair(kernel_size, "kernel_size", layer), "kernel_size",
                                     layer)
        self.stride = _positive(pair(stride, "stride", layer), "stride", layer)
        self.dilation = _positive(pair(dilation, "dilation", layer), "dilation", layer)
        self.padding = pair(padding, "padding", layer)
        self.output_padding = pair(output_padding, "output_padding", layer)
        if min(self.padding + self.output_padding) < 0:
            raise ValueError(f"{layer}: padding and output_padding must not be negative, got "
                             f"{padding} and {output_padding}")
        if any(o >= max(s, d) for o, s, d in zip(self.output_padding, self.stride,
                                                 self.dilation)):
            raise ValueError(f"{layer}: output_padding={self.output_padding} must be smaller "
                             f"than either stride={self.stride} or dilation={self.dilation}")
        shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        self.weight = Parameter(_empty(shape, device, dtype))
        if bias:
            self.bias = Parameter(_empty((self.out_channels,), device, dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x, output_size=None):
        output_padding = (self.output_padding if output_size is None
                          else self._output_padding(x, output_size))
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)

    def _output_padding(self, x, output_size):
        """The output_padding that gives ``output_size`` (H, W), or (N, C, H, W), as torch."""
        size = tuple(output_size)[-2:]
        if len(size) != 2:
            raise ValueError(f"ConvTranspose2d: output_size={output_size!r} should end with "
                             "(H, W)")
        out = []
        for i, axis in enumerate((-2, -1)):
            low = ((x.shape[axis] - 1) * self.stride[i] - 2 * self.padding[i]
                   + self.dilation[i] * (self.kernel_size[i] - 1) + 1)
            if not low <= size[i] < low + self.stride[i]:
                raise ValueError(
                    f"ConvTranspose2d: output_size={tuple(output_size)} is not reachable from "
                    f"input of shape {tuple(x.shape)}: each size must lie in [{low}, "
                    f"{low + self.stride[i] - 1}] for axis {axis}")
            out.append(size[i] - low)
        return tuple(out)

    def extra_repr(self):
        return _conv_repr(self)


def _conv_repr(m):
    """torch's ``extra_repr`` of a convolution layer."""
    ones, zeros = (1,) * len(m.kernel_size), (0,) * len(m.kernel_size)
    text = (f"{m.in_channels}, {m.out_channels}, kernel_size={m.kernel_size}, "
            f"stride={m.stride}")
    if m.padding != zeros:
        text += f", padding={m.padding}"
    if m.dilation != ones:
        text += f", dilation={m.dilation}"
    if getattr(m, "output_padding", zeros) != zeros:
        text += f", output_padding={m.output_padding}"
    if m.groups != 1:
        text += f", groups={m.groups}"
    return text + ("" if m.bias is not None else ", bias=False")


class MaxPool2d(Module):
    """Max pooling over ``kernel_size`` windows (stride defaults to the kernel size)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    """Average pooling; zero padding counts in the divisor, as torch's default."""

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` whatever the input's size."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Upsample(Module):
    """Resize to ``size`` or by ``scale_factor`` with ``F.interpolate`` (mode "nearest")."""

    def __init__(self, size=None, scale_factor=None, mode="nearest"):
        super().__init__()
        if mode != "nearest":
            raise NotImplementedError(f"Upsample: mode {mode!r} is not implemented; tape "
                                      "supports 'nearest'")
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: give exactly one of size and scale_factor, got "
                             f"size={size!r}, scale_factor={scale_factor!r}")
        self.size = tuple(size) if isinstance(size, (tuple, list)) else size
        self.scale_factor = (tuple(float(f) for f in scale_factor)
                             if isinstance(scale_factor, (tuple, list))
                             else None if scale_factor is None else float(scale_factor))
        self.mode = mode

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode)

    def extra_repr(self):
        if self.scale_factor is not None:
            return f"scale_factor={self.scale_factor!r}, mode={self.mode!r}"
        return f"size={self.size!r}, mode={self.mode!r}"
