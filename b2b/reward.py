"""Reward models: the two pairwise losses, training, readouts and evaluation.

Level 1 (the seed's regression model): one score per response, Bradley-Terry loss.
Level 2 (the seed's ten-class model): a distribution over ten quality classes per response,
trained so that the chosen response's class is likely higher than the rejected one's.

A reward model is a sequence-classification model initialised from the policy's backbone; it
reads each sequence at its last real token (`reward_scores`), on exactly the token ids
a rollout produces: chat-formatted prompt, then response + end-of-turn token.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from b2b.data import chat_prompts
from b2b.decoding import by_length, position_ids, unsort
from b2b.memory import check_fits, estimate_reward_training, reward_hints
from b2b.rollout import Rollout, last_token_index

NUM_CLASSES = 10


# ----------------------------------------------------------------------------- reading a reward model

def rollout_reward_scores(reward_model, rollout: Rollout, chunks: int | None = None, prompts: list | None = None) -> Tensor:
    """`reward_scores` of a `Rollout`'s prompt + completion, (B, num_labels), in length-sorted
    groups as `rollout_logprobs`. A `Retokenized` reward model (another tokenizer than the
    policy's) reads the decoded text instead, and needs the rollout's `prompts`; any other reward
    with its own `rollout_scores` (`b2b.overopt.Ensemble`) scores the rollout itself."""
    if isinstance(reward_model, Retokenized) or hasattr(reward_model, "rollout_scores"):
        return reward_model.rollout_scores(rollout, prompts)
    return unsort(*by_length(rollout, chunks, lambda sub: reward_scores(reward_model, sub.input_ids,
                                                                          sub.attention_mask)))


def reward_scores(reward_model, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, num_labels) scores of a sequence-classification model, read at the last real token.

    The backbone runs once; the score head is applied to the hidden state at
    `last_token_index(attention_mask)`. (transformers' own pooling looks for the last token
    that is not the pad id, which with pad == eos skips the end-of-turn token.)
    """
    head = getattr(reward_model, "score", None)
    if head is None:
        raise TypeError(f"{type(reward_model).__name__} has no `score` head: expected an "
                        "AutoModelForSequenceClassification (Llama-style) reward model")
    hidden = reward_model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                     position_ids=position_ids(attention_mask)).last_hidden_state
    idx = last_token_index(attention_mask)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]  # (B, H)
    return head(last).float()


class Retokenized(torch.nn.Module):
    """A reward model that scores a policy with another tokenizer (TRL's separate reward processing
    class): each completion is decoded with the policy's tokenizer, then prompt + answer are
    chat-formatted and encoded with the reward model's own tokenizer and template and read at the
    last real token, which is the reward model's end-of-turn token exactly where the policy ended
    its turn (`encode_responses` with `finished`). Batched like `score_sequences`.

        rm = Retokenized(load_reward_model("data/rm-level1"), load_tokenizer("data/rm-level1"), smol_tok)

    `retokenized` wraps a reward model only when the two tokenizers differ. The wrapper's weights
    are the reward model's (`fingerprint` reads them, so run records key on the same model)."""

    def __init__(self, model, tokenizer, policy_tokenizer, max_length: int = 512):
        super().__init__()
        self.model, self.tokenizer, self.policy_tokenizer, self.max_length = model, tokenizer, policy_tokenizer, max_length

    @property
    def config(self):
        return self.model.config

    def state_dict(self, *args, **kwargs):
        return self.model.state_dict(*args, **kwargs)

    def scores(self, prompts: list, texts: list[str], finished: list[bool]) -> Tensor:
        """(B, num_labels) raw outputs for answers given as text, on the reward model's device."""
        seqs = encode_responses(self.tokenizer, prompts, texts, self.max_length, finished=list(finished))
        return score_sequences(self.model, seqs, self.tokenizer.pad_token_id).to(next(self.model.parameters()).device)

    def rollout_scores(self, rollout: Rollout, prompts: list | None) -> Tensor:
        """(B, num_labels) for a policy's rollout of `prompts` (one per row), on the rollout's device."""
        from b2b.rollout import decode_completions

        if prompts is None or len(prompts) != rollout.completion_ids.shape[0]:
            raise TypeError("Retokenized reward model: expected the rollout's prompts, one per row "
                            "(its text is re-encoded with the reward model's tokenizer)")
        texts = decode_completions(self.policy_tokenizer, rollout)
        finished = rollout.finished(self.policy_tokenizer.eos_token_id).tolist()
        return self.scores(prompts, texts, finished).to(rollout.completion_ids.device)


def same_tokenizer(a, b) -> bool:
    """True when two tokenizers turn every chat into the same ids: the same vocabulary, end-of-turn
    token and chat template."""
    return (a is b) or (a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id
                        and getattr(a, "chat_template", None) == getattr(b, "chat_template", None))


def retokenized(reward_model, rm_tokenizer, policy_tokenizer, max_length: int = 512):
    """`reward_model` itself when it reads the policy's tokens, else a `Retokenized` wrapper."""
    if isinstance(reward_model, Retokenized) or same_tokenizer(rm_tokenizer, policy_tokenizer):
        return reward_model
    return Retokenized(reward_model, rm_tokenizer, policy_tokenizer, max_length)


# ----------------------------------------------------------------------------- losses

def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Level 1: L = -log sigmoid(r_w - r_l), averaged over pairs.

    Under the Bradley-Terry model P(w preferred to l) = sigmoid(r_w - r_l), so this is the
    negative log-likelihood of the annotators' choices. `logsigmoid` keeps it stable for any margin.
    """
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def ordinal_loss(logits_chosen: Tensor, logits_rejected: Tensor) -> Tensor:
    """Level 2: L = -log sum_{i>j} p_w(i) p_l(j), averaged over pairs.

    p_w, p_l = softmax over the ten classes of the chosen (winner) and rejected (loser) response;
    the sum is P(class of the winner > class of the loser) when the two are drawn independently.
    Computed in log space: logsumexp over the pairs (i, j) with i > j of log p_w(i) + log p_l(j)
    (a strictly lower-triangular mask over [i, j]; `triu` would sum P(loser above winner)).
    """
    log_pw = torch.log_softmax(logits_chosen.float(), dim=-1)   # (B, K)
    log_pl = torch.log_softmax(logits_rejected.float(), dim=-1)
    joint = log_pw[:, :, None] + log_pl[:, None, :]              # (B, K, K): [b, i, j]
    K = joint.shape[-1]
    winner_higher = torch.ones(K, K, dtype=torch.bool, device=joint.device).tril(diagonal=-1)  # i > j
    return -joint.masked_fill(~winner_higher, float("-inf")).logsumexp(dim=(1, 2)).mean()


def pair_loss(scores_chosen: Tensor, scores_rejected: Tensor) -> Tensor:
    """The loss for a model's head size: Bradley-Terry for (B, 1), ordinal for (B, K > 1)."""
    if scores_chosen.shape[-1] == 1:
        return bradley_terry_loss(scores_chosen.squeeze(-1), scores_rejected.squeeze(-1))
    return ordinal_loss(scores_chosen, scores_rejected)


# ----------------------------------------------------------------------------- readouts

def expected_class(logits: Tensor) -> Tensor:
    """(B,) E[class] = sum_k k * softmax(logits)_k, classes numbered 1..K."""
    classes = torch.arange(1, logits.shape[-1] + 1, dtype=torch.float32, device=logits.device)
    return (logits.float().softmax(-1) * classes).sum(-1)


def prob_at_least(logits: Tensor, k: int = 7) -> Tensor:
    """(B,) P(class >= k), classes numbered 1..K: 'how likely is this a good answer'."""
    return logits.float().softmax(-1)[:, k - 1:].sum(-1)


READOUTS = ("expected", "p7")


def scalar_reward(scores: Tensor, readout: str = "expected") -> Tensor:
    """(B,) reward from a reward model's (B, K) output: the score itself when K == 1; for the
    ordinal model the expected class (`readout="expected"`) or P(class >= 7) (`"p7"`)."""
    if readout not in READOUTS:
        raise ValueError(f"readout: expected one of {', '.join(READOUTS)}, got {readout!r}")
    if scores.shape[-1] == 1:
        return scores.squeeze(-1).float()
    if readout == "p7":
        return prob_at_least(scores)  # k = 7
    return expected_class(scores)


def win_probability(scores_chosen: Tensor, scores_rejected: Tensor) -> Tensor:
    """(B,) the model's probability that the first response beats the second.

    Bradley-Terry (K == 1): sigmoid(r_w - r_l). Ordinal (K > 1): P(class_w > class_l) plus half of
    P(class_w == class_l) (a tie is a coin flip), with the classes drawn independently from the two
    softmaxes. Compare with how often the first really won: a calibration check.
    """
    if scores_chosen.shape[-1] == 1:
        return torch.sigmoid((scores_chosen - scores_rejected).squeeze(-1).float())
    pw, pl = scores_chosen.float().softmax(-1), scores_rejected.float().softmax(-1)
    joint = pw[:, :, None] * pl[:, None, :]                      # (B, K, K): [b, i, j]
    return joint.tril(diagonal=-1).sum((1, 2)) + 0.5 * joint.diagonal(dim1=1, dim2=2).sum(-1)


# ----------------------------------------------------------------------------- data

def encode_responses(tokenizer, prompts: list, responses: list[str], max_length: int = 512,
                     finished: list[bool] | None = None) -> list[list[int]]:
    """Token ids of chat-formatted prompt + response + end-of-turn, exactly as a rollout makes
    them; with `finished`, the end-of-turn token only where it is True (an answer cut off at
    `max_new_tokens` is read at its last token, as in the rollout). Over `max_length`, the prompt
    loses tokens from its start, then the response its end."""
    p_ids = tokenizer(chat_prompts(tokenizer, prompts), add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for i, (p, r) in enumerate(zip(p_ids, r_ids)):
        r = r[: max_length - 16] + ([eos] if finished is None or finished[i] else [])
        out.append(p[max(0, len(p) + len(r) - max_length):] + r)
    return out


def encode_pairs(tokenizer, pairs: list[dict], max_length: int = 512) -> tuple[list, list]:
    """(chosen ids, rejected ids) of validated preference pairs (see `b2b.data`)."""
    prompts = [p["chosen"][:-1] for p in pairs]
    chosen = encode_responses(tokenizer, prompts, [p["chosen"][-1]["content"] for p in pairs], max_length)
    rejected = encode_responses(tokenizer, prompts, [p["rejected"][-1]["content"] for p in pairs], max_length)
    return chosen, rejected


def pad_left(seqs: list[list[int]], pad_id: int, device=None) -> tuple[Tensor, Tensor]:
    """Left-pad token id lists -> (ids, attention mask)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, T - len(s):] = 1
    return ids.to(device), mask.to(device)


SCORE_TOKENS = 16384
"""Most tokens (rows x padded width) `score_sequences` puts through the model at once: 128 tiny-world
answers of about 100 tokens, but only 16 HelpSteer2 pairs' sequences of 1,024 (the MLP of one layer
alone holds 3 x 1536 numbers a token)."""


@torch.no_grad()
def score_sequences(rm, seqs: list[list[int]], pad_id: int, batch_size: int = 128,
                    max_tokens: int = SCORE_TOKENS) -> Tensor:
    """(N, K) raw reward-model outputs for token id lists, in batches sorted by length, each of at
    most `batch_size` rows and `max_tokens` tokens (one row at least)."""
    device = next(rm.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = torch.empty(len(seqs), rm.config.num_labels)
    s = 0
    while s < len(seqs):
        idx = order[s:s + batch_size]
        n = max(1, min(len(idx), max_tokens // max(1, len(seqs[idx[-1]]))))  # idx[-1]: the longest
        idx = idx[:n]
        ids, mask = pad_left([seqs[i] for i in idx], pad_id, device)
        out[idx] = reward_scores(rm, ids, mask).cpu()
        s += n
    return out


def score_responses(rm, tokenizer, prompts: list, responses: list[str], readout: str = "expected",
                    max_length: int = 512, finished: list[bool] | None = None) -> Tensor:
    """(N,) rewards of `responses` to `prompts` (text in, one number per response out; with
    `finished`, the end-of-turn token only where it is True, see `encode_responses`)."""
    seqs = encode_responses(tokenizer, prompts, responses, max_length, finished)
    return scalar_reward(score_sequences(rm, seqs, tokenizer.pad_token_id), readout)


def pair_accuracy(rm, tokenizer, pairs: list[dict], readout: str = "expected", max_length: int = 512) -> float:
    """Share of pairs whose chosen response gets the higher reward."""
    chosen, rejected = encode_pairs(tokenizer, pairs, max_length)
    r = scalar_reward(score_sequences(rm, chosen + rejected, tokenizer.pad_token_id), readout)
    return (r[: len(pairs)] > r[len(pairs):]).float().mean().item()


# ----------------------------------------------------------------------------- training

@dataclass(frozen=True)
class RewardConfig:
    """How a reward model is trained (defaults: the tiny profile, notebooks 01-02)."""

    level: int = 1
    """1: Bradley-Terry regression model (one score); 2: ten-class ordinal model."""
    epochs: float = 1.0
    """Passes over the training pairs (fractions allowed)."""
    batch_size: int = 32
    """Pairs per optimizer step (2x sequences)."""
    micro_batch_size: int | None = None
    """Pairs per forward/backward pass, their gradients accumulated over the step's batch_size pairs
    (the same gradient, less activation memory; None: the whole batch at once)."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of keeping them (transformers'
    gradient checkpointing): about a third more compute, activation memory of one layer, not all."""
    lr: float = 5e-4
    """AdamW learning rate, after a linear warm-up, with cosine decay to zero."""
    warmup: int = 50
    weight_decay: float = 0.0
    max_length: int = 512
    """Longest sequence in tokens (prompt truncated from its start, response from its end)."""
    limit: int | None = None
    """Use only the first `limit` training pairs (None: all)."""
    eval_every: int = 100
    """Steps between held-out accuracy checks for the training curve (on up to 500 pairs)."""
    seed: int = 0

    @property
    def num_labels(self) -> int:
        return 1 if self.level == 1 else NUM_CLASSES

    def validate(self) -> "RewardConfig":
        """The config itself, or a one-line `ConfigError` naming the first bad field."""
        from b2b.errors import ConfigError
        from b2b.guards import check_fields

        where = "config: field 'reward."
        if self.level not in (1, 2) or isinstance(self.level, bool):
            raise ConfigError(f"{where}level': expected 1 or 2, got {self.level!r}")
        check_fields(self, where, positive=("epochs", "batch_size", "lr", "max_length"),
                     non_negative=("warmup", "weight_decay", "eval_every"),
                     whole=("batch_size", "max_length", "warmup", "eval_every"), flags=("gradient_checkpointing",))
        for name in ("limit", "micro_batch_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{where}{name}': expected a positive whole number or null, got {v!r}")
        return self


def train_reward_model(rm, tokenizer, pairs: list[dict], cfg: RewardConfig, eval_pairs: list[dict] | None = None,
                       progress: bool = True, precision: str = "auto") -> list[dict]:
    """Train `rm` (a fresh model from `b2b.load_reward_model(backbone, cfg.num_labels)`) on
    preference pairs; returns the history: one dict per step (loss, train accuracy, lr) plus
    `eval_accuracy` every `cfg.eval_every` steps. `precision`: the forward and backward passes
    (`b2b.precision`; "auto": autocast on a GPU, fp16 with a gradient scaler on a T4, bf16 on
    compute capability 8+; fp32 on a CPU); the weights and AdamW stay fp32. A step fp16's scaler
    skipped (its scaled gradients overflowed) is marked `skipped` in its row."""
    from tqdm.auto import tqdm

    from b2b.data import length_batches, warmup_cosine
    from b2b.models import checkpointing

    cfg.validate()
    torch.manual_seed(cfg.seed)
    pairs = pairs[: cfg.limit] if cfg.limit else pairs
    chosen, rejected = encode_pairs(tokenizer, pairs, cfg.max_length)
    eval_pairs = (eval_pairs or [])[:500]
    device = next(rm.parameters()).device
    if not pairs:
        from b2b.errors import DataError
        raise DataError("reward model: no training pairs (expected at least one)")
    batch_size = min(cfg.batch_size, len(pairs))
    if batch_size < cfg.batch_size:
        print(f"reward model: {len(pairs)} training pair{'s' * (len(pairs) > 1)}, fewer than batch_size "
              f"{cfg.batch_size}: each step uses all {len(pairs)}")
    steps = max(1, int(cfg.epochs * len(pairs) / batch_size))
    g = torch.Generator().manual_seed(cfg.seed)
    batches = length_batches([max(len(c), len(r)) for c, r in zip(chosen, rejected)], batch_size, g)
    opt = torch.optim.AdamW(rm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, steps)
    history, t0 = [], time.time()
    from b2b.precision import Precision

    prec = Precision(device, precision)
    rm.train()
    check_fits(estimate_reward_training(rm, cfg), device, f"reward model ({cfg.micro_batch_size or batch_size} pairs "
               f"of up to max_length {cfg.max_length} tokens per pass)", reward_hints(cfg))
    if cfg.gradient_checkpointing:
        checkpointing(rm)
    bar = tqdm(range(steps), desc=f"reward model (level {cfg.level})", disable=not progress)
    for step in bar:
        idx = next(batches)
        opt.zero_grad(set_to_none=True)
        loss, sc, sr = accumulated_pair_loss(rm, [chosen[i] for i in idx], [rejected[i] for i in idx],
                                             tokenizer.pad_token_id, device, cfg.micro_batch_size, prec)
        prec.clip(opt, rm.parameters(), 1.0)
        stepped = prec.step(opt)
        sched.step()
        acc = (scalar_reward(sc.detach()) > scalar_reward(sr.detach())).float().mean().item()
        row = {"step": step + 1, "loss": loss.item(), "accuracy": acc, "lr": sched.get_last_lr()[0],
               "seconds": time.time() - t0, **({} if stepped else {"skipped": True})}
        if eval_pairs and ((step + 1) % cfg.eval_every == 0 or step + 1 == steps):
            rm.eval()
            row["eval_accuracy"] = pair_accuracy(rm, tokenizer, eval_pairs, max_length=cfg.max_length)
            rm.train()
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{acc:.2f}")
    if cfg.gradient_checkpointing:
        checkpointing(rm, on=False)
    rm.eval()
    return history


def accumulated_pair_loss(rm, chosen: list[list[int]], rejected: list[list[int]], pad_id: int, device,
                          micro_batch_size: int | None = None, precision=None) -> tuple[Tensor, Tensor, Tensor]:
    """Backward of the pair loss of one batch, `micro_batch_size` pairs per forward pass; returns
    (loss, chosen scores, rejected scores), detached. Each micro-batch's mean loss is weighted by
    its share of the pairs, so the accumulated gradient is the whole batch's:

        grad (1/B) sum_i l_i  =  sum_m (B_m / B) grad (1/B_m) sum_{i in m} l_i

    `precision` (`b2b.precision.Precision`): the forward passes under its autocast, the backward
    pass through it (scaled in fp16); default fp32."""
    from b2b.precision import FP32

    precision = precision or FP32
    B = len(chosen)
    step = micro_batch_size or B
    total, scores_c, scores_r = 0.0, [], []
    for s in range(0, B, step):
        c, r = chosen[s:s + step], rejected[s:s + step]
        ids, mask = pad_left(c + r, pad_id, device)
        with precision.autocast():
            scores = reward_scores(rm, ids, mask).float()         # (2 B_m, K)
            sc, sr = scores[: len(c)], scores[len(c):]
            loss = pair_loss(sc, sr) * (len(c) / B)
        precision.backward(loss)
        total += loss.detach()
        scores_c.append(sc.detach())
        scores_r.append(sr.detach())
    return total, torch.cat(scores_c), torch.cat(scores_r)


def save_reward_model(rm, tokenizer, out: str | Path, half: bool = False) -> Path:
    """save_pretrained (safetensors) + tokenizer; `half` stores fp16 weights (shipped models)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() for k, v in rm.state_dict().items()} if half else None
    rm.save_pretrained(out, safe_serialization=True, state_dict=state)
    tokenizer.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------- rewards of a rollout

def policy_rewards(reward_model, ro, prompts: list[str], texts: list[str], finished: torch.Tensor,
                   readout: str = "expected") -> torch.Tensor:
    """(B,) rewards of a rollout: a reward model read at each sequence's last real token, or any
    callable `reward_model(prompts, completions, finished) -> list or tensor of floats` (e.g. the
    gold judge, as an upper bound on what a perfect reward model would give)."""
    if isinstance(reward_model, torch.nn.Module):
        with torch.no_grad():
            return scalar_reward(rollout_reward_scores(reward_model, ro, prompts=prompts), readout)
    r = reward_model(prompts, texts, finished.tolist())
    return torch.as_tensor(r, dtype=torch.float32, device=ro.completion_ids.device)
