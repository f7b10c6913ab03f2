"""Mixed precision: the trained model's forward and backward passes in half precision where the
hardware has fast half-precision matrix units, its weights and AdamW's state in fp32.

    prec = Precision("cuda")                 # fp16 + a gradient scaler on a T4, bf16 on Ampere+
    with prec.autocast():
        loss = loss_fn(model(...))
    prec.backward(loss)
    grad_norm = prec.clip(opt, model.parameters(), max_grad_norm=1.0)
    stepped = prec.step(opt)                 # False: fp16's scaled gradients overflowed, step skipped

Under `torch.autocast` the matrix products run in the half dtype and reductions such as
log-softmax in fp32; the parameters stay fp32 (the master weights), so AdamW's small updates do
not vanish, and their gradients come back fp32. fp16's narrow range needs a gradient scaler: the
loss is multiplied by a large factor before the backward pass, so that small gradients do not
flush to zero, and the gradients divided by it before clipping; a step whose scaled gradients
overflowed is skipped and the factor halved (`stepped` False). bf16 has fp32's range and needs no
scaler.

Settings (`train(..., precision=)`, `train_reward_model(..., precision=)`): "auto" (default:
`autocast_dtype`: off on a CPU, where half precision is not faster, fp16 on a T4, bf16 on compute
capability 8+), "off", "bf16", "fp16" (any device: the tests run bf16 autocast on the CPU).
"""
from __future__ import annotations

import contextlib

import torch

from b2b.errors import ConfigError

PRECISIONS = ("auto", "off", "bf16", "fp16")


def autocast_dtype(device, setting: str = "auto", capability: tuple[int, int] | None = None):
    """The dtype the trained model's passes run in under `setting` on `device`, or None (fp32)."""
    if setting not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting == "off":
        return None
    if setting in ("bf16", "fp16"):
        return torch.bfloat16 if setting == "bf16" else torch.float16
    if torch.device(device).type != "cuda":
        return None
    if capability is None:
        capability = torch.cuda.get_device_capability(torch.device(device))
    return torch.bfloat16 if capability[0] >= 8 else torch.float16


class Precision:
    """How one training run computes: `autocast()` around the trained model's forward passes and the
    loss, `step()` for the backward pass and the optimizer step (scaled in fp16)."""

    def __init__(self, device, setting: str = "auto", capability: tuple[int, int] | None = None,
                 init_scale: float = 2.0**16):
        self.device_type = torch.device(device).type
        self.dtype = autocast_dtype(device, setting, capability)
        self.scaler = (torch.amp.GradScaler(self.device_type, init_scale=init_scale)
                       if self.dtype == torch.float16 else None)

    @property
    def name(self) -> str:
        """"fp32", "bf16" or "fp16" (with a gradient scaler)."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        """A context in which the trained model's forward passes run in `dtype` (nothing in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """`loss.backward()`, the loss scaled first in fp16 (gradients accumulate scaled)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def clip(self, opt, params, max_grad_norm: float) -> torch.Tensor:
        """The gradients unscaled (fp16) and clipped to `max_grad_norm`; returns their norm before
        clipping (inf or nan where fp16's scaled gradients overflowed)."""
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_grad_norm)

    def step(self, opt) -> bool:
        """The optimizer step after `clip`; False when fp16's gradient scaler skipped it (the
        gradients held inf or nan; the scaler then halves its factor)."""
        if self.scaler is None:
            opt.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(opt)
        self.scaler.update()
        return self.scaler.get_scale() >= scale

    def state_dict(self) -> dict:
        """The gradient scaler's state (its factor), for a checkpoint; empty without one."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


FP32 = Precision("cpu", "off")
"""No autocast, no scaler: what `b2b.step.learn` and `b2b.reward.accumulated_pair_loss` use when
not given a precision."""
