"""The algorithm records (`b2b.algorithms`): each method is one record, every list of algorithms
is read from them, a new method is one record and one loss, and a learner's own pieces train in
the same step after one check on hand-made cases."""
import dataclasses

import pytest
import torch

from b2b import algorithms as AL
from b2b.errors import ConfigError
from b2b.rl_config import RLConfig

PROMPTS = ["List three fruits.", "What colour is a banana?", "Is a whale a fish?", "Hello!",
           "Which is bigger, a dog or a mouse?", "Describe a tiger.", "What sound does a cow make?",
           "How many legs does a spider have?"]
SMALL = dict(batch_size=8, max_new_tokens=12, eval_every=0, sample_every=0, checkpoint_every=0)


@pytest.fixture(scope="module")
def rm(data_dir):
    from b2b.models import load_reward_model
    return load_reward_model(data_dir / "rm-level1")


def _policy(tiny_dir):
    from b2b.models import load_policy
    torch.manual_seed(0)
    return load_policy(tiny_dir, trainable=True)


def _no_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_every_method_of_the_course_is_one_record_written_as_a_change_to_its_parent():
    assert AL.names() == ("reinforce", "rloo", "reinforce_pp", "reinforce_pp_baseline", "grpo", "dr_grpo")
    parents = {a.name: a.parent for a in AL.ALGORITHMS.values()}
    assert parents == {"reinforce": None, "rloo": "reinforce", "reinforce_pp": "reinforce",
                       "reinforce_pp_baseline": "reinforce_pp", "grpo": "reinforce_pp_baseline", "dr_grpo": "grpo"}
    grpo, base = AL.get("grpo"), AL.get("reinforce_pp_baseline")
    # GRPO = REINFORCE++-baseline with the group std, a k3 KL loss and a per-answer mean: the same recipe and flags
    assert grpo.settings == base.settings and (grpo.groups, grpo.clipped) == (True, True)
    assert grpo.advantages is not base.advantages and grpo.loss is not base.loss
    assert AL.names(groups=True) == ("rloo", "reinforce_pp_baseline", "grpo", "dr_grpo")
    assert AL.names(clipped=True) == ("reinforce_pp", "reinforce_pp_baseline", "grpo", "dr_grpo")
    several = RLConfig(ppo_epochs=2, minibatches=3)
    assert AL.get("reinforce").updates(several) == 1 and AL.get("grpo").updates(several) == 6


def test_every_list_of_algorithms_is_read_from_the_records():
    from b2b.config import get_profile
    from b2b.recipes import rl_config
    from b2b.tools import bench, cli, memory, showdown, trl_bridge

    assert [a for a, _ in showdown.METHODS.values()] == [a.name for a in AL.ALGORITHMS.values()
                                                          for _ in a.showdown]
    assert memory.RL_ALGOS == AL.names(memory_table=True) and bench.BENCH_ALGOS == AL.names(bench=True)
    assert trl_bridge.TRL_TRAINERS == {"rloo": "RLOOTrainer", "reinforce_pp_baseline": "GRPOTrainer"}
    for a in AL.ALGORITHMS.values():
        cfg = rl_config(get_profile("tiny"), a.name)
        assert all(getattr(cfg, k) == v for k, v in a.settings.items()), a.name
    import argparse

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert tuple(next(a for a in sub.choices["run"]._actions if a.dest == "algo").choices) == AL.names()
    assert list(next(a for a in sub.choices["scale-out"]._actions if a.dest == "algo").choices) == list(
        trl_bridge.TRL_TRAINERS)


def test_an_unknown_algorithm_is_one_line_naming_the_known_ones():
    from b2b.config import get_profile
    from b2b.recipes import rl_config

    for call in (lambda: AL.get("ppo"), lambda: rl_config(get_profile("tiny"), "ppo"),
                 lambda: RLConfig(algo="ppo").validate()):
        with pytest.raises(ConfigError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and "ppo" in msg and all(n in msg for n in AL.names()), msg


def gspo_loss(p, logprobs, old_logprobs, advantages, ref_logprobs, mask, cfg):
    """GSPO: one ratio per answer, s_i = exp(mean_t (log pi - log pi_old)), clipped as PPO's."""
    n = mask.sum(1).clamp(min=1)
    s = torch.exp(((logprobs - old_logprobs.detach()) * mask).sum(1) / n)
    adv = (advantages * mask).sum(1).detach() / n
    unclipped, clipped = s * adv, s.clamp(1 - cfg.clip, 1 + cfg.clip) * adv
    return -torch.minimum(unclipped, clipped).mean(), (clipped < unclipped).float().mean()


def test_a_new_algorithm_is_one_record(request, tiny_dir, tokenizer, rm):
    """docs/package.md#adding-an-algorithm: GSPO registered as GRPO with its own loss trains two
    steps through b2b.train and the recipes, with no other file touched."""
    from b2b.config import get_profile
    from b2b.recipes import rl_config
    from b2b.train import train

    request.addfinalizer(lambda: AL.ALGORITHMS.pop("gspo", None))  # the registry as it was, after this test
    gspo = AL.register(AL.derive(AL.GRPO, name="gspo", label="GSPO", loss=gspo_loss))
    assert AL.get("gspo") is gspo and gspo.settings == AL.GRPO.settings and gspo.parent == "grpo"
    cfg = rl_config(get_profile("tiny"), "gspo", steps=2, **SMALL)
    policy = _policy(tiny_dir)
    before = [p.detach().clone() for p in policy.parameters()]
    h = train(policy, tokenizer, rm, PROMPTS, cfg, progress=False)
    assert [r["step"] for r in h.steps] == [1, 2] and all(0 <= r["ppo/clip_frac"] <= 1 for r in h.steps)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))


@pytest.mark.parametrize("wrong,says", [
    (lambda p, lp, old, adv, ref, m, cfg: (-(adv * lp * m).sum() / m.sum(), None), "into the advantages"),
    (lambda p, lp, old, adv, ref, m, cfg: (-(adv.detach() * torch.exp(lp - old) * m).sum() / m.sum(), None),
     "into old_logprobs"),
    (lambda p, lp, old, adv, ref, m, cfg: (-(adv.detach() * lp).sum() / m.sum(), None), "padding"),
    (lambda p, lp, old, adv, ref, m, cfg: (-(adv.detach() * lp.detach() * m).sum(), None), "no gradient"),
    (lambda p, lp, old, adv, ref, m, cfg: (-(adv.detach() * lp * m), None), "one finite number"),
])
def test_a_record_with_a_classic_mistake_stops_before_its_first_step(wrong, says):
    rec = AL.derive(AL.GRPO, name="grpo", label="GRPO", loss=wrong)
    with pytest.raises(ConfigError, match=says) as e:
        AL.check_algorithm(rec, RLConfig(algo="grpo", k=4, batch_size=8))
    assert "\n" not in str(e.value)
    AL.check_algorithm(AL.GRPO, RLConfig(algo="grpo", k=4, batch_size=8))  # the course's own passes
    bad_adv = AL.derive(AL.GRPO, name="grpo", label="GRPO",
                        advantages=lambda p, r, lp, ref, m, cfg, s: (r[:, None].expand_as(m).clone(), s))
    with pytest.raises(ConfigError, match="not zero on the padding"):
        AL.check_algorithm(bad_adv, RLConfig(algo="grpo", k=4, batch_size=8))


def test_a_learners_wrong_piece_is_refused_with_the_mistake_named():
    def strided(rewards, k):  # a prompt's k samples taken as every B/k-th one
        g = rewards.view(k, -1).T
        return (g - (g.sum(1, keepdim=True) - g) / (k - 1)).T.reshape(-1)
    with pytest.raises(ConfigError, match="rloo: your rloo_advantages .* strided") as e:
        AL.get("rloo").using(rloo_advantages=strided)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="no part named 'grpo_advantages'"):
        AL.get("rloo").using(grpo_advantages=strided)


def test_the_learners_pieces_train_exactly_as_b2bs_own(tiny_dir, tokenizer, rm):
    """The solutions of notebook 03's and 06's exercises, as a learner's functions, give the same
    run as the course's own (a learner's piece is really in the loop: a different one changes it)."""
    from b2b.exercises import solved
    from b2b.train import train

    for algo, parts in (("reinforce", ("moving_average_baseline", "reinforce_loss")), ("rloo", ("rloo_advantages",))):
        mine = AL.get(algo).using(**{n: (lambda f: lambda *a: f(*a))(solved(n)) for n in parts})
        cfg = RLConfig(algo=algo, steps=2, k=1 if algo == "reinforce" else 4, **SMALL)
        own = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, progress=False)
        theirs = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, algorithm=mine, progress=False)
        assert _no_time(theirs.steps) == _no_time(own.steps)
    sign = AL.get("rloo").fns().rloo_advantages
    flipped = dataclasses.replace(AL.get("rloo"), parts={**AL.get("rloo").parts,
                                                         "rloo_advantages": lambda r, k: -sign(r, k)})
    cfg = RLConfig(algo="rloo", steps=2, k=4, **SMALL)
    other = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, algorithm=flipped, progress=False)
    assert _no_time(other.steps)[1] != _no_time(own.steps)[1]
    with pytest.raises(ConfigError, match="reuse"):
        train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, algorithm=flipped, reuse=True, progress=False)
    with pytest.raises(ConfigError, match="cfg.algo"):
        train(_policy(tiny_dir), tokenizer, rm, PROMPTS, cfg, algorithm=AL.get("grpo"), progress=False)


def test_yours_hands_on_a_passing_function_says_so_for_a_stub_and_refuses_a_wrong_one(capsys):
    from b2b.exercises import solved, yours

    def my_rloo_advantages(rewards, k):
        raise NotImplementedError
    assert yours(my_rloo_advantages, "rloo_advantages") is solved("rloo_advantages")
    assert "my_rloo_advantages is not written yet" in capsys.readouterr().out
    right = (lambda f: lambda r, k: f(r, k))(solved("rloo_advantages"))
    assert yours(right, "rloo_advantages") is right

    def over_k(rewards, k):  # the group mean divided by k, the sample left in: a classic slip
        g = rewards.view(-1, k)
        return (g - g.sum(1, keepdim=True) / k).view(-1)
    with pytest.raises(ConfigError, match="your over_k fails its check") as e:
        yours(over_k, "rloo_advantages")
    assert "\n" not in str(e.value)
