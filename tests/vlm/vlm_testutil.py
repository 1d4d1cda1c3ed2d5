"""Constants shared by the vision-language tests."""

VLM_TYPES = ("qwen2_vl", "qwen2_5_vl")
# (width, height): 1, 6 and 20 vision tokens (one per 28 × 28 pixels after Qwen's resizing).
IMAGE_SIZES = ((28, 28), (84, 56), (140, 112))


def vision_tokens(width: int, height: int) -> int:
    return -(-height // 28) * -(-width // 28)
