"""Tiny random checkpoints and tokenizers, built locally from transformers' config classes (nothing downloaded).

    tok_dir = make_tokenizer(tmp / "tok")
    make_tiny_checkpoint(tmp / "llama", "llama", tokenizer_dir=tok_dir, seed=0)

The checkpoint is written in the hub's layout (config.json as transformers writes it, model.safetensors,
tokenizer files), which both transformers and mlx-lm read. Requires transformers' config and tokenizer classes
(they import without torch), tokenizers, and torch for the weights; without torch, make_tiny_checkpoint draws
them with NumPy in mlx-lm's layout (prtcore.testing.numpy_weights), for the mlx extra alone. The vision-language
and LLaVA makers need torch, the DeepSeek-VL2 one mlx-vlm.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

DEFAULT_CORPUS = (
    "The capital of Avalon is Brightwater. The capital of Corvia is Dunmere. Mira works as a baker. "
    "Question: What is the capital of Avalon? Answer: Brightwater. ### Instruction: Name the capital. "
    "### Response: The capital is Dunmere. Hello world! How are you today? I am fine, thank you. "
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100. Portable rewards move between base models. "
    "def add(a, b):\n    return a + b\n"
)

# Shrunk sizes applied to whichever of these fields a config class has.
TINY_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
    "sliding_window": 256,
    "query_pre_attn_scalar": 16,
    "moe_intermediate_size": 64,
    "num_experts": 4,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "shared_expert_intermediate_size": 64,
}


def make_tokenizer(path, corpus: str | list[str] = DEFAULT_CORPUS, vocab_size: int = 384,
                   chat_template: str | None = CHATML_TEMPLATE, extra_special_tokens: tuple[str, ...] = ()) -> Path:
    """Train a small byte-level BPE tokenizer (ChatML template unless None) and save it in the hub's layout.

    `extra_special_tokens` are added after SPECIAL_TOKENS (e.g. a vision model's image placeholders)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    texts = [corpus] if isinstance(corpus, str) else list(corpus)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + list(extra_special_tokens), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>", unk_token=None,
        bos_token=None, clean_up_tokenization_spaces=False,
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    return path


# Settings that make a family's distinctive features visible in a tiny model (a backend ignoring one is caught).
FAMILY_OVERRIDES = {
    "gemma2": {"final_logit_softcapping": 5.0, "attn_logit_softcapping": 10.0},
    "granite": {"attention_multiplier": 0.3, "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
                "logits_scaling": 1.7},
    "cohere": {"logit_scale": 0.5},
}
# Rope settings merged into `rope_parameters` (transformers 5 keeps them there).
FAMILY_ROPE = {"phi3": {"partial_rotary_factor": 0.5}}
# A rope base no family defaults to, so that a backend reading the wrong rope settings is caught.
ROPE_THETA = 1234.0
ROPE_THETA_SLIDING = 567.0


def _unusual_rope(rope, extra: dict):
    """`rope_parameters` with unusual bases (one per layer type for gemma3-style per-type settings)."""
    if not isinstance(rope, dict) or not rope:
        return rope
    if any(isinstance(v, dict) for v in rope.values()):
        return {kind: ({**v, **extra, "rope_theta": ROPE_THETA_SLIDING if kind == "sliding_attention" else ROPE_THETA}
                       if isinstance(v, dict) else v) for kind, v in rope.items()}
    return {**rope, **extra, "rope_theta": ROPE_THETA} if "rope_theta" in rope else {**rope, **extra}


def _tiny_layer_types(config) -> None:
    """Per-layer attention types for the shrunk depth, keeping every type the family uses.

    A family alternating sliding and full attention every k layers (gemma2: 2, gemma3: 6) gets a period equal
    to the tiny depth, so that the last layer is full attention and the others slide; `sliding_window_pattern`
    (which mlx-lm reads) says the same.
    """
    n = config.num_hidden_layers
    types = getattr(config, "layer_types", None)
    if not isinstance(types, list) or not types:
        return
    kinds = list(dict.fromkeys(types))
    if len(kinds) > 1 and "full_attention" in kinds:
        others = [k for k in kinds if k != "full_attention"]
        period = types.index("full_attention") + 1
        if period > n or any(types[i] != types[i % period] for i in range(len(types))):
            period = n
        config.layer_types = [("full_attention" if (i + 1) % period == 0 else others[0]) for i in range(n)]
        for name in ("sliding_window_pattern", "_sliding_window_pattern"):
            if hasattr(config, name):
                setattr(config, name, period)
    elif len(types) != n:
        config.layer_types = (types * n)[:n]


def tiny_config(model_type: str, vocab_size: int, *, extra_vocab_rows: int = 0, family_overrides: bool = False,
                **overrides):
    """A transformers config of `model_type` shrunk to test size (any field can be overridden).

    With `family_overrides`, FAMILY_OVERRIDES, FAMILY_ROPE and an unusual rope base are applied first, so that a
    tiny model exercises what distinguishes its family (the conformance suite's checkpoints do this).
    """
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    default_layers = getattr(config, "num_hidden_layers", None)
    sizes = dict(TINY_SIZES)
    if family_overrides:
        sizes.update(FAMILY_OVERRIDES.get(model_type, {}))
        rope = _unusual_rope(getattr(config, "rope_parameters", None), FAMILY_ROPE.get(model_type, {}))
        if rope is not None:
            sizes["rope_parameters"] = rope
    sizes.update(overrides)
    for key, value in sizes.items():
        if key in overrides or hasattr(config, key) or key in FAMILY_OVERRIDES.get(model_type, {}):
            setattr(config, key, value)
    if getattr(config, "head_dim", None) is not None and "head_dim" not in overrides:
        config.head_dim = config.hidden_size // config.num_attention_heads
    config.vocab_size = vocab_size + extra_vocab_rows
    if "layer_types" not in overrides:
        _tiny_layer_types(config)
    n = getattr(config, "num_hidden_layers", None)
    if isinstance(default_layers, int) and n != default_layers:  # other per-layer lists (smollm3's no_rope_layers)
        for key, value in list(vars(config).items()):
            if key != "layer_types" and key not in overrides and isinstance(value, list) and len(value) == default_layers:
                setattr(config, key, value[:n])
    if "tie_word_embeddings" in overrides:  # otherwise the family's own default (gemma ties, llama does not)
        config.tie_word_embeddings = bool(overrides["tie_word_embeddings"])
    return config


def hub_config(saved: dict, config) -> dict:
    """config.json as the hub's checkpoints of the family carry it, from what transformers 5 saved.

    transformers 5 writes some fields only under their new names and leaves out derived ones, while checkpoints
    on the hub (and mlx-lm, which reads them) have the older ones too: the aliases of `attribute_map`
    (qwen3_moe's `num_experts`), `head_dim`, and `sliding_window_pattern` (gemma3). Both libraries read the
    result the same way; the values are the ones the model was built with.
    """
    out = dict(saved)
    for alias, target in (getattr(config, "attribute_map", None) or {}).items():
        if target in out and alias not in out:
            out[alias] = out[target]
    heads = out.get("num_attention_heads")
    if "head_dim" not in out and isinstance(heads, int) and isinstance(out.get("hidden_size"), int):
        out["head_dim"] = out["hidden_size"] // heads
    pattern = getattr(config, "sliding_window_pattern", None) or getattr(config, "_sliding_window_pattern", None)
    types = out.get("layer_types")
    if pattern is None and isinstance(types, list) and "full_attention" in types and len(set(types)) > 1:
        pattern = types.index("full_attention") + 1  # the period, as cohere2-style configs on the hub give it
    if isinstance(pattern, int) and "sliding_window_pattern" not in out:
        out["sliding_window_pattern"] = pattern
    return out


def make_tiny_checkpoint(path, model_type: str = "llama", *, tokenizer_dir=None, seed: int = 0,
                         extra_vocab_rows: int = 0, init_std: float = 0.1, family_overrides: bool = False,
                         **overrides) -> Path:
    """Save a tiny random `model_type` checkpoint with the tokenizer from `tokenizer_dir` (made if None).

    `extra_vocab_rows` pads the output layer beyond the tokenizer length, as real families do.
    `init_std` is larger than transformers' default so that tiny models have non-trivial distributions.
    `family_overrides`: see `tiny_config`.
    The weights are transformers' model of the config initialised by torch (seeded); where torch is not installed,
    NumPy draws them (seeded) in mlx-lm's layout, which only the mlx backend reads.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if tokenizer_dir is None:
        tokenizer_dir = make_tokenizer(path.with_name(path.name + "-tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = tiny_config(model_type, len(tokenizer), extra_vocab_rows=extra_vocab_rows,
                         family_overrides=family_overrides, initializer_range=init_std, **overrides)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = None
    path.mkdir(parents=True, exist_ok=True)
    with_torch = torch_installed()
    if with_torch:
        config = _save_torch_weights(path, config, seed)
    else:
        _save_config(path, config)
    config_file = path / "config.json"
    config_file.write_text(json.dumps(hub_config(json.loads(config_file.read_text()), config), indent=2,
                                      sort_keys=True) + "\n")
    if not with_torch:  # the weights follow config.json as the mlx backend reads it
        from .numpy_weights import save_numpy_weights

        save_numpy_weights(path, seed=seed, init_std=init_std)
    for item in Path(tokenizer_dir).iterdir():
        if item.is_file():
            shutil.copy2(item, path / item.name)
    return path


def torch_installed() -> bool:
    """Whether transformers can build its models, which need torch (transformers' own check)."""
    from transformers.utils import is_torch_available

    return is_torch_available()


def _save_torch_weights(path: Path, config, seed: int):
    """transformers' model of `config`, initialised by torch from `seed`, saved with its config in `path`; returns
    the model's config."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # norms random too, so a backend that ignores a norm weight is caught
        for name, param in model.named_parameters():
            if "norm" in name and param.dim() == 1:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
    model.eval()
    model.save_pretrained(str(path))
    return model.config


def _save_config(path: Path, config) -> None:
    """config.json and generation_config.json as save_pretrained writes them for a float32 model (without torch)."""
    from transformers import GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architecture = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    config.architectures = [architecture] if architecture else None
    config.dtype = "float32"
    config.save_pretrained(str(path))
    GenerationConfig.from_model_config(config).save_pretrained(str(path))


# ------------------------------------------------------------------------------------------------ vision-language
QWEN_VL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
TINY_VISION = {
    "qwen2_vl": {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
                 "spatial_patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3},
    "qwen2_5_vl": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 14,
                   "spatial_patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3,
                   "window_size": 56, "fullatt_block_indexes": [1], "tokens_per_second": 2},
}
# Images of 28 × 28 to 140 × 140 pixels: 1 to 25 vision tokens each.
TINY_IMAGE_PIXELS = {"min_pixels": 28 * 28, "max_pixels": 140 * 140}


def mrope_section(head_dim: int) -> list[int]:
    """How mrope splits a head's rotary half into temporal, height and width sections (16 → [2, 3, 3])."""
    half = head_dim // 2
    return [half - 2 * (half // 3), half // 3, half // 3]


def make_vlm_tokenizer(path) -> Path:
    """The tiny BPE tokenizer with Qwen-VL's vision tokens (a ChatML template, as Qwen-VL uses)."""
    return make_tokenizer(path, extra_special_tokens=QWEN_VL_TOKENS)


def make_tiny_vlm_checkpoint(path, model_type: str = "qwen2_vl", *, tokenizer_dir=None, seed: int = 0,
                             extra_vocab_rows: int = 0, init_std: float = 0.1, hidden_size: int = 64,
                             num_hidden_layers: int = 2) -> Path:
    """Save a tiny random Qwen2-VL / Qwen2.5-VL checkpoint in the hub's layout.

    config.json is flat as on the hub (text fields at the top level, `vision_config` nested, rope as
    `rope_theta` + `rope_scaling` {"type": "mrope", "mrope_section"}), which transformers and mlx-vlm both read;
    preprocessor_config.json is Qwen2-VL's image processor with small pixel bounds. `hidden_size` sets the
    language model's width (and the vision merger's output): two sizes make a small and a big model of one family.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2_5_VLConfig, Qwen2VLConfig
    from transformers.utils import logging as hf_logging

    if model_type not in TINY_VISION:
        raise ValueError(f"model_type {model_type!r}: tiny VLM checkpoints exist for {', '.join(TINY_VISION)}")
    hf_logging.disable_progress_bar()
    path = Path(path)
    if tokenizer_dir is None:
        tokenizer_dir = make_vlm_tokenizer(path.with_name(path.name + "-tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_VL_TOKENS}
    heads = 4
    text = {
        "vocab_size": len(tokenizer) + extra_vocab_rows, "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size, "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": heads, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": False, "use_sliding_window": False,
        "sliding_window": 512, "max_window_layers": num_hidden_layers, "rope_theta": ROPE_THETA,
        "initializer_range": init_std,
        "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": mrope_section(hidden_size // heads)},
    }
    vision = dict(TINY_VISION[model_type])
    vision["hidden_size" if model_type == "qwen2_vl" else "out_hidden_size"] = hidden_size
    flat = {
        **text, "model_type": model_type, "vision_config": vision,
        "image_token_id": token_ids["<|image_pad|>"], "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"], "vision_end_token_id": token_ids["<|vision_end|>"],
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None,
    }
    config_class = Qwen2VLConfig if model_type == "qwen2_vl" else Qwen2_5_VLConfig
    config = config_class(**json.loads(json.dumps(flat)))
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # larger weights than the default init, norms random too
        for name, param in model.named_parameters():
            if "norm" in name and param.dim() == 1:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            elif param.dim() >= 2:
                param.normal_(0.0, init_std)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    flat["architectures"] = [type(model).__name__]
    flat["torch_dtype"] = "float32"
    (path / "config.json").write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")
    processor = {
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor",
        "patch_size": vision["patch_size"], "merge_size": vision["spatial_merge_size"],
        "temporal_patch_size": vision["temporal_patch_size"], **TINY_IMAGE_PIXELS,
        "size": {"shortest_edge": TINY_IMAGE_PIXELS["min_pixels"], "longest_edge": TINY_IMAGE_PIXELS["max_pixels"]},
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")
    for item in Path(tokenizer_dir).iterdir():
        if item.is_file():
            shutil.copy2(item, path / item.name)
    return path


def make_test_image(path_or_none, width: int, height: int, seed: int = 0):
    """A random RGB image (numpy uint8 (height, width, 3)); saved as PNG when a path is given."""
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    if path_or_none is None:
        return pixels
    from PIL import Image

    Path(path_or_none).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path_or_none)
    return Path(path_or_none)


DEEPSEEK_VL2_TOKENS = ("<｜begin▁of▁sentence｜>", "<image>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>",
                       "<|grounding|>", "<|User|>", "<|Assistant|>")


def make_tiny_deepseek_vl2_checkpoint(path, *, seed: int = 0) -> Path:
    """A tiny random DeepSeek-VL2 checkpoint (SigLIP tiles, a downsampling projector, a DeepSeek-V2 mixture-of-
    experts language model with multi-head latent attention) as mlx-vlm reads it. transformers has no
    DeepSeek-VL2, so the model is built and saved with mlx-vlm (requires mlx and mlx-vlm)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.models.deepseek_vl_v2 import Model, ModelConfig
    from transformers import AutoTokenizer

    path = Path(path)
    tok_dir = make_tokenizer(path.with_name(path.name + "-tokenizer"), extra_special_tokens=DEEPSEEK_VL2_TOKENS)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    tokenizer.bos_token = DEEPSEEK_VL2_TOKENS[0]
    config = {
        "model_type": "deepseek_vl_v2", "tile_tag": "2D", "global_view_pos": "head",
        "candidate_resolutions": [[32, 32], [32, 64], [64, 32]],
        "image_token_index": tokenizer.convert_tokens_to_ids("<image>"),
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        "language_config": {
            "model_type": "deepseek_v2", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "moe_intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
            "n_shared_experts": 1, "n_routed_experts": 4, "num_experts_per_tok": 2, "first_k_dense_replace": 0,
            "kv_lora_rank": 16, "q_lora_rank": None, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16,
            "topk_method": "greedy", "max_position_embeddings": 512, "rope_theta": ROPE_THETA,
        },
        "vision_config": {"model_type": "vision", "layers": 2, "width": 32, "intermediate_size": 64,
                          "num_attention_heads": 2, "image_size": 32, "patch_size": 16, "mlp_ratio": 2.0},
        "projector_config": {"projector_type": "downsample_mlp_gelu", "input_dim": 32, "n_embed": 64, "depth": 2,
                             "mlp_ratio": 1, "downsample_ratio": 2},
    }
    mx.random.seed(seed)
    model = Model(ModelConfig.from_dict(json.loads(json.dumps(config))))
    path.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())), metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    processor = {"candidate_resolutions": config["candidate_resolutions"], "patch_size": 16, "downsample_ratio": 2,
                 "image_token": "<image>", "pad_token": "<pad>", "processor_class": "DeepseekVLV2Processor"}
    (path / "processor_config.json").write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(path))
    return path


def make_tiny_llava_checkpoint(path, *, seed: int = 0) -> Path:
    """A tiny random LLaVA checkpoint (CLIP vision tower, 28 × 28 images of 4 patches, a llama language model) with
    its processor, in the hub's layout (the vision tower's weights under `vision_tower.vision_model.`, where
    transformers 5 saves them without `vision_model.`; both it and mlx-vlm read the hub's)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import (
        AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(str(make_tokenizer(path.with_name(path.name + "-tokenizer"),
                                                                 extra_special_tokens=("<image>",))))
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=14)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                       initializer_range=0.1)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=4)
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).eval().save_pretrained(str(path))
    weights = load_file(str(path / "model.safetensors"))
    hub = "vision_tower.vision_model."
    save_file({(hub + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v for k, v in weights.items()},
              str(path / "model.safetensors"), metadata={"format": "pt"})
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1).save_pretrained(str(path))
    return path


def copy_with_remote_code(src, dst, marker) -> Path:
    """A copy of checkpoint `src` at `dst` whose config.json asks for its own model code (`auto_map`): a module
    that, if ever imported, creates the file `marker` (tests check that nothing runs it without opt-in)."""
    dst = Path(dst)
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return dst
