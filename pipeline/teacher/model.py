"""The teacher: a speech encoder (HuBERT or its kin) plus cluster logits (its head or k-means),
with exact batching."""

from __future__ import annotations

import hashlib
import json
import threading

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedModel

from pipeline.core.device import autocast
from pipeline.core.errors import CheckpointError
from pipeline.nn.conv import conv_features, normalize_waveforms
from pipeline.nn.frames import FrameSpec, lengths_to_mask
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.encoders import exact_under_padding, model_type, project
from pipeline.teacher.head import ClusterHead
from pipeline.teacher.kmeans import KMeansHead

# Layer outputs are captured with forward hooks on the (shared) encoder modules; threads that
# share a teacher (in-process dask workers) take turns so hooks never see another's forward.
_FORWARD_LOCK = threading.Lock()


class Teacher(nn.Module):
    """A speech encoder (one of ``teacher.encoders.ENCODERS``) with cluster logits and
    per-frame targets, in eval mode.

    Attributes:
        description: provenance for the cache header.
        model_type: the encoder's class, as transformers names it (``hubert``, ``wavlm``...).
        frames: the conv stack's frame arithmetic.
        target_source: how targets are made (for the cache header).
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        head: ClusterHead | None,
        *,
        normalize: bool,
        description: str,
        cfg: TeacherConfig,
        kmeans: KMeansHead | None = None,
    ) -> None:
        super().__init__()
        if cfg.logits == "head" and head is None:
            raise CheckpointError(
                f"{cfg.source} has no cluster head: set cache_teacher.teacher.logits: kmeans"
            )
        self.encoder = encoder.eval()
        self.head = head.eval() if head is not None else None
        self.kmeans = kmeans
        self.cfg = cfg
        self.normalize = normalize
        self.description = description
        self.model_type = model_type(encoder)
        hcfg = encoder.config
        self.frames = FrameSpec(tuple(hcfg.conv_kernel), tuple(hcfg.conv_stride))
        km = cfg.kmeans
        self.target_source = f"kmeans(layer={km.layer})" if cfg.targets == "kmeans" else "argmax"
        self.layer = km.layer if cfg.uses_kmeans else None
        if self.layer is not None and not 1 <= self.layer <= hcfg.num_hidden_layers:
            raise ValueError(f"kmeans.layer {self.layer} outside 1..{hcfg.num_hidden_layers}")

    def use_kmeans(self, centroids) -> None:
        """Take the k-means head of ``centroids (C, D)`` (numpy or torch) for the logits or
        targets the config draws from k-means.

        Raises:
            CheckpointError: k-means targets whose clusters the checkpoint's head does not match.
        """
        km = self.cfg.kmeans
        head = KMeansHead(torch.as_tensor(centroids), km.logits, km.temperature)
        if self.cfg.logits == "head" and head.num_classes != self.head.num_classes:
            raise CheckpointError(
                f"k-means targets have {head.num_classes} clusters but the head "
                f"predicts {self.head.num_classes}: they must match (kmeans.num_clusters)"
            )
        self.kmeans = head.to(self.device)

    @property
    def num_classes(self) -> int:
        return self.kmeans.num_classes if self.cfg.logits == "kmeans" else self.head.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.inference_mode()
    def encode(self, wavs: list[torch.Tensor], layer: int | None = None):
        """Run the encoder exactly as on each utterance alone.

        Returns ``(final (B, T, D), layer output (B, T, D) or None, frame lengths (B,))``.
        The whole padded batch runs at once: layer-norm conv stacks never let padding reach a
        valid frame, group-norm stacks normalise over each utterance's valid frames (see
        ``conv_features``), and the Transformer gets an attention mask.
        """
        lengths = torch.tensor([len(w) for w in wavs])
        final, layer_out, _, frame_lengths = self._run(
            pad_sequence(wavs, batch_first=True), lengths, layer
        )
        return final, layer_out, frame_lengths

    @torch.inference_mode()
    def hidden_states(self, wav: torch.Tensor, lengths: torch.Tensor):
        """Every layer for downstream use: ``[conv features, Transformer input, layer 1, ...,
        layer N]``, each ``(B, T, *)`` float32, and the frame lengths; layer N is the encoder's
        output (with the final layer norm of pre-LN models).

        ``wav (B, S)`` is zero-padded with sample ``lengths``; runs as :meth:`encode` does.
        """
        _, _, layers, frame_lengths = self._run(wav, lengths, all_layers=True)
        return [x.float() for x in layers], frame_lengths

    def _run(self, wav, lengths, layer: int | None = None, all_layers: bool = False):
        with _FORWARD_LOCK:
            return self._run_locked(wav, lengths, layer, all_layers)

    def _run_locked(self, wav, lengths, layer: int | None, all_layers: bool):
        device = self.device
        wav, lengths = wav.to(device), lengths.to(device)
        if self.normalize:
            wav = normalize_waveforms(wav, lengths)
        frame_lengths = self.frames.num_frames(lengths)
        blocks = self.encoder.encoder.layers
        captured: dict[int, torch.Tensor] = {}  # 0: the Transformer input, i: layer i's output

        def keep(index):
            def hook(_module, _inputs, output):
                captured[index] = output[0] if isinstance(output, tuple) else output

            return hook

        hooks = [
            blocks[0].register_forward_pre_hook(lambda _m, args: captured.update({0: args[0]}))
        ] if all_layers else []  # fmt: skip
        wanted = range(1, len(blocks) + 1) if all_layers else [layer] if layer is not None else []
        hooks += [blocks[i - 1].register_forward_hook(keep(i)) for i in wanted]
        try:
            with autocast(device, self.cfg.precision):
                fe = self.encoder.feature_extractor
                feats = conv_features(fe, wav, lengths)
                mask = lengths_to_mask(frame_lengths, feats.shape[1])
                hidden = project(self.encoder, feats)
                with exact_under_padding(self.encoder, mask):
                    final = self.encoder.encoder(hidden, attention_mask=mask).last_hidden_state
        finally:
            for hook in hooks:
                hook.remove()
        layers = None
        if all_layers:  # the last entry is the encoder's output (after a final layer norm)
            layers = [feats, *(captured[i] for i in range(len(blocks))), final]
        return final.float(), captured.get(layer), layers, frame_lengths

    def feature_names(self) -> list[str]:
        """Per-frame features :meth:`outputs` can return: ``conv`` (the conv stack's output,
        what a student's front end replaces) and ``layer_0`` (Transformer input) to
        ``layer_N`` (the final, layer-normed output)."""
        return ["conv"] + [f"layer_{i}" for i in range(self.encoder.config.num_hidden_layers + 1)]

    @torch.inference_mode()
    def forward_batch(
        self, wavs: list[torch.Tensor], features: tuple[str, ...] = ()
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """A batch on the teacher's device: logits ``(B, T, C)`` float32, targets ``(B, T)``,
        the requested ``features`` (see :meth:`feature_names`) ``(B, T, D)`` float32, and the
        frame lengths ``(B,)``; beyond an utterance's length the values are padding."""
        if self.cfg.uses_kmeans and self.kmeans is None:
            raise ValueError(
                "k-means logits or targets need a k-means model (build_teacher fits it)"
            )
        names = self.feature_names()
        unknown = [f for f in features if f not in names]
        if unknown:
            raise ValueError(f"unknown teacher features {unknown}: choose from {names}")
        lengths = torch.tensor([len(w) for w in wavs])
        final, layer_out, layers, frame_lengths = self._run(
            pad_sequence(wavs, batch_first=True), lengths, self.layer, all_layers=bool(features)
        )
        logits = self.kmeans(layer_out) if self.cfg.logits == "kmeans" else self.head(final.float())
        if self.cfg.targets == "kmeans":
            targets = self.kmeans.labels(layer_out)
        else:
            targets = logits.argmax(-1)
        chosen = {f: layers[names.index(f)].float() for f in features}
        return logits.float(), targets, chosen, frame_lengths

    def outputs(
        self, wavs: list[torch.Tensor], features: tuple[str, ...] = ()
    ) -> list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]:
        """Per utterance, on the CPU: logits ``(frames_i, C)`` float32, targets
        ``(frames_i,)`` int64 and the requested ``features``, each ``(frames_i, D)`` float32."""
        logits, targets, chosen, frame_lengths = self.forward_batch(wavs, features)
        logits, targets = logits.cpu(), targets.cpu()
        chosen = {f: x.cpu() for f, x in chosen.items()}
        return [
            (logits[i, :n], targets[i, :n], {f: x[i, :n] for f, x in chosen.items()})
            for i, n in enumerate(frame_lengths.tolist())
        ]

    def logits(self, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-utterance logits only."""
        return [logits for logits, _, _ in self.outputs(wavs)]

    def fingerprint(self) -> str:
        """sha256 over the encoder's class, every weight (encoder, head, k-means) and the
        logits/targets choices."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        km = self.cfg.kmeans
        choices = {
            "model_type": self.model_type,
            "logits": self.cfg.logits,
            "targets": self.cfg.targets,
            "normalize": self.normalize,
            "logit_temp": self.head.logit_temp if self.head is not None else None,
            "kmeans": [km.layer, km.logits, km.temperature] if self.cfg.uses_kmeans else None,
        }
        digest.update(json.dumps(choices, sort_keys=True).encode())
        return digest.hexdigest()
