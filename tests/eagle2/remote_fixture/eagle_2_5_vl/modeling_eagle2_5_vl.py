# Fixture: Eagle2.5-VL model (the current eagle_2_5_vl format): no flash_attn import, but the vision tower's
# attention is hard-set to flash_attention_2 inside __init__.
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.models.qwen2.modeling_qwen2 import Qwen2ForCausalLM
from transformers.models.siglip.modeling_siglip import SiglipVisionModel

from .configuration_eagle2_5_vl import Eagle2_5_VLConfig


class Eagle2_5_VLPreTrainedModel(PreTrainedModel):
    config_class = Eagle2_5_VLConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Qwen2DecoderLayer", "SiglipEncoderLayer"]
    _supports_flash_attn_2 = True
    _supports_flash_attn = True
    _supports_sdpa = True


class Eagle2_5_VLForConditionalGeneration(Eagle2_5_VLPreTrainedModel, GenerationMixin):
    def __init__(self, config, vision_model=None, language_model=None):
        super().__init__(config)
        image_size = config.force_image_size or config.vision_config.image_size
        patch_size = config.vision_config.patch_size
        self.select_layer = config.select_layer
        self.downsample_ratio = config.downsample_ratio
        self.num_image_token = int((image_size // patch_size) ** 2 * (config.downsample_ratio ** 2))
        self.image_token_index = config.image_token_index
        config.vision_config._attn_implementation = "flash_attention_2"
        self.vision_model = vision_model or SiglipVisionModel(config.vision_config)
        self.language_model = language_model or Qwen2ForCausalLM(config.text_config)
        vit_hidden_size = config.vision_config.hidden_size
        llm_hidden_size = config.text_config.hidden_size
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(vit_hidden_size * int(1 / self.downsample_ratio) ** 2),
            nn.Linear(vit_hidden_size * int(1 / self.downsample_ratio) ** 2, llm_hidden_size),
            nn.GELU(),
            nn.Linear(llm_hidden_size, llm_hidden_size),
        )
        if config.use_llm_lora:
            self.language_model = get_peft_model(self.language_model, LoraConfig(
                r=config.use_llm_lora, lora_alpha=2 * config.use_llm_lora, lora_dropout=0.05,
                target_modules=["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                "mlp.gate_proj", "mlp.down_proj", "mlp.up_proj"], task_type="CAUSAL_LM"))
        self.post_init()

    def pixel_shuffle(self, x, scale_factor=0.5):
        n, w, h, c = x.size()
        x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
        x = x.permute(0, 2, 1, 3).contiguous()
        x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
        x = x.permute(0, 2, 1, 3).contiguous()
        return x

    def extract_feature(self, pixel_values):
        if self.select_layer == -1:
            vit_embeds = self.vision_model(pixel_values=pixel_values, output_hidden_states=False,
                                           return_dict=True).last_hidden_state
        else:
            vit_embeds = self.vision_model(pixel_values=pixel_values, output_hidden_states=True,
                                           return_dict=True).hidden_states[self.select_layer]
        h = w = int(vit_embeds.shape[1] ** 0.5)
        vit_embeds = vit_embeds.reshape(vit_embeds.shape[0], h, w, -1)
        vit_embeds = self.pixel_shuffle(vit_embeds, scale_factor=self.downsample_ratio)
        vit_embeds = vit_embeds.reshape(vit_embeds.shape[0], -1, vit_embeds.shape[-1])
        return self.mlp1(vit_embeds)

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, position_ids=None, image_flags=None,
                past_key_values=None, labels=None, use_cache=None, **kwargs):
        input_embeds = self.language_model.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            vit_embeds = self.extract_feature(pixel_values)
            if image_flags is not None:
                vit_embeds = vit_embeds[image_flags.squeeze(-1) == 1]
            B, N, C = input_embeds.shape
            input_embeds = input_embeds.reshape(B * N, C)
            selected = input_ids.reshape(B * N) == self.image_token_index
            input_embeds[selected] = input_embeds[selected] * 0.0 + vit_embeds.reshape(-1, C)
            input_embeds = input_embeds.reshape(B, N, C)
        outputs = self.language_model(inputs_embeds=input_embeds, attention_mask=attention_mask,
                                      position_ids=position_ids, past_key_values=past_key_values,
                                      use_cache=use_cache, labels=labels)
        return CausalLMOutputWithPast(loss=outputs.loss, logits=outputs.logits,
                                      past_key_values=outputs.past_key_values)
