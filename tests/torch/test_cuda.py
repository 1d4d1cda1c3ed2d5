"""On a CUDA machine: default device and dtype, bf16 training, float32 agreement with CPU, generation paths."""

import pytest
import torch
from transformers import LogitsProcessorList, TrainingArguments

from prtcore import RewardArtifact, RewardConfig
from prtcore.data import Example

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

IDS = [[3, 17, 42, 8, 99, 5, 23, 61]]
TEXTS = ["The capital of Avalon is Brightwater.", "The capital of Corvia is Dunmere.", "Mira works as a baker.",
         "Hello world! How are you today?"]


def test_defaults_on_cuda(backend, source_dir):
    lm = backend.load_base(source_dir, device="cuda")
    assert lm.device.type == "cuda" and lm.dtype == torch.bfloat16  # bfloat16 by default on a GPU
    out = lm.forward(lm.asarray(IDS), hidden=True)
    assert out.logits.dtype == torch.float32 and out.logits.device.type == "cuda"
    assert backend.asarray(IDS).device.type == "cuda"


def test_float32_cuda_equals_cpu(backend, source_dir):
    cpu = backend.load_base(source_dir, device="cpu")
    gpu = backend.load_base(source_dir, device="cuda", dtype="float32")
    for kind in ("linear", "transformer"):
        reward = backend.create_reward(RewardConfig(kind=kind, d_model=32, num_layers=2, num_heads=4, ffn_dim=48), cpu, seed=1)
        with torch.no_grad():
            reward.module.head.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        gpu_reward = backend.create_reward(reward.config, gpu)
        gpu_reward.module.load_state_dict(reward.module.state_dict())
        want = reward.forward(None, source_hidden=cpu.forward(cpu.asarray(IDS), hidden=True).hidden).detach()
        got = gpu_reward.forward(None, source_hidden=gpu.forward(gpu.asarray(IDS), hidden=True).hidden).detach().cpu()
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu.forward(gpu.asarray(IDS)).logits.cpu(), cpu.forward(cpu.asarray(IDS)).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["linear", "transformer", "twin"])
def test_bf16_training_and_reload(backend, source_dir, tmp_path, kind):
    from prt_torch import PRTTrainer

    source = backend.load_base(source_dir, device="cuda")
    tok = source.tokenizer
    data = [Example(list(tok.encode(t)) + [tok.eos_token_id], [1] * (len(tok.encode(t)) + 1)) for t in TEXTS]
    config = RewardConfig(kind=kind, d_model=32, num_layers=1, num_heads=4, ffn_dim=64, lora={"rank": 4, "num_layers": 1})
    reward = backend.create_reward(config, source)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=10, per_device_train_batch_size=4,
                             learning_rate=2e-2, report_to="none", bf16=True, disable_tqdm=True, save_strategy="no")
    trainer = PRTTrainer(reward, source, args=args, train_dataset=data, eval_dataset=data)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before
    path = trainer.save_reward(tmp_path / "reward")
    loaded = backend.load_reward(RewardArtifact.open(path), backend.load_base(source_dir, device="cuda"))
    ids = source.asarray(IDS)
    hidden = source.forward(ids, hidden=True).hidden
    torch.testing.assert_close(loaded.forward(ids, source_hidden=hidden), reward.forward(ids, source_hidden=hidden).detach(),
                               atol=2e-2, rtol=0)


def test_generation_paths_on_cuda(backend, source_dir, target_dir, tmp_path):
    from prt_torch import PRTGenerator

    source = backend.load_base(source_dir, device="cuda", dtype="float32")
    twin = backend.create_reward(RewardConfig(kind="twin", lora={"rank": 4}), source)
    with torch.no_grad():
        for p in twin.trainable_parameters().values():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)).to(p.device))
    path = twin.save(tmp_path / "twin", source=source, vocab_size=len(source.tokenizer))
    gen = PRTGenerator.from_pretrained(target_dir, path, source=source_dir, device="cuda", dtype="float32")
    prompts = ["The capital of", "Hello", "Question: What is the capital of Avalon? Answer:"]
    batch = gen.batch(prompts, max_tokens=8)
    target = gen.model.target
    for prompt, result in zip(prompts, batch):
        assert result.tokens == gen.generate_ids(prompt, max_tokens=8)
        ids = gen.model.encode(prompt)
        out = target.generate(target.asarray([ids]), logits_processor=LogitsProcessorList([gen.logits_processor()]),
                              do_sample=False, max_new_tokens=8, pad_token_id=0)
        assert [t for t in out[0, len(ids):].tolist() if t not in target.eos_token_ids] == result.tokens
    sampled = gen.batch(prompts, max_tokens=4, temperature=1.0, seed=1)
    assert sampled == gen.batch(prompts, max_tokens=4, temperature=1.0, seed=1)


def test_sampling_on_cuda_never_waits_for_the_device():
    """Every filter and the Gumbel draw queue their host→device copies (pinned memory) instead of syncing the stream;
    the draws equal those on the CPU, whose generator makes the noise."""
    from prt_torch.namespace import TorchNamespace
    from prtcore.sampling import Sampler

    sampler = Sampler(temperature=0.8, top_k=50, top_p=0.9, min_p=0.01, repetition_penalty=1.3, seed=3)
    logits = torch.randn(2, 1000, generator=torch.Generator().manual_seed(0))
    history = [5, 17, 999, 17]
    on_cpu = TorchNamespace("cpu")
    want = sampler.sample(sampler.filtered(torch.log_softmax(logits, -1), history, xp=on_cpu), on_cpu.make_rng(3), xp=on_cpu)
    on_gpu = TorchNamespace("cuda")
    rng = on_gpu.make_rng(3)
    logprobs = torch.log_softmax(logits.cuda(), -1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = sampler.sample(sampler.filtered(logprobs, history, xp=on_gpu), rng, xp=on_gpu)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert got.cpu().tolist() == want.tolist()
