"""Self-checks for the notebooks' "your turn" cells: your function against b2b's reference.

    b2b.exercises.check_bradley_terry(my_loss)   # prints one line per case, returns True if all pass
    b2b.exercises.solution("bradley_terry")       # prints (and returns) the reference's source

Each check runs your function on a few small hand-made cases (seeded, batches of 2-8, real
padding, left padding where it matters). A case passes when your output has the reference's
shape, is finite and is `torch.allclose` to it (atol = rtol = 1e-4); where a tensor must not pass
gradient (advantages, old log-probs, the log-probs inside a shaped reward) or must (the log-probs
of a loss), a backward pass checks that too. When a case fails, your output is compared with the
outputs of known wrong versions of the reference, and the classic mistake it matches is named;
otherwise you see what you got and what was expected.

The checks (name: your function's signature -> what it returns):

    check_bradley_terry(fn)            fn(r_chosen (B,), r_rejected (B,)) -> scalar loss
    check_ordinal(fn)                  fn(logits_chosen (B, 10), logits_rejected (B, 10)) -> scalar loss
    check_moving_average_baseline(fn)  fn(rewards (B,), baseline float | None, decay) -> (advantages (B,), new_baseline)
    check_reinforce_loss(fn)           fn(advantages (B,), logprobs (B, C), mask (B, C)) -> scalar loss
    check_sequence_logprobs(fn)        fn(logits (B, P + C, V), ids (B, P + C), prompt_len P, completion_mask (B, C),
                                       temperature) -> (B, C) log-probs of the completion tokens
    check_rl_step(fn)                  fn(policy, tokenizer, reward_model, prompts, optimizer, baseline, generator,
                                       max_new_tokens, max_grad_norm) -> (new baseline, rewards (B,)), one
                                       vanilla REINFORCE step: what it does to the policy is compared
    check_last_token_index(fn)         fn(attention_mask (B, T)) -> (B,) long
    check_distinct_2(fn)               fn(texts list[str]) -> float
    check_kl_estimators(fn)            fn(logprobs (B, C), ref_logprobs (B, C), mask (B, C), estimator) -> (B, C)
                                       for estimator "k1", "k2", "k3"
    check_kl_shaped_reward(fn)         fn(reward (B,), logprobs (B, C), ref_logprobs (B, C), mask (B, C), beta) -> R (B,)
    check_rloo_advantages(fn)          fn(rewards (B,), k) -> (B,), groups of k consecutive samples
    check_returns_to_go(fn)            fn(token_rewards (B, C), mask (B, C)) -> (B, C)
    check_masked_whiten(fn)            fn(x (B, C), mask (B, C)) -> (B, C)
    check_clipped_loss(fn)             fn(logprobs (B, C), old_logprobs (B, C), advantages (B, C), mask (B, C), clip)
                                       -> scalar loss
    check_expected_class(fn)           fn(logits (B, 10)) -> (B,) expected class, classes 1..10
    check_collapse_flags(fn)           fn(proxy (T,), distinct_2 (T,), keep) -> (T,) bool
    check_repetition_penalty(fn)       fn(logits (B, V), seen (B, V) bool, penalty) -> (B, V)
    check_repeated_ngrams(fn)          fn(token_ids (B, C), mask (B, C), n) -> (B,) share of repeated n-grams
    check_grpo_advantages(fn)          fn(rewards (B,), k) -> (B,), groups of k consecutive samples
    check_bon_kl(fn)                   fn(n (N,) long) -> (N,) the analytic KL of best-of-n, in nats
    check_fit_bon_law(fn)              fn(d (J,), gain (J,)) -> (alpha, beta), the least-squares fit of
                                       gain = d (alpha - beta d) through the origin

In a notebook, each exercise is a stub that raises NotImplementedError followed by its check;
`solved(name)` is the hidden solution (CI runs every notebook with it, see `solve_cell`).

A function that returns a tuple where one value is expected (b2b's `clipped_pg_loss` returns
(loss, clip fraction)) is checked on its first element.
"""
from __future__ import annotations

import copy
import functools
import inspect
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from b2b import advantages as adv_ref
from b2b import overopt as overopt_ref
from b2b.metrics import distinct_n, ngrams
from b2b.evaluate import collapse_flags
from b2b.reward import NUM_CLASSES, bradley_terry_loss, expected_class, ordinal_loss
from b2b.rollout import last_token_index, repetition_penalized, sequence_logprobs
from b2b.reinforce import reinforce_step
from b2b.tinyworld.gold import WORD_RE, words

ATOL = RTOL = 1e-4
NOT_WRITTEN = "not written yet: replace the `raise NotImplementedError` with your code"


# ----------------------------------------------------------------------------- the machinery

@dataclass(frozen=True)
class _Mistake:
    """A known wrong version of the reference (same signature) and the sentence that names it."""

    sentence: str
    fn: Callable | None = None
    outputs: tuple[int, ...] | None = None
    """Compare only these outputs (None: all)."""
    explains: Callable[[tuple, tuple, tuple], bool] | None = None
    """Instead of `fn`: explains(got, want, args) says whether this mistake explains the learner's
    outputs (for mistakes whose exact numbers depend on other details, such as an eps)."""


@dataclass(frozen=True)
class _Exercise:
    reference: Callable
    """The check's truth, called with the learner's signature."""
    solution: Callable
    """Whose source `solution(name)` prints."""
    cases: Callable[[], list[tuple[str, Callable[[], tuple]]]]
    """(case name, a function making fresh arguments: each call gets its own tensors)."""
    mistakes: tuple[_Mistake, ...] = ()
    arg_names: tuple[str, ...] = ()
    n_outputs: int = 1
    nonfinite: str = "your output holds inf or nan where the expected one is finite"
    no_grad: dict[int, str] = field(default_factory=dict)
    """Argument index -> the sentence when gradient reaches that argument (it must be detached)."""
    grad: tuple[int, ...] = ()
    """Argument indices whose gradient must equal the reference's."""
    integer: bool = False
    """The output holds indices: it must have an integer dtype."""
    call: Callable[[Callable, tuple], object] | None = None
    """How a function is run on a case's arguments and what of it is compared (default: its return
    value, `fn(*args)`); the RL step's check compares what the step did to the policy."""


def _invoke(ex: _Exercise, fn: Callable, args: tuple):
    return ex.call(fn, args) if ex.call is not None else fn(*args)


def _outputs(out, n: int) -> tuple:
    """The learner's (or a reference's) return value as a tuple of n values."""
    if n == 1:
        return (out[0] if isinstance(out, tuple) and out else out,)
    if isinstance(out, torch.Tensor) and out.numel() == n:  # a tensor of the n values (a solve's solution)
        return tuple(out.flatten())
    if not isinstance(out, (tuple, list)) or len(out) != n:
        raise TypeError(f"expected {n} values back, got {type(out).__name__}")
    return tuple(out)


def _values(outs: tuple) -> tuple[torch.Tensor, ...]:
    return tuple(torch.as_tensor(o.detach() if isinstance(o, torch.Tensor) else o) for o in outs)


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    if got.shape != want.shape and not (got.numel() == want.numel() == 1):
        return False
    got, want = got.double().reshape(want.shape), want.double()
    return bool(torch.allclose(got, want, atol=ATOL, rtol=RTOL))


def _all_close(got: tuple, want: tuple, which: tuple[int, ...] | None = None) -> bool:
    idx = range(len(want)) if which is None else which
    return all(_close(got[i], want[i]) for i in idx)


def _fmt(t: torch.Tensor) -> str:
    def one(x):
        if isinstance(x, list):
            return [one(y) for y in x]
        return x if isinstance(x, (bool, int)) else float(f"{x:.4g}")
    t = t.double() if t.is_floating_point() else t
    return str(t.item() if t.numel() == 1 and t.dim() == 0 else one(t.tolist()))


def _shape_or_values(got: tuple, want: tuple) -> str:
    for g, w in zip(got, want):
        if g.shape != w.shape and not (g.numel() == w.numel() == 1):
            return f"your output has shape {list(g.shape)}, expected {list(w.shape)}"
    shown = [(g, w) for g, w in zip(got, want) if not _close(g, w)] or list(zip(got, want))
    return "; ".join(f"got {_fmt(g)}, expected {_fmt(w)}" for g, w in shown)


def _grads(out, args: tuple, which: list[int]) -> dict[int, torch.Tensor | None]:
    """Gradient of a fixed weighted sum of `out` with respect to the arguments in `which`."""
    if not which or not isinstance(out, torch.Tensor) or not out.requires_grad:
        return {i: None for i in which}
    w = torch.linspace(1.0, 2.0, out.numel(), dtype=torch.float64).reshape(out.shape)
    g = torch.autograd.grad((out.double() * w).sum(), [args[i] for i in which], allow_unused=True)
    return dict(zip(which, g))


def _nonzero(g: torch.Tensor | None) -> bool:
    return g is not None and bool((g != 0).any())


_REFERENCE_EFFECTS: dict = {}


def _judge(ex: _Exercise, fn: Callable, make: Callable[[], tuple]) -> str | None:
    """None when `fn` passes the case made by `make`, else the one-sentence reason."""
    if ex.call is not None:  # a whole step: its effect, compared by value only, computed once per case
        if make not in _REFERENCE_EFFECTS:
            _REFERENCE_EFFECTS[make] = _values(_outputs(_invoke(ex, ex.reference, make()), ex.n_outputs))
        ref_args, ref_out = None, None
        want = _REFERENCE_EFFECTS[make]
    else:
        ref_args = make()
        ref_out = _outputs(_invoke(ex, ex.reference, ref_args), ex.n_outputs)
        want = _values(ref_out)
    args = make()
    try:
        out = _invoke(ex, fn, args)
        if out is None:
            return "your function returned None: did you forget the `return`?"
        out = _outputs(out, ex.n_outputs)
        got = _values(out)
    except NotImplementedError:
        return NOT_WRITTEN
    except Exception as e:  # a learner's bug: show it as a failed case, keep going
        return f"raised {type(e).__name__}: {e}"
    if ex.integer and (got[0].is_floating_point() or got[0].dtype == torch.bool):
        return f"your indices are {got[0].dtype}: return integer indices (torch.long, as argmax gives)"
    if not _all_close(got, want):
        for m in ex.mistakes:
            if m.explains is not None:
                if m.explains(got, want, make()):
                    return m.sentence
                continue
            try:
                wrong = _values(_outputs(_invoke(ex, m.fn, make()), ex.n_outputs))
            except Exception:  # a wrong version that does not apply to this case
                continue
            if not _all_close(wrong, want, m.outputs) and _all_close(got, wrong, m.outputs):
                return m.sentence
        if any(g.shape == w.shape and not bool(torch.isfinite(g.double()).all()) and bool(torch.isfinite(w).all())
               for g, w in zip(got, want)):
            return ex.nonfinite
        return _shape_or_values(got, want)
    tracked = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    if not tracked:
        return None
    try:
        g_got = _grads(out[0], args, tracked)
    except Exception as e:
        return f"backward through your output raised {type(e).__name__}: {e}"
    g_want = _grads(ref_out[0], ref_args, tracked)
    for i in tracked:
        if i in ex.no_grad and _nonzero(g_got[i]):
            return ex.no_grad[i]
    for i in ex.grad:
        if i not in tracked:
            continue
        name = ex.arg_names[i] if i < len(ex.arg_names) else f"argument {i}"
        if g_got[i] is None and _nonzero(g_want[i]):
            return (f"your output carries no gradient to {name}: do not detach it "
                    "(nor go through .item() or a new tensor)")
        got_g = torch.zeros_like(args[i], dtype=torch.float64) if g_got[i] is None else g_got[i]
        want_g = torch.zeros_like(ref_args[i], dtype=torch.float64) if g_want[i] is None else g_want[i]
        if not _close(got_g, want_g):
            return f"the values match but the gradient with respect to {name} does not: check what you detach"
    return None


def _run(name: str, fn: Callable) -> bool:
    ex = _EXERCISES[name]
    cases = list(ex.cases())
    verdicts = [(case, _judge(ex, fn, make)) for case, make in cases]
    if all(why == NOT_WRITTEN for _, why in verdicts):  # the stub as shipped: an invitation, not a failure
        print(f"Your turn: write the body of {getattr(fn, '__name__', 'your function')} above (it still raises "
              f"NotImplementedError), then run this cell again: {len(cases)} cases are waiting "
              f"(b2b.exercises.solution({name!r}) shows b2b's version).")
        return False
    ok_all, said = True, set()
    for case, why in verdicts:
        ok_all &= why is None
        if why is None:
            print(f"  ok {case}")
        else:
            print(f"  x  {case}: {'the same as above' if why in said else why}")
            said.add(why)
    print("All cases pass." if ok_all else "Not yet: see the cases marked x.")
    return ok_all


def mistake(name: str, fn: Callable) -> str | None:
    """None when `fn` passes every case of exercise `name`, else the first failing case and the
    one-sentence reason (what `Algorithm.using` raises before a learner's piece trains)."""
    ex = _EXERCISES[name]
    for case, make in ex.cases():
        why = _judge(ex, fn, make)
        if why is not None:
            return f"{case}: {why}"
    return None


def _mask(lengths: list[int], C: int, left: bool = False) -> torch.Tensor:
    """(B, C) float mask with `lengths` real tokens per row, padded on the right (or the left)."""
    m = torch.zeros(len(lengths), C)
    for i, n in enumerate(lengths):
        if left:
            m[i, C - n:] = 1.0
        else:
            m[i, :n] = 1.0
    return m


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.clone().requires_grad_(True)


# ----------------------------------------------------------------------------- reward-model losses (notebooks 01, 02)

def _one_hot_logits(classes: list[int], sharp: float = 20.0) -> torch.Tensor:
    """Logits that put (almost) all probability on `classes` (numbered 1..10)."""
    logits = torch.zeros(len(classes), NUM_CLASSES)
    logits[torch.arange(len(classes)), torch.tensor(classes) - 1] = sharp
    return logits


def _cases_bradley_terry():
    def random():
        g = torch.Generator().manual_seed(0)
        return torch.randn(16, generator=g), torch.randn(16, generator=g)
    return [
        ("random scores", random),
        ("winner clearly ahead (loss near 0)", lambda: (torch.tensor([5.0, 8.0]), torch.tensor([-5.0, 0.0]))),
        ("winner clearly behind (large loss)", lambda: (torch.tensor([-5.0]), torch.tensor([5.0]))),
        ("huge margins (numerical stability)",
         lambda: (torch.tensor([-200.0, 200.0]), torch.tensor([200.0, -200.0]))),
    ]


_UNSTABLE_BT = ("numerically unstable: use logsigmoid, -F.logsigmoid(r_chosen - r_rejected): log(sigmoid(m)) is "
                "-inf once sigmoid(m) underflows to 0 (and an eps only caps the loss)")


def _bt_eps(eps):
    return lambda rw, rl: -torch.log(torch.sigmoid(rw - rl) + eps).mean()


_BT_MISTAKES = (
    _Mistake("chosen and rejected are swapped: the loss is -log sigmoid(r_chosen - r_rejected)",
             lambda rw, rl: -F.logsigmoid(rl - rw).mean()),
    _Mistake("you summed over the pairs: average them (.mean())", lambda rw, rl: -F.logsigmoid(rw - rl).sum()),
    *(_Mistake(_UNSTABLE_BT, _bt_eps(eps)) for eps in (1e-6, 1e-8, 1e-10, 1e-12)),
)


def _cases_ordinal():
    def random():
        g = torch.Generator().manual_seed(0)
        return torch.randn(8, NUM_CLASSES, generator=g), torch.randn(8, NUM_CLASSES, generator=g)
    return [
        ("random logits", random),
        ("winner in class 9, loser in class 2 (loss near 0)", lambda: (_one_hot_logits([9]), _one_hot_logits([2]))),
        ("winner in class 2, loser in class 9 (large loss)", lambda: (_one_hot_logits([2]), _one_hot_logits([9]))),
        ("same class (a tie is not a win)", lambda: (_one_hot_logits([5]), _one_hot_logits([5]))),
        ("very sharp logits (numerical stability)",
         lambda: (_one_hot_logits([1], 300.0), _one_hot_logits([10], 300.0))),
    ]


def _ordinal_mask(keep: Callable[[torch.Tensor], torch.Tensor], dim: int = -1, reduce: str = "mean"):
    def loss(lw, ll):
        joint = lw.float().log_softmax(dim)[:, :, None] + ll.float().log_softmax(dim)[:, None, :]
        m = keep(torch.ones(NUM_CLASSES, NUM_CLASSES, dtype=torch.bool))
        per_pair = -joint.masked_fill(~m, float("-inf")).logsumexp(dim=(1, 2))
        return per_pair.sum() if reduce == "sum" else per_pair.mean()
    return loss


def _ordinal_products(eps):
    def loss(lw, ll):
        joint = lw.softmax(-1)[:, :, None] * ll.softmax(-1)[:, None, :]
        return -torch.log(joint.tril(diagonal=-1).sum((1, 2)) + eps).mean()
    return loss


_UNSTABLE_ORDINAL = ("numerically unstable: the product of probabilities underflows (log(sum + eps) caps the "
                     "loss near -log eps); stay in log space: log_softmax, -inf outside i > j, logsumexp")

_ORDINAL_MISTAKES = (
    _Mistake("your mask sums P(loser's class above the winner's) (the seed's triu bug): keep i > j on [b, i, j], "
             "winner's class i first: tril(diagonal=-1)", _ordinal_mask(lambda m: m.triu(diagonal=1))),
    _Mistake("you count ties as wins: i == j is a tie, not a win; keep only i > j (tril(diagonal=-1), not "
             "diagonal=0)", _ordinal_mask(lambda m: m.tril(diagonal=0))),
    _Mistake("your mask sums P(loser's class at or above the winner's): keep only i > j, the winner's class i "
             "strictly higher: tril(diagonal=-1)", _ordinal_mask(lambda m: m.triu(diagonal=0))),
    _Mistake("your softmax runs over the batch (dim 0): take it over the ten classes (dim=-1)",
             _ordinal_mask(lambda m: m.tril(diagonal=-1), dim=0)),
    _Mistake("you summed over the pairs: average them (.mean())",
             _ordinal_mask(lambda m: m.tril(diagonal=-1), reduce="sum")),
    *(_Mistake(_UNSTABLE_ORDINAL, _ordinal_products(eps)) for eps in (1e-6, 1e-8, 1e-10, 1e-12)),
)


# ----------------------------------------------------------------------------- REINFORCE (notebook 03 on)

def _cases_moving_average():
    def later(seed, B, baseline, decay):
        def make():
            g = torch.Generator().manual_seed(seed)
            return torch.randn(B, generator=g) + 1.0, baseline, decay
        return make
    return [
        ("first step (no baseline yet: the batch mean)", lambda: (torch.tensor([1.0, 2.0, 3.0, 6.0]), None, 0.9)),
        ("later step (baseline 0.5, decay 0.9)", later(1, 4, 0.5, 0.9)),
        ("later step (baseline -1.0, decay 0.8)", later(2, 3, -1.0, 0.8)),
    ]


def _ma_update_first(r, b, decay):
    mean = r.mean().item()
    b = mean if b is None else float(b)
    new = decay * b + (1 - decay) * mean
    return r - new, new


def _ma_swapped(r, b, decay):
    mean = r.mean().item()
    b = mean if b is None else float(b)
    return r - b, (1 - decay) * b + decay * mean


def _ma_sign(r, b, decay):
    a, new = adv_ref.moving_average_baseline(r, b, decay)
    return -a, new


def _ma_none_is_zero(r, b, decay):
    return adv_ref.moving_average_baseline(r, 0.0 if b is None else b, decay)


_MA_MISTAKES = (
    _Mistake("you update the baseline before subtracting it, so this batch's own mean leaks into its "
             "advantages: subtract the old baseline first, then update", _ma_update_first),
    _Mistake("decay and 1 - decay are swapped: new = decay * old + (1 - decay) * batch mean (the old "
             "baseline keeps most of the weight)", _ma_swapped, outputs=(1,)),
    _Mistake("the sign is flipped: the advantage is R - baseline, not baseline - R", _ma_sign),
    _Mistake("on the first step (baseline None) the baseline is this batch's mean, not 0",
             _ma_none_is_zero, outputs=(0,)),
)


def _cases_reinforce():
    def make_case(seed, lengths, C, left=False):
        def make():
            g = torch.Generator().manual_seed(seed)
            B = len(lengths)
            a = torch.randn(B, generator=g)
            lp = -3.0 * torch.rand(B, C, generator=g)   # padding positions hold log-probs too
            return _leaf(a), _leaf(lp), _mask(lengths, C, left)
        return make
    return [
        ("right padding (3 sequences)", make_case(0, [4, 2, 3], 4)),
        ("left padding (4 sequences)", make_case(1, [5, 3, 1, 4], 5, left=True)),
        ("no padding (2 sequences)", make_case(2, [3, 3], 3)),
    ]


_MEAN_TOKENS = ("you averaged over tokens: sum the masked log-probs of each sequence (log pi(y|x)), "
                "then take the mean over the batch")

_REINFORCE_MISTAKES = (
    _Mistake("the sign is flipped: the loss is -(A * sum_t log pi).mean(), so that gradient descent on it "
             "raises the log-probs of samples with A > 0",
             lambda a, lp, m: (a.detach() * (lp * m).sum(1)).mean()),
    _Mistake("padding counts in your loss: multiply the log-probs by the mask before summing",
             lambda a, lp, m: -(a.detach() * lp.sum(1)).mean()),
    _Mistake(_MEAN_TOKENS, lambda a, lp, m: -(a.detach() * (lp * m).sum(1) / m.sum(1)).mean()),
    _Mistake(_MEAN_TOKENS, lambda a, lp, m: -(a.detach()[:, None] * lp * m).sum() / m.sum()),
    _Mistake(_MEAN_TOKENS, lambda a, lp, m: -(a.detach()[:, None] * lp * m).mean()),
    _Mistake("you summed over the batch: take the mean over the sequences (.mean())",
             lambda a, lp, m: -(a.detach() * (lp * m).sum(1)).sum()),
)


# ----------------------------------------------------------------------------- per-token log-probs (notebook 03)

def _cases_logprobs():
    def make_case(seed, P, lengths, C, V, T):
        def make():
            g = torch.Generator().manual_seed(seed)
            B = len(lengths)
            ids = torch.randint(V, (B, P + C), generator=g)
            logits = 3.0 * torch.randn(B, P + C, V, generator=g)  # the last position predicts nothing sampled
            return _leaf(logits), ids, P, _mask(lengths, C), T
        return make
    return [
        ("3 answers padded on the right, temperature 1", make_case(0, 3, [4, 2, 3], 4, 7, 1.0)),
        ("2 answers, a longer prompt, temperature 0.7", make_case(1, 5, [3, 1], 3, 11, 0.7)),
        ("4 answers, temperature 1.3", make_case(2, 2, [2, 4, 1, 3], 4, 5, 1.3)),
    ]


def _lp_at(offset: int, T: bool = True, kind: str = "log"):
    """A wrong version: the logits `offset` positions off the right ones, optionally without the
    temperature, gathering log-probs (`kind` "log"), probabilities ("prob") or raw logits ("raw")."""
    def wrong(logits, ids, P, m, t):
        C = ids.shape[1] - P
        z = logits[:, P - 1 + offset:P - 1 + offset + C].float()
        z = z / t if T else z
        if kind == "log":
            z = z.log_softmax(-1)
        elif kind == "prob":
            z = z.softmax(-1)
        return z.gather(-1, ids[:, P:, None]).squeeze(-1) * m
    return wrong


_SHIFT = ("off by one: the logits at position j predict the token at j + 1, so completion token t "
          "(at P + t) is read from logits[:, P - 1 + t]: logits[:, P - 1:-1]")

_LOGPROB_MISTAKES = (
    _Mistake(_SHIFT, _lp_at(1)),
    _Mistake("you gathered probabilities: take log_softmax (or z - logsumexp(z)), not softmax",
             _lp_at(0, kind="prob")),
    _Mistake("you gathered raw logits: normalise them first (log_softmax over the vocabulary, the last dimension)",
             _lp_at(0, kind="raw")),
    _Mistake("the answers were sampled at temperature T: divide the logits by T before the log-softmax",
             _lp_at(0, T=False)),
    _Mistake("divide the logits by T before the log-softmax, not the log-probs after it",
             lambda logits, ids, P, m, t: _lp_at(0, T=False)(logits, ids, P, m, t) / t),
    _Mistake("padding counts: multiply by the completion mask (0 after an answer ends)",
             lambda logits, ids, P, m, t: _lp_at(0)(logits, ids, P, torch.ones_like(m), t)),
    _Mistake("the log-softmax runs over the wrong dimension: normalise over the vocabulary (dim=-1)",
             lambda logits, ids, P, m, t: (logits[:, P - 1:-1] / t).log_softmax(1).gather(
                 -1, ids[:, P:, None]).squeeze(-1) * m),
)


# ----------------------------------------------------------------------------- the RL step (notebook 03)

@functools.lru_cache(maxsize=1)
def _step_models():
    """The tiny policy, its tokenizer, the shipped Level 1 reward model and ten training prompts."""
    from b2b.config import data_dir
    from b2b.data import load_prompts
    from b2b.models import load_policy, load_reward_model, load_tokenizer

    d = data_dir()
    torch.manual_seed(0)
    rm = load_reward_model(d / "rm-level1").eval().requires_grad_(False)
    return (load_policy(d / "tiny-sft", trainable=True), load_tokenizer(d / "tiny-sft"), rm,
            load_prompts(d / "prompts_train.jsonl")[:10])


def _step_effect(fn, args):
    """Run a step function on the case and return what it did: (the new baseline, the rewards, the
    norm of the change of the policy's weights, the change along a fixed random direction)."""
    policy = args[0]
    before = torch.cat([p.detach().flatten() for p in policy.parameters()]).clone()
    out = fn(*args)
    if out is None:
        return None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError("expected (new baseline, rewards) back")
    baseline, rewards = out
    delta = torch.cat([p.detach().flatten() for p in policy.parameters()]) - before
    probe = torch.randn(delta.numel(), generator=torch.Generator().manual_seed(0)).to(delta.device)
    return (torch.as_tensor(float(baseline)), torch.as_tensor(rewards).detach().float(), delta.norm(),
            (delta * probe).sum())


@functools.lru_cache(maxsize=1)
def _cases_rl_step():
    """Two steps on copies of the tiny policy (the same make functions on every call, so that the
    reference's result is computed once per case: `_judge`)."""
    def make_case(seed, n, baseline, max_norm, stale):
        def make():
            policy, tok, rm, prompts = _step_models()
            policy = copy.deepcopy(policy)
            opt = torch.optim.SGD(policy.parameters(), lr=0.05)  # plain SGD: the step moves by the gradient itself
            if stale:  # what an earlier step left in .grad
                for p in policy.parameters():
                    p.grad = torch.full_like(p, 0.01)
            gen = torch.Generator(next(policy.parameters()).device).manual_seed(seed)  # a GPU's models: a GPU's draws
            return (policy, tok, rm, prompts[:n], opt, baseline, gen, 6, max_norm)
        return make
    return [
        ("the first step (no baseline yet), 4 prompts, gradients left from before", make_case(0, 4, None, 1.0, True)),
        ("a later step (baseline 3.0), 3 prompts, max_grad_norm 0.5", make_case(1, 3, 3.0, 0.5, False)),
    ]


def _step_variant(zero=True, step=True, clip=True, sign=1.0, baseline=True):
    """b2b's `reinforce_step` with one thing done wrong."""
    from b2b.advantages import moving_average_baseline, reinforce_loss
    from b2b.reward import reward_scores, scalar_reward
    from b2b.rollout import rollout_logprobs, sample_completions

    def wrong(policy, tokenizer, reward_model, prompts, optimizer, b, generator, max_new_tokens=64, max_grad_norm=1.0):
        policy.eval()
        ro = sample_completions(policy, tokenizer, prompts, max_new_tokens, 1.0, generator)
        with torch.no_grad():
            r = scalar_reward(reward_scores(reward_model, ro.input_ids, ro.attention_mask))
        adv, nb = moving_average_baseline(r, b)
        if not baseline:
            adv = r
        policy.train()
        loss = sign * reinforce_loss(adv, rollout_logprobs(policy, ro), ro.completion_mask)
        if zero:
            optimizer.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
        if step:
            optimizer.step()
        return nb, r
    return wrong


_RL_STEP_MISTAKES = (
    _Mistake("your step did not change the policy: call optimizer.step() after loss.backward()",
             _step_variant(step=False), outputs=(2, 3)),
    _Mistake("the gradient an earlier step left in .grad was added to yours: optimizer.zero_grad() before "
             "loss.backward()", _step_variant(zero=False), outputs=(2, 3)),
    _Mistake("the gradient was not clipped: torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm) "
             "between loss.backward() and optimizer.step()", _step_variant(clip=False), outputs=(2, 3)),
    _Mistake("your step moved the policy the wrong way: the optimizer minimises, so the loss is -A log pi "
             "(b2b's reinforce_loss, or yours from above)", _step_variant(sign=-1.0), outputs=(2, 3)),
    _Mistake("no baseline: the advantages are the rewards minus the moving-average baseline "
             "(moving_average_baseline, or yours from above)", _step_variant(baseline=False), outputs=(2, 3)),
)


def _cases_last_token():
    t = lambda rows: (lambda: (torch.tensor(rows),))  # noqa: E731
    return [
        ("right padding", t([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])),
        ("left padding (as generation pads prompts)", t([[0, 0, 0, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])),
        ("left-padded prompt + right-padded completion",
         t([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])),
    ]


_LAST_MISTAKES = (
    _Mistake("off by one: you return the position just after the last real token (the first pad); "
             "the last real token is one before it",
             lambda m: m.shape[1] - m.long().flip(1).argmax(1)),
    _Mistake("mask.sum(1) counts the real tokens, it is not an index: find the position of the last 1 "
             "(e.g. T - 1 - mask.flip(1).argmax(1))", lambda m: m.long().sum(1)),
    _Mistake("you assume right padding only (count - 1): on left-padded rows the last real token is not "
             "at count - 1; find the position of the last 1 (e.g. flip the mask and argmax)",
             lambda m: m.long().sum(1) - 1),
    _Mistake("you return the first real token (argmax finds the first 1): flip the mask to find the last",
             lambda m: m.long().argmax(1)),
)


# ----------------------------------------------------------------------------- completions' diversity

def _distinct_2(texts: list[str]) -> float:
    """distinct-2: unique word bigrams / all word bigrams, pooled over all `texts` (0.0 if none).

    Words as b2b counts them: `b2b.tinyworld.gold.words(text)`, the lower-cased words and numbers
    of the text (punctuation dropped, hyphenated words kept whole)."""
    grams = []
    for text in texts:
        ws = words(text)
        grams += list(zip(ws, ws[1:]))
    return len(set(grams)) / len(grams) if grams else 0.0


def _cases_distinct():
    t = lambda texts: (lambda: (list(texts),))  # noqa: E731
    return [
        ("the same bigrams in two texts (pooled over the set)",
         t(["the cat sat on the mat", "the cat sat down", "a dog ran"])),
        ("capitals and punctuation", t(["The cat sat. The cat sat!", "the cat, the CAT"])),
        ("hyphens and numbers", t(["A sea-lion has 2 fins.", "a sea lion has 2 fins"])),
        ("no bigram at all (0.0)", t(["Hi", ""])),
    ]


def _distinct_tokenized(tokenize):
    def d2(texts):
        grams = [g for t in texts for g in ngrams(tokenize(t), 2)]
        return len(set(grams)) / len(grams) if grams else 0.0
    return d2


_TOKENIZE = ("tokenize as b2b does: b2b.tinyworld.gold.words(text) lower-cases the text and keeps its words "
             "and numbers (punctuation dropped, hyphenated words whole)")

_DISTINCT_MISTAKES = (
    _Mistake("you computed distinct-2 per text and averaged: b2b pools the bigrams of all texts, then "
             "divides unique by total", lambda texts: sum(distinct_n([t], 2) for t in texts) / len(texts)),
    _Mistake("you counted unigrams (single words): distinct-2 counts bigrams, pairs of consecutive words",
             lambda texts: distinct_n(texts, 1)),
    *(_Mistake(_TOKENIZE, _distinct_tokenized(tok)) for tok in (
        str.split, lambda t: t.lower().split(), lambda t: WORD_RE.findall(t),
        lambda t: re.findall(r"\w+", t.lower()))),
)


# ----------------------------------------------------------------------------- KL to the reference

def _kl_make(seed, lengths, C, left=False, extra=()):
    def make():
        g = torch.Generator().manual_seed(seed)
        B = len(lengths)
        lp = -3.0 * torch.rand(B, C, generator=g)
        ref = -3.0 * torch.rand(B, C, generator=g)
        return (lp, ref, _mask(lengths, C, left), *extra)
    return make


def _cases_kl_estimators():
    return [
        ("k1 (right padding)", _kl_make(0, [4, 2, 3], 4, extra=("k1",))),
        ("k2 (right padding)", _kl_make(1, [4, 2, 3], 4, extra=("k2",))),
        ("k3 (right padding)", _kl_make(2, [4, 2, 3], 4, extra=("k3",))),
        ("k3 (left padding)", _kl_make(3, [5, 2], 5, left=True, extra=("k3",))),
    ]


def _kl_if(estimator, wrong):
    """The reference, except `wrong(log_ratio) * mask` for one estimator."""
    def kl(lp, ref, m, est):
        if est != estimator:
            return adv_ref.kl_per_token(lp, ref, m, est)
        return wrong(lp - ref) * m
    return kl


_KL_MISTAKES = (
    _Mistake("your k3 is exp(l) - 1 - l: with l = log pi - log pi_ref it is exp(-l) - 1 + l "
             "(or your log-ratio is the wrong way round)", _kl_if("k3", lambda l: torch.expm1(l) - l)),
    _Mistake("your log-ratio is the wrong way round: l = log pi - log pi_ref (logprobs - ref_logprobs)",
             lambda lp, ref, m, est: adv_ref.kl_per_token(ref, lp, m, est)),
    _Mistake("your k2 is missing the 1/2: k2 = l^2 / 2", _kl_if("k2", lambda l: l ** 2)),
    _Mistake("the mask is not applied: multiply by the mask so padding positions are 0",
             lambda lp, ref, m, est: adv_ref.kl_per_token(lp, ref, torch.ones_like(m), est)),
)


def _kl_shaped_reward(reward, logprobs, ref_logprobs, mask, beta):
    """R_i = r_i - beta * sum_t m_it * (log pi(y_it) - log pi_ref(y_it)), with the log-probs detached:
    the KL enters as a reward, not as a differentiated loss (k1, the unbiased one)."""
    kl = ((logprobs.detach() - ref_logprobs.detach()) * mask).sum(1)
    return reward - beta * kl


def _cases_kl_shaped():
    def make_case(seed, lengths, C, beta, left=False):
        base = _kl_make(seed, lengths, C, left)

        def make():
            lp, ref, m = base()
            g = torch.Generator().manual_seed(seed + 100)
            return torch.randn(len(lengths), generator=g), _leaf(lp), _leaf(ref), m, beta
        return make
    return [
        ("right padding, beta 0.1", make_case(0, [4, 2, 3], 4, 0.1)),
        ("left padding, beta 0.5", make_case(1, [5, 2], 5, 0.5, left=True)),
        ("four sequences, beta 0.05", make_case(2, [1, 3, 4, 2], 4, 0.05)),
    ]


def _seq_kl(lp, ref, m):
    return ((lp.detach() - ref.detach()) * m)


_KL_MEAN = "you averaged the KL over tokens: sum it over each sequence's masked tokens"
_KL_DETACH = ("your R carries gradient to the policy's log-probs: detach them (logprobs.detach()): the KL enters "
              "as a reward, not as a loss")
_KL_DETACH_REF = ("your R carries gradient to the reference's log-probs: detach them too (ref_logprobs.detach()): "
                  "the KL enters as a reward, a constant of the loss")

_KL_SHAPED_MISTAKES = (
    _Mistake("the penalty has the wrong sign: R = r - beta * KL (a policy far from the reference earns less)",
             lambda r, lp, ref, m, beta: r + beta * _seq_kl(lp, ref, m).sum(1)),
    _Mistake(_KL_MEAN, lambda r, lp, ref, m, beta: r - beta * _seq_kl(lp, ref, m).sum(1) / m.sum(1)),
    _Mistake(_KL_MEAN, lambda r, lp, ref, m, beta: r - beta * _seq_kl(lp, ref, m).mean(1)),
    _Mistake("the mask is not applied: padding positions count in your KL; multiply by the mask before summing",
             lambda r, lp, ref, m, beta: r - beta * _seq_kl(lp, ref, torch.ones_like(m)).sum(1)),
)


# ----------------------------------------------------------------------------- RLOO

def _cases_rloo():
    def make_case(seed, B, k):
        def make():
            g = torch.Generator().manual_seed(seed)
            return torch.randn(B, generator=g), k
        return make
    return [
        ("6 samples, k = 3 (2 prompts)", make_case(0, 6, 3)),
        ("4 samples, k = 2 (2 prompts)", make_case(1, 4, 2)),
        ("8 samples, k = 4 (2 prompts)", make_case(2, 8, 4)),
    ]


def _rloo_strided(r, k):
    return adv_ref.rloo_advantages(r.view(k, -1).T.reshape(-1), k).view(-1, k).T.reshape(-1)


def _rloo_over_k(r, k):
    g = r.view(-1, k)
    return (g - (g.sum(1, keepdim=True) - g) / k).view(-1)


_RLOO_MISTAKES = (
    _Mistake("your baseline includes the sample itself (the group mean): use the mean of the other k-1 "
             "samples of its prompt", adv_ref.group_mean_baseline),
    _Mistake("your groups are strided (samples i, i + B/k, ...): a prompt's k samples are consecutive, "
             "rewards.view(-1, k)", _rloo_strided),
    _Mistake("you divide by k: the other samples of a prompt are k - 1, so divide their sum by k - 1",
             _rloo_over_k),
)


# ----------------------------------------------------------------------------- REINFORCE++

def _cases_returns():
    def random(seed, lengths, C, left=False):
        def make():
            g = torch.Generator().manual_seed(seed)
            return torch.randn(len(lengths), C, generator=g), _mask(lengths, C, left)
        return make

    def sparse():  # REINFORCE++'s shape: the KL penalty at every token, the reward at the last
        g = torch.Generator().manual_seed(2)
        m = _mask([3, 5, 2], 5)
        kl = 0.5 * torch.rand(3, 5, generator=g)
        return adv_ref.token_level_rewards(torch.tensor([1.0, -2.0, 0.5]), kl, m, 0.1), m
    return [
        ("right padding (rewards at the pads too)", random(0, [4, 2, 3], 4)),
        ("KL at every token, reward at the last", sparse),
        ("left padding", random(1, [5, 3], 5, left=True)),
    ]


_RETURNS_MISTAKES = (
    _Mistake("you summed from the start (returns so far): G_t sums the rewards from t to the end, "
             "flip, cumsum, flip", lambda r, m: (r * m).cumsum(1) * m),
    _Mistake("off by one: G_t includes the reward at t itself", lambda r, m: (adv_ref.returns_to_go(r, m) - r) * m),
    _Mistake("the mask is not applied: padding rewards leak into the returns and the pads are not 0; "
             "multiply by the mask before summing and after", lambda r, m: r.flip(1).cumsum(1).flip(1)),
    _Mistake("padding rewards leak into the returns: multiply the rewards by the mask before summing",
             lambda r, m: r.flip(1).cumsum(1).flip(1) * m),
)


def _cases_whiten():
    def make_case(seed, lengths, C, left=False):
        def make():
            g = torch.Generator().manual_seed(seed)
            m = _mask(lengths, C, left)
            x = torch.randn(len(lengths), C, generator=g) * (1 + torch.arange(len(lengths)))[:, None]
            return torch.where(m > 0, x, torch.full_like(x, 7.0)), m    # padding holds a large value
        return make

    def constant():
        m = _mask([4, 2, 3], 4)
        return torch.where(m > 0, torch.full_like(m, 0.5), torch.full_like(m, 3.0)), m
    return [
        ("right padding", make_case(0, [4, 2, 3], 4)),
        ("left padding", make_case(1, [3, 5], 5, left=True)),
        ("all values equal (zero variance: result 0)", constant),
    ]


def _whiten_with(stats: str, unbiased: bool = False):
    def whiten(x, m):
        m = m.to(x.dtype)
        if stats == "all":
            mu, var = x.mean(), x.var(unbiased=False)
        elif stats == "row":
            n = m.sum(1, keepdim=True)
            mu = (x * m).sum(1, keepdim=True) / n
            var = (((x - mu) * m) ** 2).sum(1, keepdim=True) / (n - int(unbiased))
        else:
            n = m.sum()
            mu = (x * m).sum() / n
            var = (((x - mu) * m) ** 2).sum() / (n - int(unbiased))
        return (x - mu) / (var.clamp(min=1e-8).sqrt() + 1e-8) * m
    return whiten


def _not_zeroed(got, want, args) -> bool:
    """Right inside the mask (args[1]), not zero outside it."""
    (g,), (w,), m = got, want, args[1].bool()
    return g.shape == w.shape and _close(g[m], w[m]) and bool((g[~m].abs() > ATOL).any())


_WHITEN_MISTAKES = (
    _Mistake("your mean and variance include the padded entries: take them over the masked entries only",
             _whiten_with("all")),
    _Mistake("you whiten each row on its own: b2b takes one mean and variance over all masked entries of "
             "the batch", _whiten_with("row")),
    _Mistake("the result is not zero outside the mask: multiply it by the mask", explains=_not_zeroed),
    _Mistake("you used the unbiased variance (n - 1): b2b divides by n, the number of masked entries",
             _whiten_with("batch", unbiased=True)),
)


# ----------------------------------------------------------------------------- PPO's clipped surrogate

def _cases_clipped():
    def make_case(seed, lengths, C, clip, spread, left=False):
        def make():
            g = torch.Generator().manual_seed(seed)
            B = len(lengths)
            old = -3.0 * torch.rand(B, C, generator=g)
            lp = old + spread * (2 * torch.rand(B, C, generator=g) - 1)
            a = torch.randn(B, C, generator=g)
            return _leaf(lp), _leaf(old), _leaf(a), _mask(lengths, C, left), clip
        return make
    return [
        ("ratios beyond the clip range (right padding)", make_case(0, [4, 2, 3], 4, 0.2, 0.6)),
        ("clip 0.1, left padding", make_case(1, [5, 2], 5, 0.1, 0.5, left=True)),
        ("ratios near 1 (four sequences)", make_case(2, [2, 4, 3, 1], 4, 0.2, 0.05)),
    ]


def _ppo_terms(lp, old, a, clip, clip_adv=None):
    ratio = torch.exp(lp.detach() - old.detach())
    a = a.detach()
    if clip_adv is not None:
        return ratio * a, ratio * a.clamp(*clip_adv(clip))
    return ratio * a, ratio.clamp(1 - clip, 1 + clip) * a


def _ppo(pick=torch.minimum, sign=-1.0, clip_adv=None, reduce="tokens"):
    def loss(lp, old, a, m, clip):
        term = pick(*_ppo_terms(lp, old, a, clip, clip_adv))
        if reduce == "tokens":
            return sign * (term * m).sum() / m.sum()
        if reduce == "padded":
            return sign * (term * m).mean()
        if reduce == "unmasked":
            return sign * term.mean()
        return sign * ((term * m).sum(1) / m.sum(1)).mean()      # "sequences"
    return loss


_CLIP_ADV = "you clipped the advantage: clip the ratio, clamp(ratio, 1 - clip, 1 + clip) * A"
_PPO_PADDING = "padding counts in your loss: average over the masked tokens only, (term * mask).sum() / mask.sum()"

_CLIPPED_MISTAKES = (
    _Mistake("max instead of min: PPO is pessimistic, it keeps the smaller of ratio * A and clipped ratio * A",
             _ppo(pick=torch.maximum)),
    _Mistake(_CLIP_ADV, _ppo(clip_adv=lambda c: (1 - c, 1 + c))),
    _Mistake(_CLIP_ADV, _ppo(clip_adv=lambda c: (-c, c))),
    _Mistake("the sign is flipped: the loss is minus the clipped objective, -(min(...) * mask).sum() / mask.sum()",
             _ppo(sign=1.0)),
    _Mistake(_PPO_PADDING, _ppo(reduce="padded")),
    _Mistake(_PPO_PADDING, _ppo(reduce="unmasked")),
    _Mistake("you averaged per sequence, then over the batch: b2b averages over all masked tokens of the batch",
             _ppo(reduce="sequences")),
)


# ----------------------------------------------------------------------------- the ordinal model's readout (notebook 02)

def _cases_expected_class():
    def random(seed, B):
        def make():
            return (torch.randn(B, NUM_CLASSES, generator=torch.Generator().manual_seed(seed)) * 2,)
        return make
    return [
        ("sure of classes 3 and 9", lambda: (_one_hot_logits([3, 9]),)),
        ("4 random answers", random(0, 4)),
        ("2 random answers, flatter", random(1, 2)),
    ]


_EXPECTED_MISTAKES = (
    _Mistake("off by one: the classes are 1..10, not 0..9 (torch.arange(1, K + 1))",
             lambda z: (z.softmax(-1) * torch.arange(z.shape[-1])).sum(-1)),
    _Mistake("your softmax runs over the batch: each answer's ten probabilities sum to one, softmax(dim=-1)",
             lambda z: (z.softmax(0) * torch.arange(1, z.shape[-1] + 1)).sum(-1)),
    _Mistake("you weighted the classes by their logits: turn the logits into probabilities first (softmax)",
             lambda z: (z * torch.arange(1, z.shape[-1] + 1)).sum(-1)),
    _Mistake("you took the most likely class (argmax): the readout is the expectation, sum_k k * p_k, "
             "which moves smoothly as the probabilities move", lambda z: (z.argmax(-1) + 1).float()),
)


# ----------------------------------------------------------------------------- a collapse detector (notebook 04)

def _cases_collapse():
    t = lambda proxy, d2, keep=0.5: (lambda: (torch.tensor(proxy), torch.tensor(d2), keep))  # noqa: E731
    return [
        ("a slow collapse", t([0.0, 1.0, 2.0, 3.0, 4.0], [0.8, 0.7, 0.5, 0.35, 0.2])),
        ("diversity falls while the proxy falls too (no flag there)",
         t([1.0, 2.0, 0.5, 3.0], [0.6, 0.5, 0.2, 0.25])),
        ("keep = 0.7, a collapse that recovers", t([0.0, 0.5, 1.0, 1.5, 2.0], [0.5, 0.3, 0.4, 0.3, 0.45], 0.7)),
    ]


_COLLAPSE_MISTAKES = (
    _Mistake("you compared each evaluation with the one before it: compare with the SFT policy's, index 0",
             lambda p, d, keep: torch.cat([torch.zeros(1, dtype=torch.bool), (p[1:] > p[:-1]) & (d[1:] < keep * d[:-1])])),
    _Mistake("you flag on diversity alone: a policy that learned one good answer per prompt also loses "
             "diversity; flag only where the proxy is above the SFT policy's too",
             lambda p, d, keep: d < keep * d[0]),
    _Mistake("either condition raises your flag (or): both must hold (and, &)",
             lambda p, d, keep: (p > p[0]) | (d < keep * d[0])),
    _Mistake("your flag stays up once raised: flag each evaluation on its own values",
             lambda p, d, keep: ((p > p[0]) & (d < keep * d[0])).cummax(0).values),
)


# ----------------------------------------------------------------------------- the sampling-time penalty (notebook 05)

def _cases_repetition():
    def make_case(seed, B, V, penalty):
        def make():
            g = torch.Generator().manual_seed(seed)
            return torch.randn(B, V, generator=g) * 3, torch.rand(B, V, generator=g) < 0.4, penalty
        return make
    return [
        ("hand-made: seen tokens with logits 3 and -1",
         lambda: (torch.tensor([[3.0, 1.0, -1.0, 0.5]]), torch.tensor([[True, False, True, False]]), 1.2)),
        ("3 rows of 8 tokens, penalty 1.2", make_case(0, 3, 8, 1.2)),
        ("2 rows of 6 tokens, penalty 2.0", make_case(1, 2, 6, 2.0)),
    ]


def _rep_divide_all(z, seen, p):
    return torch.where(seen, z / p, z)


_REPETITION_MISTAKES = (
    _Mistake("you divided every seen logit by the penalty: a negative logit divided by 1.2 moves UP toward 0, so that "
             "seen token gains on every unseen one; multiply negative logits by the penalty", _rep_divide_all),
    _Mistake("your cases are swapped: divide positive logits by the penalty, multiply negative ones (both lower "
             "the token)", lambda z, seen, p: torch.where(seen, torch.where(z > 0, z * p, z / p), z)),
    _Mistake("you penalised the unseen tokens: the penalty applies where `seen` is True",
             lambda z, seen, p: torch.where(~seen, torch.where(z > 0, z / p, z * p), z)),
    _Mistake("you subtracted the penalty: CTRL's penalty divides (positive) or multiplies (negative) the logit",
             lambda z, seen, p: torch.where(seen, z - p, z)),
)


def _cases_repeated_ngrams():
    t = lambda rows, lengths, n: (lambda: (torch.tensor(rows), _mask(lengths, len(rows[0])), n))  # noqa: E731
    return [
        ("one trigram said twice", t([[5, 6, 7, 5, 6, 7, 9, 0]], [7], 3)),
        ("padding that repeats (it must not count)", t([[1, 2, 3, 4, 0, 0, 0, 0], [8, 8, 8, 8, 8, 0, 0, 0]],
                                                        [4, 5], 3)),
        ("bigrams, 3 rows, one too short for any", t([[1, 2, 1, 2, 1, 2], [4, 0, 0, 0, 0, 0], [3, 4, 5, 3, 4, 6]],
                                                     [6, 1, 6], 2)),
    ]


def _rep_ngrams_with(count_padding=False, denominator="all", first_counts=False):
    def fn(ids, mask, n):
        out = []
        for row, m in zip(ids.tolist(), mask.tolist()):
            L = len(row) if count_padding else int(sum(m))
            grams = [tuple(row[i:i + n]) for i in range(L - n + 1)]
            if not grams:
                out.append(0.0)
                continue
            c = Counter(grams)
            dup = sum(v for v in c.values() if v > 1) if first_counts else len(grams) - len(c)
            out.append(dup / (len(c) if denominator == "distinct" else len(grams)))
        return torch.tensor(out)
    return fn


_REPEATED_MISTAKES = (
    _Mistake("padding counts: only n-grams that lie wholly inside the mask are the answer's",
             _rep_ngrams_with(count_padding=True)),
    _Mistake("you counted the first occurrence as a repeat too: an n-gram said twice is one repeat, "
             "(number of n-grams - number of distinct n-grams)", _rep_ngrams_with(first_counts=True)),
    _Mistake("you divided by the distinct n-grams: the share is over all the answer's n-grams",
             _rep_ngrams_with(denominator="distinct")),
)


# ----------------------------------------------------------------------------- GRPO (notebook 08's challenge)

def _cases_grpo():
    def make_case(seed, B, k):
        def make():
            return torch.randn(B, generator=torch.Generator().manual_seed(seed)) * 2 + 5, k
        return make
    return [
        ("6 samples, k = 3 (2 prompts)", make_case(0, 6, 3)),
        ("8 samples, k = 4 (2 prompts)", make_case(1, 8, 4)),
        ("a group whose 4 rewards are equal (advantages 0)",
         lambda: (torch.tensor([1.0, 2.0, 4.0, 9.0, 3.0, 3.0, 3.0, 3.0]), 4)),
    ]


def _grpo_with(std, center=None, eps=1e-4):
    def fn(r, k):
        g = r.view(-1, k)
        c = g - (g.mean(1, keepdim=True) if center is None else center(g, k))
        return (c / (std(r, g) + eps)).view(-1)
    return fn


_GRPO_MISTAKES = (
    _Mistake("you divided by the batch's standard deviation: GRPO divides each group by its own, g.std(1)",
             _grpo_with(lambda r, g: r.std())),
    _Mistake("you divided by the population standard deviation (over k): GRPO, as TRL takes it, uses the "
             "sample one, over k - 1 (torch's std default)", _grpo_with(lambda r, g: g.std(1, unbiased=False, keepdim=True))),
    _Mistake("your groups are strided (samples i, i + B/k, ...): a prompt's k samples are consecutive, "
             "rewards.view(-1, k)",
             lambda r, k: adv_ref.grpo_advantages(r.view(k, -1).T.reshape(-1), k).view(-1, k).T.reshape(-1)),
    _Mistake("you left the standard deviation out: that is Dr. GRPO; GRPO divides by the group's std + eps",
             lambda r, k: adv_ref.grpo_advantages(r, k, scale=False)),
    _Mistake("your baseline leaves the sample out (RLOO's): GRPO subtracts the whole group's mean",
             _grpo_with(lambda r, g: g.std(1, keepdim=True), center=lambda g, k: (g.sum(1, keepdim=True) - g) / (k - 1))),
)


def _cases_bon_kl():
    return [
        ("n = 1, 2, 4, 16, 256", lambda: (torch.tensor([1, 2, 4, 16, 256]),)),
        ("n = 3, 5, 1000 (not powers of two)", lambda: (torch.tensor([3, 5, 1000]),)),
    ]


_BON_KL_MISTAKES = (
    _Mistake("your result is log n alone: the - (n - 1) / n is missing, or was computed with integer division "
             "((n - 1) // n is 0 for integers: use /). log n is the KL of keeping only the base policy's top 1/n; "
             "best-of-n keeps every answer, the lower-ranked ones with less weight",
             lambda n: torch.log(n.double())),
    _Mistake("your (n - 1) / n is n - 1: divide by n", lambda n: torch.log(n.double()) - (n - 1)),
    _Mistake("your sign is flipped: KL_bon(n) = log n - (n - 1) / n (0 at n = 1, then growing like log n)",
             lambda n: (n - 1) / n.double() - torch.log(n.double())),
    _Mistake("you took log base 2: the course measures KL in nats, torch.log",
             lambda n: torch.log2(n.double()) - (n - 1) / n.double()),
)


def _cases_fit_bon_law():
    def noisy(seed, J, alpha, beta, noise):
        def make():
            g = torch.Generator().manual_seed(seed)
            d = torch.sort(torch.rand(J, generator=g, dtype=torch.float64) * 2.2).values
            d[0] = 0.0  # n = 1: no distance, no gain
            return d, d * (alpha - beta * d) + noise * torch.randn(J, generator=g, dtype=torch.float64) * (d > 0)
        return make
    return [
        ("9 points on the law exactly (alpha 3, beta 1.2)", noisy(0, 9, 3.0, 1.2, 0.0)),
        ("9 noisy points (alpha 2, beta 0.9)", noisy(1, 9, 2.0, 0.9, 0.1)),
        ("6 noisy points past the peak (alpha 0.7, beta 0.4)", noisy(2, 6, 0.7, 0.4, 0.05)),
    ]


def _fit_bon_law(d, gain):
    f = overopt_ref.fit_law("bon", d, gain)
    return torch.tensor(f.alpha), torch.tensor(f.beta)


def _fit_with(design, out=lambda sol: (sol[0], sol[1])):
    def fn(d, gain):
        d, y = d.double(), gain.double()
        sol = torch.linalg.lstsq(design(d), y[:, None]).solution.flatten()
        return out(sol)
    return fn


_FIT_MISTAKES = (
    _Mistake("your fit has an intercept: Gao et al.'s law passes through the origin (R(0) = 0), so the design "
             "matrix is [d, -d^2] with no column of ones",
             _fit_with(lambda d: torch.stack([torch.ones_like(d), d, -d * d], 1), lambda s: (s[1], s[2]))),
    _Mistake("your beta has the wrong sign: the law is d (alpha - beta d) = alpha d - beta d^2, so the column for "
             "beta is -d^2 (or negate the coefficient of d^2)", _fit_with(lambda d: torch.stack([d, d * d], 1))),
    _Mistake("you fitted against KL, not d = sqrt(KL): pass d, the square root of the KL",
             _fit_with(lambda d: torch.stack([d * d, -(d * d) ** 2], 1))),
    _Mistake("you returned (beta, alpha): the function returns alpha first",
             _fit_with(lambda d: torch.stack([d, -d * d], 1), lambda s: (s[1], s[0]))),
)


# ----------------------------------------------------------------------------- the table

_EXERCISES: dict[str, _Exercise] = {
    "bradley_terry": _Exercise(
        bradley_terry_loss, bradley_terry_loss, _cases_bradley_terry, _BT_MISTAKES, nonfinite=_UNSTABLE_BT),
    "ordinal": _Exercise(ordinal_loss, ordinal_loss, _cases_ordinal, _ORDINAL_MISTAKES, nonfinite=_UNSTABLE_ORDINAL),
    "moving_average_baseline": _Exercise(
        adv_ref.moving_average_baseline, adv_ref.moving_average_baseline, _cases_moving_average, _MA_MISTAKES,
        n_outputs=2),
    "reinforce_loss": _Exercise(
        adv_ref.reinforce_loss, adv_ref.reinforce_loss, _cases_reinforce, _REINFORCE_MISTAKES,
        arg_names=("advantages", "logprobs", "mask"), grad=(1,),
        no_grad={0: "your loss sends gradient into the advantages: use advantages.detach() "
                    "(they are constants, like the rewards)"}),
    "sequence_logprobs": _Exercise(
        sequence_logprobs, sequence_logprobs, _cases_logprobs, _LOGPROB_MISTAKES,
        arg_names=("logits", "ids", "prompt_len", "completion_mask", "temperature"), grad=(0,)),
    "rl_step": _Exercise(
        reinforce_step, reinforce_step, _cases_rl_step, _RL_STEP_MISTAKES, n_outputs=4, call=_step_effect),
    "last_token_index": _Exercise(
        last_token_index, last_token_index, _cases_last_token, _LAST_MISTAKES, integer=True),
    "distinct_2": _Exercise(distinct_n, _distinct_2, _cases_distinct, _DISTINCT_MISTAKES),
    "kl_estimators": _Exercise(
        adv_ref.kl_per_token, adv_ref.kl_per_token, _cases_kl_estimators, _KL_MISTAKES),
    "kl_shaped_reward": _Exercise(
        adv_ref.kl_shaped_reward, _kl_shaped_reward, _cases_kl_shaped, _KL_SHAPED_MISTAKES,
        arg_names=("reward", "logprobs", "ref_logprobs", "mask", "beta"), no_grad={1: _KL_DETACH, 2: _KL_DETACH_REF}),
    "rloo_advantages": _Exercise(adv_ref.rloo_advantages, adv_ref.rloo_advantages, _cases_rloo, _RLOO_MISTAKES),
    "returns_to_go": _Exercise(adv_ref.returns_to_go, adv_ref.returns_to_go, _cases_returns, _RETURNS_MISTAKES),
    "masked_whiten": _Exercise(
        adv_ref.masked_whiten, adv_ref.masked_whiten, _cases_whiten, _WHITEN_MISTAKES,
        nonfinite="your result is inf or nan when all values are equal: add eps to the standard deviation "
                  "(b2b also floors the variance at 1e-8)"),
    "expected_class": _Exercise(expected_class, expected_class, _cases_expected_class, _EXPECTED_MISTAKES),
    "collapse_flags": _Exercise(collapse_flags, collapse_flags, _cases_collapse, _COLLAPSE_MISTAKES),
    "repetition_penalty": _Exercise(repetition_penalized, repetition_penalized, _cases_repetition, _REPETITION_MISTAKES),
    "repeated_ngrams": _Exercise(
        adv_ref.repeated_ngram_fraction, adv_ref.repeated_ngram_fraction, _cases_repeated_ngrams, _REPEATED_MISTAKES),
    "bon_kl": _Exercise(overopt_ref.bon_kl, overopt_ref.bon_kl, _cases_bon_kl, _BON_KL_MISTAKES),
    "fit_bon_law": _Exercise(_fit_bon_law, _fit_bon_law, _cases_fit_bon_law, _FIT_MISTAKES, n_outputs=2),
    "grpo_advantages": _Exercise(
        adv_ref.grpo_advantages, adv_ref.grpo_advantages, _cases_grpo, _GRPO_MISTAKES,
        nonfinite="your result is inf or nan for a group of equal rewards: add eps (1e-4) to the standard deviation"),
    "clipped_loss": _Exercise(
        adv_ref.clipped_pg_loss, adv_ref.clipped_pg_loss, _cases_clipped, _CLIPPED_MISTAKES,
        arg_names=("logprobs", "old_logprobs", "advantages", "mask", "clip"), grad=(0,),
        no_grad={1: "gradient reaches old_logprobs: detach them (old_logprobs.detach()): the old policy is a "
                    "constant",
                 2: "your loss sends gradient into the advantages: use advantages.detach()"}),
}

NAMES = tuple(_EXERCISES)


def solution(name: str) -> str:
    """Print and return the source of the reference implementation for exercise `name`
    (a check's name without `check_`, e.g. "rloo_advantages")."""
    if name not in _EXERCISES:
        raise ValueError(f"solution: unknown exercise {name!r}; expected one of {', '.join(NAMES)}")
    src = inspect.getsource(_EXERCISES[name].solution)
    print(src)
    return src


# ----------------------------------------------------------------------------- the checks

def check_bradley_terry(fn) -> bool:
    """Check `fn(r_chosen, r_rejected) -> scalar loss` against `b2b.bradley_terry_loss`."""
    return _run("bradley_terry", fn)


def check_ordinal(fn) -> bool:
    """Check `fn(logits_chosen, logits_rejected) -> scalar loss` against `b2b.ordinal_loss`."""
    return _run("ordinal", fn)


def check_moving_average_baseline(fn) -> bool:
    """Check `fn(rewards (B,), baseline float | None, decay) -> (advantages (B,), new_baseline)`
    against `b2b.advantages.moving_average_baseline`."""
    return _run("moving_average_baseline", fn)


def check_reinforce_loss(fn) -> bool:
    """Check `fn(advantages (B,), logprobs (B, C), mask (B, C)) -> scalar loss` against
    `b2b.advantages.reinforce_loss` (values, and gradients: none into the advantages)."""
    return _run("reinforce_loss", fn)


def check_sequence_logprobs(fn) -> bool:
    """Check `fn(logits (B, P + C, V), ids (B, P + C), prompt_len, completion_mask (B, C), temperature)
    -> (B, C)` against `b2b.rollout.sequence_logprobs` (values, and the gradient to the logits)."""
    return _run("sequence_logprobs", fn)


def check_rl_step(fn) -> bool:
    """Check `fn(policy, tokenizer, reward_model, prompts, optimizer, baseline, generator, max_new_tokens,
    max_grad_norm) -> (new baseline, rewards)` against `b2b.reinforce.reinforce_step`: on copies of the tiny
    policy with the same sampling seed, the same baseline, rewards and change of the weights."""
    return _run("rl_step", fn)


def check_last_token_index(fn) -> bool:
    """Check `fn(attention_mask (B, T)) -> (B,) long` against `b2b.rollout.last_token_index`."""
    return _run("last_token_index", fn)


def check_distinct_2(fn) -> bool:
    """Check `fn(texts list[str]) -> float` against `b2b.metrics.distinct_n(texts, 2)`."""
    return _run("distinct_2", fn)


def check_kl_estimators(fn) -> bool:
    """Check `fn(logprobs, ref_logprobs, mask, estimator) -> (B, C)` for "k1", "k2", "k3" against
    `b2b.advantages.kl_per_token`."""
    return _run("kl_estimators", fn)


def check_kl_shaped_reward(fn) -> bool:
    """Check `fn(reward (B,), logprobs, ref_logprobs, mask, beta) -> R (B,)` (k1) against
    `b2b.advantages.kl_shaped_reward` (values, and no gradient to the log-probs)."""
    return _run("kl_shaped_reward", fn)


def check_rloo_advantages(fn) -> bool:
    """Check `fn(rewards (B,), k) -> (B,)` (groups of k consecutive samples) against
    `b2b.advantages.rloo_advantages`."""
    return _run("rloo_advantages", fn)


def check_returns_to_go(fn) -> bool:
    """Check `fn(token_rewards (B, C), mask (B, C)) -> (B, C)` against `b2b.advantages.returns_to_go`."""
    return _run("returns_to_go", fn)


def check_masked_whiten(fn) -> bool:
    """Check `fn(x (B, C), mask (B, C)) -> (B, C)` against `b2b.advantages.masked_whiten`."""
    return _run("masked_whiten", fn)


def check_clipped_loss(fn) -> bool:
    """Check `fn(logprobs, old_logprobs, advantages, mask, clip) -> scalar loss` against the loss of
    `b2b.advantages.clipped_pg_loss` (values, and gradients: none into old_logprobs or advantages)."""
    return _run("clipped_loss", fn)


def check_expected_class(fn) -> bool:
    """Check `fn(logits (B, 10)) -> (B,)` against `b2b.reward.expected_class` (classes 1..10)."""
    return _run("expected_class", fn)


def check_collapse_flags(fn) -> bool:
    """Check `fn(proxy (T,), distinct_2 (T,), keep) -> (T,) bool` against `b2b.evaluate.collapse_flags`."""
    return _run("collapse_flags", fn)


def check_repetition_penalty(fn) -> bool:
    """Check `fn(logits (B, V), seen (B, V) bool, penalty) -> (B, V)` against
    `b2b.rollout.repetition_penalized`."""
    return _run("repetition_penalty", fn)


def check_repeated_ngrams(fn) -> bool:
    """Check `fn(token_ids (B, C), mask (B, C), n) -> (B,)` (each answer's share of repeated n-grams)
    against `b2b.advantages.repeated_ngram_fraction`."""
    return _run("repeated_ngrams", fn)


def check_grpo_advantages(fn) -> bool:
    """Check `fn(rewards (B,), k) -> (B,)` (groups of k consecutive samples, std + 1e-4) against
    `b2b.advantages.grpo_advantages`."""
    return _run("grpo_advantages", fn)


def check_bon_kl(fn) -> bool:
    """Check `fn(n (N,) long) -> (N,)`, best-of-n's analytic KL log n - (n - 1) / n, against
    `b2b.overopt.bon_kl`."""
    return _run("bon_kl", fn)


def check_fit_bon_law(fn) -> bool:
    """Check `fn(d (J,), gain (J,)) -> (alpha, beta)` against `b2b.overopt.fit_law("bon", d, gain)`."""
    return _run("fit_bon_law", fn)


def solved(name: str):
    """The hidden solution of exercise `name` as a function with the learner's signature. CI runs
    the notebooks with each stub replaced by it (notebooks/conftest.py, `solve_cell`), so every
    check of every notebook runs; a learner can call it to go on without writing the exercise."""
    if name not in _EXERCISES:
        raise ValueError(f"solved: unknown exercise {name!r}; expected one of {', '.join(NAMES)}")
    return _EXERCISES[name].solution


def yours(fn: Callable, name: str) -> Callable:
    """The learner's function `fn` for exercise `name`, to use in a later cell: itself when it passes
    its check; b2b's solution, said in one printed line, while it is still the stub (so the notebook
    runs on); a one-line ConfigError naming the mistake when it is wrong."""
    from b2b.errors import ConfigError

    why = mistake(name, fn)
    if why is None:
        return fn
    if why.endswith(NOT_WRITTEN):
        print(f"{getattr(fn, '__name__', name)} is not written yet: this uses b2b's own "
              f"(b2b.exercises.solved({name!r})) until yours passes its check")
        return solved(name)
    raise ConfigError(f"your {getattr(fn, '__name__', name)} fails its check ({why}): fix it above, or use "
                      f"b2b.exercises.solved({name!r})")


_CHECK_CALL = re.compile(r"^(?P<indent>[ \t]*)b2b\.exercises\.check_(?P<name>\w+)\((?P<fn>\w+)\);?[ \t]*$", re.M)


def exercise_cells(source: str) -> list[tuple[str, str]]:
    """The (exercise, function name) pairs a notebook cell checks: its lines
    `b2b.exercises.check_<exercise>(<function>)` (a `;` after it keeps the notebook from echoing
    the check's True / False)."""
    return [(m["name"], m["fn"]) for m in _CHECK_CALL.finditer(source)]


def solve_cell(source: str) -> str:
    """A notebook cell with its exercise stubs solved: each line `b2b.exercises.check_X(fn)` of a
    cell that still raises NotImplementedError becomes `fn = b2b.exercises.solved("X")` and an
    assert that the check passes (CI runs the notebooks so: every check runs, and a solution
    that fails its check fails the run). Other cells come back unchanged."""
    if "raise NotImplementedError" not in source:
        return source
    return _CHECK_CALL.sub(lambda m: (f'{m["indent"]}{m["fn"]} = b2b.exercises.solved("{m["name"]}")\n'
                                      f'{m["indent"]}assert b2b.exercises.check_{m["name"]}({m["fn"]}), '
                                      f'"the solution of {m["name"]} fails its check"'), source)


# ----------------------------------------------------------------------------- answer keys

class Answers:
    """A notebook's answer key, collapsed until the learner opens it (`answers`)."""

    def __init__(self, items: tuple[str, ...], title: str):
        self.items, self.title = items, title

    def _repr_markdown_(self) -> str:
        body = "\n\n".join(f"{i}. {item.strip()}" for i, item in enumerate(self.items, 1))
        return f"<details>\n<summary><b>{self.title}</b></summary>\n\n{body}\n\n</details>\n"

    def __repr__(self) -> str:
        return f"{self.title}:\n" + "\n".join(f"{i}. {item.strip()}" for i, item in enumerate(self.items, 1))


def answers(*items: str, title: str = "Answers (open once you have tried)") -> Answers:
    """The answers to a notebook's "Check yourself" questions, one markdown string per question in
    order, shown collapsed (an HTML `<details>` block: Jupyter, Colab and GitHub draw it closed).
    A notebook builds the strings from its own run's outputs, so a figure in an answer is the one
    the notebook printed above it."""
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise ValueError("answers: give one non-empty markdown string per question")
    return Answers(tuple(items), title)
