"""The run around the RL step: `train` trains a policy and returns its `History`.

    history = train(policy, tokenizer, reward_model, train_prompts, RLConfig(steps=200),
                    eval_prompts=heldout, out="runs/reinforce")
    history = train(..., algorithm=get("rloo").using(rloo_advantages=my_rloo_advantages))

Each step is `b2b.step.rl_step` (sample, score, shape, advantages, loss, optimizer step); the
algorithm's record (`b2b.algorithms`) supplies what differs between methods. Around it, this
module keeps the run: prompts drawn each step, the frozen reference policy, LoRA, gradient
checkpointing, the memory check, the optimizer, evaluations and logged samples on their schedule,
and with `out` a run directory (`b2b.runs`): `resume=out` continues a killed run with the same
results on a CPU, and `reuse=True` reads back a finished run of the same settings instead of
training it again. Metrics are namespaced (`reward/proxy_mean`, `completions/distinct_2`,
`time/step_s`, ...; docs/glossary.md) and kept in a `History`.
"""
from __future__ import annotations

import math

import torch

from b2b import runs
from b2b.algorithms import ALGORITHMS, check_algorithm, get
from b2b.errors import ConfigError
from b2b.evaluate import evaluator, logged_samples
from b2b.guards import oom_guard, smaller_batch
from b2b.memory import check_fits, estimate_rl_step, rl_hints
from b2b.models import add_lora, checkpointing, fingerprint, frozen_copy
from b2b.rl_config import RLConfig
from b2b.rollout import check_prompts_fit
from b2b.runs import History, latest_checkpoint
from b2b.step import rl_step


def train(policy, tokenizer, reward_model, prompts: list[str], cfg: RLConfig | None = None, *,
          algorithm=None, eval_prompts: list[str] | None = None, world: bool = True, out=None, resume=None,
          overwrite: bool = False, reuse: bool = False, progress: bool = True, eval_batch_size: int = 128,
          profile: str | None = None, precision: str = "auto") -> History:
    """Train `policy` in place with policy gradients; returns the run's `History`.

    prompts: training prompts (user messages), drawn uniformly with replacement each step.
    algorithm: the algorithm's record (default `b2b.algorithms.get(cfg.algo)`), e.g. one with the
        learner's own parts (`Algorithm.using`) or a new method; it is checked on hand-made
        tensors before the first step (`b2b.algorithms.check_algorithm`).
    eval_prompts: held-out prompts evaluated before training, every `cfg.eval_every` steps and
        after the last step (the first `cfg.eval_prompts` of them).
    world: the prompts are tiny-world prompts, so the gold judge rates every completion.
    out: run directory for `metrics.jsonl`, `samples.jsonl` and `checkpoints/` (`b2b.runs`).
    resume: a run directory (or checkpoint) to continue from; the policy passed in is overwritten
        with the checkpoint's weights and training continues at the next step.
    profile: the profile's name, recorded in `out/config.json` with the policy's folder name
        (`b2b.runs.run_identity`); default: the one `b2b.setup` set up, if any.
    eval_batch_size: held-out prompts sampled together (on a GPU at most cfg.batch_size).
    precision: the learn phase's forward and backward passes (`b2b.precision`): "auto" runs them
        under autocast on a GPU (fp16 with a gradient scaler on a T4, bf16 on compute capability 8+)
        and in fp32 on a CPU; "off", "bf16" or "fp16" choose. The weights and AdamW stay fp32.
    reuse: `out` holding this run (same settings, same reward model) is read back when finished
        (the policy takes its final weights where they were kept) or continued when not; holding
        another run, it is started over.
    """
    run = Run(policy, tokenizer, reward_model, prompts, cfg, algorithm=algorithm, eval_prompts=eval_prompts,
              world=world, out=out, resume=resume, overwrite=overwrite, reuse=reuse, progress=progress,
              eval_batch_size=eval_batch_size, profile=profile, precision=precision)
    while not run.finished:
        run.next()
    return run.close()


def _algorithm(algorithm, cfg: RLConfig, reuse: bool):
    """The run's algorithm record: cfg.algo's, or the one passed in (of the same name), which is first
    checked on a hand-made batch unless it is the registered record itself."""
    algo = get(algorithm or cfg.algo)
    if algo.name != cfg.algo:
        raise ConfigError(f"train: the algorithm's record is {algo.name!r} but cfg.algo is {cfg.algo!r}")
    if algo is not ALGORITHMS[cfg.algo]:  # the learner's pieces or a new method: checked before any step
        check_algorithm(algo, cfg)
        if reuse:
            raise ConfigError("train: reuse reads back a run of the registered algorithm; train your own pieces "
                              "without reuse=True")
    return algo


def check_reads_policy(reward_model, policy, tokenizer) -> None:
    """A reward model whose vocabulary is not the policy's cannot read its token ids: a one-line
    `ConfigError` saying how to score through the reward model's own tokenizer."""
    from b2b.reward import Retokenized

    if not isinstance(reward_model, torch.nn.Module) or isinstance(reward_model, Retokenized):
        return
    theirs = getattr(getattr(reward_model, "config", None), "vocab_size", None)
    ours = len(tokenizer)
    if theirs is not None and theirs != getattr(policy.config, "vocab_size", ours):
        raise ConfigError(f"train: the reward model reads a vocabulary of {theirs:,} tokens, the policy writes "
                          f"{policy.config.vocab_size:,}: score through the reward model's own tokenizer with "
                          "b2b.reward.retokenized(reward_model, its_tokenizer, tokenizer)")


def _prepare_policy(policy, cfg: RLConfig):
    """(the policy to train, the frozen reference or None): the reference is the starting policy
    (in `ref_dtype`: auto is fp32 on a CPU, fp16 / bf16 on a GPU), taken before any resume; then
    gradient checkpointing and LoRA adapters as cfg asks."""
    ref = frozen_copy(policy, dtype=cfg.ref_dtype) if cfg.kl_coef > 0 or cfg.track_kl else None
    if cfg.gradient_checkpointing:
        checkpointing(policy)
    return (add_lora(policy, cfg) if cfg.lora_r else policy), ref


class Run:
    """One run, set up and ready to step: `next()` trains the next step (with its logging,
    evaluation and checkpoint) and returns its metrics row; `close()` returns the `History`. A run
    read back from its directory is `finished` from the start. (`train` steps it to the end;
    `b2b bench` interleaves its steps with TRL's trainer.) The arguments are `train`'s."""

    def __init__(self, policy, tokenizer, reward_model, prompts: list[str], cfg: RLConfig | None = None, *,
                 algorithm=None, eval_prompts=None, world: bool = True, out=None, resume=None, overwrite: bool = False,
                 reuse: bool = False, progress: bool = True, eval_batch_size: int = 128, profile: str | None = None,
                 precision: str = "auto"):
        from tqdm.auto import tqdm

        from b2b.precision import Precision

        cfg = (cfg or RLConfig()).validate()
        self.algo = _algorithm(algorithm, cfg, reuse)
        if not prompts:
            raise ConfigError("train: expected at least one training prompt")
        self.policy, self.tokenizer, self.reward_model, self.prompts, self.cfg = (policy, tokenizer, reward_model,
                                                                                  prompts, cfg)
        self.world, self.history = world, None
        eval_prompts = (eval_prompts or [])[: cfg.eval_prompts or None]
        prompt_tokens = check_prompts_fit(policy, tokenizer, reward_model, prompts, eval_prompts, cfg.max_new_tokens)
        check_reads_policy(reward_model, policy, tokenizer)
        reward_id = fingerprint(reward_model) if out is not None or resume is not None else None
        from b2b.config import active_profile

        self.device = next(policy.parameters()).device
        self.precision = Precision(self.device, precision)
        self.identity = {**runs.run_identity(policy, profile or active_profile()), "precision": self.precision.name}
        self.run = runs.open_run(out, cfg, reward_id, resume, overwrite, reuse, self.identity)
        if self.run.done is not None:  # this very run, finished before: read back
            self.history, self.step = runs.read_back(policy, self.run.out, cfg, self.run.done, progress), cfg.steps
            return
        if isinstance(reward_model, torch.nn.Module):
            reward_model.eval()
        self.gen = torch.Generator(self.device).manual_seed(cfg.seed)
        policy, self.ref = _prepare_policy(policy, cfg)
        self.policy = policy
        check_fits(estimate_rl_step(policy, reward_model, self.ref, cfg, prompt_tokens), self.device,
                   f"the RL step ({cfg.batch_size} rollouts of up to {prompt_tokens} + {cfg.max_new_tokens} tokens)",
                   rl_hints(cfg))
        self.opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
        self.step, self.state, self.history = 0, None, History()
        if self.run.resume is not None:
            self.step, self.state, self.history = runs.load_checkpoint(self.run.resume, policy, self.opt, self.gen)
        runs.start_logs(self.run.out, cfg, reward_id, self.history, self.identity)
        self.last_good = str(latest_checkpoint(self.run.out) or "none") if self.run.out is not None else "none"
        if self.device.type == "cuda":  # on a GPU no evaluation batch outgrows the step the memory estimate checked
            eval_batch_size = min(eval_batch_size, cfg.batch_size)
        self.eval_prompts = eval_prompts
        self.evaluate = evaluator(policy, tokenizer, reward_model, eval_prompts, cfg, world, eval_batch_size, self.ref)
        if self.step == 0 and eval_prompts:
            self._log("evals", self.evaluate(0, self.last_good))
        self.bar = tqdm(total=cfg.steps, initial=self.step, desc=cfg.algo, disable=not progress)
        self.smaller = smaller_batch(cfg.batch_size, math.lcm(cfg.k, cfg.minibatches))

    @property
    def finished(self) -> bool:
        return self.step >= self.cfg.steps

    def _log(self, source: str, row: dict) -> None:
        getattr(self.history, source).append(row)
        runs.append(self.run.out, source, row)

    def next(self) -> dict:
        """Train the next step; returns its metrics row."""
        cfg, step = self.cfg, self.step + 1
        idx = torch.randint(len(self.prompts), (cfg.batch_size // cfg.k,), generator=self.gen,
                            device=self.device).tolist()
        batch = [self.prompts[i] for i in idx for _ in range(cfg.k)]  # groups of k samples of one prompt
        m, texts, self.state = oom_guard(
            lambda: rl_step(self.policy, self.tokenizer, self.reward_model, batch, self.opt, self.gen, self.state,
                            cfg, self.world, step, self.last_good, self.ref, self.algo, self.precision),
            step, "the RL step", "batch_size", cfg.batch_size, self.smaller, self.last_good)
        self.step = step
        self._log("steps", {"step": step, **m})
        if cfg.sample_every and step % cfg.sample_every == 0:
            for s in logged_samples(batch, texts, step, cfg.n_samples, self.world):
                self._log("samples", s)
        if self.eval_prompts and (step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)):
            self._log("evals", self.evaluate(step, self.last_good))
        if self.run.out is not None and cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            self.last_good = str(runs.save_checkpoint(self.run.out, step, self.policy, self.opt, self.gen, self.state,
                                                      self.history, cfg, cfg.keep_checkpoints, self.identity))
        self.bar.update(1)
        self.bar.set_postfix({"proxy": f"{m['reward/proxy_mean']:.2f}",
                              **({"gold": f"{m['reward/gold_mean']:.2f}"} if self.world else {})})
        return self.history.steps[-1]

    def close(self) -> History:
        """The run's History; the policy left in eval mode, gradient checkpointing off."""
        if hasattr(self, "bar"):
            self.bar.close()
            if self.cfg.gradient_checkpointing:
                checkpointing(self.policy, on=False)
            self.policy.eval()
        return self.history
