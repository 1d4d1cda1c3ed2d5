"""`prt_numpy`: a small prtcore backend in NumPy, the worked example of docs/writing-a-backend.md.

It loads llama-family checkpoints (llama, mistral, qwen2, qwen3) and runs them in float64, and implements the
`linear` and `transformer` rewards and fully fine-tuned twins. It lacks capabilities "train", "lora" and
"batched"; the conformance suite skips those checks for it with that reason.
"""
