"""CLIP: one embedding space for captions and images (Radford et al. 2021, "Learning
Transferable Visual Models From Natural Language Supervision").

Two encoders map an image and a caption to unit vectors of the same size. Training pulls the
N matching (image, caption) pairs of a batch together and pushes the N² − N mismatched pairs
apart with a symmetric cross-entropy over their cosine similarities (Radford et al. 2021,
Figure 3). unCLIP (Ramesh et al. 2022) builds everything else on this space: the prior maps a
text embedding to an image embedding, the decoder draws an image from an image embedding.

The towers are open_clip's own (`open_clip.model.CLIP` with `CLIPVisionCfg` / `CLIPTextCfg`)
and so is the tokenizer; this module only sizes them for a laptop and wraps them:

* `CLIPConfig` and the presets ``"shapes"`` (32×32) and ``"emoji"`` (64×64);
* `contrastive_loss` — the loss written out, checked against open_clip's `ClipLoss` in tests;
* `CLIPModel` — ``loss(batch)``, ``encode_image(images in [-1, 1])``, ``encode_text(captions
  or tokens)`` returning unit-norm embeddings, ``logit_scale``;
* `load_open_clip_checkpoint` — a real open_clip checkpoint from a LOCAL file, same calls;
* `trim_vocab` — the same CLIP with a compact token table (below).

**Compact vocabulary.** open_clip's BPE has 49,408 ids, and a text tower keeps one row per id:
at width 96 that table is 4.7 M weights, four times the rest of the emoji CLIP, and a dataset's
captions use under 2,000 of the ids. ``CLIPConfig(vocab=...)`` (`data.tokens.compact_vocab`)
gives the tower a row only for those ids, plus one unknown row that every other id shares
(words the dataset never contains had untrained rows anyway). The ids everywhere else stay BPE
ids: `CLIPModel.tokenize` returns them, banks store them, the prior and decoder read them, and
`CLIPModel.encode_text` maps them to rows (`data.tokens.to_compact`) just before the tower. The
vocabulary is part of the config, so it is saved in the checkpoint's JSON (and the weights
file's header) and comes back with it; a checkpoint without one loads as it always did.

Measuring a CLIP (retrieval, zero-shot attributes, the embedding map) is in `evaluation.clip`.

Nothing here downloads anything: there are no pretrained tags, no hub names.

Image normalisation (the one rule): images arrive as float tensors in [-1, 1]. Each model
keeps the per-channel ``image_mean`` / ``image_std`` its image tower was trained with, stated
for pixels in [0, 1], and `CLIPModel.normalize_images` computes ``((x + 1) / 2 - mean) / std``.
The course's tiny CLIPs use mean = std = 0.5, so their input IS the [-1, 1] image, unchanged.
A loaded open_clip checkpoint keeps its own statistics (OpenAI's, for most). Images whose side
differs from the tower's input size are resized (bicubic, antialiased) first, as open_clip's
own preprocessing would.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import nn

from .checkpoints import load_checkpoint, save_checkpoint
from .data.tokens import VOCAB_SIZE, check_vocab, compact_lookup, to_compact, tokenize, unknown_id
from .options import model_device

__all__ = [
    "CLIPConfig",
    "PRESETS",
    "clip_config",
    "contrastive_loss",
    "CLIPModel",
    "load_open_clip_checkpoint",
    "read_open_clip_state_dict",
    "save_clip",
    "load_clip",
    "trim_vocab",
]


# --------------------------------------------------------------------------------------------
# 1. Configuration
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class CLIPConfig:
    """A tiny CLIP: a ViT image tower and a causal text transformer, both from open_clip."""

    image_size: int  # side of the square input image, pixels
    patch_size: int  # ViT patch side, pixels; image_size must be a multiple of it
    vision_width: int  # ViT token width
    vision_layers: int  # ViT transformer blocks
    vision_head_width: int  # width of one ViT attention head (heads = width / head_width)
    text_width: int  # text transformer token width
    text_layers: int  # text transformer blocks
    text_heads: int  # text attention heads
    embed_dim: int = 64  # size of the shared embedding space
    context_length: int = 32  # caption length in tokens (open_clip's BPE tokenizer)
    vocab_size: int = 49408  # open_clip's BPE vocabulary (SimpleTokenizer): token ids are < vocab_size
    vocab: tuple[int, ...] | None = None  # compact vocabulary: the BPE ids with a row (module docstring); None: all
    mlp_ratio: float = 4.0  # hidden width of each MLP, as a multiple of the token width
    init_temperature: float = 0.07  # τ at initialisation; logits = s·cos with s = 1/τ (Radford et al. 2021, §2.5)
    max_logit_scale: float = 100.0  # s is clipped at 100 to keep training stable (Radford et al. 2021, §2.5)

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "vision_width", "vision_layers", "vision_head_width",
                     "text_width", "text_layers", "text_heads", "embed_dim", "context_length", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.vision_width % self.vision_head_width:
            raise ValueError(f"vision_width {self.vision_width} is not a multiple of vision_head_width {self.vision_head_width}")
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width {self.text_width} is not a multiple of text_heads {self.text_heads}")
        if not 0 < self.init_temperature < 1:
            raise ValueError(f"init_temperature must be in (0, 1), got {self.init_temperature!r}")
        if self.max_logit_scale <= 1:
            raise ValueError(f"max_logit_scale must be > 1, got {self.max_logit_scale!r}")
        if self.vocab is not None:
            self.vocab = check_vocab(self.vocab)
            if self.vocab_size != VOCAB_SIZE:
                raise ValueError(f"a compact vocab holds open_clip BPE ids; vocab_size must be {VOCAB_SIZE}, "
                                 f"got {self.vocab_size}")

    @property
    def num_token_rows(self) -> int:
        """Rows of the text tower's token table: ``len(vocab) + 1`` (the unknown row), else vocab_size."""
        return self.vocab_size if self.vocab is None else len(self.vocab) + 1

    def vision_cfg(self) -> CLIPVisionCfg:
        """open_clip's vision-tower config for this CLIP (a ViT that pools its class token)."""
        return CLIPVisionCfg(
            layers=self.vision_layers, width=self.vision_width, head_width=self.vision_head_width,
            mlp_ratio=self.mlp_ratio, patch_size=self.patch_size, image_size=self.image_size,
        )

    def text_cfg(self) -> CLIPTextCfg:
        """open_clip's text-tower config (pools the end-of-text token, as OpenAI's CLIP does)."""
        return CLIPTextCfg(
            context_length=self.context_length, vocab_size=self.num_token_rows, width=self.text_width,
            heads=self.text_heads, layers=self.text_layers, mlp_ratio=self.mlp_ratio,
        )


# Sized for a 2-core CPU: a few hundred thousand weights in each tower (plus the token table:
# 49,408 rows unless the config has a compact `vocab`), 64 image tokens per image in both presets
# (8×8 patches).
PRESETS: dict[str, CLIPConfig] = {
    "shapes": CLIPConfig(
        image_size=32, patch_size=4, vision_width=96, vision_layers=4, vision_head_width=32,
        text_width=64, text_layers=2, text_heads=2, embed_dim=64,
    ),
    "emoji": CLIPConfig(
        image_size=64, patch_size=8, vision_width=128, vision_layers=4, vision_head_width=32,
        text_width=96, text_layers=3, text_heads=3, embed_dim=96,
    ),
}


def clip_config(name: str, **overrides: Any) -> CLIPConfig:
    """A copy of preset `name` (``"shapes"`` or ``"emoji"``), with fields replaced by `overrides`."""
    if name not in PRESETS:
        raise ValueError(f"unknown CLIP preset {name!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------------------------
# 2. The contrastive loss, written out
# --------------------------------------------------------------------------------------------


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of N matching pairs (Radford et al. 2021, Figure 3).

    ``logits[i, j] = s · <image_i, text_j>`` with `logit_scale` s = 1/τ (already exponentiated);
    row i is a classification of image i over the N captions, column j of caption j over the N
    images, and the right answer is the diagonal. The loss is the mean of both cross-entropies.
    Pass unit-norm embeddings (as open_clip's `ClipLoss`, which this matches, expects).
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb and text_emb must both be (N, D), got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    logits_per_image = logit_scale * image_emb @ text_emb.T  # (N, N): row i = image i against all captions
    labels = torch.arange(image_emb.shape[0], device=image_emb.device)
    loss_image = F.cross_entropy(logits_per_image, labels)  # each image picks its caption
    loss_text = F.cross_entropy(logits_per_image.T, labels)  # each caption picks its image
    return (loss_image + loss_text) / 2


# --------------------------------------------------------------------------------------------
# 3. The model
# --------------------------------------------------------------------------------------------


class CLIPModel(nn.Module):
    """An open_clip model plus what it needs around it: tokenizer, image size and normalisation.

    ``CLIPModel(config)`` builds a fresh tiny CLIP from a `CLIPConfig` with open_clip's `CLIP`
    class. ``CLIPModel(open_clip_model, image_size=..., context_length=..., ...)`` wraps a model
    open_clip already built (`load_open_clip_checkpoint` does this). The calls are the same.
    """

    def __init__(
        self,
        model_or_config: CLIPConfig | nn.Module,
        *,
        image_size: int | None = None,
        context_length: int | None = None,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        tokenizer: Callable[..., torch.Tensor] | None = None,
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__()
        if isinstance(model_or_config, CLIPConfig):
            config = model_or_config
            if image_size is not None or context_length is not None:
                raise ValueError("image_size and context_length come from the CLIPConfig; do not pass them too")
            model = CLIP(
                embed_dim=config.embed_dim, vision_cfg=config.vision_cfg(), text_cfg=config.text_cfg(),
                init_logit_scale=math.log(1 / config.init_temperature),
            )
            image_size, context_length, max_logit_scale = config.image_size, config.context_length, config.max_logit_scale
        elif isinstance(model_or_config, nn.Module):
            config, model = None, model_or_config
            for name in ("encode_image", "encode_text", "logit_scale"):
                if not hasattr(model, name):
                    raise TypeError(f"model must be an open_clip CLIP model (it has no {name!r})")
            if image_size is None or context_length is None:
                raise ValueError("wrapping an open_clip model needs its image_size and context_length")
        else:
            raise TypeError(f"expected a CLIPConfig or an open_clip model, got {type(model_or_config).__name__}")
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError("image_mean and image_std need one value per RGB channel")
        self.model = model
        self.config = config
        self.image_size = int(image_size)
        self.context_length = int(context_length)
        self.max_logit_scale = float(max_logit_scale)
        self.tokenizer = tokenizer or tokenize  # the course tokenizer = open_clip's BPE SimpleTokenizer
        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        # BPE id -> row of a compact token table (None: the table has a row per BPE id); rebuilt
        # from config.vocab, so it is not a tensor of the checkpoint
        vocab = config.vocab if config is not None else None
        self.register_buffer("token_map", None if vocab is None else compact_lookup(vocab), persistent=False)
        self.clip_loss = ClipLoss()

    @classmethod
    def from_config(cls, config: CLIPConfig) -> "CLIPModel":
        """A freshly initialised tiny CLIP (same as ``CLIPModel(config)``)."""
        if not isinstance(config, CLIPConfig):
            raise TypeError(f"config must be a CLIPConfig, got {type(config).__name__}")
        return cls(config)

    @property
    def device(self) -> torch.device:
        """The device of the weights (`options.model_device`)."""
        return model_device(self)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if torch.is_tensor(self.model.text_projection) \
            else int(self.model.text_projection.out_features)

    @property
    def logit_scale(self) -> torch.Tensor:
        """s = exp(learned log-scale) = 1/τ, clipped at `max_logit_scale` (Radford et al. 2021, §2.5)."""
        return self.model.logit_scale.exp().clamp(max=self.max_logit_scale)

    # --- inputs ---------------------------------------------------------------------------

    def tokenize(self, captions: str | Sequence[str]) -> torch.Tensor:
        """Captions → (B, context_length) long BPE token ids on the model's device (a compact
        vocabulary's rows are looked up later, in `encode_text`)."""
        if isinstance(captions, str):
            captions = [captions]
        if not all(isinstance(c, str) for c in captions):
            raise TypeError("captions must be a str or a sequence of str")
        return self.tokenizer(list(captions), context_length=self.context_length).to(self.device)

    def normalize_images(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images (B, 3, H, W) → the tower's input: resized and standardised (see module docstring)."""
        if not torch.is_tensor(images) or not images.is_floating_point():
            raise TypeError("images must be a float tensor in [-1, 1]")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True, align_corners=False)
        return ((x + 1) / 2 - self.image_mean) / self.image_std

    # --- embeddings -----------------------------------------------------------------------

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] → unit-norm image embeddings (B, embed_dim)."""
        return F.normalize(self.model.encode_image(self.normalize_images(images)).float(), dim=-1)

    def encode_text(self, text: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Captions (str, list of str) or BPE token ids (B, L) → unit-norm text embeddings (B, embed_dim).

        With a compact vocabulary the ids become rows of its table first (`data.tokens.to_compact`):
        an id outside the vocabulary reads the shared unknown row.
        """
        if torch.is_tensor(text):
            if text.dtype != torch.long or text.dim() != 2 or text.shape[1] != self.context_length:
                raise ValueError(f"token ids must be a long tensor (B, {self.context_length}), "
                                 f"got {text.dtype} {tuple(text.shape)}")
            tokens = text.to(self.device)
        else:
            tokens = self.tokenize(text)
        if self.token_map is not None:
            tokens = to_compact(tokens, self.token_map)  # (B, L) rows of the compact table
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    # --- training -------------------------------------------------------------------------

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Contrastive loss of a batch {"image": (B,3,H,W), "caption": [...], "tokens"?: (B,L)}.

        Uses the batch's "tokens" when present (they must come from the same tokenizer and
        context length), else tokenises "caption". open_clip's `ClipLoss` computes the loss.
        """
        if "image" not in batch or ("tokens" not in batch and "caption" not in batch):
            raise KeyError("a CLIP batch needs 'image' and 'tokens' or 'caption'")
        image_emb = self.encode_image(batch["image"])
        text_emb = self.encode_text(batch["tokens"] if "tokens" in batch else batch["caption"])
        return self.clip_loss(image_emb, text_emb, self.logit_scale)

    def forward(self, images: torch.Tensor, text: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities s·<image_i, text_j>, (B_images, B_texts)."""
        return self.logit_scale * self.encode_image(images) @ self.encode_text(text).T


# --------------------------------------------------------------------------------------------
# 4. Checkpoints: the course's own, and real open_clip ones from a local file
# --------------------------------------------------------------------------------------------


def _check_offline_name(name: str) -> dict[str, Any]:
    """The built-in open_clip config `name`, refused if building it would need a network."""
    if name.startswith("hf-hub:"):
        raise ValueError(f"{name!r} names a Hugging Face Hub model; this course never downloads. "
                         "Pass a built-in architecture name (open_clip.list_models()) or a CLIPConfig, "
                         "and the path of a checkpoint file you already have.")
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown open_clip architecture {name!r}; see open_clip.list_models()")
    text_cfg = cfg.get("text_cfg", {})
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise ValueError(f"{name!r} uses a Hugging Face text tower or tokenizer, which would be downloaded; "
                         "this course loads only open_clip architectures built from local code")
    if cfg.get("vision_cfg", {}).get("timm_model_pretrained"):
        raise ValueError(f"{name!r} asks timm for pretrained weights, which would be downloaded")
    return cfg


#: torch.load(weights_only=True) can still run code before torch 2.6 (CVE-2025-32434).
_SAFE_WEIGHTS_ONLY_TORCH = "2.6"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin")


def _weights_only_is_safe() -> bool:
    return torch.torch_version.TorchVersion(torch.__version__) >= _SAFE_WEIGHTS_ONLY_TORCH


def read_open_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a LOCAL open_clip checkpoint file, read without running code.

    ``.safetensors`` is read as data. A ``.pt``/``.pth``/``.bin`` file (a pickle) is read with
    ``torch.load(weights_only=True)`` only, never retried without it (open_clip's own loader
    retries a full unpickle when the safe load raises TypeError), and only on torch >= 2.6,
    whose weights-only unpickler has no known way to run code. A file the safe reader refuses
    is refused. open_clip's ``{"state_dict": ...}`` wrapper and ``module.`` prefixes are undone;
    NaN/inf values are refused.
    """
    from .checkpoints import read_safetensors

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors(path)
    if suffix not in _PICKLE_SUFFIXES:
        raise ValueError(f"{path}: unsupported checkpoint format {suffix or '(no suffix)'!r}; use .safetensors "
                         f"(preferred) or a {'/'.join(_PICKLE_SUFFIXES)} state dict")
    if not _weights_only_is_safe():
        raise ValueError(f"{path} is a pickle file, and torch {torch.__version__} cannot read one safely "
                         f"(torch.load(weights_only=True) can run code before torch {_SAFE_WEIGHTS_ONLY_TORCH}, "
                         "CVE-2025-32434); upgrade torch, or convert a file you trust to .safetensors")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)  # no fallback, ever
    except Exception as exc:  # the weights-only unpickler refused it (or the file is damaged)
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path} was refused by torch.load(weights_only=True): {why}. A weights file holds "
                         "only tensors; this one holds something else (possibly code), so it is not loaded") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())):
        raise ValueError(f"{path} does not hold a state dict (a dict of named tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    from .checkpoints import _check_finite

    _check_finite(obj, path)
    return obj


def _open_clip_compatible(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's own fix-ups of older or third-party state dicts (pure tensor bookkeeping)."""
    try:
        from open_clip.convert import convert_state_dict
    except ImportError:  # older open_clip
        convert_state_dict = None
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    if convert_state_dict is not None:
        state_dict = convert_state_dict(model, state_dict)
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)
    for key in ("logit_scale", "logit_bias"):
        target = getattr(model, key, None)
        if key in state_dict and target is not None and target.ndim != state_dict[key].ndim:
            state_dict[key] = state_dict[key].reshape(target.shape)
    if "logit_bias" not in state_dict and getattr(model, "logit_bias", None) is not None:
        state_dict["logit_bias"] = torch.zeros_like(state_dict["logit_scale"])
    resize_pos_embed(state_dict, model)
    resize_text_pos_embed(state_dict, model)
    return state_dict


def load_open_clip_checkpoint(path: str | Path, model_name_or_config: str | CLIPConfig) -> CLIPModel:
    """A `CLIPModel` holding the weights of a LOCAL open_clip checkpoint file.

    `path`: ``.safetensors`` (preferred) or a ``.pt``/``.pth``/``.bin`` state dict, read as
    `read_open_clip_state_dict` does: with ``torch.load(weights_only=True)`` and no fallback, on
    torch >= 2.6 only, so no pickled code runs. `model_name_or_config`: the architecture — a
    built-in open_clip name such as ``"ViT-B-32"`` (its image statistics and tokenizer come with
    it) or a `CLIPConfig`. Checkpoints saved by open_clip's training code (``state_dict`` key,
    ``module.`` prefixes) work. Nothing touches a network.
    """
    from .checkpoints import _check_tensors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} not found (this course only loads local files)")
    if isinstance(model_name_or_config, CLIPConfig):
        clip = CLIPModel(model_name_or_config)
    elif isinstance(model_name_or_config, str):
        _check_offline_name(model_name_or_config)
        model = open_clip.create_model(model_name_or_config, pretrained=None, load_weights=False,
                                       pretrained_image=False, pretrained_text=False, device="cpu")
        pp = model.visual.preprocess_cfg
        size = pp["size"] if isinstance(pp["size"], int) else pp["size"][0]
        clip = CLIPModel(model, image_size=size, context_length=model.context_length,
                         image_mean=pp["mean"], image_std=pp["std"],
                         tokenizer=open_clip.get_tokenizer(model_name_or_config))
    else:
        raise TypeError(f"model_name_or_config must be an open_clip model name or a CLIPConfig, "
                        f"got {type(model_name_or_config).__name__}")
    state_dict = _open_clip_compatible(clip.model, read_open_clip_state_dict(path))
    expected = {k: tuple(v.shape) for k, v in clip.model.state_dict().items()}
    _check_tensors(expected, {k: tuple(v.shape) for k, v in state_dict.items()}, str(path))
    clip.model.load_state_dict(state_dict, strict=True)
    return clip.eval()


def save_clip(clip: CLIPModel, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Save a tiny CLIP with `checkpoints.save_checkpoint`: ``path.safetensors`` + ``path.json``
    (its `CLIPConfig`, and `extra` metadata such as measured retrieval). Returns the stem."""
    if clip.config is None:
        raise ValueError("only a CLIP built from a CLIPConfig can be saved this way; "
                         "save a loaded open_clip model's state dict with safetensors directly")
    return save_checkpoint(path, clip, clip.config, extra=extra)


def load_clip(path: str | Path, device: torch.device | str = "cpu") -> CLIPModel:
    """Load a CLIP saved by `save_clip`, in eval mode (tensor names and shapes are checked)."""
    return load_checkpoint(path, CLIPModel, config_cls=CLIPConfig, device=device).eval()


def trim_vocab(clip: CLIPModel, vocab: Sequence[int]) -> CLIPModel:
    """The same CLIP with a compact token table: a row for each id of `vocab` (`data.tokens.compact_vocab`).

    Every weight is copied; each kept id's row is copied from `clip`'s table, so any caption whose
    ids all lie in `vocab` gets exactly the same embedding as before. The unknown row is the mean
    of the rows left out (a typical word the captions never use). `clip` may itself be compact
    (an id it did not have reads its unknown row). Returns a new model in `clip`'s mode and device.
    """
    if not isinstance(clip, CLIPModel) or clip.config is None:
        raise TypeError("trim_vocab needs a CLIPModel built from a CLIPConfig")
    vocab = check_vocab(vocab)
    config = dataclasses.replace(clip.config, vocab=vocab)
    new = CLIPModel(config).to(clip.device)
    old_table = clip.model.token_embedding.weight.detach()  # (old rows, W)
    old_rows = clip.token_map if clip.token_map is not None else torch.arange(VOCAB_SIZE, device=old_table.device)
    kept = torch.tensor(vocab, dtype=torch.long, device=old_table.device)
    table = torch.empty(config.num_token_rows, old_table.shape[1], dtype=old_table.dtype, device=old_table.device)
    new_rows = new.token_map.to(old_table.device)
    table[new_rows[kept]] = old_table[old_rows[kept]]
    left_out = torch.ones(old_table.shape[0], dtype=torch.bool, device=old_table.device)
    left_out[old_rows[kept]] = False
    table[unknown_id(vocab)] = old_table[left_out].mean(0) if bool(left_out.any()) else 0.0
    state = {k: v for k, v in clip.model.state_dict().items() if k != "token_embedding.weight"}
    state["token_embedding.weight"] = table
    new.model.load_state_dict(state, strict=True)
    return new.train(clip.training)
