"""The op table's convolution and pooling rows: each route conv2d takes on the CPU
(im2col, Winograd fused and batched, direct for one input channel) and the pools."""

from optable.row import Table

# every check on the GPU too (there every convolution takes im2col); f64 as tight as a sum
T = Table(tol64=(1e-10, 1e-10), tol32=(2e-4, 2e-4), gpu=True)

T.row("conv2d_pad1_bias", lambda m, x, w, b: m.F.conv2d(x, w, b, padding=1),
      (2, 3, 5, 5), (4, 3, 3, 3), (4,))
T.row("conv2d_stride2_dilation2", lambda m, x, w: m.F.conv2d(x, w, stride=2, padding=2,
                                                             dilation=2),
      (2, 2, 7, 6), (3, 2, 3, 2))
T.row("conv2d_groups_pairs", lambda m, x, w: m.F.conv2d(x, w, stride=(2, 1), padding=(1, 0),
                                                        groups=2),
      (2, 4, 5, 5), (6, 2, 3, 3))
T.row("conv2d_batch1_odd_1x1", lambda m, x, w: m.F.conv2d(x, w), (1, 3, 7, 5), (2, 3, 1, 1))
T.row("conv2d_then_tanh", lambda m, x, w: m.F.conv2d(x, w).tanh(), (1, 2, 4, 4), (2, 2, 2, 2))
# 3x3, stride 1, >= 8 input channels: the Winograd route on the CPU (im2col on the GPU)
T.row("winograd_pad1_bias_odd", lambda m, x, w, b: m.F.conv2d(x, w, b, padding=1),
      (2, 8, 5, 6), (3, 8, 3, 3), (3,))
T.row("winograd_pad0_batch1_then_tanh", lambda m, x, w: m.F.conv2d(x, w).tanh(),
      (1, 9, 7, 4), (2, 9, 3, 3))
T.row("winograd_pad2x1_groups", lambda m, x, w: m.F.conv2d(x, w, padding=(2, 1),
                                                              groups=2) ** 2,
      (1, 16, 3, 4), (4, 8, 3, 3))
# channels past WINOGRAD_FUSED_MAX_CHANNELS: the batched GEMMs instead of the fused kernels
T.row("winograd_batched_many_channels", lambda m, x, w: m.F.conv2d(x, w, padding=1).tanh(),
      (1, 64, 2, 3), (40, 64, 3, 3))
# one input channel: the direct kernels on the CPU
T.row("direct_cin1_pad1_bias_then_tanh", lambda m, x, w, b: m.F.conv2d(x, w, b,
                                                                       padding=1).tanh(),
      (2, 1, 6, 5), (3, 1, 3, 3), (3,))
T.row("direct_cin1_stride2x1_pad0x2_k2x4", lambda m, x, w: m.F.conv2d(
    x, w, stride=(2, 1), padding=(0, 2)) ** 2, (1, 1, 7, 6), (2, 1, 2, 4))
T.row("max_pool2d_2x2", lambda m, x: m.F.max_pool2d(x, 2) ** 2, (2, 3, 6, 6))
T.row("max_pool2d_k3_s1_p1", lambda m, x: m.F.max_pool2d(x, 3, 1, 1) ** 2, (2, 2, 5, 5))
T.row("max_pool2d_odd_k3x2_s2x1", lambda m, x: m.F.max_pool2d(x, (3, 2), (2, 1)) ** 2, (1, 2, 7, 5))
T.row("avg_pool2d_k3_s2_p1", lambda m, x: m.F.avg_pool2d(x, 3, 2, 1) ** 2, (2, 3, 7, 7))
T.row("adaptive_avg_pool2d_uneven", lambda m, x: m.F.adaptive_avg_pool2d(x, (3, 2)) ** 2,
      (2, 3, 7, 5))
T.row("adaptive_avg_pool2d_even", lambda m, x: m.F.adaptive_avg_pool2d(x, 2) ** 2, (2, 3, 4, 6))

# ----- conv1d (conv2d on a height-1 image), conv_transpose2d (the im2col route's ops run
# backwards: W2.T @ x2, then col2im) and interpolate (nearest: a broadcast or gathers) -----
T.row("conv1d_pad1_bias", lambda m, x, w, b: m.F.conv1d(x, w, b, padding=1),
      (2, 3, 7), (4, 3, 3), (4,))
T.row("conv1d_stride2_dilation2_groups2", lambda m, x, w: m.F.conv1d(
    x, w, stride=2, padding=2, dilation=2, groups=2), (2, 4, 9), (6, 2, 3))
T.row("conv1d_cin1_then_tanh", lambda m, x, w: m.F.conv1d(x, w, padding=(1,)).tanh(),
      (2, 1, 8), (3, 1, 3))
T.row("conv_transpose2d_bias", lambda m, x, w, b: m.F.conv_transpose2d(x, w, b),
      (2, 3, 4, 4), (3, 2, 3, 3), (2,))
T.row("conv_transpose2d_stride2_pad1_output_padding1", lambda m, x, w: m.F.conv_transpose2d(
    x, w, stride=2, padding=1, output_padding=1).tanh(), (1, 2, 3, 4), (2, 3, 3, 2))
T.row("conv_transpose2d_groups2_dilation2", lambda m, x, w, b: m.F.conv_transpose2d(
    x, w, b, stride=(2, 1), padding=(0, 1), groups=2, dilation=2), (2, 4, 3, 3),
      (4, 2, 2, 3), (4,))
# output_padding >= stride (allowed below the dilation): col2im uncropped, cropped and padded
T.row("conv_transpose2d_output_padding_past_stride", lambda m, x, w: m.F.conv_transpose2d(
    x, w, padding=(1, 0), output_padding=(1, 2), dilation=3), (1, 2, 3, 3), (2, 2, 3, 2))
T.row("interpolate_nearest_1d_scale2", lambda m, x: m.F.interpolate(x, scale_factor=2) ** 2,
      (2, 3, 4))
T.row("interpolate_nearest_1d_size7", lambda m, x: m.F.interpolate(x, size=7) ** 2, (2, 3, 5))
T.row("interpolate_nearest_2d_scale2x3", lambda m, x: m.F.interpolate(x, scale_factor=(2, 3)),
      (1, 2, 3, 4))
T.row("interpolate_nearest_2d_size_down", lambda m, x: m.F.interpolate(x, size=(3, 4)) ** 2,
      (1, 2, 5, 6))
T.row("interpolate_nearest_2d_fractional_scale", lambda m, x: m.F.interpolate(
    x, scale_factor=(1.7, 2.5), mode="nearest"), (1, 2, 3, 4))
