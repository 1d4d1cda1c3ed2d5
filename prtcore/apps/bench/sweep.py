"""`prt bench --sweep`: PRT's training step against plain LoRA's over vocabulary sizes and sequence lengths.

    from prtcore.apps.bench import preset
    from prtcore.apps.bench.sweep import SWEEPS, sweep
    result = sweep(preset("small"), ("torch",), **SWEEPS["small"])
    print(result["table"])

Each point (vocabulary V, positions T) is one training run of `prtcore.apps.bench.run` (no generation) with the
run's other settings: the side-by-side step times (wall clock and CPU time), peak memory and their ratios over
LoRA's, as `prt bench` measures them. Real vocabularies (128k-256k tokens) make the two (batch × T × V) logit
tensors of a PRT step, and the one of a LoRA step, the largest arrays of the step.
"""

from __future__ import annotations

import time

import attrs

from ...benchmarking.config import BenchConfig
from ...errors import ConfigError
from .report import training_lines

SWEEPS = {
    "full": {"vocabs": (32000, 128000, 152000, 256000), "seqs": (512, 2048, 4096)},
    "small": {"vocabs": (512, 1024), "seqs": (16, 32)},  # seconds (tests)
}


def sweep(config: BenchConfig, backends=("mlx", "torch"), *, vocabs, seqs, workdir=None, log=None) -> dict:
    """Training runs of `config` at every (vocabulary, positions) pair; returns the JSON-ready result with a
    "table" string."""
    from . import run

    vocabs, seqs = tuple(vocabs), tuple(seqs)
    for name, values in (("vocabularies", vocabs), ("sequence lengths", seqs)):
        if not values or any(not isinstance(v, int) or v <= 1 for v in values):
            raise ConfigError(f"sweep {name} {values!r}: must be integers > 1")
    log = log or (lambda message: None)
    points, environment = [], {}
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    for vocab in vocabs:
        for seq in seqs:
            log(f"sweep: vocabulary {vocab}, {seq} positions")
            point = attrs.evolve(config, vocab=vocab, train_seq=seq, generation=False, training=True)
            result = run(point, backends, workdir=workdir, log=log)
            environment = result["environment"]
            points.append({"vocab": vocab, "seq": seq,
                           "backends": {name: res["training"] for name, res in result["backends"].items()}})
    out = {"config": attrs.asdict(config), "sweep": {"vocabs": list(vocabs), "seqs": list(seqs)},
           "points": points, "environment": environment, "started": started}
    out["table"] = sweep_table(out)
    return out


def sweep_table(result: dict) -> str:
    """Per backend, per point: the training rows of `prt bench` (time and CPU time per step, memory, ratios)."""
    config = result["config"]
    lines = [f"sweep: batch {config['train_batch']}, source d={config['source']['hidden']} "
             f"L={config['source']['layers']}, LoRA on the last {config['lora_layers']} blocks"]
    backends = {name for point in result["points"] for name in point["backends"]}
    for backend in sorted(backends):
        for point in result["points"]:
            train = point["backends"].get(backend)
            if train is None:
                continue
            lines.append(f"{backend}: vocabulary {point['vocab']}, {point['seq']} positions, {train['device']} "
                         f"({train['dtype']}); memory: {train['memory_measure']}")
            lines.extend(training_lines(train))
    return "\n".join(lines)
