"""prtcore: Portable Reward Tuning.

Train a reward model with a frozen base through v = log_softmax(base_logits) + r/λ, then add the same reward to
the log-probs of any base model that shares the tokenizer. Backends (mlx, torch, ...) are plugins.
Importing prtcore imports no array framework.
"""

from .arrays import ArrayNamespace, namespace, to_numpy
from .artifacts import RewardArtifact
from .config import LoRAConfig, RewardConfig, TrainingConfig
from .errors import (
    ArtifactError, BackendError, ConfigError, DataError, GenerationError, ModelLoadError, PRTError,
    TokenizerMismatchError, TrainingError,
)
from .hookspecs import hookimpl
from .model import Backend, BaseLM, ForwardOutput, PRTForCausalLM, PRTOutput, RewardModel, VisionEncoder
from .objectives import prt_loss
from .plugins import get_backend
from .sampling import Composer, EFTComposer, PRTComposer, ProxyTuningComposer, Sampler

from .version import __version__

__all__ = [
    "ArrayNamespace", "ArtifactError", "Backend", "BackendError", "BaseLM", "Composer", "ConfigError", "DataError",
    "EFTComposer", "ForwardOutput", "GenerationError", "LoRAConfig", "ModelLoadError", "PRTComposer", "PRTError",
    "PRTForCausalLM", "PRTOutput", "ProxyTuningComposer", "RewardArtifact", "RewardConfig", "RewardModel", "Sampler",
    "TokenizerMismatchError", "TrainingConfig", "TrainingError", "VisionEncoder", "get_backend", "hookimpl",
    "namespace", "prt_loss", "to_numpy",
]
