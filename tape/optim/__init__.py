"""Optimizers, learning-rate schedulers and gradient clipping, following torch.optim.

>>> opt = tape.optim.Adam(model.parameters(), lr=1e-3)
>>> with tape.Tape() as t:
...     loss = loss_fn(model(x), y)
>>> opt.step(t.gradient(loss, model.parameters()))
"""

from . import lr_scheduler  # noqa: F401
from .adagrad import Adagrad  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .adamax import Adamax  # noqa: F401
from .clip import clip_grad_norm  # noqa: F401
from .nadam import NAdam  # noqa: F401
from .optimizer import Optimizer  # noqa: F401
from .radam import RAdam  # noqa: F401
from .rmsprop import RMSprop  # noqa: F401
from .sgd import SGD  # noqa: F401
