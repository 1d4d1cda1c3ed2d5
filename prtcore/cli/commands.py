"""prtcore's own `prt` commands, registered through the `register_commands` hook like a plugin's (the plugin manager
always registers this module, whatever PRT_LOAD_PLUGINS says; prtcore.plugins.BUILTIN_PLUGINS).

Each module defines `add_arguments(parser)` and `run(args) -> int`; `prt` imports it when it builds its parser, so
its top level stays light (no framework is imported before a command runs).
"""

from ..hookspecs import hookimpl

# name -> (module, one-line help), in the order `prt --help` lists them
COMMANDS = {
    "conformance": ("prtcore.cli.conformance", "check backends against NumPy and each other, per model family"),
    "demo": ("prtcore.cli.demo", "a reward trained on an old base, reused on a newer, bigger one, against the baselines"),
    "generate": ("prtcore.cli.generate", "generate text with portable rewards applied to a base model"),
    "plugins": ("prtcore.cli.plugins", "list installed plugins, their hooks and versions as JSON"),
    "env": ("prtcore.cli.env", "versions, backends, devices, BLAS and settings, to paste into a bug report"),
    "train": ("prtcore.cli.train", "train a portable reward on a frozen base model (or --method sft: fine-tune it)"),
    "chat": ("prtcore.cli.chat", "chat with a base model and portable rewards (reads stdin line by line)"),
    "serve": ("prtcore.cli.serve", "an OpenAI-compatible HTTP server for a base model with portable rewards"),
    "eval": ("prtcore.cli.evaluate", "NLL, perplexity and exact match of base, PRT and EFT on a jsonl split"),
    "explain": ("prtcore.cli.explain", "each token's reward and how it moved the base's top choices"),
    "data": ("prtcore.cli.data", "convert a public data set (DriveLM) into jsonl splits"),
    "convert": ("prtcore.cli.convert", "convert LoRA adapters: mlx-lm <-> PEFT <-> PRT twin reward"),
    "bench": ("prtcore.cli.bench", "measure PRT's generation speed and training cost against its two models, EFT and LoRA"),
}


@hookimpl
def register_commands(register):
    for name, (module, help_text) in COMMANDS.items():
        register(name, module, help_text)
