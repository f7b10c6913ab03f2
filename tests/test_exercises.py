"""b2b.exercises: every check passes b2b's reference and names each classic mistake it was built for.

The wrong versions below are written the way a learner would write them (not taken from
exercises.py), so a check that matched only its own internal variants would fail here.
"""
import re

import pytest
import torch
import torch.nn.functional as F

from b2b import advantages as A
from b2b import exercises as E
from b2b import overopt as O
from b2b.metrics import distinct_n
from b2b.evaluate import collapse_flags
from b2b.reward import bradley_terry_loss, expected_class, ordinal_loss
from b2b.rollout import last_token_index, repetition_penalized, sequence_logprobs
from b2b.reinforce import reinforce_step
from b2b.tinyworld.gold import words

REFERENCES = {
    "bradley_terry": bradley_terry_loss,
    "ordinal": ordinal_loss,
    "moving_average_baseline": A.moving_average_baseline,
    "reinforce_loss": A.reinforce_loss,
    "last_token_index": last_token_index,
    "distinct_2": distinct_n,
    "kl_estimators": A.kl_per_token,
    "kl_shaped_reward": A.kl_shaped_reward,
    "rloo_advantages": A.rloo_advantages,
    "returns_to_go": A.returns_to_go,
    "masked_whiten": A.masked_whiten,
    "clipped_loss": A.clipped_pg_loss,
    "expected_class": expected_class,
    "collapse_flags": collapse_flags,
    "repetition_penalty": repetition_penalized,
    "grpo_advantages": A.grpo_advantages,
    "repeated_ngrams": A.repeated_ngram_fraction,
    "sequence_logprobs": sequence_logprobs,
    "rl_step": reinforce_step,
    "bon_kl": lambda n: O.bon_kl(n),
    "fit_bon_law": lambda d, g: tuple(torch.tensor(x) for x in (O.fit_law("bon", d, g).alpha, O.fit_law("bon", d, g).beta)),
}


def check(name):
    return getattr(E, f"check_{name}")


# ----------------------------------------------------------------------------- wrong versions, as learners write them

# Bradley-Terry
def bt_swapped(rw, rl):
    return -F.logsigmoid(rl - rw).mean()


def bt_naive(rw, rl):  # inf for huge margins
    return -torch.log(torch.sigmoid(rw - rl)).mean()


def bt_naive_eps(rw, rl):  # finite but capped near 18.4
    return -torch.log(torch.sigmoid(rw - rl) + 1e-8).mean()


# ordinal
def ord_triu(lw, ll):  # the seed's mask: sums P(loser above winner)
    joint = lw.log_softmax(-1)[:, :, None] + ll.log_softmax(-1)[:, None, :]
    mask = torch.ones(10, 10, dtype=torch.bool).triu(diagonal=1)
    return -joint.masked_fill(~mask, float("-inf")).logsumexp((1, 2)).mean()


def ord_ties(lw, ll):  # i >= j: a tie counted as a win
    joint = lw.log_softmax(-1)[:, :, None] + ll.log_softmax(-1)[:, None, :]
    mask = torch.ones(10, 10, dtype=torch.bool).tril()
    return -joint.masked_fill(~mask, float("-inf")).logsumexp((1, 2)).mean()


def ord_products(lw, ll):  # the notebook's first attempt: probability space, + 1e-8
    pw, pl = lw.softmax(-1), ll.softmax(-1)
    joint = pw[:, :, None] * pl[:, None, :]
    return -torch.log(joint.tril(diagonal=-1).sum((1, 2)) + 1e-8).mean()


def ord_products_no_eps(lw, ll):
    joint = lw.softmax(-1)[:, :, None] * ll.softmax(-1)[:, None, :]
    return -torch.log(joint.tril(diagonal=-1).sum((1, 2))).mean()


# moving-average baseline
def ma_update_first(rewards, baseline, decay):
    m = rewards.mean().item()
    baseline = m if baseline is None else decay * baseline + (1 - decay) * m
    return rewards - baseline, baseline


def ma_swapped(rewards, baseline, decay):
    m = rewards.mean().item()
    b = m if baseline is None else baseline
    return rewards - b, (1 - decay) * b + decay * m


def ma_sign(rewards, baseline, decay):
    m = rewards.mean().item()
    b = m if baseline is None else baseline
    return b - rewards, decay * b + (1 - decay) * m


# REINFORCE loss
def rf_sign(a, lp, m):
    return (a.detach() * (lp * m).sum(1)).mean()


def rf_no_mask(a, lp, m):
    return -(a.detach() * lp.sum(-1)).mean()


def rf_token_mean(a, lp, m):
    return -(a.detach() * (lp * m).sum(1) / m.sum(1)).mean()


def rf_batch_sum(a, lp, m):
    return -(a.detach() * (lp * m).sum(1)).sum()


def rf_no_detach(a, lp, m):
    return -(a * (lp * m).sum(1)).mean()


# last token index
def lt_first_pad(m):  # one past the last real token
    T = m.shape[1]
    return T - m.flip(1).long().argmax(1)


def lt_right_only(m):
    return m.sum(1).long() - 1


def lt_count(m):
    return m.sum(dim=1)


# distinct-2
def _bigrams(ws):
    return [(a, b) for a, b in zip(ws, ws[1:])]


def d2_per_text(texts):
    vals = []
    for t in texts:
        g = _bigrams(words(t))
        vals.append(len(set(g)) / len(g) if g else 0.0)
    return sum(vals) / len(vals)


def d2_unigrams(texts):
    ws = [w for t in texts for w in words(t)]
    return len(set(ws)) / len(ws) if ws else 0.0


def d2_split(texts):
    g = [b for t in texts for b in _bigrams(t.split())]
    return len(set(g)) / len(g) if g else 0.0


def d2_no_lower(texts):
    g = [b for t in texts for b in _bigrams(re.findall(r"[A-Za-z]+(?:-[A-Za-z]+)?|\d+", t))]
    return len(set(g)) / len(g) if g else 0.0


# KL estimators
def _kl(l, est):
    return {"k1": l, "k2": 0.5 * l ** 2, "k3": torch.exp(-l) - 1 + l}[est]


def kl_reversed(lp, ref, m, est):
    return _kl(ref - lp, est) * m


def kl_k3_wrong(lp, ref, m, est):
    l = lp - ref
    return (torch.exp(l) - 1 - l if est == "k3" else _kl(l, est)) * m


def kl_no_mask(lp, ref, m, est):
    return _kl(lp - ref, est)


def kl_k2_no_half(lp, ref, m, est):
    l = lp - ref
    return (l ** 2 if est == "k2" else _kl(l, est)) * m


# KL-shaped reward
def ks_plus(r, lp, ref, m, beta):
    return r + beta * ((lp.detach() - ref) * m).sum(1)


def ks_token_mean(r, lp, ref, m, beta):
    return r - beta * ((lp.detach() - ref) * m).sum(1) / m.sum(1)


def ks_no_mask(r, lp, ref, m, beta):
    return r - beta * (lp.detach() - ref.detach()).sum(1)


def ks_no_detach(r, lp, ref, m, beta):
    return r - beta * ((lp - ref) * m).sum(1)


def ks_ref_not_detached(r, lp, ref, m, beta):  # the policy's detached, the reference's not
    return r - beta * ((lp.detach() - ref) * m).sum(1)


# RLOO
def rloo_self(r, k):
    g = r.reshape(-1, k)
    return (g - g.mean(1, keepdim=True)).flatten()


def rloo_strided(r, k):
    g = r.reshape(k, -1)  # column j = samples j, j + B/k, ...
    return (g - (g.sum(0, keepdim=True) - g) / (k - 1)).flatten()


def rloo_over_k(r, k):
    g = r.reshape(-1, k)
    return (g - (g.sum(1, keepdim=True) - g) / k).flatten()


# returns to go
def rtg_from_start(r, m):
    return torch.cumsum(r * m, dim=1) * m


def rtg_exclusive(r, m):
    r = r * m
    return (r.flip(1).cumsum(1).flip(1) - r) * m


def rtg_no_mask(r, m):
    return r.flip(1).cumsum(1).flip(1)


# masked whiten
def wh_padded_stats(x, m):
    return (x - x.mean()) / (x.std(unbiased=False) + 1e-8) * m


def wh_per_row(x, m):
    n = m.sum(1, keepdim=True)
    mu = (x * m).sum(1, keepdim=True) / n
    var = (((x - mu) * m) ** 2).sum(1, keepdim=True) / n
    return (x - mu) / (var.sqrt() + 1e-8) * m


def wh_not_zeroed(x, m):
    mu = x[m.bool()].mean()
    sd = x[m.bool()].std(unbiased=False)
    return (x - mu) / (sd + 1e-8)


def wh_no_eps(x, m):  # 0 / 0 when all values are equal
    mu = x[m.bool()].mean()
    return (x - mu) / x[m.bool()].std(unbiased=False) * m


# clipped loss
def _ratio_terms(lp, old, a, clip):
    ratio = (lp - old.detach()).exp()
    a = a.detach()
    return ratio * a, torch.clamp(ratio, 1 - clip, 1 + clip) * a


def pg_max(lp, old, a, m, clip):
    u, c = _ratio_terms(lp, old, a, clip)
    return -(torch.max(u, c) * m).sum() / m.sum()


def pg_clip_adv(lp, old, a, m, clip):
    ratio = (lp - old.detach()).exp()
    a = a.detach()
    return -(torch.min(ratio * a, ratio * a.clamp(1 - clip, 1 + clip)) * m).sum() / m.sum()


def pg_sign(lp, old, a, m, clip):
    u, c = _ratio_terms(lp, old, a, clip)
    return (torch.min(u, c) * m).sum() / m.sum()


def pg_padded_mean(lp, old, a, m, clip):
    u, c = _ratio_terms(lp, old, a, clip)
    return -torch.min(u, c).mean()


def pg_old_not_detached(lp, old, a, m, clip):
    ratio = (lp - old).exp()
    a = a.detach()
    return -(torch.min(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a) * m).sum() / m.sum()


def pg_adv_not_detached(lp, old, a, m, clip):
    ratio = (lp - old.detach()).exp()
    return -(torch.min(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a) * m).sum() / m.sum()


# per-token log-probs: as a learner writes them
def lp_no_shift(logits, ids, P, m, T):
    return torch.log_softmax(logits[:, P:] / T, dim=-1).gather(2, ids[:, P:].unsqueeze(2)).squeeze(2) * m


def lp_probs(logits, ids, P, m, T):
    return torch.softmax(logits[:, P - 1:-1] / T, dim=-1).gather(2, ids[:, P:].unsqueeze(2)).squeeze(2) * m


def lp_no_temperature(logits, ids, P, m, T):
    return torch.log_softmax(logits[:, P - 1:-1], dim=-1).gather(2, ids[:, P:].unsqueeze(2)).squeeze(2) * m


def lp_no_mask(logits, ids, P, m, T):
    return torch.log_softmax(logits[:, P - 1:-1] / T, dim=-1).gather(2, ids[:, P:].unsqueeze(2)).squeeze(2)


def lp_detached(logits, ids, P, m, T):
    z = logits.detach()[:, P - 1:-1] / T
    return (z.gather(2, ids[:, P:, None]).squeeze(2) - z.logsumexp(-1)) * m


# the RL step: as a learner writes it, from b2b's pieces
def _my_step(zero=True, clip=True, step=True, sign=1.0):
    from b2b.advantages import moving_average_baseline, reinforce_loss
    from b2b.reward import reward_scores, scalar_reward
    from b2b.rollout import rollout_logprobs, sample_completions

    def my_rl_step(policy, tokenizer, reward_model, prompts, optimizer, baseline, generator, max_new_tokens,
                   max_grad_norm=1.0):
        ro = sample_completions(policy, tokenizer, prompts, max_new_tokens, 1.0, generator)
        with torch.no_grad():
            rewards = scalar_reward(reward_scores(reward_model, ro.input_ids, ro.attention_mask))
        advantages, baseline = moving_average_baseline(rewards, baseline)
        loss = sign * reinforce_loss(advantages, rollout_logprobs(policy, ro), ro.completion_mask)
        if zero:
            optimizer.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
        if step:
            optimizer.step()
        return baseline, rewards
    return my_rl_step


step_no_zero_grad, step_no_clip, step_no_step, step_ascent = (
    _my_step(zero=False), _my_step(clip=False), _my_step(step=False), _my_step(sign=-1.0))


WRONG = [
    ("bradley_terry", bt_swapped, "chosen and rejected are swapped"),
    ("bradley_terry", bt_naive, "numerically unstable: use logsigmoid"),
    ("bradley_terry", bt_naive_eps, "numerically unstable: use logsigmoid"),
    ("ordinal", ord_triu, "triu bug"),
    ("ordinal", ord_ties, "ties as wins"),
    ("ordinal", ord_products, "stay in log space"),
    ("ordinal", ord_products_no_eps, "stay in log space"),
    ("moving_average_baseline", ma_update_first, "before subtracting it"),
    ("moving_average_baseline", ma_swapped, "decay and 1 - decay are swapped"),
    ("moving_average_baseline", ma_sign, "R - baseline, not baseline - R"),
    ("reinforce_loss", rf_sign, "the sign is flipped"),
    ("reinforce_loss", rf_no_mask, "padding counts in your loss"),
    ("reinforce_loss", rf_token_mean, "you averaged over tokens"),
    ("reinforce_loss", rf_batch_sum, "you summed over the batch"),
    ("reinforce_loss", rf_no_detach, "advantages.detach()"),
    ("last_token_index", lt_first_pad, "off by one"),
    ("last_token_index", lt_right_only, "you assume right padding only"),
    ("last_token_index", lt_count, "mask.sum(1) counts the real tokens"),
    ("distinct_2", d2_per_text, "per text and averaged"),
    ("distinct_2", d2_unigrams, "you counted unigrams"),
    ("distinct_2", d2_split, "b2b.tinyworld.gold.words"),
    ("distinct_2", d2_no_lower, "b2b.tinyworld.gold.words"),
    ("kl_estimators", kl_reversed, "log-ratio is the wrong way round"),
    ("kl_estimators", kl_k3_wrong, "your k3 is exp(l) - 1 - l"),
    ("kl_estimators", kl_no_mask, "the mask is not applied"),
    ("kl_estimators", kl_k2_no_half, "missing the 1/2"),
    ("kl_shaped_reward", ks_plus, "the penalty has the wrong sign"),
    ("kl_shaped_reward", ks_token_mean, "averaged the KL over tokens"),
    ("kl_shaped_reward", ks_no_mask, "the mask is not applied"),
    ("kl_shaped_reward", ks_no_detach, "your R carries gradient to the policy's log-probs"),
    ("kl_shaped_reward", ks_ref_not_detached, "your R carries gradient to the reference's log-probs"),
    ("rloo_advantages", rloo_self, "includes the sample itself"),
    ("rloo_advantages", rloo_strided, "your groups are strided"),
    ("rloo_advantages", rloo_over_k, "you divide by k"),
    ("returns_to_go", rtg_from_start, "you summed from the start"),
    ("returns_to_go", rtg_exclusive, "includes the reward at t itself"),
    ("returns_to_go", rtg_no_mask, "the mask is not applied"),
    ("masked_whiten", wh_padded_stats, "include the padded entries"),
    ("masked_whiten", wh_per_row, "each row on its own"),
    ("masked_whiten", wh_not_zeroed, "not zero outside the mask"),
    ("masked_whiten", wh_no_eps, "add eps"),
    ("clipped_loss", pg_max, "max instead of min"),
    ("clipped_loss", pg_clip_adv, "you clipped the advantage"),
    ("clipped_loss", pg_sign, "the sign is flipped"),
    ("clipped_loss", pg_padded_mean, "padding counts in your loss"),
    ("clipped_loss", pg_old_not_detached, "gradient reaches old_logprobs"),
    ("clipped_loss", pg_adv_not_detached, "advantages.detach()"),
]


# the ordinal readout
def ec_zero_based(logits):
    p = torch.softmax(logits, dim=1)
    return (p * torch.arange(10)).sum(dim=1)


def ec_argmax(logits):
    return logits.argmax(dim=1).float() + 1


def ec_no_softmax(logits):
    return (logits * torch.arange(1, 11)).sum(1)


# the collapse detector
def cf_previous(proxy, d2, keep):
    flags = torch.zeros(len(proxy), dtype=torch.bool)
    for t in range(1, len(proxy)):
        flags[t] = bool(proxy[t] > proxy[t - 1] and d2[t] < keep * d2[t - 1])
    return flags


def cf_diversity_only(proxy, d2, keep):
    return d2 < keep * d2[0]


def cf_or(proxy, d2, keep):
    return (proxy > proxy[0]) | (d2 < keep * d2[0])


# the repetition penalty
def rp_divide(logits, seen, penalty):
    out = logits.clone()
    out[seen] = logits[seen] / penalty
    return out


def rp_unseen(logits, seen, penalty):
    return torch.where(seen, logits, torch.where(logits > 0, logits / penalty, logits * penalty))


def rp_subtract(logits, seen, penalty):
    return logits - penalty * seen.float()


# repeated n-grams, in plain Python as a learner might
def rn_with_padding(ids, mask, n):
    out = []
    for row in ids.tolist():
        grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
        out.append((len(grams) - len(set(grams))) / len(grams) if grams else 0.0)
    return torch.tensor(out)


def rn_first_counts(ids, mask, n):
    out = []
    for row, m in zip(ids.tolist(), mask.tolist()):
        row = row[:int(sum(m))]
        grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
        out.append(sum(1 for g in grams if grams.count(g) > 1) / len(grams) if grams else 0.0)
    return torch.tensor(out)


def rn_over_distinct(ids, mask, n):
    out = []
    for row, m in zip(ids.tolist(), mask.tolist()):
        row = row[:int(sum(m))]
        grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
        out.append((len(grams) - len(set(grams))) / len(set(grams)) if grams else 0.0)
    return torch.tensor(out)


# GRPO
def grpo_batch_std(rewards, k):
    g = rewards.view(-1, k)
    return ((g - g.mean(1, keepdim=True)) / (rewards.std() + 1e-4)).flatten()


def grpo_population_std(rewards, k):
    g = rewards.view(-1, k)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, correction=0, keepdim=True) + 1e-4)).flatten()


def grpo_no_std(rewards, k):
    g = rewards.view(-1, k)
    return (g - g.mean(1, keepdim=True)).flatten()


def grpo_no_eps(rewards, k):
    g = rewards.view(-1, k)
    return ((g - g.mean(1, keepdim=True)) / g.std(1, keepdim=True)).flatten()


def fit_with_intercept(d, gain):  # numpy-style polyfit of degree 2: a constant term creeps in
    X = torch.stack([torch.ones_like(d), d, d * d], 1)
    c, a, b = torch.linalg.lstsq(X, gain[:, None]).solution.flatten()
    return a, -b


def fit_as_a_tensor(d, gain):  # lstsq's solution as it comes: a tensor of the two values
    return torch.linalg.lstsq(torch.stack([d, -d * d], 1), gain[:, None]).solution


def fit_on_kl(d, gain):
    kl = d * d
    a, b = torch.linalg.lstsq(torch.stack([kl, -kl * kl], 1), gain[:, None]).solution.flatten()
    return a, b


def fit_plus_beta(d, gain):
    a, b = torch.linalg.lstsq(torch.stack([d, d * d], 1), gain[:, None]).solution.flatten()
    return a, b


WRONG += [
    ("expected_class", ec_zero_based, "off by one"),
    ("expected_class", ec_argmax, "argmax"),
    ("expected_class", ec_no_softmax, "turn the logits into probabilities"),
    ("collapse_flags", cf_previous, "the one before it"),
    ("collapse_flags", cf_diversity_only, "diversity alone"),
    ("collapse_flags", cf_or, "both must hold"),
    ("repetition_penalty", rp_divide, "gains on every unseen one"),
    ("repetition_penalty", rp_unseen, "penalised the unseen tokens"),
    ("repetition_penalty", rp_subtract, "you subtracted the penalty"),
    ("repeated_ngrams", rn_with_padding, "padding counts"),
    ("repeated_ngrams", rn_first_counts, "first occurrence"),
    ("repeated_ngrams", rn_over_distinct, "divided by the distinct"),
    ("grpo_advantages", grpo_batch_std, "the batch's standard deviation"),
    ("grpo_advantages", grpo_population_std, "population standard deviation"),
    ("grpo_advantages", grpo_no_std, "that is Dr. GRPO"),
    ("grpo_advantages", grpo_no_eps, "add eps"),
    ("sequence_logprobs", lp_no_shift, "off by one"),
    ("sequence_logprobs", lp_probs, "you gathered probabilities"),
    ("sequence_logprobs", lp_no_temperature, "divide the logits by T"),
    ("sequence_logprobs", lp_no_mask, "padding counts"),
    ("sequence_logprobs", lp_detached, "carries no gradient to logits"),
    ("rl_step", step_no_zero_grad, "optimizer.zero_grad()"),
    ("rl_step", step_no_clip, "the gradient was not clipped"),
    ("rl_step", step_no_step, "did not change the policy"),
    ("rl_step", step_ascent, "the wrong way"),
    ("bon_kl", lambda n: torch.log(n.double()), "the - (n - 1) / n is missing"),
    ("bon_kl", lambda n: torch.log(n.float()) - (n - 1) // n, "integer division"),
    ("bon_kl", lambda n: (n - 1) / n - torch.log(n.float()), "your sign is flipped"),
    ("bon_kl", lambda n: torch.log2(n.float()) - (n - 1) / n, "log base 2"),
    ("fit_bon_law", fit_with_intercept, "has an intercept"),
    ("fit_bon_law", fit_on_kl, "not d = sqrt(KL)"),
    ("fit_bon_law", fit_plus_beta, "wrong sign"),
]


# ----------------------------------------------------------------------------- tests

def test_a_fit_returned_as_one_tensor_of_two_values_passes(capsys):
    assert E.check_fit_bon_law(fit_as_a_tensor)


def test_every_check_has_references_and_wrong_versions():
    assert set(REFERENCES) == set(E.NAMES)
    assert {name for name, _, _ in WRONG} == set(E.NAMES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes(name, capsys):
    assert check(name)(REFERENCES[name]) is True
    out = capsys.readouterr().out
    assert out.strip().endswith("All cases pass.") and "x  " not in out


@pytest.mark.parametrize("name", ["distinct_2", "kl_shaped_reward"])
def test_private_solutions_pass(name, capsys):  # the printed solution is exercises.py's own code
    assert check(name)(getattr(E, f"_{name}"))


@pytest.mark.parametrize("name, wrong, fragment", WRONG, ids=[f"{n}-{w.__name__}" for n, w, _ in WRONG])
def test_wrong_version_is_rejected_and_named(name, wrong, fragment, capsys):
    assert check(name)(wrong) is False
    out = capsys.readouterr().out
    assert fragment in out, out
    assert "Not yet" in out.splitlines()[-1]


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_stub_is_not_written_yet(name, capsys):
    def stub(*args):
        raise NotImplementedError

    assert check(name)(stub) is False
    lines = capsys.readouterr().out.splitlines()
    # the stub as shipped reads as an invitation: one line, no failed cases
    assert len(lines) == 1 and lines[0].startswith("Your turn: write the body of stub above"), lines
    n = len(list(E._EXERCISES[name].cases()))
    assert f"{n} cases are waiting" in lines[0] and f"solution({name!r})" in lines[0]


def test_a_stub_that_raises_in_some_cases_only_is_judged_case_by_case(capsys):
    def half(rewards, k):
        if k == 2:
            raise NotImplementedError
        return E.solved("rloo_advantages")(rewards, k)

    assert E.check_rloo_advantages(half) is False
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("Not yet") and any(line.startswith("  ok ") for line in lines)
    assert any("not written yet: replace the `raise NotImplementedError`" in line for line in lines)


def test_other_exceptions_are_reported_per_case(capsys):
    def broken(rewards, k):
        return rewards.view(k, k)  # wrong shape for most cases: raises

    assert not E.check_rloo_advantages(broken)
    assert "raised RuntimeError" in capsys.readouterr().out


def test_unmatched_mistake_shows_got_and_expected(capsys):
    assert not E.check_returns_to_go(lambda r, m: 2 * A.returns_to_go(r, m))
    out = capsys.readouterr().out
    assert "got " in out and "expected " in out


def test_a_loss_with_no_gradient_to_the_logprobs_is_rejected(capsys):
    def detached(a, lp, m):
        return -(a.detach() * (lp.detach() * m).sum(1)).mean()

    assert not E.check_reinforce_loss(detached)
    assert "no gradient to logprobs" in capsys.readouterr().out


def test_a_missing_return_is_named(capsys):
    def forgot(texts):
        distinct_n(texts)

    assert not E.check_distinct_2(forgot)
    assert "forget the `return`" in capsys.readouterr().out


def test_float_indices_are_rejected(capsys):
    assert not E.check_last_token_index(lambda m: last_token_index(m).float())
    assert "integer indices" in capsys.readouterr().out


def test_a_partly_right_function_fails_only_some_cases(capsys):
    # mask.sum(1) - 1 is right on right-padded rows: that case passes, the left-padded ones do not
    assert not E.check_last_token_index(lt_right_only)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("  ok right padding") and lines[1].startswith("  x ")


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_solution_prints_and_returns_source(name, capsys):
    src = E.solution(name)
    assert "def " in src and "return" in src
    assert src.strip() in capsys.readouterr().out


def test_solution_unknown_name():
    with pytest.raises(ValueError, match="rloo_advantages") as e:
        E.solution("rloo")
    assert "\n" not in str(e.value)


def test_module_docstring_lists_every_check():
    for name in E.NAMES:
        assert f"check_{name}(fn)" in E.__doc__


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_every_known_mistake_runs_and_differs_somewhere(name):
    # a wrong version that raised on every case, or never differed from the reference, would name nothing
    ex = E._EXERCISES[name]
    for m in ex.mistakes:
        if m.fn is None:  # a predicate, tested through the learner-style wrong versions above
            continue
        differs = False
        for _, make in ex.cases():
            want = E._values(E._outputs(E._invoke(ex, ex.reference, make()), ex.n_outputs))
            wrong = E._values(E._outputs(E._invoke(ex, m.fn, make()), ex.n_outputs))
            differs |= not E._all_close(wrong, want, m.outputs)
        assert differs, m.sentence


def test_solve_cell_replaces_a_stub_with_the_solution_and_asserts_its_check():
    import b2b

    cell = ("def my_rloo(rewards, k):\n    raise NotImplementedError  # your code\n\n"
            "b2b.exercises.check_rloo_advantages(my_rloo)\n")
    assert E.exercise_cells(cell) == [("rloo_advantages", "my_rloo")]
    solved = E.solve_cell(cell)
    assert 'my_rloo = b2b.exercises.solved("rloo_advantages")' in solved and "assert b2b.exercises.check_" in solved
    scope = {"b2b": b2b}
    exec(solved, scope)                                       # the check passes on the solution
    assert scope["my_rloo"] is E.solved("rloo_advantages")
    stub = {"b2b": b2b}
    exec(cell.replace("b2b.exercises.check_rloo_advantages(my_rloo)\n", ""), stub)
    with pytest.raises(NotImplementedError):                 # unsolved, the stub is what the learner sees
        stub["my_rloo"](torch.ones(4), 2)
    written = cell.replace("raise NotImplementedError  # your code", "return rewards")
    assert E.solve_cell(written) == written                   # a written exercise is left as the learner wrote it
    with pytest.raises(ValueError, match="unknown exercise 'rloo'"):
        E.solved("rloo")


def _notebook_exercises():
    import json
    from pathlib import Path

    out = {}
    for path in sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        out[path.name] = [("".join(c["source"])) for c in cells if E.exercise_cells("".join(c["source"]))]
    return out


def test_every_notebook_has_written_checked_and_hidden_exercises(capsys):
    import b2b

    nbs = _notebook_exercises()
    for name, cells in nbs.items():
        want = 0 if name.startswith("00") else 1 if name.startswith("08") else 2
        assert len(cells) >= want, f"{name}: {len(cells)} exercises, expected at least {want}"
        for source in cells:
            assert "raise NotImplementedError" in source, f"{name}: an exercise that is not a stub:\n{source}"
            for line in source.splitlines():   # the solution stays hidden: named in a comment, never printed
                assert "solution(" not in line.split("#")[0], f"{name}: {line}"
            for ex, fn in E.exercise_cells(source):
                assert ex in E.NAMES, f"{name}: unknown check {ex}"
            scope = {"b2b": b2b, "torch": torch, "F": F}
            exec(E.solve_cell(source), scope)  # what CI runs: the hidden solution passes the notebook's own check
    assert "All cases pass." in capsys.readouterr().out
    used = {ex for cells in nbs.values() for s in cells for ex, _ in E.exercise_cells(s)}
    assert len(used) >= 15


def test_the_course_page_lists_each_notebooks_exercises():
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "course.md").read_text()
    for name, cells in _notebook_exercises().items():
        row = next(line for line in page.splitlines() if f"[{name[:-6]}]" in line)
        listed = row.rsplit("|", 3)[1].strip()
        assert listed == (", ".join(f"`{ex}`" for s in cells for ex, _ in E.exercise_cells(s)) or "-"), name


def test_correct_kl_shaped_rewards_written_other_ways_pass(capsys):
    """Detaching each log-prob, or computing the whole reward under no_grad, is as right as b2b's."""
    import torch

    def detached(reward, logprobs, ref_logprobs, mask, beta):
        return reward - beta * ((logprobs.detach() - ref_logprobs.detach()) * mask).sum(1)

    def no_grad(reward, logprobs, ref_logprobs, mask, beta):
        with torch.no_grad():
            return reward - beta * ((logprobs - ref_logprobs) * mask).sum(1)

    assert E.check_kl_shaped_reward(detached) and E.check_kl_shaped_reward(no_grad)


def test_a_correct_rl_step_written_from_the_learners_own_pieces_passes(capsys):
    """The step written with the learner's log-prob gather (from the whole sequence's logits) and its
    own loss, its gradients zeroed by set_to_none=False, passes as b2b's does."""
    from b2b.advantages import moving_average_baseline
    from b2b.reward import reward_scores, scalar_reward
    from b2b.rollout import position_ids, sample_completions

    def my_rl_step(policy, tokenizer, reward_model, prompts, optimizer, baseline, generator, max_new_tokens,
                   max_grad_norm=1.0):
        ro = sample_completions(policy, tokenizer, prompts, max_new_tokens, 1.0, generator)
        with torch.no_grad():
            rewards = scalar_reward(reward_scores(reward_model, ro.input_ids, ro.attention_mask))
        adv, baseline = moving_average_baseline(rewards, baseline)
        ids, mask = ro.input_ids, ro.attention_mask
        logits = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
        logp = sequence_logprobs(logits, ids, ro.prompt_ids.shape[1], ro.completion_mask)
        loss = -(adv * logp.sum(1)).mean()
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
        optimizer.step()
        return baseline, rewards

    assert E.check_rl_step(my_rl_step)


def test_reinforce_step_is_rl_steps_vanilla_reinforce():
    """The exercise's reference is the course loop's step for vanilla REINFORCE (nothing clamped,
    nothing shaped): the same rollouts, baseline and weights after the step."""
    import copy

    from b2b.rl_config import RLConfig
    from b2b.step import rl_step

    policy, tok, rm, prompts = E._step_models()
    a, b = copy.deepcopy(policy), copy.deepcopy(policy)
    opt_a, opt_b = (torch.optim.SGD(m.parameters(), lr=0.05) for m in (a, b))
    cfg = RLConfig(algo="reinforce", batch_size=6, max_new_tokens=8, max_grad_norm=0.5)
    m, _, state = rl_step(a, tok, rm, prompts[:6], opt_a, torch.Generator().manual_seed(3), 2.0, cfg, world=False, step=1)
    base, rewards = reinforce_step(b, tok, rm, prompts[:6], opt_b, 2.0, torch.Generator().manual_seed(3), 8, 0.5)
    assert state == pytest.approx(base) and m["reward/proxy_mean"] == pytest.approx(rewards.mean().item(), abs=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_answers_are_collapsed_numbered_markdown():
    key = E.answers("k1 is **unbiased**.", "It gives 0 to each.")
    md = key._repr_markdown_()
    assert md.startswith("<details>") and md.rstrip().endswith("</details>")
    assert "<summary>" in md and "1. k1 is **unbiased**." in md and "2. It gives 0 to each." in md
    assert md.index("1. k1") < md.index("2. It")
    assert "\n\n1. " in md  # a blank line after the summary, or markdown inside <details> is not rendered
    assert repr(key).splitlines()[1] == "1. k1 is **unbiased**."
    with pytest.raises(ValueError, match="one non-empty"):
        E.answers()
    with pytest.raises(ValueError, match="one non-empty"):
        E.answers("fine", " ")
