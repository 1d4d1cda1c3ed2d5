"""Tiny random Eagle2 checkpoints in the official layout, in either config format (nothing downloaded).

    tok = make_eagle2_tokenizer(tmp / "tok")
    make_eagle2_checkpoint(tmp / "old", "eagle_chat", tokenizer_dir=tok)
    make_eagle2_checkpoint(tmp / "new", "eagle_2_5_vl", tokenizer_dir=tok, remote_code=FILES)

Weights come from stock transformers parts (SigLIP, Qwen2) plus the `mlp1` projector, under the official names
(`vision_model.vision_model.*` whichever SigLIP tree the installed transformers has, `mlp1.{0,1,3}.*`, `language_model.model.*`); the tied `lm_head` is left out, as in
the real file. config.json carries what the official ones do, `flash_attention_2` requests included.
Requires torch, transformers and tokenizers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .checkpoints import make_tokenizer

EAGLE_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")
TILE = 56  # 4 × 4 patches of 14 px → 4 image tokens per tile after the 2 × 2 pixel shuffle
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": TILE, "patch_size": 14, "num_channels": 3, "hidden_act": "gelu_pytorch_tanh",
               "layer_norm_eps": 1e-6, "attention_dropout": 0.0}
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1234.0,
             "max_position_embeddings": 1024, "tie_word_embeddings": True, "use_sliding_window": False,
             "sliding_window": 1024, "max_window_layers": 2}
# Eagle2-1B's sizes (SigLIP so400m/14 at 448, Qwen2.5-0.5B), for configs whose numbers matter but weights do not
EAGLE2_1B_VISION = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
                    "image_size": 448, "patch_size": 14}
EAGLE2_1B_TEXT = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                  "num_key_value_heads": 2}
REMOTE_ENTRIES = {
    "eagle_chat": {"AutoConfig": "configuration_eagle_chat.Eagle2ChatConfig",
                   "AutoModel": "modeling_eagle_chat.Eagle2ChatModel",
                   "AutoModelForCausalLM": "modeling_eagle_chat.Eagle2ChatModel"},
    "eagle_2_5_vl": {"AutoConfig": "configuration_eagle2_5_vl.Eagle2_5_VLConfig",
                     "AutoModel": "modeling_eagle2_5_vl.Eagle2_5_VLForConditionalGeneration"},
}


def make_eagle2_tokenizer(path) -> Path:
    """The tiny BPE tokenizer (ChatML) with Eagle2's nine added special tokens."""
    from transformers import AutoTokenizer

    path = make_tokenizer(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.add_special_tokens({"additional_special_tokens": list(EAGLE_TOKENS)})
    tok.save_pretrained(str(path))
    return Path(path)


def eagle2_config(model_type: str, tokenizer, *, text: dict | None = None, vision: dict | None = None) -> dict:
    """config.json of a tiny Eagle2 in `model_type`'s format (sizes from TINY_* updated by `text`/`vision`)."""
    text_config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **TINY_TEXT, **(text or {}),
                   "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "bos_token_id": None,
                   "torch_dtype": "float32"}
    vision_config = {"model_type": "siglip_vision_model", **TINY_VISION, **(vision or {})}
    common = {"force_image_size": vision_config["image_size"], "downsample_ratio": 0.5, "select_layer": -1,
              "dynamic_image_size": True, "use_thumbnail": True, "template": "qwen2-chat", "torch_dtype": "float32",
              "keep_aspect_ratio": False, "pad2square": False, "use_backbone_lora": 0, "use_llm_lora": 0}
    if model_type == "eagle_chat":
        return {"architectures": ["Eagle2ChatModel"], "model_type": "eagle_chat", **common, "ps_version": "v2",
                "min_dynamic_patch": 1, "max_dynamic_patch": 12, "mlp_checkpoint": True,
                "vision_config": {**vision_config, "architectures": ["SiglipVisionModel"], "vision_use_head": False,
                                  "_attn_implementation": "flash_attention_2"},
                "llm_config": {**text_config, "attn_implementation": "flash_attention_2"}}
    if model_type == "eagle_2_5_vl":
        return {"architectures": ["Eagle2_5_VLForConditionalGeneration"], "model_type": "eagle_2_5_vl", **common,
                "min_dynamic_tiles": 1, "max_dynamic_tiles": 12, "mlp_checkpoint": False,
                "image_token_index": tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
                "tie_word_embeddings": bool(text_config["tie_word_embeddings"]),
                "_attn_implementation": "flash_attention_2", "_attn_implementation_autoset": False,
                "transformers_version": "4.51.0", "vision_config": vision_config, "text_config": text_config}
    raise ValueError(f"model_type={model_type!r}: one of eagle_chat, eagle_2_5_vl")


def eagle2_state_dict(config: dict, *, seed: int = 0, init_std: float = 0.1) -> dict:
    """Random weights under the official names (norm weights near 1, everything else N(0, init_std))."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    text = dict(config.get("llm_config") or config["text_config"])
    text = {k: v for k, v in text.items() if k not in ("attn_implementation", "architectures")}
    vision = {k: v for k, v in config["vision_config"].items() if k not in ("_attn_implementation", "architectures")}
    torch.manual_seed(seed)
    tower = SiglipVisionModel(SiglipVisionConfig(**{**vision, "vision_use_head": False}))
    llm = Qwen2ForCausalLM(Qwen2Config(**text))
    width, hidden = vision["hidden_size"] * 4, text["hidden_size"]
    mlp1 = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, hidden), torch.nn.GELU(),
                               torch.nn.Linear(hidden, hidden))
    state = {}
    for prefix, module in (("vision_model.", tower), ("mlp1.", mlp1), ("language_model.", llm)):
        for name, param in module.state_dict().items():
            state[prefix + name] = param
    # the official file nests SigLIP's transformer (`vision_model.vision_model.*`, transformers 4.x's tree);
    # transformers 5 flattens SiglipVisionModel and converts the prefix when loading
    state = {("vision_model.vision_model." + k[len("vision_model."):]
              if k.startswith("vision_model.") and not k.startswith("vision_model.vision_model.") else k): v
             for k, v in state.items()}
    out = {}
    with torch.no_grad():
        for name, param in state.items():
            if name == "language_model.lm_head.weight" and text.get("tie_word_embeddings"):
                continue
            norm = param.dim() == 1 and ("norm" in name or name.startswith("mlp1.0"))
            out[name] = (1.0 + 0.1 * torch.randn_like(param)) if norm and name.endswith("weight") else \
                init_std * torch.randn_like(param)
    return out


def make_eagle2_checkpoint(path, model_type: str = "eagle_chat", *, tokenizer_dir=None, seed: int = 0,
                           init_std: float = 0.1, text: dict | None = None, vision: dict | None = None,
                           remote_code=None) -> Path:
    """Write a tiny random Eagle2 checkpoint to `path`.

    `remote_code`: a directory of the remote-code files (*.py) to ship with it; auto_map then names them as the
    official checkpoints do. `text`/`vision` override the tiny sizes (two `text` sizes give two model sizes).
    """
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    path = Path(path)
    if tokenizer_dir is None:
        tokenizer_dir = make_eagle2_tokenizer(path.with_name(path.name + "-tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = eagle2_config(model_type, tokenizer, text=text, vision=vision)
    path.mkdir(parents=True, exist_ok=True)
    if remote_code is not None:
        config["auto_map"] = REMOTE_ENTRIES[model_type]
        for file in sorted(Path(remote_code).glob("*.py")):
            shutil.copy2(file, path / file.name)
    state = eagle2_state_dict(config, seed=seed, init_std=init_std)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for item in Path(tokenizer_dir).iterdir():
        if item.is_file():
            shutil.copy2(item, path / item.name)
    return path
