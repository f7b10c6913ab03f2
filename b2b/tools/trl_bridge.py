"""The same jobs done with TRL, to cross-check b2b and to show where a learner goes next.

    result = trl_reward_model("data/tiny-sft", train_pairs, test_pairs, cfg)
    result["pair_accuracy"]   # TRL's own held-out accuracy (its evaluate())

TRL's `RewardTrainer` gets the preference pairs as they are (conversational `chosen` / `rejected`
message lists), tokenizes them with the chat template itself, pads on the right and scores each
sequence where transformers' sequence-classification head pools: the last token that is not the
pad token. Its loss is the same Bradley-Terry loss, -log sigmoid(r_w - r_l).
"""
from __future__ import annotations

import shutil
import tempfile
import time
import warnings

import torch

from b2b.algorithms import ALGORITHMS
from b2b.reward import RewardConfig


def _quiet(progress: bool) -> int:
    """Silence transformers' and TRL's logging (and datasets' bars unless `progress`); returns the
    transformers verbosity to restore."""
    import logging

    import datasets
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    if not progress:
        datasets.disable_progress_bars()
    return level


def _dataset(pairs: list[dict]):
    from datasets import Dataset

    return Dataset.from_list([{"chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs])


def trl_reward_model(backbone: str, train_pairs: list[dict], test_pairs: list[dict], cfg: RewardConfig,
                     out_dir: str | None = None, progress: bool = False, precision: str = "auto") -> dict:
    """Train a Bradley-Terry reward model with `trl.RewardTrainer` on b2b's settings (batch size,
    learning rate, warm-up + cosine schedule, epochs, gradient clipping at 1, `precision` as
    `b2b.train_reward_model` takes it (Trainer's `fp16` / `bf16` flags: "auto" is fp32 on a CPU,
    fp16 on a T4, bf16 on compute capability 8+); `micro_batch_size`
    pairs per pass with the step's gradients accumulated, and gradient checkpointing, as `cfg` says,
    through TRL's own `per_device_train_batch_size`, `gradient_accumulation_steps` and
    `gradient_checkpointing`) and return its held-out accuracy, training time and the trained model."""
    from transformers.utils import logging as hf_logging
    from trl import RewardConfig as TRLRewardConfig
    from transformers import PrinterCallback
    from trl import RewardTrainer

    from b2b.models import default_device, load_reward_model, load_tokenizer
    from b2b.precision import autocast_dtype

    if cfg.level != 1:
        raise ValueError("TRL's RewardTrainer trains Bradley-Terry (level 1) reward models only")
    train_pairs = train_pairs[: cfg.limit] if cfg.limit else train_pairs
    micro = cfg.micro_batch_size or cfg.batch_size
    half = autocast_dtype(default_device(), precision)
    if cfg.batch_size % micro:
        raise ValueError(f"trl_reward_model: batch_size {cfg.batch_size} is not a multiple of micro_batch_size {micro}")
    tok = load_tokenizer(backbone)
    torch.manual_seed(cfg.seed)
    model = load_reward_model(backbone, num_labels=1, pad_token_id=tok.pad_token_id)
    own_dir = out_dir is None  # nothing is saved (save_strategy="no"); a temporary dir is removed after
    out_dir = out_dir or tempfile.mkdtemp(prefix="b2b-trl-rm-")
    with warnings.catch_warnings():  # transformers renames gradient_checkpointing; TRL still sets it
        warnings.simplefilter("ignore", FutureWarning)
        args = TRLRewardConfig(
            output_dir=out_dir, per_device_train_batch_size=micro, gradient_accumulation_steps=cfg.batch_size // micro,
            learning_rate=cfg.lr,
            num_train_epochs=cfg.epochs, lr_scheduler_type="cosine", warmup_steps=cfg.warmup,
            weight_decay=cfg.weight_decay, max_grad_norm=1.0, max_length=cfg.max_length, seed=cfg.seed,
            bf16=half is torch.bfloat16, fp16=half is torch.float16, gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
            report_to="none", save_strategy="no",
            eval_strategy="no", logging_steps=50, disable_tqdm=not progress,
            use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
    level = _quiet(progress)
    try:
        trainer = RewardTrainer(model=model, args=args, train_dataset=_dataset(train_pairs), processing_class=tok)
        trainer.remove_callback(PrinterCallback)  # without a progress bar, Trainer prints every log dict
        t0 = time.time()
        trainer.train()
        seconds = time.time() - t0
    finally:
        hf_logging.set_verbosity(level)
        if own_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
    model.eval()
    return {"pair_accuracy": hf_pair_accuracy(model, tok, test_pairs), "train_seconds": seconds, "model": model,
            "tokenizer": tok, "log": trainer.state.log_history}


@torch.no_grad()
def hf_pair_accuracy(model, tokenizer, pairs: list[dict], batch_size: int = 128) -> float:
    """Held-out accuracy the way TRL scores: each conversation through the chat template, padded on
    the right, the score from the model's own pooling (`model(...).logits`)."""
    device = next(model.parameters()).device
    texts = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    scores = []
    for i in range(0, len(texts), batch_size):
        ids = [tokenizer.apply_chat_template(m, tokenize=True, return_dict=False) for m in texts[i:i + batch_size]]
        T = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), T), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), T), dtype=torch.long)
        for j, x in enumerate(ids):
            input_ids[j, :len(x)] = torch.tensor(x)
            mask[j, :len(x)] = 1
        scores.append(model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu())
    s = torch.cat(scores)
    return (s[: len(pairs)] > s[len(pairs):]).float().mean().item()


def reward_function(reward_model, tokenizer, readout: str = "expected"):
    """b2b's reward model as a TRL reward function `f(prompts, completions, completion_ids, **kw)`:
    each prompt is chat-formatted and left-padded as b2b does, the sampled completion ids appended,
    and the score read at the last real token (for the ordinal model: the expected class, or
    P(class >= 7) with readout='p7'). The ids are used as sampled, never re-tokenised text, unless the
    reward model reads another tokenizer's ids (`b2b.reward.Retokenized`, the `tiny-smollm2` profile):
    then, as in b2b's loop, the completions are decoded and re-encoded with its own."""
    from b2b.reward import scalar_reward
    from b2b.reward import reward_scores
    from b2b.rollout import encode_prompts

    device = next(reward_model.parameters()).device

    from b2b.reward import Retokenized

    @torch.no_grad()
    def b2b_reward(prompts, completions, completion_ids, **kwargs):
        if isinstance(reward_model, Retokenized):  # another tokenizer (tiny-smollm2): the text, re-encoded
            eos = tokenizer.eos_token_id
            texts = tokenizer.batch_decode([list(c) for c in completion_ids], skip_special_tokens=True)
            finished = [len(c) > 0 and int(c[-1]) == eos for c in completion_ids]
            return scalar_reward(reward_model.scores(list(prompts), texts, finished), readout).tolist()
        p_ids, p_mask = encode_prompts(tokenizer, prompts, device)
        C = max(len(c) for c in completion_ids)
        c_ids = torch.full((len(completion_ids), C), tokenizer.pad_token_id, dtype=torch.long, device=device)
        c_mask = torch.zeros_like(c_ids)
        for i, c in enumerate(completion_ids):  # list of id lists from TRL: one small copy each
            c_ids[i, :len(c)] = torch.as_tensor(c, device=device)
            c_mask[i, :len(c)] = 1
        scores = reward_scores(reward_model, torch.cat([p_ids, c_ids], 1), torch.cat([p_mask, c_mask], 1))
        return scalar_reward(scores, readout).tolist()
    return b2b_reward


TRL_TRAINERS = {a.name: a.trl_trainer for a in ALGORITHMS.values() if a.trl_trainer}
"""b2b's algorithms that a maintained TRL trainer runs (`trl_trainer` in their records, `b2b.algorithms`): RLOO as RLOOTrainer; REINFORCE++-baseline as
GRPOTrainer with the group mean subtracted and the advantages scaled by the whole batch's standard
deviation (`scale_rewards="batch"`), a token-mean clipped loss (`loss_type="dapo"`) and the KL to the
reference as a loss. Two differences remain. The advantages: TRL divides the group-centred rewards
by the standard deviation of the raw rewards and subtracts no batch mean, where b2b whitens the
group-centred returns over the batch's tokens (their own mean and standard deviation). The KL loss: TRL's is k3
multiplied by the importance ratio (`use_bias_correction_kl`, on by default), whose gradient on
policy, where the ratio is 1, is k2's, b2b's: grad(rho k3) = (k3 + 1 - r) grad log pi = -log r grad
log pi, with r = pi_ref / pi."""


def trl_args(algo: str, cfg, out_dir: str, processes: int = 1, progress: bool = False, use_cpu: bool | None = None):
    """TRL's config for b2b's `cfg` (an RLConfig): `cfg.batch_size` rollouts per step in all, split over
    `processes` (and `cfg.minibatches` optimizer steps), k samples per prompt, the same learning rate
    (constant), completion length, temperature (top-p 1, top-k off, no repetition penalty), KL
    coefficient, gradient clipping and epochs; fp32, no gradient checkpointing unless cfg asks,
    no logging integrations, no checkpoints."""
    from trl import GRPOConfig, RLOOConfig

    if algo not in TRL_TRAINERS:
        raise ValueError(f"trl: no maintained TRL trainer for {algo!r} (expected one of {', '.join(TRL_TRAINERS)})")
    per_step = cfg.batch_size // cfg.minibatches
    if per_step % processes:
        raise ValueError(f"trl: {per_step} rollouts per optimizer step do not split over {processes} processes")
    common = dict(
        output_dir=out_dir, per_device_train_batch_size=per_step // processes, num_generations=cfg.k,
        steps_per_generation=cfg.minibatches, gradient_accumulation_steps=1, num_iterations=cfg.ppo_epochs,
        max_steps=cfg.steps * cfg.minibatches * cfg.ppo_epochs, learning_rate=cfg.lr, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=cfg.max_grad_norm, beta=cfg.kl_coef,
        max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_p=1.0, top_k=0,
        repetition_penalty=1.0, seed=cfg.seed, bf16=False, fp16=False,
        gradient_checkpointing=cfg.gradient_checkpointing, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=not progress,
        use_cpu=(not torch.cuda.is_available()) if use_cpu is None else use_cpu, dataloader_num_workers=0)
    with warnings.catch_warnings():  # transformers renames gradient_checkpointing; TRL still sets it
        warnings.simplefilter("ignore", FutureWarning)
        if TRL_TRAINERS[algo] == "RLOOTrainer":
            return RLOOConfig(**common, normalize_advantages=False)
        return GRPOConfig(**common, epsilon=cfg.clip, scale_rewards="batch", loss_type="dapo")


def trl_train(algo: str, policy_path: str, reward_model, prompts: list[str], cfg, processes: int = 1,
              progress: bool = False, on_step=None, out_dir: str | None = None, use_cpu: bool | None = None) -> dict:
    """Train the policy with TRL's trainer for `algo` (`TRL_TRAINERS`) on b2b's settings (`trl_args`),
    b2b's reward model as its reward function and b2b's prompts; under `accelerate launch` each of
    `processes` processes trains its share of every batch (TRL and accelerate do the distribution).
    Returns the trained model, its tokenizer, per-step wall-clock times and TRL's log.

    on_step: called with no arguments after each of TRL's optimizer steps, once its time is taken
    (`b2b bench` runs one b2b step there, so that the two trainers' steps alternate)."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOTrainer, RLOOTrainer

    from b2b.models import load_policy, load_tokenizer

    tok = load_tokenizer(policy_path)
    torch.manual_seed(cfg.seed)
    use_cpu = (not torch.cuda.is_available()) if use_cpu is None else use_cpu
    model = load_policy(policy_path, "cpu" if use_cpu else None, trainable=True)
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)
            if on_step is not None:
                on_step()

    own_dir = out_dir is None
    out_dir = out_dir or tempfile.mkdtemp(prefix=f"b2b-trl-{algo}-")
    args = trl_args(algo, cfg, out_dir, processes, progress, use_cpu)
    level = _quiet(progress)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    trainer_cls = {"RLOOTrainer": RLOOTrainer, "GRPOTrainer": GRPOTrainer}[TRL_TRAINERS[algo]]
    try:
        with warnings.catch_warnings():  # a transformers deprecation that TRL still triggers
            warnings.simplefilter("ignore", FutureWarning)
            trainer = trainer_cls(model=model, reward_funcs=reward_function(reward_model, tok, cfg.readout),
                                  args=args, train_dataset=data, processing_class=tok, callbacks=[StepTimer()])
            trainer.remove_callback(PrinterCallback)
            trainer.train()
    finally:
        hf_logging.set_verbosity(level)
        if own_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
    model.eval()
    return {"model": model, "tokenizer": tok, "step_times": times, "log": trainer.state.log_history,
            "trainer": trainer}


def trl_rloo(policy_path: str, reward_model, prompts: list[str], cfg, progress: bool = False,
             on_step=None) -> dict:
    """`trl_train("rloo", ...)` in this one process: `trl.RLOOTrainer` on b2b's RLOO settings (`cfg`,
    an RLConfig with algo='rloo'), the same reward model, prompts, k, rollouts per step, completion
    length, learning rate, KL coefficient (k1, in the reward, as b2b), gradient clipping, one update
    per batch (what `b2b bench --vs-trl` times)."""
    res = trl_train("rloo", policy_path, reward_model, prompts, cfg, progress=progress, on_step=on_step)
    res.pop("trainer")
    return res
