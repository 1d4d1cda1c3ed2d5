"""The mlx implementation of the "mlp" reward kind: a prt_mlx.rewards.RewardNet, parameter paths the tensor names."""

import mlx.nn as nn
from prt_mlx.rewards import HeadImplementation, RewardNet


class MLPNet(RewardNet):
    def __init__(self, config, hidden_size: int, vocab_size: int):
        super().__init__()
        self.fc = nn.Linear(hidden_size, config.d_model, bias=True)
        self.head = nn.Linear(config.d_model, vocab_size, bias=False)

    def __call__(self, hidden, cache=None):
        return self.head(nn.silu(self.fc(hidden)))


MLP = HeadImplementation(MLPNet)
