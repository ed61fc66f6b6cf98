"""Sentence-transformers BERT-family folders run by onnxruntime, without torch.

The ONNX graph is built from the folder's own files (written by app/models/onnx_proto.py): the
weights come from `model.safetensors` (read with numpy), the shape of the network from
`config.json`, and the pipeline from `modules.json`: Transformer, then Pooling as
`1_Pooling/config.json` sets it (cls / max / mean / mean_sqrt_len, concatenated in
sentence-transformers' order), optional Dense layers, Normalize. Texts are tokenized with the
folder's `tokenizer.json` (the `tokenizers` library). The result equals sentence-transformers'
vectors (cosine >= 0.9999, tests/test_torch_free_encoder.py), so collections embedded by
sentence-transformers stay valid.

Transformers handled: BERT (all-MiniLM-L6-v2, bge, e5, gte ...), RoBERTa / XLM-RoBERTa /
CamemBERT (positions counted from the padding index) and DistilBERT, with absolute positions
and a GELU / ReLU / SiLU activation. Anything else (MPNet's relative positions, a router, a
static embedding, weights only in `pytorch_model.bin`, custom code) raises `BuildUnsupported`
with the reason; such a folder needs torch (the `sentence-transformers` extra).

The layers use onnxruntime's fused CPU operators (`com.microsoft` Attention,
SkipLayerNormalization, BiasGelu / FastGelu), which every CPU build of onnxruntime ships; the
rest is opset 17. Building costs about half a second more than opening a built graph with
onnxruntime alone (0.2 s), so the graph is
built once into the model cache directory (beside the store), under a key made from the
folder's files: written to a temporary name and renamed, its manifest last. Starts after that
read neither the weights nor build anything. Where the cache cannot be written the graph is built in
memory at each start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from app.models import onnx_proto
from app.models.embeddings import token_batches
from app.models.onnx_encoder import partial_file, remove_stale_partials

if TYPE_CHECKING:
    import numpy as np

BUILD_FORMAT = 1  # bump when the graph or the manifest changes: old builds are then redone
OPSET = 17  # LayerNormalization; onnxruntime >= 1.14 runs it
MS_DOMAIN = "com.microsoft"
SUPPORTED_MODULES = {"Transformer", "Pooling", "Dense", "Normalize"}
# sentence-transformers' concatenation order (its _LEGACY_POOLING_MODE_KWARGS).
POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
SUPPORTED_POOLING = {"cls", "max", "mean", "mean_sqrt_len_tokens"}
ROBERTA_TYPES = {"roberta", "xlm-roberta", "camembert"}
ACTIVATIONS = {
    "gelu": "erf",
    "gelu_new": "tanh",
    "gelu_pytorch_tanh": "tanh",
    "gelu_fast": "tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
DENSE_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "erf",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
}
SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}
BATCH_SIZE = 32


class BuildUnsupported(Exception):
    """The folder holds something this builder does not handle; the message says what."""


@dataclass(frozen=True)
class Layers:
    """The transformer's shape, read from config.json."""

    kind: str  # "bert", "roberta" or "distilbert"
    hidden: int
    heads: int
    layers: int
    activation: str  # "erf", "tanh", "relu" or "silu"
    eps: float
    pad_token_id: int
    type_vocab: int


@dataclass(frozen=True)
class Dense:
    weight: np.ndarray  # [out, in], as torch's Linear keeps it
    bias: np.ndarray | None
    activation: str


@dataclass(frozen=True)
class TextSettings:
    """What the encoder needs besides the graph (kept in the build's manifest)."""

    transformer_dir: str  # relative to the model folder: where tokenizer.json is
    max_seq_length: int
    do_lower_case: bool
    pad_id: int
    pad_token: str
    inputs: tuple[str, ...]
    dimension: int
    normalize: bool


@dataclass(frozen=True)
class FolderSpec:
    """What the graph and the tokenizer need from a sentence-transformers folder."""

    model_dir: Path
    transformer_dir: Path
    layers: Layers
    pooling: tuple[str, ...]
    dense: tuple[Dense, ...]
    normalize: bool
    max_seq_length: int
    do_lower_case: bool
    pad_id: int
    pad_token: str
    inputs: tuple[str, ...]
    dimension: int
    weights: dict[str, np.ndarray] = field(repr=False)

    @property
    def text(self) -> TextSettings:
        return TextSettings(
            self.transformer_dir.relative_to(self.model_dir).as_posix(),
            self.max_seq_length,
            self.do_lower_case,
            self.pad_id,
            self.pad_token,
            self.inputs,
            self.dimension,
            self.normalize,
        )


def read_folder(model_dir: Path) -> FolderSpec:
    """Everything the graph needs, from the folder's files; `BuildUnsupported` says what is
    missing or not handled."""
    try:
        return _read_folder(Path(model_dir))
    except (KeyError, ValueError, TypeError, IndexError) as exc:  # a config lacking a field
        raise BuildUnsupported(f"{model_dir}: cannot read {type(exc).__name__} {exc}") from exc


def _read_folder(model_dir: Path) -> FolderSpec:
    modules = _modules(model_dir)
    transformer_dir = model_dir / modules[0][1]
    config = _json(transformer_dir / "config.json")
    if not config:
        raise BuildUnsupported(f"{transformer_dir} has no config.json")
    layers = _layers(config, transformer_dir)
    if not (transformer_dir / "tokenizer.json").is_file():
        raise BuildUnsupported(
            f"{transformer_dir} has no tokenizer.json for the tokenizers library"
        )
    weights_file = transformer_dir / "model.safetensors"
    if not weights_file.is_file():
        raise BuildUnsupported(
            f"{transformer_dir} has no model.safetensors (pytorch_model.bin needs torch to read)"
        )
    weights = _strip_prefix(read_safetensors(weights_file))
    pooling: tuple[str, ...] = ("mean",)
    dense: list[Dense] = []
    normalize = False
    for kind, path in modules[1:]:
        if kind == "Pooling":
            pooling = _pooling(_json(model_dir / path / "config.json"))
        elif kind == "Dense":
            dense.append(_dense(model_dir / path))
        elif kind == "Normalize":
            normalize = True
    st_config = _json(transformer_dir / "sentence_bert_config.json") or _json(
        model_dir / "sentence_bert_config.json"
    )
    pad_id, pad_token = _padding(transformer_dir)
    inputs = ["input_ids", "attention_mask"]
    if layers.type_vocab > 1:
        inputs.append("token_type_ids")
    dimension = dense[-1].weight.shape[0] if dense else layers.hidden * len(pooling)
    return FolderSpec(
        model_dir=model_dir,
        transformer_dir=transformer_dir,
        layers=layers,
        pooling=pooling,
        dense=tuple(dense),
        normalize=normalize,
        max_seq_length=_max_seq_length(st_config, config, transformer_dir),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        pad_id=pad_id,
        pad_token=pad_token,
        inputs=tuple(inputs),
        dimension=int(dimension),
        weights=weights,
    )


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file as numpy arrays (float32 for every float type), read without the
    `safetensors` package: an 8-byte header length, a JSON header, then the raw tensors."""
    import numpy as np

    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + length)
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[start:end]
        dtype = info["dtype"]
        if dtype == "BF16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype in SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, dtype=SAFETENSORS_DTYPES[dtype])
        else:
            raise BuildUnsupported(f"{path.name}: tensor {name} has dtype {dtype}")
        array = array.reshape(info["shape"])
        if array.dtype.kind == "f" and array.dtype != np.float32:
            array = array.astype(np.float32)
        tensors[name] = array
    return tensors


# --- Reading the folder ----------------------------------------------------------------------


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _modules(model_dir: Path) -> list[tuple[str, str]]:
    """(module type, folder) in order; a folder without modules.json is a transformer with
    mean pooling, as sentence-transformers treats it."""
    listing = model_dir / "modules.json"
    if not listing.is_file():
        return [("Transformer", ""), ("Pooling", "")]
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BuildUnsupported(f"{listing}: {exc}") from exc
    modules = [(str(m.get("type", "")).rsplit(".", 1)[-1], str(m.get("path", ""))) for m in entries]
    unsupported = [kind for kind, _ in modules if kind not in SUPPORTED_MODULES]
    if unsupported:
        raise BuildUnsupported(f"{model_dir} uses {', '.join(unsupported)}")
    if not modules or modules[0][0] != "Transformer":
        raise BuildUnsupported(f"{model_dir} does not start with a Transformer module")
    return modules


def _layers(config: dict[str, Any], folder: Path) -> Layers:
    model_type = str(config.get("model_type", ""))
    if model_type == "distilbert":
        if config.get("sinusoidal_pos_embds"):
            raise BuildUnsupported(f"{folder}: DistilBERT with sinusoidal positions")
        return Layers(
            "distilbert",
            int(config["dim"]),
            int(config["n_heads"]),
            int(config["n_layers"]),
            _activation(str(config.get("activation", "gelu")), folder),
            1e-12,
            int(config.get("pad_token_id", 0) or 0),
            0,
        )
    if model_type != "bert" and model_type not in ROBERTA_TYPES:
        raise BuildUnsupported(
            f"{folder} is a {model_type or 'unknown'} model (handled: bert, roberta, "
            "xlm-roberta, camembert, distilbert)"
        )
    position_type = config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise BuildUnsupported(f"{folder}: position_embedding_type {position_type}")
    return Layers(
        "roberta" if model_type in ROBERTA_TYPES else "bert",
        int(config["hidden_size"]),
        int(config["num_attention_heads"]),
        int(config["num_hidden_layers"]),
        _activation(str(config.get("hidden_act", "gelu")), folder),
        float(config.get("layer_norm_eps", 1e-12)),
        int(config.get("pad_token_id", 0) or 0),
        int(config.get("type_vocab_size", 0) or 0),
    )


def _activation(name: str, folder: Path) -> str:
    if name not in ACTIVATIONS:
        raise BuildUnsupported(f"{folder}: activation {name}")
    return ACTIVATIONS[name]


def _strip_prefix(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`bert.embeddings...` (a folder saved from a task model) becomes `embeddings...`."""
    anchor = "embeddings.word_embeddings.weight"
    found = [k for k in weights if k.endswith(anchor)]
    if len(found) != 1:
        raise BuildUnsupported("model.safetensors has no single embeddings.word_embeddings")
    prefix = found[0][: -len(anchor)]
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def _pooling(config: dict[str, Any]) -> tuple[str, ...]:
    mode = config.get("pooling_mode")  # sentence-transformers 6's own key
    if isinstance(mode, str):
        modes: tuple[str, ...] = (mode,)
    elif isinstance(mode, list):
        modes = tuple(str(m) for m in mode)
    else:
        modes = tuple(name for key, name in POOLING_KEYS.items() if config.get(key))
    modes = modes or ("mean",)
    if config.get("include_prompt") is False:
        raise BuildUnsupported("Pooling with include_prompt=false")
    unsupported = [m for m in modes if m not in SUPPORTED_POOLING]
    if unsupported:
        raise BuildUnsupported(f"pooling mode {', '.join(unsupported)}")
    return modes


def _dense(folder: Path) -> Dense:
    config = _json(folder / "config.json")
    if config.get("use_residual"):
        raise BuildUnsupported(f"{folder}: Dense with a residual")
    if config.get("module_input_name", "sentence_embedding") != "sentence_embedding":
        raise BuildUnsupported(f"{folder}: Dense on {config['module_input_name']}")
    name = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    if name not in DENSE_ACTIVATIONS:
        raise BuildUnsupported(f"{folder}: Dense activation {name}")
    weights_file = folder / "model.safetensors"
    if not weights_file.is_file():
        raise BuildUnsupported(f"{folder} has no model.safetensors")
    weights = read_safetensors(weights_file)
    if "linear.weight" not in weights:
        raise BuildUnsupported(f"{weights_file} has no linear.weight")
    return Dense(weights["linear.weight"], weights.get("linear.bias"), DENSE_ACTIVATIONS[name])


def _padding(folder: Path) -> tuple[int, str]:
    padding = _json(folder / "tokenizer.json").get("padding") or {}
    token = padding.get("pad_token") or _json(folder / "tokenizer_config.json").get("pad_token")
    if isinstance(token, dict):  # an AddedToken saved whole
        token = token.get("content")
    token = str(token or "[PAD]")
    pad_id = padding.get("pad_id")
    if pad_id is None:
        from tokenizers import Tokenizer

        pad_id = Tokenizer.from_file(str(folder / "tokenizer.json")).token_to_id(token) or 0
    return int(pad_id), token


def _max_seq_length(st_config: dict[str, Any], config: dict[str, Any], folder: Path) -> int:
    """sentence-transformers' rule: `max_seq_length` when the folder says, else the smaller of
    the model's positions and the tokenizer's limit."""
    declared = st_config.get("max_seq_length")
    if isinstance(declared, int) and declared > 0:
        return declared
    limits = []
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        offset = 2 if str(config.get("model_type")) in ROBERTA_TYPES else 0
        limits.append(positions - offset)
    tokenizer_max = _json(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:
        limits.append(tokenizer_max)
    return min(limits) if limits else 512


# --- Building the graph ----------------------------------------------------------------------


class _Graph:
    """Nodes, initializers and unique names, as serialized protobuf messages."""

    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.initializers: list[bytes] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint: str, array: Any) -> str:
        import numpy as np

        name = self.name(hint)
        array = np.asarray(array)  # a 0-d array stays 0-d (a scalar Gather index drops its axis)
        self.initializers.append(
            onnx_proto.tensor(name, np.ascontiguousarray(array) if array.ndim else array)
        )
        return name

    def op(self, op_type: str, inputs: Iterable[str], hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        domain = attrs.pop("domain", "")
        self.nodes.append(onnx_proto.node(op_type, list(inputs), [out], domain, **attrs))
        return out


def build_graph(spec: FolderSpec, *, fused: bool = True) -> bytes:
    """The folder's pipeline as one ONNX graph: input_ids, attention_mask (and token_type_ids
    when the model has token types) in, `sentence_embedding` [batch, dimension] out (not
    normalized: the encoder does that, as for every model)."""
    import numpy as np

    from app.models.onnx_proto import BOOL, FLOAT, INT32, INT64

    g = _Graph()
    w = spec.weights
    lay = spec.layers
    f32 = np.float32
    ids, mask = "input_ids", "attention_mask"
    # Embeddings ------------------------------------------------------------------------
    x = g.op("Gather", [g.const("word_embeddings", w["embeddings.word_embeddings.weight"]), ids])
    positions = w["embeddings.position_embeddings.weight"]
    if lay.kind == "roberta":
        # RoBERTa numbers tokens from padding_idx + 1 and gives padding padding_idx.
        not_pad = g.op(
            "Cast",
            [g.op("Not", [g.op("Equal", [ids, g.const("pad", np.int64(lay.pad_token_id))])])],
            to=INT64,
        )
        counted = g.op("Mul", [g.op("CumSum", [not_pad, g.const("axis", np.int64(1))]), not_pad])
        position_ids = g.op("Add", [counted, g.const("pad", np.int64(lay.pad_token_id))])
        x = g.op(
            "Add", [x, g.op("Gather", [g.const("position_embeddings", positions), position_ids])]
        )
    else:
        length = g.op("Gather", [g.op("Shape", [ids]), g.const("one", np.array([1]))])
        sliced = g.op(
            "Slice",
            [
                g.const("position_embeddings", positions),
                g.const("zero", np.array([0])),
                length,
                g.const("zero", np.array([0])),
            ],
        )
        x = g.op("Add", [x, sliced])
    if "token_type_ids" in spec.inputs:
        table = g.const("token_type_embeddings", w["embeddings.token_type_embeddings.weight"])
        x = g.op("Add", [x, g.op("Gather", [table, "token_type_ids"])])
    elif "embeddings.token_type_embeddings.weight" in w:
        x = g.op(
            "Add", [x, g.const("token_type_0", w["embeddings.token_type_embeddings.weight"][0])]
        )
    x = g.op(
        "LayerNormalization",
        [
            x,
            g.const("ln_g", w["embeddings.LayerNorm.weight"]),
            g.const("ln_b", w["embeddings.LayerNorm.bias"]),
        ],
        axis=-1,
        epsilon=lay.eps,
    )
    # Encoder layers --------------------------------------------------------------------
    mask_f = g.op("Cast", [mask], to=FLOAT)
    if fused:
        mask_index = g.op("Cast", [mask], to=INT32)
    else:
        # [batch, 1, 1, seq]: 0 where attended, a large negative where padded.
        bias = g.op(
            "Mul", [g.op("Sub", [g.const("one_f", f32(1.0)), mask_f]), g.const("neg", f32(-1e9))]
        )
        mask_bias = g.op("Unsqueeze", [bias, g.const("axes", np.array([1, 2]))])
    head_dim = lay.hidden // lay.heads
    for i in range(lay.layers):
        p = _layer_names(lay.kind, i)
        q_w, k_w, v_w = (w[p[n] + ".weight"] for n in ("q", "k", "v"))
        q_b, k_b, v_b = (w[p[n] + ".bias"] for n in ("q", "k", "v"))
        if fused:
            qkv_w = np.concatenate([q_w.T, k_w.T, v_w.T], axis=1)
            qkv_b = np.concatenate([q_b, k_b, v_b])
            context = g.op(
                "Attention",
                [x, g.const("qkv_w", qkv_w), g.const("qkv_b", qkv_b), mask_index],
                domain=MS_DOMAIN,
                num_heads=lay.heads,
            )
            projected = g.op("MatMul", [context, g.const("o_w", w[p["o"] + ".weight"].T)])
            x = g.op(
                "SkipLayerNormalization",
                [
                    projected,
                    x,
                    g.const("ln1_g", w[p["ln1"] + ".weight"]),
                    g.const("ln1_b", w[p["ln1"] + ".bias"]),
                    g.const("o_b", w[p["o"] + ".bias"]),
                ],
                domain=MS_DOMAIN,
                epsilon=lay.eps,
            )
        else:
            context = _plain_attention(
                g, x, mask_bias, (q_w, k_w, v_w), (q_b, k_b, v_b), lay.heads, head_dim
            )
            projected = g.op(
                "Add",
                [
                    g.op("MatMul", [context, g.const("o_w", w[p["o"] + ".weight"].T)]),
                    g.const("o_b", w[p["o"] + ".bias"]),
                ],
            )
            x = g.op(
                "LayerNormalization",
                [
                    g.op("Add", [projected, x]),
                    g.const("ln1_g", w[p["ln1"] + ".weight"]),
                    g.const("ln1_b", w[p["ln1"] + ".bias"]),
                ],
                axis=-1,
                epsilon=lay.eps,
            )
        inner = g.op("MatMul", [x, g.const("ff1_w", w[p["ff1"] + ".weight"].T)])
        inner = _activate(g, inner, g.const("ff1_b", w[p["ff1"] + ".bias"]), lay.activation, fused)
        out = g.op("MatMul", [inner, g.const("ff2_w", w[p["ff2"] + ".weight"].T)])
        if fused:
            x = g.op(
                "SkipLayerNormalization",
                [
                    out,
                    x,
                    g.const("ln2_g", w[p["ln2"] + ".weight"]),
                    g.const("ln2_b", w[p["ln2"] + ".bias"]),
                    g.const("ff2_b", w[p["ff2"] + ".bias"]),
                ],
                domain=MS_DOMAIN,
                epsilon=lay.eps,
            )
        else:
            out = g.op("Add", [out, g.const("ff2_b", w[p["ff2"] + ".bias"])])
            x = g.op(
                "LayerNormalization",
                [
                    g.op("Add", [out, x]),
                    g.const("ln2_g", w[p["ln2"] + ".weight"]),
                    g.const("ln2_b", w[p["ln2"] + ".bias"]),
                ],
                axis=-1,
                epsilon=lay.eps,
            )
    # Pooling, Dense ----------------------------------------------------------------------
    mask_3d = g.op("Unsqueeze", [mask_f, g.const("axes", np.array([-1]))])
    pooled = []
    mean_sum = mean_count = None
    for mode in spec.pooling:
        if mode == "cls":
            pooled.append(g.op("Gather", [x, g.const("zero", np.int64(0))], axis=1))
        elif mode == "max":
            keep = g.op("Cast", [mask_3d], to=BOOL)
            masked = g.op("Where", [keep, x, g.const("ninf", f32(-np.inf))])
            pooled.append(g.op("ReduceMax", [masked], axes=[1], keepdims=0))
        else:
            if mean_sum is None:
                axis = g.const("axis", np.array([1]))
                mean_sum = g.op("ReduceSum", [g.op("Mul", [x, mask_3d]), axis], keepdims=0)
                mean_count = g.op(
                    "Max",
                    [g.op("ReduceSum", [mask_3d, axis], keepdims=0), g.const("tiny", f32(1e-9))],
                )
            assert mean_count is not None
            divisor = mean_count if mode == "mean" else g.op("Sqrt", [mean_count])
            pooled.append(g.op("Div", [mean_sum, divisor]))
    y = pooled[0] if len(pooled) == 1 else g.op("Concat", pooled, axis=-1)
    for dense in spec.dense:
        y = g.op("MatMul", [y, g.const("dense_w", dense.weight.T)])
        if dense.bias is not None:
            y = g.op("Add", [y, g.const("dense_b", dense.bias)])
        if dense.activation == "erf":
            y = _gelu_erf(g, y)
        elif dense.activation != "identity":
            y = g.op({"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}[dense.activation], [y])
    g.nodes.append(onnx_proto.node("Identity", [y], ["sentence_embedding"]))
    opsets = {"": OPSET} | ({MS_DOMAIN: 1} if fused else {})
    return onnx_proto.model(
        g.nodes,
        g.initializers,
        [onnx_proto.value_info(name, INT64, ["batch", "sequence"]) for name in spec.inputs],
        [onnx_proto.value_info("sentence_embedding", FLOAT, ["batch", spec.dimension])],
        name="sentence_embedding",
        opsets=opsets,
        ir_version=8,  # onnxruntime >= 1.14 reads it
        producer="localrag",
    )


def _layer_names(kind: str, i: int) -> dict[str, str]:
    if kind == "distilbert":
        base = f"transformer.layer.{i}."
        return {
            "q": base + "attention.q_lin",
            "k": base + "attention.k_lin",
            "v": base + "attention.v_lin",
            "o": base + "attention.out_lin",
            "ln1": base + "sa_layer_norm",
            "ff1": base + "ffn.lin1",
            "ff2": base + "ffn.lin2",
            "ln2": base + "output_layer_norm",
        }
    base = f"encoder.layer.{i}."
    return {
        "q": base + "attention.self.query",
        "k": base + "attention.self.key",
        "v": base + "attention.self.value",
        "o": base + "attention.output.dense",
        "ln1": base + "attention.output.LayerNorm",
        "ff1": base + "intermediate.dense",
        "ff2": base + "output.dense",
        "ln2": base + "output.LayerNorm",
    }


def _plain_attention(
    g: _Graph,
    x: str,
    mask_bias: str,
    weights: tuple[np.ndarray, np.ndarray, np.ndarray],
    biases: tuple[np.ndarray, np.ndarray, np.ndarray],
    heads: int,
    head_dim: int,
) -> str:
    import numpy as np

    split = g.const("split", np.array([0, 0, heads, head_dim]))
    projected = []
    for weight, bias, name in zip(weights, biases, "qkv", strict=True):
        y = g.op(
            "Add", [g.op("MatMul", [x, g.const(f"{name}_w", weight.T)]), g.const(f"{name}_b", bias)]
        )
        y = g.op("Reshape", [y, split])
        perm = [0, 2, 3, 1] if name == "k" else [0, 2, 1, 3]
        projected.append(g.op("Transpose", [y], perm=perm))
    q, k, v = projected
    scores = g.op(
        "Mul", [g.op("MatMul", [q, k]), g.const("scale", np.float32(1 / math.sqrt(head_dim)))]
    )
    probs = g.op("Softmax", [g.op("Add", [scores, mask_bias])], axis=-1)
    context = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    return g.op("Reshape", [context, g.const("merge", np.array([0, 0, heads * head_dim]))])


def _gelu_erf(g: _Graph, x: str) -> str:
    import numpy as np

    erf = g.op("Erf", [g.op("Div", [x, g.const("sqrt2", np.float32(math.sqrt(2)))])])
    half = g.op("Mul", [x, g.const("half", np.float32(0.5))])
    return g.op("Mul", [half, g.op("Add", [erf, g.const("one_f", np.float32(1.0))])])


def _activate(g: _Graph, x: str, bias: str, activation: str, fused: bool) -> str:
    import numpy as np

    if fused and activation in ("erf", "tanh"):
        op = "BiasGelu" if activation == "erf" else "FastGelu"
        return g.op(op, [x, bias], domain=MS_DOMAIN)
    x = g.op("Add", [x, bias])
    if activation == "erf":
        return _gelu_erf(g, x)
    if activation == "tanh":
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        inner = g.op("Add", [x, g.op("Mul", [cube, g.const("c", np.float32(0.044715))])])
        inner = g.op("Mul", [inner, g.const("k", np.float32(math.sqrt(2 / math.pi)))])
        half = g.op("Mul", [x, g.const("half", np.float32(0.5))])
        return g.op(
            "Mul", [half, g.op("Add", [g.op("Tanh", [inner]), g.const("one_f", np.float32(1.0))])]
        )
    if activation == "relu":
        return g.op("Relu", [x])
    return g.op("Mul", [x, g.op("Sigmoid", [x])])  # silu


# --- Running it ------------------------------------------------------------------------------


def session_options(threads: int | None = None) -> Any:
    """onnxruntime's options for the encoder: `threads` intra-op threads (None: its default,
    one per physical core), no spinning (other processes share the cores: ingest's parsers)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no notices on the user's terminal
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class TorchFreeEncoder(Embeddings):
    """Embeds texts with a built graph: tokenizers in, onnxruntime through, numpy out.
    Vectors are L2-normalized (as every stored collection's are) unless `normalize=False` and
    the folder has no Normalize module."""

    def __init__(
        self,
        model_dir: Path,
        text: TextSettings,
        graph: bytes | Path,
        *,
        normalize: bool = True,
        threads: int | None = None,
        batch_size: int = BATCH_SIZE,
        source: str = "",
    ) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.text = text
        self.source = source  # "cache", "built" or "memory": where the graph came from
        self.normalize = normalize or text.normalize
        self.batch_size = batch_size
        tokenizer_file = Path(model_dir) / text.transformer_dir / "tokenizer.json"
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_length=text.max_seq_length)
        # Padded per batch by `_run`, to the batch's longest text: tokenizer.json may ask for a
        # fixed length.
        self.tokenizer.no_padding()
        self.session = onnxruntime.InferenceSession(
            graph if isinstance(graph, bytes) else str(graph),
            session_options(threads),
            providers=["CPUExecutionProvider"],
        )
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: FolderSpec, *, fused: bool = True, **kwargs: Any) -> TorchFreeEncoder:
        """Built in memory, never cached (benchmarks, tests)."""
        graph = build_graph(spec, fused=fused)
        return cls(spec.model_dir, spec.text, graph, source="memory", **kwargs)

    @property
    def dimension(self) -> int:
        return self.text.dimension

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Tokenized once, then run in batches of similar token length (`token_batches`), each
        padded only to its own longest text; returned in the given order."""
        import numpy as np

        if not texts:
            return []
        encodings = self._tokenize(texts)
        lengths = [len(e.ids) for e in encodings]
        vectors = np.empty((len(texts), self.text.dimension), dtype=np.float32)
        for chosen in token_batches(lengths, self.batch_size):
            vectors[chosen] = self._run([encodings[i] for i in chosen])
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return [float(v) for v in self.encode([text])[0]]

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens each text is run with (specials included, after truncation)."""
        return [len(e.ids) for e in self._tokenize(texts)]

    def encode(self, texts: list[str]) -> np.ndarray:
        """One batch, padded to its longest text."""
        return self._run(self._tokenize(texts))

    def _tokenize(self, texts: list[str]) -> list[Any]:
        if self.text.do_lower_case:
            texts = [t.lower() for t in texts]
        return list(self.tokenizer.encode_batch(texts))

    def _run(self, encodings: list[Any]) -> np.ndarray:
        import numpy as np

        longest = max(len(e.ids) for e in encodings)
        fields = {
            "input_ids": ("ids", self.text.pad_id),
            "attention_mask": ("attention_mask", 0),
            "token_type_ids": ("type_ids", 0),
        }
        feeds = {}
        for name in self.text.inputs:
            field_name, pad = fields[name]
            array = np.full((len(encodings), longest), pad, dtype=np.int64)
            for row, encoding in enumerate(encodings):
                values = getattr(encoding, field_name)
                array[row, : len(values)] = values
            feeds[name] = array
        with self._lock:  # one run at a time: the session's threads are the cores
            vectors: np.ndarray = self.session.run(None, feeds)[0]
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


# --- The built graph in the model cache -------------------------------------------------------


@dataclass(frozen=True)
class BuildPaths:
    graph: Path
    manifest: Path


def folder_key(model_dir: Path) -> str:
    """Changes when any file of the model folder changes (size or modification time), or when
    the build format does; cheap enough to compute on every start."""
    digest = hashlib.sha256(f"torch-free build {BUILD_FORMAT}".encode())
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        stat = path.stat()
        rel = path.relative_to(model_dir).as_posix()
        digest.update(f"\n{rel}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def build_paths(name: str, model_dir: Path, cache_dir: Path) -> BuildPaths:
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "model"
    stem = f"{slug}-{folder_key(model_dir)}.built"
    return BuildPaths(cache_dir / f"{stem}.onnx", cache_dir / f"{stem}.onnx.json")


def load_encoder(
    name: str,
    model_dir: Path,
    cache_dir: Path | None,
    *,
    threads: int | None = None,
    batch_size: int = BATCH_SIZE,
    notify: Callable[[str], None] | None = None,
) -> TorchFreeEncoder:
    """The folder's encoder: the cached graph when there is one, else built now (and cached
    when `cache_dir` can be written; `notify` hears of it). Raises `BuildUnsupported` when the
    folder cannot be built without torch."""
    model_dir = Path(model_dir)
    options: dict[str, Any] = {"threads": threads, "batch_size": batch_size}
    paths = build_paths(name, model_dir, cache_dir) if cache_dir is not None else None
    if paths is not None:
        cached = _read_manifest(paths)
        if cached is not None:
            return TorchFreeEncoder(model_dir, cached, paths.graph, source="cache", **options)
    spec = read_folder(model_dir)
    if notify is not None and paths is not None:
        notify(f"Preparing {name} for onnxruntime (once, a few seconds): {cache_dir}")
    graph = build_graph(spec)
    if paths is not None:
        with contextlib.suppress(OSError):  # a read-only cache: built in memory each start
            _write_build(paths, graph, spec)
            return TorchFreeEncoder(model_dir, spec.text, paths.graph, source="built", **options)
    return TorchFreeEncoder(model_dir, spec.text, graph, source="memory", **options)


def _read_manifest(paths: BuildPaths) -> TextSettings | None:
    try:
        manifest = json.loads(paths.manifest.read_text())
        if manifest.get("graph_bytes") != paths.graph.stat().st_size:
            return None
        text = manifest["text"]
        return TextSettings(**{**text, "inputs": tuple(text["inputs"])})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_build(paths: BuildPaths, graph: bytes, spec: FolderSpec) -> None:
    paths.graph.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(paths.graph.parent)
    with partial_file(paths.graph) as graph_tmp:
        graph_tmp.write_bytes(graph)
        os.replace(graph_tmp, paths.graph)
    manifest = {
        "format": BUILD_FORMAT,
        "model": spec.model_dir.name,
        "builder": "torch-free (app/models/onnx_proto.py from model.safetensors)",
        "layers": asdict(spec.layers),
        "pooling": list(spec.pooling),
        "dense": len(spec.dense),
        "text": asdict(spec.text),
        "graph_bytes": len(graph),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with partial_file(paths.manifest) as manifest_tmp:
        manifest_tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(manifest_tmp, paths.manifest)  # last: the build counts from here on
