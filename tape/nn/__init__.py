"""Layers and models: ``Module``, ``Parameter``, containers, layers, losses and ``init``.

>>> import tape.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> loss_fn = nn.CrossEntropyLoss()
>>> with tape.Tape() as t:
...     loss = loss_fn(model(tape.randn(5, 4)), tape.tensor([0, 2, 1, 1, 0]))
>>> grads = t.gradient(loss, model.parameters())
"""

from . import init  # noqa: F401
from .architecture import architecture, build  # noqa: F401
from .attention import (  # noqa: F401
    MultiheadAttention, TransformerEncoder, TransformerEncoderLayer,
)
from .container import ModuleDict, ModuleList, Sequential  # noqa: F401
from .conv import (  # noqa: F401
    AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, ConvTranspose2d, MaxPool2d, Upsample,
)
from .layers import (  # noqa: F401
    ELU, GELU, BatchNorm1d, BatchNorm2d, Dropout, Embedding, Flatten, GroupNorm, Identity,
    LayerNorm, LeakyReLU, Linear, LogSoftmax, ReLU, RMSNorm, Sigmoid, SiLU, Softmax, Softplus,
    Tanh,
)
from .losses import (  # noqa: F401
    BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss,
    NLLLoss, SmoothL1Loss,
)
from .module import Module  # noqa: F401
from .parameter import Parameter  # noqa: F401
from .recurrent import GRU, LSTM, RNN  # noqa: F401
from .saving import load_model, save_model  # noqa: F401
