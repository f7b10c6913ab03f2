"""Self-checks for the notebooks' "your turn" cells: your function against b2b's reference.

    b2b.exercises.check_bradley_terry(my_loss)   # prints one line per case, returns True if all pass

Each case is a small hand-made batch; a case passes when your output is finite and
`torch.allclose` to the reference.
"""
from __future__ import annotations

import torch

from b2b.reward import NUM_CLASSES, bradley_terry_loss, ordinal_loss


def _one_hot_logits(classes: list[int], sharp: float = 20.0) -> torch.Tensor:
    """Logits that put (almost) all probability on `classes` (numbered 1..10)."""
    logits = torch.zeros(len(classes), NUM_CLASSES)
    logits[torch.arange(len(classes)), torch.tensor(classes) - 1] = sharp
    return logits


def _cases_bradley_terry() -> list[tuple[str, tuple]]:
    g = torch.Generator().manual_seed(0)
    return [
        ("random scores", (torch.randn(16, generator=g), torch.randn(16, generator=g))),
        ("winner clearly ahead (loss near 0)", (torch.tensor([5.0, 8.0]), torch.tensor([-5.0, 0.0]))),
        ("winner clearly behind (large loss)", (torch.tensor([-5.0]), torch.tensor([5.0]))),
        ("huge margins (numerical stability)", (torch.tensor([-200.0, 200.0]), torch.tensor([200.0, -200.0]))),
    ]


def _cases_ordinal() -> list[tuple[str, tuple]]:
    g = torch.Generator().manual_seed(0)
    return [
        ("random logits", (torch.randn(8, NUM_CLASSES, generator=g), torch.randn(8, NUM_CLASSES, generator=g))),
        ("winner in class 9, loser in class 2 (loss near 0)", (_one_hot_logits([9]), _one_hot_logits([2]))),
        ("winner in class 2, loser in class 9 (large loss)", (_one_hot_logits([2]), _one_hot_logits([9]))),
        ("same class (a tie is not a win)", (_one_hot_logits([5]), _one_hot_logits([5]))),
        ("very sharp logits (numerical stability)", (_one_hot_logits([1], 300.0), _one_hot_logits([10], 300.0))),
    ]


def _check(fn, reference, cases) -> bool:
    ok_all = True
    for name, args in cases:
        want = reference(*args)
        try:
            got = torch.as_tensor(fn(*args)).float()
        except Exception as e:  # a learner's bug: show it as a failed case, keep going
            print(f"  x {name}: raised {type(e).__name__}: {e}")
            ok_all = False
            continue
        ok = got.shape == want.shape and bool(torch.isfinite(got).all()) and torch.allclose(got, want, atol=1e-4,
                                                                                             rtol=1e-4)
        ok_all &= ok
        detail = "" if ok else f" (got {got.tolist()}, expected {want.tolist()})"
        print(f"  {'ok' if ok else 'x '} {name}{detail}")
    print("All cases pass." if ok_all else "Not yet: see the cases marked x.")
    return ok_all


def check_bradley_terry(fn) -> bool:
    """Check `fn(r_chosen, r_rejected) -> scalar loss` against `b2b.bradley_terry_loss`."""
    return _check(fn, bradley_terry_loss, _cases_bradley_terry())


def check_ordinal(fn) -> bool:
    """Check `fn(logits_chosen, logits_rejected) -> scalar loss` against `b2b.ordinal_loss`."""
    return _check(fn, ordinal_loss, _cases_ordinal())
