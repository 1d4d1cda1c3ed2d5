"""Data-parallel training with `mx.distributed`, launched with `mlx.launch` (ring, MPI or JACCL backend).

Every rank reads every `size`-th example of each global batch (prtcore.data.batch_indices), so N ranks see
the batches of one process. A rank's gradient is weighted by its share of the batch's target tokens and the
ranks' gradients are then averaged as mlx-lm averages them (mlx.nn.average_gradients: all_sum / size), which
gives the gradient of one process on the whole batch. Started alone, the group has one rank and nothing is sent.
"""

from __future__ import annotations

import mlx.core as mx
from mlx.nn import average_gradients
from mlx.utils import tree_map

from prtcore.errors import TrainingError


class DataParallel:
    def __init__(self):
        self.group = mx.distributed.init()
        self.rank, self.size = self.group.rank(), self.group.size()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def check_batch(self, batch_size: int, n_examples: int) -> None:
        if min(batch_size, n_examples) < self.size:
            raise TrainingError(f"--batch-size {batch_size}: a global batch needs at least one example for each of "
                                f"the {self.size} ranks")

    def total(self, x: mx.array) -> mx.array:
        """Sum of `x` over the ranks."""
        if self.size == 1:
            return x
        return mx.distributed.all_sum(x, group=self.group, stream=mx.cpu)  # on the CPU stream, as mlx-lm sums losses

    def batch_loss(self, loss: mx.array, ntokens: mx.array) -> tuple[mx.array, mx.array]:
        """(token-weighted loss, target tokens) of the whole global batch, from this rank's share."""
        if self.size == 1:
            return loss, ntokens
        n = self.total(ntokens.astype(mx.float32))
        return self.total(loss * ntokens) / mx.maximum(n, 1.0), n

    def weigh(self, grads, ntokens: mx.array, batch_tokens: mx.array):
        """This rank's gradient scaled so that the average over ranks is the whole batch's gradient."""
        if self.size == 1:
            return grads
        share = ntokens.astype(mx.float32) * self.size / mx.maximum(batch_tokens, 1.0)
        return tree_map(lambda g: g * share.astype(g.dtype), grads)

    def average(self, grads):
        return average_gradients(grads, self.group)

    def barrier(self) -> None:
        if self.size > 1:
            mx.eval(self.total(mx.array(0.0)))
