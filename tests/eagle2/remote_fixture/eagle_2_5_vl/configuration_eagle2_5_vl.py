# Fixture: Eagle2.5-VL configuration (the current eagle_2_5_vl format).
from transformers.configuration_utils import PretrainedConfig
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config
from transformers.models.siglip.configuration_siglip import SiglipVisionConfig


class Eagle2_5_VLConfig(PretrainedConfig):
    model_type = "eagle_2_5_vl"
    sub_configs = {"vision_config": SiglipVisionConfig, "text_config": Qwen2Config}

    def __init__(self, vision_config=None, text_config=None, use_backbone_lora=0, use_llm_lora=0, pad2square=False,
                 select_layer=-4, force_image_size=None, downsample_ratio=0.5, template=None,
                 dynamic_image_size=False, use_thumbnail=False, min_dynamic_tiles=1, max_dynamic_tiles=6,
                 mlp_checkpoint=False, image_token_index=None, _attn_implementation="flash_attention_2", **kwargs):
        self.vision_config = SiglipVisionConfig(**(vision_config or {}))
        self.text_config = Qwen2Config(**(text_config or {}))
        super().__init__(**kwargs)
        self.use_backbone_lora = use_backbone_lora
        self.use_llm_lora = use_llm_lora
        self.pad2square = pad2square
        self.select_layer = select_layer
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.min_dynamic_tiles = min_dynamic_tiles
        self.max_dynamic_tiles = max_dynamic_tiles
        self.mlp_checkpoint = mlp_checkpoint
        self.image_token_index = image_token_index
        self._attn_implementation = _attn_implementation
