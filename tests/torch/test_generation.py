"""Generation: prtcore's loop with torch classes, batched left-padded decoding, and the LogitsProcessor path."""

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList

from prtcore import PRTForCausalLM, RewardConfig
from prtcore.sampling import PRTComposer
from prtcore.testing import reference

PROMPTS = ["The capital of", "Hello", "Question: What is the capital of Avalon? Answer:"]
SMALL = dict(d_model=32, num_layers=2, num_heads=4, ffn_dim=48)


@pytest.fixture(scope="module")
def rewards(backend, source, tmp_path_factory):
    """Artifacts of a random linear and transformer reward, and a perturbed LoRA twin, all on `source`."""
    root = tmp_path_factory.mktemp("gen_rewards")
    out = {}
    for kind in ("linear", "transformer"):
        config = RewardConfig(kind=kind, **SMALL)
        reward = backend.create_reward(config, source)
        tensors = reference.random_reward_tensors(config, source.hidden_size, source.vocab_size, seed=4, scale=0.15)
        reward.module.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
        out[kind] = reward.save(root / kind, source=source, vocab_size=len(source.tokenizer))
    lm = backend.load_base(source.path)
    twin = backend.create_reward(RewardConfig(kind="twin", lora={"rank": 4}), lm)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in twin.trainable_parameters().values():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    out["twin"] = twin.save(root / "twin", source=lm, vocab_size=len(lm.tokenizer))
    return out


def generator(target_dir, reward_dir, source_dir):
    from prt_torch import PRTGenerator

    return PRTGenerator.from_pretrained(target_dir, reward_dir, source=source_dir)


@pytest.mark.parametrize("kind", ["linear", "transformer", "twin"])
def test_cached_decoding_equals_full_scoring(rewards, target_dir, source_dir, kind):
    """Each scorer of the decoding loop (own cache, prefill then one token at a time) gives the logits of one
    uncached forward over the whole sequence, target and reward alike."""
    gen = generator(target_dir, rewards[kind], source_dir)
    model = gen.model
    prompt = model.encode(PROMPTS[2])
    seq = prompt + gen.generate_ids(PROMPTS[2], max_tokens=6)
    ids = model.backend.asarray([seq])
    reward, source = model.rewards[0], model.sources[0]
    hidden = source.forward(ids, hidden=True).hidden if reward.reads_source_hidden else None
    full = [model.target.forward(ids).logits[0], reward.forward(ids, source_hidden=hidden)[0].detach()]
    scorers = model.scorers()
    steps = [[s(model.backend.asarray([prompt]))] for s in scorers]
    for token in seq[len(prompt):]:
        for s, out in zip(scorers, steps):
            out.append(s(model.backend.asarray([[token]])))
    for name, out, want in zip(("target", "reward"), steps, full):
        # float32 rounding grows with the logits' scale (the fused twin's merged weights give rewards up to ~2.6):
        # 1e-5 of it, ten times stricter than the conformance suite's limit
        atol = 1e-5 * max(1.0, float(want.abs().max()))
        torch.testing.assert_close(torch.cat(out), want[len(prompt) - 1:], atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("kind", ["linear", "transformer", "twin"])
def test_composed_logprobs_match_reference(rewards, target_dir, source_dir, kind):
    """PRTForCausalLM's log-probs equal log_softmax(log_softmax(target) + reward/λ) in float64 (shared vocab)."""
    gen = generator(target_dir, rewards[kind], source_dir)
    model = gen.model
    ids = model.backend.asarray([model.encode(PROMPTS[2])])
    out = model(ids)
    reward, source = model.rewards[0], model.sources[0]
    hidden = source.forward(ids, hidden=True).hidden if reward.reads_source_hidden else None
    n = model.vocab_size
    base = model.target.forward(ids).logits[..., :n].double().numpy()
    r = reward.forward(ids, source_hidden=hidden)[..., :n].detach().double().numpy()
    want = reference.log_softmax(reference.log_softmax(base) + r / reward.config.lam)
    np.testing.assert_allclose(out.logprobs.numpy(), want, atol=1e-5)
    np.testing.assert_allclose(out.base_logprobs.numpy(), reference.log_softmax(base), atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "transformer", "twin"])
def test_batched_greedy_equals_one_by_one(rewards, target_dir, source_dir, kind):
    gen = generator(target_dir, rewards[kind], source_dir)
    batch = gen.batch(PROMPTS, max_tokens=8)
    for prompt, result in zip(PROMPTS, batch):
        assert result.tokens == gen.generate_ids(prompt, max_tokens=8)
        assert result.text == gen.generate(prompt, max_tokens=8)
    assert [g.text for g in batch] == gen.generate_batch(PROMPTS, max_tokens=8)


def test_batched_step_logprobs_equal_single(rewards, target_dir, source_dir):
    """The first composed distribution of a left-padded batch equals each prompt's own, within 1e-5."""
    from prt_torch.generation import _Stepper, left_pad

    gen = generator(target_dir, rewards["transformer"], source_dir)
    model = gen.model
    rows = [model.encode(p) for p in PROMPTS]
    ids, mask, pos = left_pad(rows, 0, "cpu")
    step = _Stepper(model.target, model.rewards, model.sources)
    batched = model.composer(*step(ids, mask, pos), xp=model.backend.xp)
    for i, row in enumerate(rows):
        single = model(model.backend.asarray([row])).logprobs[0, -1]
        torch.testing.assert_close(batched[i], single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind,on_source", [("linear", False), ("twin", False), ("twin", True)])
def test_logits_processor_equals_generator(rewards, target_dir, source_dir, kind, on_source):
    """on_source: the target is the LoRA twin's own source (adapter unmerged, off for the target); else the twin runs
    fused into the source it alone uses."""
    gen = generator(source_dir if on_source else target_dir, rewards[kind], source_dir)
    if kind == "twin":
        assert gen.model.rewards[0].fused == (not on_source)
    target = gen.model.target
    for prompt in PROMPTS:
        ids = gen.model.encode(prompt)
        out = target.generate(target.asarray([ids]), logits_processor=LogitsProcessorList([gen.logits_processor()]),
                              do_sample=False, max_new_tokens=8, pad_token_id=0)
        new = [t for t in out[0, len(ids):].tolist() if t not in target.eos_token_ids]
        assert new == gen.generate_ids(prompt, max_tokens=8)
    # the reward changes the output somewhere
    plain = [target.generate(target.asarray([gen.model.encode(p)]), do_sample=False, max_new_tokens=8,
                             pad_token_id=0)[0].tolist() for p in PROMPTS]
    assert any(p[len(gen.model.encode(q)):] != gen.generate_ids(q, max_tokens=8) for p, q in zip(plain, PROMPTS))


def test_logits_processor_with_left_padded_batch(rewards, target_dir, source_dir):
    from prt_torch.generation import left_pad

    gen = generator(target_dir, rewards["transformer"], source_dir)
    target = gen.model.target
    ids, mask, _ = left_pad([gen.model.encode(p) for p in PROMPTS], 0, "cpu")
    out = target.generate(ids, attention_mask=mask, logits_processor=[gen.logits_processor(attention_mask=mask)],
                          do_sample=False, max_new_tokens=6, pad_token_id=0)
    want = gen.batch(PROMPTS, max_tokens=6)
    for row, result in zip(out[:, ids.shape[1]:].tolist(), want):
        assert row[: len(result.tokens)] == result.tokens


def test_processor_output_is_the_prt_composition(rewards, source_dir, backend):
    from prt_torch import PRTLogitsProcessor

    model = PRTForCausalLM.from_pretrained(source_dir, rewards["linear"], backend)
    reward = model.rewards[0]
    ids = model.backend.asarray([model.encode(PROMPTS[0])])
    scores = model.target.forward(ids).logits[:, -1]
    got = PRTLogitsProcessor(reward, vocab_size=model.vocab_size)(ids, scores)
    want = PRTComposer(1.0, model.vocab_size)(scores, reward.forward(ids, source_hidden=model.target.forward(ids, hidden=True).hidden)[:, -1], xp=backend.xp)
    torch.testing.assert_close(got[:, : model.vocab_size], want)


def test_stop_strings_sampling_and_eos(rewards, target_dir, source_dir):
    gen = generator(target_dir, rewards["linear"], source_dir)
    text = gen.generate(PROMPTS[0], max_tokens=12)
    assert text and gen.generate_batch([PROMPTS[0]], max_tokens=12) == [text]
    stop = text[2:4]
    cut = gen.batch([PROMPTS[0]], max_tokens=12, stop=[stop])[0]
    assert cut.finish_reason == "stop" and stop not in cut.text and text.startswith(cut.text)
    assert cut.text == gen.generate(PROMPTS[0], max_tokens=12, stop=[stop])
    sampled = gen.batch(PROMPTS, max_tokens=5, temperature=1.0, top_p=0.9, seed=3, repetition_penalty=1.2)
    again = gen.batch(PROMPTS, max_tokens=5, temperature=1.0, top_p=0.9, seed=3, repetition_penalty=1.2)
    assert sampled == again and all(len(g.tokens) <= 5 for g in sampled)
    assert gen.batch(PROMPTS, max_tokens=0)[0].tokens == []
