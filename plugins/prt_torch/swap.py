"""The model-swapping experiment (seed PRT13): one trained reward, several target bases, base alone vs PRT.

    results = evaluate_on_targets("reward-dir", ["base-0.5b", "base-1.5b"], examples["valid"])
    # [{"target": "base-0.5b", "base": {"nll":…, "perplexity":…, "accuracy":…}, "prt": {…}, "ntokens": …}, …]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from prtcore.artifacts import RewardArtifact, tokenizer_fingerprint
from prtcore.data import collate, load_split
from prtcore.tokens import pad_id_of
from prtcore.model import PRTForCausalLM, resolve_source
from prtcore.plugins import get_backend
from prtcore.sampling import check_same_tokenizer

from .trainer import as_example


def _metrics(nll: float, hits: float, n: float) -> dict[str, float]:
    mean = nll / n if n else float("nan")
    return {"nll": mean, "perplexity": math.exp(mean) if n else float("nan"), "accuracy": hits / n if n else float("nan")}


@torch.no_grad()
def evaluate(model: PRTForCausalLM, examples: Sequence, *, batch_size: int = 4) -> dict:
    """Token-level NLL, perplexity and accuracy of the base alone and of base + rewards on `examples`."""
    pad = pad_id_of(model.tokenizer, model.rows)
    sums = {"base": [0.0, 0.0], "prt": [0.0, 0.0]}
    count = 0.0
    examples = [as_example(e) for e in examples]
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], pad)
        out = model(model.backend.asarray(batch.ids[:, :-1].astype(np.int64).tolist()))
        targets = torch.as_tensor(batch.ids[:, 1:].astype(np.int64), device=out.logprobs.device)
        weights = torch.as_tensor(batch.mask[:, 1:], device=out.logprobs.device)
        count += float(weights.sum())
        for name, logprobs in (("base", out.base_logprobs), ("prt", out.logprobs)):
            picked = logprobs.gather(-1, targets[..., None]).squeeze(-1)
            # Masked positions may hold -inf (padding ids): select instead of multiplying.
            sums[name][0] += float(torch.where(weights > 0, -picked, torch.zeros_like(picked)).sum())
            sums[name][1] += float(((logprobs.argmax(-1) == targets).float() * weights).sum())
    return {"base": _metrics(*sums["base"], count), "prt": _metrics(*sums["prt"], count), "ntokens": int(count)}


def evaluate_on_targets(reward_dir, targets: Sequence, data, *, source=None, lam: float | None = None,
                        batch_size: int = 4, **options) -> list[dict]:
    """Evaluate the reward at `reward_dir` on each target base in turn (the reward and its source load once).

    `data`: examples (prtcore.data.Example, (ids, mask) pairs or dicts) or a .jsonl file; `source` overrides the
    source path the artifact records; `options` go to `TorchBackend.load_base` (device, dtype, ...).
    Returns one dict per target: {"target", "base": {nll, perplexity, accuracy}, "prt": {...}, "ntokens"}.
    """
    backend = get_backend("torch")
    artifact = RewardArtifact.open(reward_dir)
    needs_source = artifact.kind != "twin" or artifact.config.fine_tune_type == "lora"
    source_lm = None
    if needs_source:
        src = resolve_source(artifact, source, remote_code=bool(options.get("trust_remote_code")))
        source_lm = backend.load_base(src, **options)
    reward = backend.load_reward(artifact, source_lm)
    lams = None if lam is None else [float(lam)]
    results = []
    for path in targets:
        same = source_lm is not None and Path(path).resolve() == Path(source_lm.path).resolve()
        target = source_lm if same else backend.load_base(path, **options)
        _check_tokenizer(artifact, target, backend)
        if isinstance(data, (str, Path)):
            data = load_split(data, target.tokenizer)
        model = PRTForCausalLM(backend, target, [reward], lams, [source_lm if reward.reads_source_hidden else None])
        results.append({"target": str(path), **evaluate(model, data, batch_size=batch_size)})
        if not same:
            del target, model
    return results


def _check_tokenizer(artifact: RewardArtifact, target, backend) -> None:
    recorded = artifact.meta.get("tokenizer", {}).get("fingerprint")
    if recorded and recorded == tokenizer_fingerprint(target.tokenizer):
        return
    check_same_tokenizer({"target": target.tokenizer, f"reward {artifact.path}": backend.load_tokenizer(artifact.path)})
