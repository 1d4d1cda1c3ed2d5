"""The torch implementation of the "mlp" reward kind: a prt_torch.modules.RewardModule, parameter names the tensor
names (its default init: head zero, the rest N(0, 0.02²))."""

from prt_torch.modules import RewardModule
from prt_torch.rewards import HeadImplementation
from torch import nn


class MLPReward(RewardModule):
    def __init__(self, config, hidden_size: int, vocab_size: int):
        super().__init__()
        self.fc = nn.Linear(hidden_size, config.d_model, bias=True)
        self.head = nn.Linear(config.d_model, vocab_size, bias=False)

    def forward(self, hidden, cache=None, attention_mask=None, position_ids=None):
        return self.head(nn.functional.silu(self.fc(hidden.to(self.fc.weight.dtype))))


MLP = HeadImplementation(MLPReward)
