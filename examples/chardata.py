"""The text and batches of examples/charlm.py, without any deep-learning library: the
PyTorch twin (bench/charlm_torch.py) imports this too, so both train on the same bytes in
the same order.

The text is the documentation topics of Python's standard library (``pydoc_data.topics``,
about 465 KB of English and code, shipped with every Python): nothing to download.
"""

from __future__ import annotations

import numpy as np


def load_text():
    """The topics joined in the order of their names (a dict's order could change)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


class CharData:
    """The text as integer codes, split 90/10 into training and validation text."""

    def __init__(self, text=None, val_fraction=0.1):
        text = load_text() if text is None else text
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        codes = np.array([self.index[c] for c in text], dtype=np.int64)
        cut = int(len(codes) * (1 - val_fraction))
        self.train, self.val = codes[:cut], codes[cut:]

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, s):
        return np.array([self.index[c] for c in s if c in self.index], dtype=np.int64)

    def decode(self, codes):
        return "".join(self.chars[int(i)] for i in codes)

    def batch(self, split, batch_size, context, rng):
        """``batch_size`` windows of ``context`` codes and the codes that follow each."""
        codes = self.train if split == "train" else self.val
        starts = rng.integers(0, len(codes) - context - 1, batch_size)
        rows = starts[:, None] + np.arange(context)
        return codes[rows], codes[rows + 1]

    def val_batches(self, batch_size, context, count):
        """Fixed validation windows (the same for every evaluation and every library)."""
        rng = np.random.default_rng(12345)
        return [self.batch("val", batch_size, context, rng) for _ in range(count)]


def causal_mask(context):
    """Float mask for the encoder: -inf above the diagonal (no position sees the future)."""
    return np.triu(np.full((context, context), -np.inf, dtype=np.float32), k=1)


def make_model(nn, vocab, context, d_model=128, nhead=4, layers=2, ff=512, dropout=0.0):
    """The character Transformer, for ``nn`` = ``tape.nn`` or ``torch.nn`` (same code, same
    parameter names): token and position embeddings, ``layers`` pre-norm encoder layers
    with a causal mask, a final LayerNorm and a linear head over the characters."""

    class CharTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, d_model)
            self.pos = nn.Embedding(context, d_model)
            layer = nn.TransformerEncoderLayer(d_model, nhead, ff, dropout, activation="relu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers)
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab)

        def forward(self, idx, mask):
            t = idx.shape[1]
            h = self.tok(idx) + self.pos.weight[:t]
            h = self.encoder(h, mask=mask[:t, :t], is_causal=True)
            return self.head(self.norm(h))

    return CharTransformer()


def lr_factor(step, warmup, total):
    """Linear warm-up, then cosine decay to a tenth over ``total`` steps (0: constant): the
    schedule both libraries follow."""
    if step < warmup:
        return (step + 1) / warmup
    if not total:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))
