"""Both config formats read into one Eagle2Config; bad configs give one-line errors naming file, field, value."""

import json

import pytest
from transformers import AutoTokenizer

from prt_eagle2.config import parse_config, read_config
from prtcore.errors import ConfigError, ModelLoadError
from prtcore.testing.eagle2 import EAGLE2_1B_TEXT, EAGLE2_1B_VISION, eagle2_config


@pytest.fixture(scope="module")
def tok(eagle_tokenizer):
    return AutoTokenizer.from_pretrained(str(eagle_tokenizer))


def test_both_formats_give_the_same_model(native_dirs):
    old, new = read_config(native_dirs["eagle_chat"]), read_config(native_dirs["eagle_2_5_vl"])
    assert (old.model_type, new.model_type) == ("eagle_chat", "eagle_2_5_vl")
    assert old.vision == new.vision and old.text == new.text
    assert "attn_implementation" not in old.text and "_attn_implementation" not in old.vision
    assert old.image_token_index is None and new.image_token_index is not None  # old: from the tokenizer
    assert (old.min_tiles, old.max_tiles, old.use_thumbnail) == (new.min_tiles, new.max_tiles, new.use_thumbnail) == (1, 12, True)
    assert old.text["tie_word_embeddings"] and new.text["tie_word_embeddings"]


@pytest.mark.parametrize("fmt", ["eagle_chat", "eagle_2_5_vl"])
def test_eagle2_1b_sizes_give_256_tokens_per_tile(tok, fmt):
    config = parse_config(eagle2_config(fmt, tok, vision=EAGLE2_1B_VISION, text=EAGLE2_1B_TEXT))
    assert config.tokens_per_tile == 256 and config.shuffle == 2 and config.patches_per_side == 32
    assert config.vision_hidden * config.shuffle ** 2 == 4608  # mlp1's input width


def test_missing_fields_take_the_format_class_defaults(tok):
    deep = {"num_hidden_layers": 4}  # hidden_states[-4] exists
    old, new = eagle2_config("eagle_chat", tok, vision=deep), eagle2_config("eagle_2_5_vl", tok, vision=deep)
    for raw, keys in ((old, ("select_layer", "max_dynamic_patch")), (new, ("select_layer", "max_dynamic_tiles"))):
        for key in keys:
            del raw[key]
    assert (parse_config(old).select_layer, parse_config(old).max_tiles) == (-1, 12)
    assert (parse_config(new).select_layer, parse_config(new).max_tiles) == (-4, 6)  # as Eagle2_5_VLConfig's


def test_tie_word_embeddings_from_the_top_level(tok):
    raw = eagle2_config("eagle_2_5_vl", tok)
    del raw["text_config"]["tie_word_embeddings"]
    assert parse_config(raw).text["tie_word_embeddings"] is True


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(model_type="eagle3"), "model_type='eagle3': not an Eagle2 format"),
    (lambda c: c.pop("llm_config"), "llm_config: missing"),
    (lambda c: c["vision_config"].update(model_type="MOB"), "vision_config.model_type='MOB': only 'siglip_vision_model'"),
    (lambda c: c["llm_config"].update(model_type="llama"), "llm_config.model_type='llama': only 'qwen2'"),
    (lambda c: c["llm_config"].pop("vocab_size"), "llm_config.vocab_size: missing"),
    (lambda c: c.update(downsample_ratio=0.3), "downsample_ratio=0.3: must be 1/k"),
    (lambda c: c.update(force_image_size=50), "force_image_size=50: must be a multiple of patch_size 14"),
    (lambda c: c.update(select_layer=9), "select_layer=9: must be -1 or a hidden-state index"),
    (lambda c: c.update(max_dynamic_patch=0), "min_dynamic_patch=1, max_dynamic_patch=0"),
])
def test_bad_configs_name_the_field(tok, change, message):
    raw = eagle2_config("eagle_chat", tok)
    change(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "ckpt/config.json")
    text = str(info.value)
    assert text.startswith("ckpt/config.json: ") and message in text and "\n" not in text


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ModelLoadError, match=r"config.json:1:2: invalid JSON"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps([1]))
    with pytest.raises(ModelLoadError, match="expected a JSON object"):
        read_config(tmp_path)
