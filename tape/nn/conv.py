"""Convolution and pooling layers (NCHW), on ``F.conv2d`` and the pooling ops."""

from __future__ import annotations

from kernels import pair

from .. import functional as F
from .layers import add_weight_and_bias, reset_weight_and_bias
from .module import Module, count


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


def _positive(value, name):
    if min(value) < 1:
        raise ValueError(f"Conv2d: {name} must be positive, got {value}")
    return value


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
