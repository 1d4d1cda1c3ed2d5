# Fixture: FlashAttention wrapper in the style of the vendored InternVL/Eagle2 file.
import torch.nn as nn

try:  # flash_attn 2.x, else the 1.x name
    from flash_attn.flash_attn_interface import flash_attn_varlen_qkvpacked_func
except ImportError:
    from flash_attn.flash_attn_interface import flash_attn_unpadded_qkvpacked_func as flash_attn_varlen_qkvpacked_func

from flash_attn.bert_padding import pad_input, unpad_input


class FlashAttention(nn.Module):
    """Scaled dot-product attention through flash_attn on packed (batch, seq, 3, heads, dim) qkv."""

    def __init__(self, softmax_scale=None, attention_dropout=0.0):
        super().__init__()
        self.softmax_scale = softmax_scale
        self.dropout_p = attention_dropout

    def forward(self, qkv, key_padding_mask=None, causal=False):
        batch, seqlen = qkv.shape[0], qkv.shape[1]
        flat, indices, cu_seqlens, max_s = unpad_input(qkv.flatten(2), key_padding_mask)
        out = flash_attn_varlen_qkvpacked_func(flat, cu_seqlens, max_s, self.dropout_p if self.training else 0.0,
                                               softmax_scale=self.softmax_scale, causal=causal)
        return pad_input(out, indices, batch, seqlen), None
