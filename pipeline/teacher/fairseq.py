"""Read a fairseq HuBERT checkpoint (with its cluster head) without installing fairseq.

Real checkpoints (``hubert_base_ls960.pt``, ``hubert_large_ll60k.pt``) pickle fairseq objects
(``task_state["dictionaries"]`` holds ``fairseq.data.dictionary.Dictionary``; older files an
``argparse.Namespace``). We first try ``torch.load(weights_only=True)``; if the file needs more,
loading it is only done when the user trusts it, and even then through torch's weights-only
unpickler with inert stand-ins registered for the fairseq and argparse classes: any other
Python object in the file is refused by name.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import torch
from transformers import HubertConfig, HubertModel

from pipeline.core.errors import CheckpointError
from pipeline.core.safe_load import load_weights, unsafe_globals
from pipeline.teacher.head import ClusterHead

SPECIAL_SYMBOLS = 4  # <s>, <pad>, </s>, <unk> precede the cluster ids in fairseq dictionaries
STAND_IN_PREFIXES = ("fairseq.", "argparse.Namespace")


class StandIn:
    """An inert object holding the pickled state of a fairseq/argparse object, nothing else.
    Constructor arguments (a pickled call of a fairseq function) are kept, never acted on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


def read_checkpoint(path: Path, trust: bool) -> dict[str, Any]:
    """Load a fairseq checkpoint dict (zip or legacy torch format), safely when possible.

    Raises:
        CheckpointError: the file is missing or damaged, needs unpickling Python objects and
            ``trust`` is False, or holds objects other than fairseq/argparse ones.
    """
    path = Path(path)
    needed = unsafe_globals(path) if path.is_file() else []
    if not needed:
        ckpt = load_weights(path, "fairseq checkpoint")
    elif not trust:
        raise CheckpointError(
            f"{path}: this checkpoint pickles Python objects ({', '.join(needed)}), and unpickling "
            "can run arbitrary code. If you trust where the file comes from, pass "
            "--trust-checkpoint (cache_teacher.teacher.trust_checkpoint: true); it is then read "
            "with inert stand-ins for fairseq classes, never by importing fairseq."
        )
    else:
        refused = [name for name in needed if not name.startswith(STAND_IN_PREFIXES)]
        if refused:
            raise CheckpointError(f"{path}: refusing to unpickle {', '.join(refused)}")
        stand_ins = [(StandIn, name) for name in needed]
        ckpt = load_weights(path, "fairseq checkpoint", safe_globals=stand_ins)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a fairseq checkpoint (a dict expected)")
    return ckpt


def _model_and_task_cfg(ckpt: dict[str, Any], path: Path) -> tuple[dict, dict]:
    if ckpt.get("cfg"):
        cfg = ckpt["cfg"]
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            raise CheckpointError(f"{path}: cfg has no 'model' section")
        return dict(cfg["model"]), dict(cfg.get("task") or {})
    args = ckpt.get("args")
    if isinstance(getattr(args, "__dict__", None), dict):  # older checkpoints: one namespace
        flat = dict(vars(args))
        return flat, flat
    raise CheckpointError(f"{path}: no model config (neither 'cfg' nor 'args')")


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """Evaluate fairseq's ``conv_feature_layers`` string (lists of (dim, kernel, stride) tuples
    joined with ``+`` and repeated with ``*``) without ``eval``."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise CheckpointError(f"unsupported conv_feature_layers expression: {spec!r}")

    layers = value(ast.parse(spec, mode="eval").body)
    if not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
        raise CheckpointError(f"conv_feature_layers must list (dim, kernel, stride): {spec!r}")
    return layers


def hubert_config(model_cfg: dict[str, Any]) -> HubertConfig:
    """The transformers config equivalent to a fairseq HuBERT model config."""
    conv = parse_conv_layers(
        model_cfg.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")
    )
    mode = model_cfg.get("extractor_mode", "default")
    if mode not in ("default", "layer_norm"):
        raise CheckpointError(f"unsupported extractor_mode {mode!r}")
    return HubertConfig(
        hidden_size=model_cfg.get("encoder_embed_dim", 768),
        num_hidden_layers=model_cfg.get("encoder_layers", 12),
        num_attention_heads=model_cfg.get("encoder_attention_heads", 12),
        intermediate_size=model_cfg.get("encoder_ffn_embed_dim", 3072),
        hidden_act=model_cfg.get("activation_fn", "gelu"),
        conv_dim=tuple(c[0] for c in conv),
        conv_kernel=tuple(c[1] for c in conv),
        conv_stride=tuple(c[2] for c in conv),
        conv_bias=bool(model_cfg.get("conv_bias", False)),
        feat_extract_norm="group" if mode == "default" else "layer",
        do_stable_layer_norm=bool(model_cfg.get("layer_norm_first", False)),
        num_conv_pos_embeddings=model_cfg.get("conv_pos", 128),
        num_conv_pos_embedding_groups=model_cfg.get("conv_pos_groups", 16),
        feat_proj_layer_norm=True,
    )


_RENAMES = (  # fairseq prefix -> transformers prefix (order matters: first match wins)
    ("feature_extractor.conv_layers.0.2.", "feature_extractor.conv_layers.0.layer_norm."),
    ("layer_norm.", "feature_projection.layer_norm."),
    ("post_extract_proj.", "feature_projection.projection."),
    ("mask_emb", "masked_spec_embed"),
    (
        "encoder.pos_conv.0.weight_g",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    ),
    (
        "encoder.pos_conv.0.weight_v",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    ),
    ("encoder.pos_conv.0.bias", "encoder.pos_conv_embed.conv.bias"),
    ("encoder.pos_conv.0.parametrizations.", "encoder.pos_conv_embed.conv.parametrizations."),
)
_LAYER_PARTS = {
    "self_attn.": "attention.",
    "self_attn_layer_norm.": "layer_norm.",
    "fc1.": "feed_forward.intermediate_dense.",
    "fc2.": "feed_forward.output_dense.",
    "final_layer_norm.": "final_layer_norm.",
}


def map_key(key: str) -> str | None:
    """transformers name of a fairseq encoder parameter; None for keys that are not encoder
    weights (head, label embeddings, training-only modules)."""
    parts = key.split(".")
    if key.startswith("feature_extractor.conv_layers."):
        i, rest = parts[2], ".".join(parts[3:])
        if rest.startswith("0."):
            return f"feature_extractor.conv_layers.{i}.conv.{parts[-1]}"
        if rest.startswith("2.1."):  # layer_norm mode: Sequential(Transpose, LayerNorm, Transpose)
            return f"feature_extractor.conv_layers.{i}.layer_norm.{parts[-1]}"
    if key.startswith("encoder.layers."):
        prefix, rest = ".".join(parts[:3]), ".".join(parts[3:])
        for old, new in _LAYER_PARTS.items():
            if rest.startswith(old):
                return f"{prefix}.{new}{rest[len(old) :]}"
    if key.startswith("encoder.layer_norm."):
        return key
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def load_fairseq_hubert(path: Path, trust: bool) -> tuple[HubertModel, ClusterHead, bool]:
    """Build ``(encoder, cluster head, normalize_waveform)`` from a fairseq HuBERT checkpoint.

    The head keeps only the cluster rows of ``label_embs_concat``, reordered so row c is
    cluster c (rows are matched to dictionary symbols, never assumed in order).

    Raises:
        CheckpointError: unreadable or untrusted file, unknown architecture, missing weights.
    """
    path = Path(path)
    ckpt = read_checkpoint(path, trust)
    model_cfg, task_cfg = _model_and_task_cfg(ckpt, path)
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no 'model' state dict")
    encoder = HubertModel(hubert_config(model_cfg))
    mapped = {map_key(k): v for k, v in state.items() if map_key(k) is not None}
    missing, unexpected = encoder.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for name in ("final_proj.weight", "final_proj.bias", "label_embs_concat"):
        if name not in state:
            raise CheckpointError(
                f"{path}: no cluster head ({name} missing); use a k-means teacher instead"
            )
    embs = state["label_embs_concat"]
    rows = _cluster_rows(ckpt, embs.shape[0], path)
    head = ClusterHead(
        state["final_proj.weight"].shape[1],
        state["final_proj.weight"].shape[0],
        len(rows),
        float(model_cfg.get("logit_temp", 0.1)),
    )
    head.final_proj.load_state_dict(
        {"weight": state["final_proj.weight"], "bias": state["final_proj.bias"]}
    )
    with torch.no_grad():
        head.label_embs.copy_(embs[rows])
    return encoder.eval(), head.eval(), bool(task_cfg.get("normalize", False))


def _cluster_rows(ckpt: dict[str, Any], num_rows: int, path: Path) -> list[int]:
    """Row index of cluster 0, 1, ..., C-1 in ``label_embs_concat``."""
    dictionaries = (ckpt.get("task_state") or {}).get("dictionaries")
    if not dictionaries:  # no dictionary: the fairseq layout, specials first, clusters in order
        return list(range(SPECIAL_SYMBOLS, num_rows))
    symbols = getattr(dictionaries[0], "symbols", None)
    if symbols is None or len(symbols) != num_rows:
        raise CheckpointError(
            f"{path}: dictionary does not match label_embs_concat ({num_rows} rows)"
        )
    by_cluster = {int(s): r for r, s in enumerate(symbols) if str(s).lstrip("-").isdigit()}
    if sorted(by_cluster) != list(range(len(by_cluster))):
        raise CheckpointError(f"{path}: dictionary symbols are not clusters 0..C-1")
    return [by_cluster[c] for c in range(len(by_cluster))]
