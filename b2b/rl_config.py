"""How a policy is trained: `RLConfig`, one frozen dataclass for every algorithm of the course.

    cfg = RLConfig(algo="rloo", k=4, kl_coef=0.5)
    cfg = dataclasses.replace(cfg, kl_coef=0.1)      # one change, the rest as it was

Every field has its docstring below; `b2b.recipes.rl_config(profile, algo)` gives each notebook's
settings, and `validate` checks them all through the one shared checker, `b2b.guards.check_fields`.
"""
from __future__ import annotations

from dataclasses import dataclass

from b2b.advantages import KL_ESTIMATORS
from b2b.algorithms import ALGORITHMS
from b2b.guards import check_fields
from b2b.reward import READOUTS

@dataclass(frozen=True)
class RLConfig:
    """How a policy is trained (defaults: notebook 03, vanilla REINFORCE in the tiny profile).
    Change a field with `dataclasses.replace(cfg, kl_coef=0.5)`: each notebook's change from the
    one before it is such a line."""

    algo: str = "reinforce"
    """A registered algorithm (`b2b.algorithms`: reinforce, rloo, reinforce_pp, reinforce_pp_baseline, grpo,
    dr_grpo); its record supplies the advantages and the loss of the step."""
    steps: int = 150
    """Rollout batches to train on (each one optimizer step, or several in REINFORCE++)."""
    batch_size: int = 64
    """Rollouts (prompts, one completion each) per step."""
    lr: float = 2e-4
    """AdamW learning rate (constant)."""
    max_new_tokens: int = 64
    """Longest completion in tokens; one not ended by then is cut (no end-of-turn token)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are taken at the same temperature (on-policy)."""
    baseline_decay: float = 0.9
    """b <- decay * b + (1 - decay) * mean reward (the seed's moving-average baseline)."""
    repetition_penalty: float = 1.0
    """Sampling-time penalty on already-seen tokens (1.0: off). Makes the samples off-policy."""
    ngram_penalty: float = 0.0
    """Reward-side penalty: R = r - ngram_penalty * (share of repeated n-grams). 0: off."""
    ngram: int = 3
    """n of the repeated n-grams that `ngram_penalty` counts."""
    k: int = 1
    """Samples per prompt: batch_size / k prompts, k completions each (an algorithm whose baseline is its group: k >= 2)."""
    kl_coef: float = 0.0
    """beta of the KL to the reference (SFT) policy: in the reward, or as a loss (reinforce_pp_baseline, grpo,
    dr_grpo). 0: off."""
    kl_estimator: str = "k1"
    """Per-token KL estimator in the reward: k1, k2 or k3 (as a loss: k2 in reinforce_pp_baseline, k3 in grpo
    and dr_grpo, always)."""
    clip: float = 0.2
    """PPO clip range epsilon of the ratio (the clipped algorithms)."""
    ppo_epochs: int = 1
    """Passes over each rollout batch (the clipped algorithms)."""
    minibatches: int = 1
    """Optimizer steps per pass: the rollout batch split into this many minibatches (the clipped
    algorithms)."""
    lora_r: int = 0
    """LoRA rank: > 0 trains low-rank adapters on the attention and MLP projections (`peft`). 0: all weights."""
    lora_alpha: float = 16.0
    """LoRA scale: the adapters' update is multiplied by lora_alpha / lora_r."""
    ref_dtype: str = "auto"
    """Weights dtype of the frozen reference policy: auto = `b2b.models.pick_dtype` (fp32 on a CPU, fp16 on a
    T4, bf16 on Ampere+: half the memory, and a KL that is not 0 at step 0: on SmolLM2, 0.04 nats per
    answer in absolute value in fp16, 0.29 in bf16 with a bias of -0.24; docs/performance.md#dtypes),
    or float32, bfloat16, float16."""
    gradient_checkpointing: bool = False
    """Recompute the policy's layer activations in the backward pass instead of keeping them (about a
    third more learn-phase compute, a fraction of its memory; the same gradient). The colab recipe sets it."""
    whiten: bool = True
    """REINFORCE++: normalise token advantages over the batch (False: raw returns, for ablations)."""
    track_kl: bool = True
    """Keep a frozen copy of the starting policy and log the KL to it even when kl_coef is 0."""
    reward_clip: float = 20.0
    """Reward-model scores clamped to [-reward_clip, reward_clip] before shaping (`reward/clipped_frac`). 0: off."""
    readout: str = "expected"
    """Ordinal reward models: 'expected' class or 'p7' = P(class >= 7)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm before each optimizer step."""
    eval_every: int = 25
    """Steps between held-out evaluations (0: only before and after training)."""
    eval_prompts: int | None = None
    """Held-out prompts per evaluation (None: all given to `train`)."""
    sample_every: int = 5
    """Steps between logged samples (the first `n_samples` of the batch)."""
    n_samples: int = 4
    """Completions logged every `sample_every` steps."""
    checkpoint_every: int = 50
    """Steps between checkpoints (needs `out`; 0: none)."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept; older ones are deleted."""
    checkpoint_optimizer: bool = True
    """False: checkpoints leave out AdamW's moments (1.08 of SmolLM2's 1.6 GB); a resume restarts them."""
    seed: int = 0
    """Seeds the prompt draws and the sampler; evaluations sample with seed + 1."""

    def validate(self) -> "RLConfig":
        """The config itself, or a one-line `ConfigError` naming the first bad field."""
        bs, k, mb = self.batch_size, self.k, self.minibatches
        return check_fields(
            self, positive=("steps", "batch_size", "lr", "max_new_tokens", "temperature", "repetition_penalty", "ngram",
                            "max_grad_norm", "n_samples", "keep_checkpoints", "k", "clip", "ppo_epochs", "minibatches"),
            non_negative=("eval_every", "sample_every", "checkpoint_every", "ngram_penalty", "kl_coef", "lora_r",
                          "reward_clip", "baseline_decay"),
            whole=("k", "steps", "batch_size", "ngram", "ppo_epochs", "minibatches", "max_new_tokens", "lora_r"),
            choices={"algo": tuple(ALGORITHMS), "kl_estimator": KL_ESTIMATORS, "readout": READOUTS,
                     "ref_dtype": ("auto", "float32", "bfloat16", "float16")},
            flags=("gradient_checkpointing",),
            rules=[(lambda: self.baseline_decay < 1, "baseline_decay",
                    f"expected 0 <= decay < 1, got {self.baseline_decay!r}"),
                   (lambda: k >= 2 or not ALGORITHMS[self.algo].groups, "k",
                    f"{self.algo} needs k >= 2 samples per prompt, got {k}"),
                   (lambda: bs % k == 0, "batch_size",
                    f"{bs} rollouts do not split into groups of k={k} samples per prompt (expected a multiple of k)"),
                   (lambda: bs % mb == 0, "minibatches", f"{bs} rollouts do not split into {mb} equal minibatches")])
