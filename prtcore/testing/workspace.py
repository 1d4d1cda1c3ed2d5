"""What the conformance checks of one checkpoint share: the backends under test, loaded bases, reward artifacts
written by prtcore itself (random, non-trivial weights), trained artifacts and decoding results.

    ws = Workspace.for_family("qwen2", {"mlx": mlx, "torch": torch}, workdir)   # a tiny random checkpoint
    ws = Workspace(Path("models/my-llama"), backends, workdir, load_options={"dtype": "float32"})

Bases are loaded with `load_options` (families: dtype="float32", which every backend accepts).

Everything is made on first use and kept, so each (family, backend) pair loads and computes once however many
checks read it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .. import adapters, artifacts
from ..config import LoRAConfig, RewardConfig

# Reward settings of the checks (small, non-trivial: 6 heads gives ALiBi slopes of a non-power of two). A workspace
# copies them into `reward_configs`, where a plugin's kind stored as tensors can be added to run the same checks.
REWARD_CONFIGS = {
    "linear": RewardConfig(kind="linear", lam=0.8, entropy_coeff=0.05),
    "transformer": RewardConfig(kind="transformer", lam=0.8, entropy_coeff=0.05, d_model=48, num_layers=2,
                                num_heads=6, ffn_dim=64),
    "full": RewardConfig(kind="twin", fine_tune_type="full", lam=2.0, entropy_coeff=0.05),
}
LORA_RANK, LORA_SCALE = 4, 2.0
PROMPT = "Question: What is the capital of Avalon? Answer:"
CONTINUATION = " The capital is Brightwater. Hello world! How are you today?"
TRAIN_TEXTS = [
    "Question: What is the capital of Avalon? Answer: The capital is Brightwater.",
    "Question: What is the capital of Corvia? Answer: The capital is Dunmere.",
    "Mira works as a baker. Hello world! How are you today? I am fine, thank you.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100. Portable rewards move between base models.",
]
# Extra settings of the tiny checkpoints of some families (qwen2's real heads are padded beyond the tokenizer).
CHECKPOINT_OPTIONS = {"qwen2": {"extra_vocab_rows": 8}}


class Skip(Exception):
    """A check does not apply (a capability the backend lacks, a model type it does not load); the message says why."""


class LoadFailure(Exception):
    """A backend could not load the checkpoint (the message holds the backend's own error)."""


class _SourceInfo:
    """What artifacts.reward_meta reads of a source model, taken from the checkpoint's files."""

    def __init__(self, path: Path, config: dict, tokenizer):
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) and "hidden_size" not in config else config
        self.path, self.config, self.tokenizer = path, config, tokenizer
        self.hidden_size, self.vocab_size = int(text["hidden_size"]), int(text["vocab_size"])


class Workspace:
    """One checkpoint, the backends under test and everything the checks share (made once, on first use)."""

    def __init__(self, checkpoint, backends: Mapping[str, Any], workdir, *, family: str | None = None,
                 label: str | None = None, load_options: dict | None = None):
        self.checkpoint = Path(checkpoint).resolve()
        self.backends = dict(backends)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = json.loads((self.checkpoint / "config.json").read_text(encoding="utf-8"))
        self.model_type = str(self.config.get("model_type", "unknown"))
        self.family = family or self.model_type
        self.label = label or self.family
        self.load_options = dict(load_options or {})
        self.reward_configs = dict(REWARD_CONFIGS)  # by name as the checks use it ("linear", "full", a plugin's kind)
        # the reward of `prt_model` and of the decoding checks (a name of `reward_configs`; set before first use)
        self.prt_reward = "transformer"
        self._memo: dict = {}

    # ------------------------------------------------------------------------------------------ making
    @classmethod
    def for_family(cls, family: str, backends: Mapping[str, Any], workdir, *, tokenizer_dir=None, seed: int = 0):
        """A tiny random checkpoint of `family` (a transformers model_type) made in `workdir`."""
        from .checkpoints import make_tiny_checkpoint, make_tokenizer

        workdir = Path(workdir)
        tokenizer_dir = tokenizer_dir or make_tokenizer(workdir / "tokenizer")
        options = CHECKPOINT_OPTIONS.get(family, {})
        path = make_tiny_checkpoint(workdir / family, family, tokenizer_dir=tokenizer_dir, seed=seed,
                                    family_overrides=True, **options)
        return cls(path, backends, workdir / f"{family}-work", family=family, load_options={"dtype": "float32"})

    def memo(self, key, make: Callable):
        """The value made once by `make()` for `key`; an exception is kept and raised again on every use."""
        if key not in self._memo:
            try:
                self._memo[key] = (True, make())
            except Exception as e:  # kept, so a failing load is reported by every check without retrying
                self._memo[key] = (False, e)
        ok, value = self._memo[key]
        if not ok:
            raise value
        return value

    # ------------------------------------------------------------------------------------------ backends
    def backend(self, name: str):
        return self.backends[name]

    def require(self, name: str, capability: str) -> None:
        if capability not in self.backend(name).capabilities:
            raise Skip(f"backend {name!r} lacks capability {capability!r}")

    def supports(self, name: str) -> None:
        """Skip unless backend `name` loads this checkpoint's model type (`Backend.model_types`; None: any)."""
        self.require(name, "load")
        types = self.backend(name).model_types
        if types is not None and self.model_type not in types:
            raise Skip(f"backend {name!r} does not load model_type {self.model_type!r} "
                       f"(its model_types: {', '.join(sorted(types))})")

    def base(self, name: str):
        """The shared base of backend `name` (never adapted: LoRA twins get `fresh_base`)."""
        return self.memo(("base", name), lambda: self.fresh_base(name))

    def fresh_base(self, name: str):
        try:
            return self.backend(name).load_base(self.checkpoint, **self.load_options)
        except Exception as e:
            message = str(e).splitlines()[0] if str(e) else ""
            raise LoadFailure(f"backend {name!r} cannot load {self.checkpoint.name}: {type(e).__name__}: {message}") from e
        except SystemExit as e:  # some model modules exit on a missing optional dependency
            raise LoadFailure(f"backend {name!r} cannot load {self.checkpoint.name}: the loader exited ({e})") from None

    def vocab(self) -> int:
        """The shared vocabulary: the tokenizer's length."""
        from ..sampling import tokenizer_vocab

        return self.memo("vocab", lambda: len(tokenizer_vocab(self.tokenizer())))

    def tokenizer(self):
        def load():
            for name in self.backends:
                try:
                    return self.backend(name).load_tokenizer(self.checkpoint)
                except Exception:
                    continue
            raise LoadFailure(f"no backend under test loads the tokenizer of {self.checkpoint}")

        return self.memo("tokenizer", load)

    # ------------------------------------------------------------------------------------------ token ids
    def prompt_ids(self) -> list[int]:
        return self.memo("prompt", lambda: [int(i) for i in self.tokenizer().encode(PROMPT)][:12])

    def trace_ids(self) -> list[int]:
        """The prompt and a fixed continuation: the path along which decoding checks compare distributions."""
        return self.memo("trace", lambda: self.prompt_ids() + [int(i) for i in self.tokenizer().encode(CONTINUATION)][:8])

    # ------------------------------------------------------------------------------------------ artifacts
    def reward_config(self, kind: str) -> RewardConfig:
        if kind == "lora":
            lora = adapters.read_adapter(self.neutral_artifact("lora"))[2]
            return RewardConfig(kind="twin", fine_tune_type="lora", lam=2.0, entropy_coeff=0.05, lora=lora)
        return self.reward_configs[kind]

    def neutral_artifact(self, kind: str) -> Path:
        """A reward artifact with random (non-zero) weights written by prtcore itself, not by a backend."""
        return self.memo(("artifact", kind), lambda: self._write_artifact(kind))

    def _write_artifact(self, kind: str) -> Path:
        from .reference import random_reward_tensors

        info = _SourceInfo(self.checkpoint, self.config, self.tokenizer())
        path = self.workdir / f"neutral-{kind}"
        with artifacts.ArtifactWriter(path) as writer:
            if kind in self.reward_configs and self.reward_configs[kind].reward_kind.stored_as == "tensors":
                config = self.reward_configs[kind]
                tensors = random_reward_tensors(config, info.hidden_size, info.vocab_size, seed=3)
                artifacts.save_numpy_tensors(writer.dir / artifacts.REWARD_WEIGHTS, tensors)
                weights, output = [artifacts.REWARD_WEIGHTS], info.vocab_size
            elif kind == "lora":
                tensors = self._random_adapter()
                lora = adapters.settings_from_tensors(tensors, scale=LORA_SCALE, dropout=0.0,
                                                      num_hidden_layers=self._num_layers())
                config = RewardConfig(kind="twin", fine_tune_type="lora", lam=2.0, entropy_coeff=0.05, lora=lora)
                adapters.write_peft(writer.dir, tensors, lora, base_model_name_or_path=str(self.checkpoint))
                weights, output = [adapters.PEFT_CONFIG, adapters.PEFT_WEIGHTS], info.vocab_size
            elif kind == "full":
                config = self.reward_configs[kind]
                weights = self._perturbed_copy(writer.dir)
                output = info.vocab_size
            else:
                raise ValueError(f"no neutral artifact of kind {kind!r}")
            writer.copy_tokenizer(self.checkpoint)
            writer.commit(artifacts.reward_meta(config, source=info, tokenizer=info.tokenizer, vocab_size=self.vocab(),
                                                output_size=output, weights=weights, backend="prtcore.testing"))
        return path

    def _weight_header(self) -> dict[str, tuple]:
        out = {}
        for file in sorted(self.checkpoint.glob("*.safetensors")):
            header = artifacts.check_safetensors(file)
            out.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
        return out

    def _num_layers(self) -> int:
        text = self.config.get("text_config") if "num_hidden_layers" not in self.config else self.config
        return int(text["num_hidden_layers"])

    def _random_adapter(self) -> dict[str, np.ndarray]:
        """LoRA tensors (mlx-lm naming) on every block linear of the attention and of a dense MLP (a mixture of
        experts keeps its experts and router unadapted), A ~ U(±1/√in), B ~ N(0, 0.1²)."""
        import re

        pattern = re.compile(r"^(?P<module>(?:.*\.)?layers\.(?P<i>\d+)\.(?P<inner>(?:self_attn|mlp)\..+))\.weight$")
        found = []
        for name, shape in self._weight_header().items():
            m = pattern.match(name)
            if m and len(shape) == 2:
                found.append((m["module"], m["inner"], shape))
        moe = any("experts" in inner or inner.startswith("mlp.router") for _, inner, _ in found) or \
            any(inner == "mlp.gate" for _, inner, _ in found)
        rng = np.random.default_rng(5)
        tensors = {}
        for module, inner, (out_features, in_features) in sorted(found):
            if moe and not inner.startswith("self_attn."):
                continue
            bound = 1.0 / np.sqrt(in_features)
            tensors[f"{module}.lora_a"] = rng.uniform(-bound, bound, (in_features, LORA_RANK)).astype(np.float32)
            tensors[f"{module}.lora_b"] = (0.1 * rng.standard_normal((LORA_RANK, out_features))).astype(np.float32)
        if not tensors:
            raise Skip(f"{self.checkpoint.name}: no block linears found to place a LoRA adapter on")
        return tensors

    def _perturbed_copy(self, directory: Path) -> list[str]:
        """The checkpoint with its float32/float16 tensors perturbed (other dtypes copied as they are)."""
        from safetensors import safe_open

        rng = np.random.default_rng(7)
        names = []
        for file in sorted(self.checkpoint.glob("*.safetensors")):
            header = artifacts.check_safetensors(file)
            dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
            if dtypes <= {"F32", "F16"}:
                with safe_open(str(file), framework="numpy") as f:
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
                tensors = {k: (v + 0.02 * rng.standard_normal(v.shape)).astype(v.dtype) if v.dtype.kind == "f" else v
                           for k, v in tensors.items()}
                artifacts.save_numpy_tensors(directory / file.name, tensors, metadata={"format": "pt"})
            else:
                shutil.copy2(file, directory / file.name)
            names.append(file.name)
        for extra in ("config.json", "generation_config.json", "model.safetensors.index.json"):
            if (self.checkpoint / extra).is_file():
                shutil.copy2(self.checkpoint / extra, directory / extra)
        return names

    # ------------------------------------------------------------------------------------------ rewards
    def load_reward(self, name: str, kind: str, path: Path | None = None, *, source=None):
        """(reward, source) of backend `name` from an artifact (default: the neutral one of `kind`).

        A LoRA twin adapts a base of its own. A full twin reads no source; it is given the shared base anyway, so
        that a backend can take its dtype and device from it (float32 here), and the source returned is None."""
        from ..artifacts import RewardArtifact

        artifact = RewardArtifact.open(path or self.neutral_artifact(kind))
        if source is None:
            reward_kind = artifact.config.reward_kind
            if not reward_kind.needs_source(artifact.config):  # a full twin
                return self.backend(name).load_reward(artifact, self.base(name)), None
            source = self.base(name) if reward_kind.reads_source_hidden else self.fresh_base(name)
        return self.backend(name).load_reward(artifact, source), source

    def saved_by(self, name: str, kind: str) -> Path:
        """The neutral artifact of `kind` loaded by backend `name` and saved again by it."""
        def save():
            reward, source = self.load_reward(name, kind)
            writer_source = source if source is not None else self.base(name)
            return reward.save(self.workdir / f"saved-{kind}-by-{name}", source=writer_source, vocab_size=self.vocab())

        return self.memo(("saved", name, kind), save)

    def data_dir(self) -> Path:
        def make():
            path = self.workdir / "data"
            path.mkdir(parents=True, exist_ok=True)
            (path / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TRAIN_TEXTS))
            (path / "valid.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TRAIN_TEXTS[:2]))
            return path

        return self.memo("data", make)

    def trained(self, name: str, kind: str) -> Path:
        """A reward of `kind` ("lora", or a name of `reward_configs`: "linear", a plugin's kind) trained for 3 steps by
        backend `name` (prtcore.training)."""
        def train():
            from ..config import TrainingConfig
            from ..reporting import TrainingReporter
            from ..training import train_reward

            config = self.reward_configs[kind] if kind != "lora" else RewardConfig(
                kind="twin", fine_tune_type="lora", lam=2.0, entropy_coeff=0.05,
                lora=LoRAConfig(rank=LORA_RANK, scale=LORA_SCALE, num_layers=-1, keys=self._lora_keys()))
            out = self.workdir / f"trained-{kind}-by-{name}"
            training = TrainingConfig(iters=3, batch_size=2, learning_rate=1e-2, max_seq_length=64, steps_per_report=3,
                                      steps_per_eval=3, val_batches=1, save_every=3, seed=0)
            train_reward(self.checkpoint, self.data_dir(), out, config, training, backend=self.backend(name),
                         reporter=TrainingReporter(out, total_steps=3, quiet=True, progress=False), **self.load_options)
            return out

        return self.memo(("trained", name, kind), train)

    def _lora_keys(self) -> tuple[str, ...]:
        """The in-block paths the random adapter adapts (so a trained LoRA covers the same linears)."""
        return adapters.read_adapter(self.neutral_artifact("lora"))[2].keys

    # ------------------------------------------------------------------------------------------ models
    def prt_model(self, name: str, lora: bool):
        """Backend `name`'s PRTForCausalLM: the base with the neutral reward `prt_reward` (the transformer, λ 0.8)
        and, with `lora`, the neutral LoRA twin too (λ 2.0)."""
        def make():
            from ..model import PRTForCausalLM

            target = self.base(name)
            head, _ = self.load_reward(name, self.prt_reward, source=target)
            rewards, sources, lams = [head], [target], [self.reward_config(self.prt_reward).lam]
            if lora:
                twin, _ = self.load_reward(name, "lora")
                rewards.append(twin)
                sources.append(None)
                lams.append(2.0)
            return PRTForCausalLM(self.backend(name), target, rewards, lams, sources)

        return self.memo(("prt", name, lora), make)

    def uses_lora(self, *names: str) -> bool:
        """Decoding checks compose the LoRA twin too when every backend compared has capability "lora"."""
        return all("lora" in self.backend(n).capabilities for n in names)
