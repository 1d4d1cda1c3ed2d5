"""Run by torchrun (2 CPU processes, gloo) from test_torch_fsdp.py: a linear reward trained for a few steps against a
source sharded with FSDP2 (prt_torch.distributed.shard_frozen) equals one trained against the whole source.

Prints one JSON line per rank: the fraction of the source's weights the rank holds, the largest differences of the
source's logits and hidden states and of the trained rewards."""

import json
import sys

import torch
import torch.distributed as dist

import prtcore
from prt_torch.distributed import shard_frozen
from prt_torch.loss import fused_prt_loss
from prtcore import RewardConfig
from prtcore.data import load_dataset, iterate_batches
from prtcore.tokens import pad_id_of

STEPS = 3


def train(backend, source, batches):
    reward = backend.create_reward(RewardConfig(kind="linear"), source, seed=0)
    optimizer = torch.optim.Adam(reward.module.parameters(), lr=1e-2)
    for batch in batches:
        ids = torch.from_numpy(batch.ids).long()
        mask = torch.from_numpy(batch.mask)
        out = source.forward(ids[:, :-1], hidden=True)
        loss, _ = fused_prt_loss(out.logits, reward.forward(ids[:, :-1], source_hidden=out.hidden), ids[:, 1:],
                                 mask[:, 1:], lam=1.0, entropy_coeff=0.05)
        loss.backward()
        for p in reward.module.parameters():  # data parallel by hand: the reward is replicated
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
        optimizer.step()
        optimizer.zero_grad()
    return reward.module.head.weight.detach()


def main(source_dir, data_dir):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    backend = prtcore.get_backend("torch")
    whole, sharded = backend.load_base(source_dir), backend.load_base(source_dir)
    total = sum(p.numel() for p in sharded.model.parameters())
    shard_frozen(sharded.model)
    held = sum(p.to_local().numel() for p in sharded.model.parameters())
    data = load_dataset(data_dir, whole.tokenizer)["train"]
    batches = list(iterate_batches(data, 4, pad_id_of(whole.tokenizer, whole.vocab_size), steps=STEPS, rank=rank, world_size=world))
    ids = torch.from_numpy(batches[0].ids).long()
    a, b = whole.forward(ids, hidden=True), sharded.forward(ids, hidden=True)
    rewards = train(backend, whole, batches), train(backend, sharded, batches)
    print(json.dumps({"rank": rank, "held": held / total, "logits": float((a.logits - b.logits).abs().max()),
                      "hidden": float((a.hidden - b.hidden).abs().max()),
                      "reward": float((rewards[0] - rewards[1]).abs().max()),
                      "trained": float(rewards[1].abs().max())}), flush=True)
    dist.barrier()  # no rank tears gloo down while its peer still talks to it (else: "terminate called", SIGABRT)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
