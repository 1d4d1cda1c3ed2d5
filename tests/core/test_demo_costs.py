"""The demo's cost table: every method decodes the same questions in turn, in a rotating order, and its time per
token is the median over rounds (prtcore.apps.demo.run.interleaved_costs)."""

from types import SimpleNamespace

from prtcore.apps.demo import run


class FakeModel:
    """Decodes `steps` tokens per prompt; each step takes the time the shared clock gives it."""

    def __init__(self, name, steps, log, clock):
        self.name, self.steps, self.log, self.clock = name, steps, log, clock

    def encode(self, prompt):
        return [1]

    def stream_steps(self, ids, **kwargs):
        self.log.append(self.name)
        for _ in range(self.steps):
            self.clock.advance(self.name)
            yield SimpleNamespace(text="x")


class Clock:
    """A fake perf_counter: each step of model `name` costs `cost[name]` seconds, and a round's first model is
    slowed 10x (a busy machine) — the median over rounds must not see that slowdown."""

    def __init__(self, cost, log):
        self.now, self.cost, self.log = 0.0, cost, log

    def __call__(self):
        return self.now

    def advance(self, name):
        first_of_round = len(self.log) % (3 * 2) in (1, 2)  # 3 models x 2 prompts per round: the first model's calls
        self.now += self.cost[name] * (10 if first_of_round else 1)


def test_rotating_order_and_median(monkeypatch):
    log = []
    clock = Clock({"a": 0.001, "b": 0.002, "c": 0.003}, log)
    monkeypatch.setattr(run.time, "perf_counter", clock)
    models = {name: FakeModel(name, 5, log, clock) for name in "abc"}
    costs = run.interleaved_costs(models, ["p1", "p2"], rounds=3)
    # each round runs every model on both prompts, starting one model later each round
    assert log == ["a", "a", "b", "b", "c", "c", "b", "b", "c", "c", "a", "a", "c", "c", "a", "a", "b", "b"]
    # 5 steps per answer, the first one (prompt) left out: 4 timed steps of cost[name]; slowed rounds are outvoted
    assert costs == {"a": 1.0, "b": 2.0, "c": 3.0}
