"""Batches by tokens, not by count (`token_batches` in app/models/embeddings.py): texts of
similar token length go together, a batch of long texts holds fewer rows, and the vectors are
the ones each text gets alone, in the order given — through the torch-free encoder and through
an ingest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from app.config import load_settings
from app.indexing.sync import sync_collection
from app.models.catalog import DEFAULT_LOCAL_MODEL, resolve_local_model
from app.models.embeddings import TOKENS_PER_ROW, ModelEmbeddings, token_batches
from app.models.torch_free_encoder import TorchFreeEncoder, read_folder
from tests.fakes import FAKE_INFO
from tests.test_torch_free_encoder import min_cosine, sample_texts

# The encoder's tests run the real embedded model; the others are also in the quick loop.
pytestmark = pytest.mark.integration


def padded(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


@pytest.mark.unit
@pytest.mark.parametrize("max_rows", [1, 3, 8, 64])
def test_every_text_once_in_batches_within_both_limits(max_rows: int) -> None:
    rng = np.random.default_rng(7)
    lengths = [int(n) for n in rng.integers(1, 300, size=500)]
    batches = token_batches(lengths, max_rows)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    budget = max_rows * TOKENS_PER_ROW
    for batch in batches:
        assert 1 <= len(batch) <= max_rows
        if len(batch) > 1:
            assert len(batch) * max(lengths[i] for i in batch) <= budget
    # Shortest first: no batch holds a text shorter than one of an earlier batch.
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(flat)


@pytest.mark.unit
def test_long_texts_make_smaller_batches_and_little_padding() -> None:
    lengths = [20] * 64 + [250] * 64
    batches = token_batches(lengths, 64)
    sizes = sorted(len(b) for b in batches)
    assert max(sizes) == 64  # the short texts fill a batch
    assert all(len(b) <= 64 * TOKENS_PER_ROW // 250 for b in batches if lengths[b[0]] == 250)
    # Mixed lengths in count-sized batches of the given order pad short texts to long ones.
    mixed = [lengths[i] for pair in zip(range(64), range(64, 128), strict=True) for i in pair]
    by_count = [list(range(s, s + 64)) for s in range(0, 128, 64)]
    assert padded(mixed, token_batches(mixed, 64)) == sum(mixed)
    assert padded(mixed, by_count) > 1.5 * sum(mixed)


@pytest.mark.unit
def test_a_single_row_longer_than_the_budget_still_gets_a_batch() -> None:
    assert token_batches([10_000, 5], 2, tokens_per_row=10) == [[1], [0]]
    assert token_batches([], 8) == []


class TokenCounted(Embeddings):
    """Words are tokens; records the texts of every call."""

    def __init__(self) -> None:
        self.inner = DeterministicFakeEmbedding(size=8)
        self.calls: list[list[str]] = []

    def token_lengths(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


@pytest.mark.unit
def test_model_embeddings_batches_by_the_models_tokens_or_by_count() -> None:
    texts = [" ".join(["w"] * n) for n in (200, 3, 150, 4, 5, 199)]
    model = TokenCounted()
    by_tokens = ModelEmbeddings(FAKE_INFO, lambda: model, batch_size=2)
    batches = by_tokens.document_batches(texts)
    assert batches == [[1, 3], [4], [2], [5], [0]]  # 2 x 150 > 2 x 128: one row each
    fake = DeterministicFakeEmbedding(size=8)
    by_count = ModelEmbeddings(FAKE_INFO, lambda: fake, batch_size=4)
    assert by_count.document_batches(texts) == [[1, 3, 4, 2], [5, 0]]  # by length, 4 a batch


class Counted(Embeddings):
    """A model server's embeddings: no tokenizer the app can use."""

    def __init__(self) -> None:
        self.inner = DeterministicFakeEmbedding(size=8)
        self.calls: list[list[str]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


def ingest_alternating_files(tmp_path: Path, model: TokenCounted | Counted) -> list[str]:
    """13 files, short and long in turn, ingested with `model` in batches of 4: their texts."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for n in range(13):
        # Short and long files alternate; 3 rows of 200 words pass the 4 x 128 budget.
        words = 6 if n % 2 else 200
        (folder / f"f{n:02d}.txt").write_text(" ".join(f"w{n}x{i}" for i in range(words)))
    settings = load_settings(
        chroma_dir=tmp_path / "store", chunk_size=2000, chunk_overlap=0, embedding_batch_size=4
    )
    embeddings = ModelEmbeddings(FAKE_INFO, lambda: model, batch_size=4)
    report = sync_collection(settings, [folder], embeddings)
    assert report.ok
    assert report.chunks_added == 13
    return sorted(path.read_text() for path in folder.iterdir())


@pytest.mark.unit
def test_an_ingest_gives_an_embedded_model_its_token_batches(tmp_path: Path) -> None:
    model = TokenCounted()
    texts = ingest_alternating_files(tmp_path, model)
    # Each request is one batch as sorted by tokens, within the row and padded-token budget
    # (cut by count from the stream, 4 texts a request, long and short ones would share
    # requests past the budget).
    for call in model.calls:
        lengths = model.token_lengths(call)
        assert len(call) <= 4, lengths
        assert len(call) * max(lengths) <= 4 * 128 or len(call) == 1, lengths
    assert sorted(t for call in model.calls for t in call) == texts


@pytest.mark.unit
def test_an_ingest_sends_a_model_server_full_requests(tmp_path: Path) -> None:
    model = Counted()
    texts = ingest_alternating_files(tmp_path, model)
    # Requests are cut from the stream of chunks: full ones but the last, each chunk once.
    sizes = [len(call) for call in model.calls]
    assert all(size == 4 for size in sizes[:-1]), sizes
    assert sorted(t for call in model.calls for t in call) == texts


# --- the torch-free encoder -------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder() -> TorchFreeEncoder:
    spec = read_folder(Path(resolve_local_model(DEFAULT_LOCAL_MODEL).path))
    return TorchFreeEncoder.from_spec(spec, batch_size=8)


def test_encoder_gives_each_text_its_unbatched_vector_in_order(encoder: TorchFreeEncoder) -> None:
    texts = sample_texts(300)  # distinct texts, English and Chinese, some cut at 256 pieces
    lengths = encoder.token_lengths(texts)
    assert len(token_batches(lengths, 8)) > len(texts) // 8  # long texts split the batches
    batched = np.array(encoder.embed_documents(texts))
    alone = np.vstack([encoder.encode([t]) for t in texts])
    assert batched.shape == alone.shape
    np.testing.assert_allclose(batched, alone, atol=2e-6)  # each text's own vector, in order
    assert min_cosine(batched, alone) >= 0.99999


def test_encoder_counts_tokens_as_it_runs_them(encoder: TorchFreeEncoder) -> None:
    lengths = encoder.token_lengths(["", "hello world", "word " * 600])
    assert lengths[0] == 2  # [CLS] [SEP]
    assert lengths[1] == 4
    assert lengths[2] == encoder.text.max_seq_length  # cut as the model runs it
