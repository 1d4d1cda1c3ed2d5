"""The model card of a reward artifact: the README.md every artifact directory holds.

`render_model_card(meta, name=...)` turns an artifact's prt_config.json content into a card in the Hugging Face
Hub's format (YAML front matter, then Markdown), so that the directory can be uploaded to the Hub as is. It is
called in one place, `ArtifactWriter.commit`, which every backend's save goes through (also the saves that
`write_into` moves into a training run's output directory).

The card is part of the artifact: artifacts are written fresh into a staging directory, so the README.md there
is always the one rendered here, and a save replaces the card of an artifact it replaces (a README.md a user put
into a training output directory by hand is overwritten by the run's final save).

Only what `meta` records is reported; what it lacks is said to be unrecorded, never guessed. `base_model` is the
source model's Hub id when the artifact records one (`source.hub_id`, with `source.revision`), else the name of
the source's directory: the Hub refuses an upload whose `base_model` is not a Hub model id, so a reward trained
on a local copy of a Hub model needs that line corrected (or the Hub id recorded) before `upload_folder`.

Rendering never imports an array framework; it needs only PyYAML (a base dependency).
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath

CARD_NAME = "README.md"

# labels of the fields the trainers write into meta["training"] (plugins/prt_*/training.py, trainer.py)
_TRAINING_LABELS = {
    "iterations": "steps",
    "global_step": "steps (global step)",
    "iteration": "saved at step",
    "epochs": "epochs",
    "trained_tokens": "trained tokens",
    "train_loss": "final train loss",
    "final_train_loss": "final train loss",
    "val_loss": "validation loss",
    "final_val_loss": "final validation loss",
    "best_val_loss": "best validation loss",
    "best_iteration": "best validation step",
}


def _kind(name: str):
    """The registered reward kind `name` (prtcore.kinds: its description, tags, what it needs its source for), or
    None for a kind no installed plugin registers."""
    from .plugins import reward_kinds

    return reward_kinds().get(name)


def render_model_card(meta: dict, *, name: str) -> str:
    """The README.md text of the reward artifact whose prt_config.json content is `meta`, a directory called
    `name`. Missing or malformed fields are reported as not recorded; rendering does not raise on them."""
    import yaml

    meta = meta if isinstance(meta, dict) else {}
    reward = _dict(meta.get("reward"))
    source = _dict(meta.get("source"))
    training = _dict(meta.get("training"))
    created = _dict(meta.get("created_by"))
    kind = str(reward.get("kind") or "unknown")
    registered = _kind(kind)
    base_id = _base_model(source)
    name = str(name or "reward")

    front: dict = {}
    if base_id:
        front["base_model"] = base_id
    front["library_name"] = "prtcore"
    license_ = meta.get("license") or source.get("license")
    if isinstance(license_, str) and license_:
        front["license"] = license_
    tags = ["prtcore", "portable-reward-tuning", "reward-model"] + ([kind] if reward.get("kind") else [])
    if registered is not None:
        tags += registered.card_tags(reward)
    if isinstance(source.get("model_type"), str) and source["model_type"]:
        tags.append(source["model_type"])
    front["tags"] = list(dict.fromkeys(tags))
    yaml_text = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, default_flow_style=False)

    lines = ["---", yaml_text.rstrip("\n"), "---", "", f"# {_md(name)}", ""]
    source_label = f"`{_md(base_id)}`" if base_id else "its source model"
    lines += [
        f"A **portable reward** for prtcore (Portable Reward Tuning; Chijiwa et al., ICML 2025), "
        f"trained with {source_label} frozen. At inference the reward r is added to the log-probabilities of "
        "**any** base model that shares the source's tokenizer:",
        "",
        "    v = log_softmax(base_logits) + r / λ",
        "",
        f"The reward is {registered.card_text(reward) if registered is not None else f'of kind `{_md(kind)}`'}.",
        "",
    ]

    lines += ["## Reward", "", "| setting | value |", "|---|---|"]
    lines.append(f"| kind | `{_md(kind)}` |")
    lines.append(f"| λ (lam) | {_value(reward.get('lam'))} |")
    lines.append(f"| entropy coefficient | {_value(reward.get('entropy_coeff'))} |")
    for key, value in reward.items():
        if key in ("kind", "lam", "entropy_coeff"):
            continue
        if isinstance(value, dict):
            for sub, item in value.items():
                shown = "every linear of the block" if (key, sub, item) == ("lora", "keys", None) else _value(item)
                lines.append(f"| {_md(key)}.{_md(sub)} | {shown} |")
        else:
            lines.append(f"| {_md(key)} | {_value(value)} |")
    if "vocab_size" in meta:
        lines.append(f"| shared vocabulary | {_value(meta.get('vocab_size'))} tokens |")
    fingerprint = _dict(meta.get("tokenizer")).get("fingerprint")
    if fingerprint:
        lines.append(f"| tokenizer fingerprint (sha256) | `{_md(fingerprint)}` |")
    lines.append("")

    lines += ["## Source model", "", "| field | value |", "|---|---|"]
    lines.append(f"| base model | {('`' + _md(base_id) + '`') if base_id else 'not recorded'} |")
    if source.get("hub_id") and source.get("revision"):
        lines.append(f"| revision | `{_md(source['revision'])}` |")
    for key, label in (("model_type", "model type"), ("hidden_size", "hidden size"),
                       ("num_hidden_layers", "layers"), ("vocab_size", "output rows")):
        if source.get(key) is not None:
            lines.append(f"| {label} | {_value(source[key])} |")
    lines.append("")
    what = registered.card_source_use(reward) if registered is not None else \
        "the source's last hidden states are its input"  # an unknown kind: what most kinds need
    if what:
        lines += [f"This reward needs its source model at inference ({what}): prtcore finds it where "
                  "prt_config.json says it was; `source=` (Python) or `--source` names it if it moved.", ""]

    lines += ["## Training", ""]
    lines += _data_lines(meta)
    rows = []
    for key, value in training.items():
        if isinstance(value, (dict, list)) or key == "backend":
            continue
        rows.append(f"| {_TRAINING_LABELS.get(key, _md(key))} | {_value(value)} |")
    if rows:
        lines += ["| metric | value |", "|---|---|", *rows, ""]
    else:
        lines += ["Training metrics: not recorded.", ""]
    if meta.get("converted_from"):
        lines += [f"Converted from the adapter `{_md(PurePath(str(meta['converted_from'])).name)}` "
                  "with `prt convert`.", ""]

    if source.get("hub_id"):
        base_ref = str(source["hub_id"])
        where = (f"Any other base model with the source's tokenizer can stand in for `{_md(base_ref)}`; "
                 f"`{_md(name)}` is the path of this directory.")
    else:
        base_ref = "BASE"
        where = (f"`BASE` is any base model with the source's tokenizer"
                 f"{' (the source itself: `' + _md(base_id) + '`)' if base_id else ''}; "
                 f"`{_md(name)}` is the path of this directory.")
    lines += [
        "## Use",
        "",
        where,
        "",
        "```python",
        "from prtcore import PRTForCausalLM",
        "",
        f"model = PRTForCausalLM.from_pretrained({json.dumps(base_ref)}, {json.dumps(name)})",
        'print(model.generate("Hello", max_tokens=64))',
        "```",
        "",
        "```bash",
        f"prt generate --model {_shell(base_ref)} --reward {_shell(name)} --prompt \"Hello\"",
        "```",
        "",
        f"`--reward {_shell(name)}:0.5` (Python: `lam=0.5`) overrides the trained λ.",
        "",
    ]
    files = [w for w in meta.get("weights", []) if isinstance(w, str)] if isinstance(meta.get("weights"), list) else []
    made = ", ".join(f"{k} {_md(v)}" for k, v in (("prtcore", created.get("prtcore")), ("backend", created.get("backend")))
                     if v)
    lines += ["## Files", "",
              "- `prt_config.json`: the reward's settings, its source model and training metrics (read by prtcore)",
              *([f"- weights: {', '.join(f'`{_md(w)}`' for w in files)}"] if files else []),
              "- tokenizer files of the source model, when it had them",
              ""]
    if made:
        lines += [f"Written by {made}.", ""]
    return "\n".join(lines)


def _base_model(source: dict) -> str | None:
    hub_id = source.get("hub_id")
    if isinstance(hub_id, str) and hub_id:
        return hub_id
    path = source.get("path")
    if isinstance(path, str) and path:
        return PurePath(path).name or None
    return None


def _data_lines(meta: dict) -> list[str]:
    data = meta.get("data")
    if data is None:
        data = _dict(meta.get("training")).get("data")
    if isinstance(data, str) and data:
        return [f"Data: `{_md(PurePath(data).name)}`.", ""]
    if not isinstance(data, dict) or not data:
        return ["Data: not recorded.", ""]
    parts = []
    if data.get("path"):
        parts.append(f"`{_md(PurePath(str(data['path'])).name)}`")
    counts = [f"{_value(v)} {_md(k)}" for k, v in data.items() if k != "path" and isinstance(v, (int, float, str))]
    if counts:
        parts.append("examples: " + ", ".join(counts))
    return ["Data: " + "; ".join(parts) + ".", ""]


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _value(value) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return _md(str(value))
        text = f"{value:.6g}"
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value) or "none"
    return _md(str(value))


def _md(text) -> str:
    """Text safe inside a Markdown table cell and on one line."""
    return "".join(c if c.isprintable() else " " for c in str(text)).replace("|", "\\|")


def _shell(word: str) -> str:
    import shlex

    return shlex.quote(str(word))
