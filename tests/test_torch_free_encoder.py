"""The embedded model without torch (app/models/torch_free_encoder.py): the graph built from
`model.safetensors` gives sentence-transformers' vectors, so collections that sentence-
transformers embedded stay valid; it follows the folder's modules; it is built once into the
model cache and later starts import neither torch nor onnx.

The comparisons need sentence-transformers (torch), which the dev extra may bring: they skip
where it is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.models.catalog import DEFAULT_LOCAL_MODEL, resolve_local_model
from app.models.torch_free_encoder import (
    BuildUnsupported,
    TorchFreeEncoder,
    build_paths,
    load_encoder,
    read_folder,
)
from app.paths import PROJECT_ROOT, SAMPLE_DOCS_DIR

pytestmark = pytest.mark.integration

MIN_COSINE = 0.9999


def model_dir() -> Path:
    return Path(resolve_local_model(DEFAULT_LOCAL_MODEL).path)


def sample_texts(count: int) -> list[str]:
    """`count` distinct texts from the sample documents (English and Chinese): word windows of
    1 to 400 words at many offsets (so some pass the model's 256 word pieces and are cut),
    plus edge cases."""
    words: list[str] = []
    for path in sorted(SAMPLE_DOCS_DIR.rglob("*")):
        if path.suffix in {".md", ".txt", ".html", ".csv"}:
            words += path.read_text(encoding="utf-8", errors="replace").split()
    zh_dir = SAMPLE_DOCS_DIR.parent / "docs-zh"
    zh = [
        line.strip()
        for path in sorted(zh_dir.rglob("*.md"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    texts = ["", " ", "a", "ÜNÏCÖDÉ café — naïve", "\x00 nul and \t tabs", "word " * 600]
    texts += zh[:200]
    sizes = [1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200, 400]
    offset = 0
    while len(texts) < count:
        size = sizes[offset % len(sizes)]
        start = (offset * 37) % max(len(words) - size, 1)
        texts.append(" ".join(words[start : start + size]))
        offset += 1
    return texts[:count]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(a * b, axis=1)))


def reference(folder: Path, texts: list[str], *, normalize: bool = True) -> np.ndarray:
    st = pytest.importorskip("sentence_transformers", reason="needs torch (the dev extra)")
    model = st.SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    vectors: np.ndarray = model.encode(
        texts, batch_size=32, normalize_embeddings=normalize, convert_to_numpy=True, prompt=""
    )
    return vectors


def test_default_model_gives_sentence_transformers_vectors(tmp_path: Path) -> None:
    """2,500 texts through both runtimes: what ingest stored with sentence-transformers is
    what the torch-free encoder gives (cosine >= 0.9999 for every text)."""
    texts = sample_texts(2500)
    expected = reference(model_dir(), texts)
    encoder = load_encoder("all-MiniLM-L6-v2", model_dir(), tmp_path / "cache")
    got = np.array(encoder.embed_documents(texts))
    assert got.shape == expected.shape == (2500, 384)
    assert min_cosine(got, expected) >= MIN_COSINE
    assert float(np.abs(got - expected).max()) < 1e-4
    questions = [encoder.embed_query(t) for t in texts[:50]]
    assert min_cosine(np.array(questions), expected[:50]) >= MIN_COSINE


def _copy_minilm(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(model_dir(), folder)
    return folder


def _set_pooling(folder: Path, **modes: bool) -> None:
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    for key in list(config):
        if key.startswith("pooling_mode"):
            config[key] = False
    config.update(modes)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))


def _set_modules(folder: Path, kinds: list[tuple[str, str]]) -> None:
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (kind, path) in enumerate(kinds)
    ]
    (folder / "modules.json").write_text(json.dumps(modules))


@pytest.mark.parametrize(
    "modes",
    [
        {"pooling_mode_cls_token": True},
        {"pooling_mode_max_tokens": True},
        {"pooling_mode_mean_sqrt_len_tokens": True},
        {
            "pooling_mode_cls_token": True,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": True,
        },
    ],
    ids=["cls", "max", "mean_sqrt_len", "cls+max+mean"],
)
def test_pooling_follows_the_folder_without_normalize(tmp_path: Path, modes: dict) -> None:
    """Pooling as 1_Pooling/config.json says (concatenated in sentence-transformers' order),
    and no Normalize module: lengths equal too."""
    folder = _copy_minilm(tmp_path, "pooled")
    _set_pooling(folder, **modes)
    _set_modules(folder, [("Transformer", ""), ("Pooling", "1_Pooling")])
    texts = sample_texts(120)
    expected = reference(folder, texts, normalize=False)
    encoder = TorchFreeEncoder.from_spec(read_folder(folder), normalize=False)
    got = encoder.encode(texts)
    assert got.shape == expected.shape
    assert min_cosine(got, expected) >= MIN_COSINE
    assert np.allclose(np.linalg.norm(got, axis=1), np.linalg.norm(expected, axis=1), rtol=1e-4)


def test_dense_layer_and_normalize(tmp_path: Path) -> None:
    """A Dense module (weights in 2_Dense/model.safetensors, Tanh) between Pooling and
    Normalize, as e.g. LaBSE and the Universal Sentence Encoder ports have."""
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    folder = _copy_minilm(tmp_path, "dense")
    dense = folder / "2_Dense"
    dense.mkdir()
    rng = np.random.default_rng(7)
    save_file(
        {
            "linear.weight": (rng.standard_normal((128, 384)) * 0.05).astype(np.float32),
            "linear.bias": (rng.standard_normal(128) * 0.05).astype(np.float32),
        },
        str(dense / "model.safetensors"),
    )
    (dense / "config.json").write_text(
        json.dumps(
            {
                "in_features": 384,
                "out_features": 128,
                "bias": True,
                "activation_function": "torch.nn.modules.activation.Tanh",
            }
        )
    )
    _set_modules(
        folder,
        [
            ("Transformer", ""),
            ("Pooling", "1_Pooling"),
            ("Dense", "2_Dense"),
            ("Normalize", "3_Normalize"),
        ],
    )
    texts = sample_texts(120)
    expected = reference(folder, texts)
    spec = read_folder(folder)
    assert spec.dimension == 128
    assert spec.normalize
    got = TorchFreeEncoder.from_spec(spec).encode(texts)
    assert got.shape == (120, 128)
    assert min_cosine(got, expected) >= MIN_COSINE


@pytest.mark.parametrize("kind", ["roberta", "xlm-roberta", "distilbert"])
def test_other_bert_family_transformers(tmp_path: Path, kind: str) -> None:
    """Small random RoBERTa / XLM-R / DistilBERT models saved by transformers, with
    MiniLM's tokenizer: positions from the padding index (RoBERTa), other weight names
    (DistilBERT), both match sentence-transformers."""
    pytest.importorskip("sentence_transformers", reason="needs torch (the dev extra)")
    import torch
    import transformers

    torch.manual_seed(0)
    if kind == "distilbert":
        config = transformers.DistilBertConfig(
            vocab_size=30522,
            dim=64,
            n_heads=4,
            n_layers=2,
            hidden_dim=128,
            max_position_embeddings=512,
            pad_token_id=0,
        )
        model = transformers.DistilBertModel(config)
    else:
        cls = transformers.XLMRobertaConfig if kind == "xlm-roberta" else transformers.RobertaConfig
        config = cls(
            vocab_size=30522,
            hidden_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            intermediate_size=128,
            max_position_embeddings=300,
            pad_token_id=0,
            type_vocab_size=1,
            hidden_act="gelu_new",
        )
        model = transformers.AutoModel.from_config(config)
    folder = tmp_path / kind
    model.save_pretrained(str(folder), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(model_dir() / name, folder / name)
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 256, "do_lower_case": False})
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, "pooling_mode_mean_tokens": True})
    )
    _set_modules(
        folder, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Normalize", "2_Normalize")]
    )
    texts = sample_texts(80)
    expected = reference(folder, texts)
    got = TorchFreeEncoder.from_spec(read_folder(folder)).encode(texts)
    assert min_cosine(got, expected) >= MIN_COSINE


def test_a_folder_it_cannot_build_says_why(tmp_path: Path) -> None:
    """No torch needed: the reason names what is not handled."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "modules.json").write_text(
        json.dumps([{"idx": 0, "path": "", "type": "sentence_transformers.models.StaticEmbedding"}])
    )
    with pytest.raises(BuildUnsupported, match="StaticEmbedding"):
        read_folder(static)
    mpnet = _copy_minilm(tmp_path, "mpnet")
    config = json.loads((mpnet / "config.json").read_text()) | {"model_type": "mpnet"}
    (mpnet / "config.json").write_text(json.dumps(config))
    with pytest.raises(BuildUnsupported, match="mpnet"):
        read_folder(mpnet)
    pickled = _copy_minilm(tmp_path, "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(BuildUnsupported, match=r"pytorch_model\.bin"):
        read_folder(pickled)


def test_built_once_then_started_without_torch_or_onnx(tmp_path: Path) -> None:
    """The first start builds into the cache (temporary name, then renamed, manifest last);
    a later process opens it with onnxruntime alone: no torch, no transformers, no onnx."""
    cache = tmp_path / "cache"
    first = load_encoder("all-MiniLM-L6-v2", model_dir(), cache)
    assert first.source == "built"
    paths = build_paths("all-MiniLM-L6-v2", model_dir(), cache)
    assert paths.graph.is_file()
    assert paths.manifest.is_file()
    assert not list(cache.glob("*.partial"))
    script = f"""
import sys, json
from pathlib import Path
from app.models.torch_free_encoder import load_encoder
encoder = load_encoder("all-MiniLM-L6-v2", Path({str(model_dir())!r}), Path({str(cache)!r}))
vector = encoder.embed_query("Who founded the town?")
heavy = [m for m in ("torch", "transformers", "sentence_transformers", "onnx") if m in sys.modules]
print(json.dumps({{"source": encoder.source, "heavy": heavy, "dim": len(vector)}}))
"""
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {
        "source": "cache",
        "heavy": [],
        "dim": 384,
    }
    second = load_encoder("all-MiniLM-L6-v2", model_dir(), cache)
    assert second.source == "cache"
    assert np.allclose(second.embed_query("tide"), first.embed_query("tide"), atol=1e-6)


def test_a_graph_that_does_not_match_its_manifest_is_rebuilt(tmp_path: Path) -> None:
    """A cache copied half-written: the size the manifest records must match the graph."""
    cache = tmp_path / "cache"
    load_encoder("all-MiniLM-L6-v2", model_dir(), cache)
    paths = build_paths("all-MiniLM-L6-v2", model_dir(), cache)
    paths.graph.write_bytes(b"truncated")
    again = load_encoder("all-MiniLM-L6-v2", model_dir(), cache)
    assert again.source == "built"
    assert len(again.embed_query("harbour")) == 384


def test_a_read_only_cache_builds_in_memory(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.write_text("not a folder")  # nothing can be written under it
    encoder = load_encoder("all-MiniLM-L6-v2", model_dir(), cache)
    assert encoder.source == "memory"
    assert len(encoder.embed_query("ferry")) == 384


def test_sample_texts_are_distinct_enough() -> None:
    texts = sample_texts(2500)
    assert len(set(texts)) > 2000
    assert any(len(re.findall(r"\S+", t)) >= 400 for t in texts)  # past 256 word pieces


def test_the_written_graph_is_valid_onnx() -> None:
    """app/models/onnx_proto.py writes the protobuf itself: the `onnx` package (dev extra)
    reads it back and its checker accepts it, fused and plain."""
    onnx = pytest.importorskip("onnx")
    from app.models.torch_free_encoder import build_graph

    spec = read_folder(model_dir())
    for fused in (True, False):
        model = onnx.load_from_string(build_graph(spec, fused=fused))
        onnx.checker.check_model(model)
        assert [i.name for i in model.graph.input] == list(spec.inputs)
        assert model.graph.output[0].name == "sentence_embedding"
