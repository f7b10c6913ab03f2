"""The rollout engine: batched sampling, completion masks, log-probs from ids, reward readout.

Shapes: B = batch, P = prompt length (left-padded), C = completion length (right-padded).

    prompt:      [pad pad <|im_start|> user ... assistant \\n]      (B, P), left padding
    completion:  [A banana is yellow . <|im_end|> pad pad]          (B, C)
    mask:        [1 1      1  1      1 1          0   0  ]          1 up to and including end of turn

Log-probs always come from these token ids (one forward pass over prompt + completion), never
from decoded and re-tokenised text, so they are exactly the log-probs of what was sampled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from b2b import decoding
from b2b.data import chat_prompts, check_prompt_lengths, prompt_too_long  # noqa: F401 (chat_prompts: re-exported)
from b2b.decoding import LlamaDecoder, ModelForward, by_length, position_ids, unsort  # noqa: F401 (position_ids: re-exported)


@dataclass
class Rollout:
    """A batch of sampled completions and everything needed to learn from them."""

    prompt_ids: Tensor        # (B, P) left-padded chat-formatted prompts
    prompt_mask: Tensor       # (B, P) 1 on real prompt tokens
    completion_ids: Tensor    # (B, C) sampled tokens; pad after the end of turn
    completion_mask: Tensor   # (B, C) 1 up to and including the first end-of-turn token
    sampler_logprobs: Tensor  # (B, C) log-prob of each sampled token under the sampler, 0 where masked

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    @property
    def lengths(self) -> Tensor:
        """(B,) completion lengths in tokens, end-of-turn token included."""
        return self.completion_mask.sum(1)

    def select(self, idx: Tensor | slice) -> "Rollout":
        """The rollout restricted to rows `idx` (a minibatch)."""
        return Rollout(self.prompt_ids[idx], self.prompt_mask[idx], self.completion_ids[idx],
                       self.completion_mask[idx], self.sampler_logprobs[idx])

    def trimmed(self, idx: Tensor) -> "Rollout":
        """Rows `idx`, without the padding columns none of them uses (prompts are left-padded,
        completions right-padded, so only the outer columns can go)."""
        sub = self.select(idx)
        P, p, c = sub.prompt_ids.shape[1], int(sub.prompt_mask.sum(1).max()), int(sub.completion_mask.sum(1).max())
        return Rollout(sub.prompt_ids[:, P - p:], sub.prompt_mask[:, P - p:], sub.completion_ids[:, :c],
                       sub.completion_mask[:, :c], sub.sampler_logprobs[:, :c])

    def length_chunks(self, n: int) -> list[Tensor]:
        """Row indices in `n` groups of similar length (prompt + completion), shortest first: each
        group, `trimmed`, carries far less padding than the whole batch (see `rollout_logprobs`)."""
        order = (self.prompt_mask.sum(1) + self.completion_mask.sum(1)).argsort(stable=True)
        return [c for c in order.chunk(max(1, min(n, len(order)))) if len(c)]

    def finished(self, eos_token_id: int) -> Tensor:
        """(B,) True where the completion ended with an end-of-turn token."""
        ends = self.completion_ids.gather(1, (self.lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        return (ends == eos_token_id) & (self.lengths > 0)


def completion_mask(completion_ids: Tensor, eos_token_id: int) -> Tensor:
    """1 on every token up to and including the first `eos_token_id`, 0 after it.

    mask[b, t] = 1  iff  no end-of-turn token occurs in completion_ids[b, :t]
    """
    is_eos = (completion_ids == eos_token_id).long()
    eos_before = is_eos.cumsum(1) - is_eos  # end-of-turn tokens strictly before t
    return (eos_before == 0).long()


def last_token_index(attention_mask: Tensor) -> Tensor:
    """(B,) index of the last position with attention_mask == 1 (any padding side).

    Uses the mask, never `input_ids != pad_token_id`, so it is right when pad == eos: the
    end-of-turn token itself is the last real token.
    """
    T = attention_mask.shape[1]
    return T - 1 - attention_mask.long().flip(1).argmax(1)


def encode_prompts(tokenizer, prompts: list[str] | list[list[dict]], device=None) -> tuple[Tensor, Tensor]:
    """Chat-format and left-pad `prompts` (user strings or message lists) -> (ids, mask)."""
    enc = tokenizer(chat_prompts(tokenizer, prompts), add_special_tokens=False, padding=True,
                    padding_side="left", return_tensors="pt")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def _sample(logits: Tensor, temperature: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """One token per row from softmax(logits / temperature); returns (tokens, their log-probs, and a
    (B,) flag of rows whose probabilities are not finite).

    Inverse-CDF sampling: with u ~ U[0, 1) per row, the token is the first v whose cumulative
    probability exceeds u * total, i.e. P(v) = p_v exactly (a token of probability 0 is never drawn).
    One uniform number per row and a cumulative sum: 20x faster than `torch.multinomial` on a
    (64, 1658) batch on CPU (measured: docs/performance.md). A flagged row (NaN or
    inf) draws some index instead of failing (on a GPU, a device-side assert); the caller raises
    once the rollout is done, so no host sync is added per token."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    cdf = logp.exp().cumsum(-1)
    bad = ~torch.isfinite(cdf[:, -1])  # a NaN or inf anywhere in a row makes its total non-finite
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype)
    tok = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp(max=cdf.shape[1] - 1)
    return tok, logp.gather(1, tok[:, None]).squeeze(1), bad


def repetition_penalized(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """Sampling-time repetition penalty (CTRL; transformers' `repetition_penalty`): the logit of
    every token already in the sequence (prompt included) is divided by `penalty` if positive and
    multiplied by it if negative, so a seen token's logit always goes down: it loses probability
    against every unseen token (its own probability can still rise if another seen token loses more).

        z'_v = z_v / penalty  if seen_v and z_v > 0;   z_v * penalty  if seen_v and z_v <= 0;   z_v otherwise

    `seen` is a (B, V) boolean mask. The sampler then draws from softmax(z' / T), which is not the
    policy: the samples are off-policy (see `Rollout.sampler_logprobs`).
    """
    z = logits.float()
    return torch.where(seen, torch.where(z > 0, z / penalty, z * penalty), z)


def context_length(model) -> int | None:
    """The longest sequence (prompt + completion, in tokens) a model's positions cover, from its
    config (`max_position_embeddings`; a model or its config); None when the config does not say."""
    n = getattr(getattr(model, "config", model), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def _check_fits(model, prompts, ids: Tensor, mask: Tensor, max_new_tokens: int) -> None:
    """A batch whose longest prompt plus `max_new_tokens` overflows the model's context is a one-line
    `DataError` (no host sync: the padded width is the longest prompt). `b2b.train` and
    `b2b.evaluate` check every prompt once, up front, with the file and line where they can."""
    ctx = context_length(model)
    if ctx is None or ids.shape[1] + max_new_tokens <= ctx:
        return
    i = int(mask.sum(1).argmax())
    raise prompt_too_long(f"prompt {i}", prompts[i], int(mask[i].sum()), max_new_tokens, ctx)


def check_prompts_fit(policy, tokenizer, reward_model, prompts: list, eval_prompts: list, max_new_tokens: int,
                      locate=None) -> int:
    """Every prompt, chat-formatted, plus `max_new_tokens` must fit the context of the policy (and of
    a reward model, which reads the same ids; either may be given as its config, or None): a
    one-line error naming the first one that does not, checked once before anything is sampled or
    written. `locate(prompt)` may name the file and line it came from. Returns the longest prompt's
    length in tokens (the memory estimate of `b2b.memory` needs it)."""
    ctx = min((n for n in (context_length(m) for m in (policy, reward_model) if m is not None) if n), default=None)
    return max(check_prompt_lengths(tokenizer, prompts, max_new_tokens, ctx, "prompt", locate),
               check_prompt_lengths(tokenizer, eval_prompts, max_new_tokens, ctx, "held-out prompt", locate))


@torch.no_grad()  # not inference_mode: the ids feed the training forward pass
def sample_completions(model, tokenizer, prompts: list[str] | list[list[dict]], max_new_tokens: int = 64,
                       temperature: float = 1.0, generator: torch.Generator | None = None,
                       repetition_penalty: float = 1.0) -> Rollout:
    """Sample one completion per prompt, all prompts in one batch, with a KV cache.

    Plain ancestral sampling from softmax(logits / temperature): no top-k, top-p, and no
    repetition penalty unless `repetition_penalty` != 1 (see `repetition_penalized`), so at
    temperature 1 without the penalty the samples are exactly on-policy. `generator` (on the
    model's device) makes the samples reproducible. `sampler_logprobs` are the log-probs under
    the distribution actually sampled from (penalty and temperature included).
    """
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids, mask = encode_prompts(tokenizer, prompts, device)
    _check_fits(model, prompts, ids, mask, max_new_tokens)
    lean = decoding.LEAN_DECODE and LlamaDecoder.supports(model)
    forward = LlamaDecoder(model, ids, mask, max_new_tokens) if lean else ModelForward(model, ids, mask)
    logits = forward.prefill()
    B = ids.shape[0]
    penalize = repetition_penalty != 1.0
    if penalize:  # tokens of the (unpadded) prompt count as seen, as in transformers
        seen = torch.zeros(B, logits.shape[-1], dtype=torch.bool, device=device)
        seen.scatter_(1, torch.where(mask.bool(), ids, ids[:, -1:]), True)  # pads -> a real token
    done = torch.zeros(B, dtype=torch.bool, device=device)
    nonfinite = torch.zeros(B, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)  # the rows still in the forward pass
    tokens, logps = [], []
    for _ in range(max_new_tokens):
        if penalize:
            logits = repetition_penalized(logits, seen, repetition_penalty)
        tok, lp, bad = _sample(logits, temperature, generator)
        was_done = done[rows]
        nonfinite[rows] |= bad & ~was_done
        tok = torch.where(was_done, torch.full_like(tok, pad), tok)
        tokens.append(torch.full((B,), pad, dtype=tok.dtype, device=device).index_copy(0, rows, tok))
        logps.append(torch.zeros(B, device=device).index_copy(0, rows, torch.where(was_done, 0.0, lp)))
        running = ~(was_done | (tok == eos))
        done[rows] = ~running
        n_running = int(running.sum())  # one host sync per token (the loop must know when to stop)
        if n_running == 0:
            break
        if n_running <= decoding.COMPACT_AT * len(rows):  # drop finished rows from the batch and its KV cache
            keep = running.nonzero().squeeze(1)
            rows, tok = rows[keep], tok[keep]
            if penalize:
                seen = seen[keep]
            forward.keep(keep)
        if penalize:
            seen.scatter_(1, tok[:, None], True)
        logits = forward.step(tok)
    if bool(nonfinite.any()):
        from b2b.errors import TrainingError
        raise TrainingError(f"sampling probabilities are not finite (NaN or inf) for {int(nonfinite.sum())} of {B} "
                            "prompts: the policy's weights or logits overflowed")
    completion = torch.stack(tokens, dim=1)
    cmask = completion_mask(completion, eos)
    return Rollout(ids, mask, completion, cmask, torch.stack(logps, dim=1) * cmask)


def sequence_logprobs(logits: Tensor, ids: Tensor, prompt_len: int, completion_mask: Tensor,
                      temperature: float = 1.0, with_entropy: bool = False):
    """(B, C) log-probabilities of the completion tokens `ids[:, prompt_len:]` from the logits of one
    forward pass over the whole sequence `ids` (B, P + C), where `logits[:, j]` predicts `ids[:, j + 1]`:

        log pi(y_t | x, y_<t) = m_t * log_softmax(z_{P-1+t} / T)[y_t],   t = 0 .. C-1

    the shift by one (the completion's first token is predicted at the prompt's last position), the
    gather of each sampled id, the mask (0 on padding) and the temperature the answers were sampled
    at. The log-softmax is z[y] - logsumexp(z), with no (B, C, V) log-prob tensor. With
    `with_entropy`, also the (B, C) entropy H_t = logsumexp(z) - sum_v softmax(z)_v z_v of each
    next-token distribution (no gradient)."""
    z = logits[:, prompt_len - 1:-1].float()  # (B, C, V)
    if temperature != 1.0:  # (no copy of the largest tensor of the step when it changes nothing)
        z = z / temperature
    lse = z.logsumexp(-1)
    chosen = z.gather(-1, ids[:, prompt_len:, None]).squeeze(-1)
    logp = (chosen - lse) * completion_mask
    if not with_entropy:
        return logp
    with torch.no_grad():
        entropy = (lse - (z.softmax(-1) * z).sum(-1)) * completion_mask
    return logp, entropy


def completion_logprobs(model, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                        completion_mask: Tensor, temperature: float = 1.0, with_entropy: bool = False):
    """(B, C) log pi(y_t | x, y_<t) of each completion token, 0 where masked. One forward pass.

    The logits at position P - 1 + t predict completion token t; only those C + 1 positions go
    through the LM head (`logits_to_keep`), so `sequence_logprobs` reads them as a sequence whose
    "prompt" is its first token. With `with_entropy`, also each position's entropy (see there).
    """
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, completion_mask], dim=1)
    C = completion_ids.shape[1]
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                   logits_to_keep=C + 1).logits  # (B, C + 1, V)
    return sequence_logprobs(logits, ids[:, -(C + 1):], 1, completion_mask, temperature, with_entropy)


def rollout_logprobs(model, rollout: Rollout, temperature: float = 1.0, with_entropy: bool = False,
                     chunks: int | None = None):
    """`completion_logprobs` of a `Rollout` under `model` (policy or reference), (B, C).

    The rows run in `chunks` length-sorted groups (default `b2b.decoding.LENGTH_CHUNKS` for batches of 32 rows
    or more), each without the padding it does not need; the result is the same (B, C) tensor,
    differentiable, as one forward pass over the whole padded batch would give."""
    C = rollout.completion_ids.shape[1]
    outs, groups = by_length(rollout, chunks, lambda sub: completion_logprobs(
        model, sub.prompt_ids, sub.prompt_mask, sub.completion_ids, sub.completion_mask, temperature, with_entropy))
    if not with_entropy:
        return unsort(outs, groups, C)
    return unsort([o[0] for o in outs], groups, C), unsort([o[1] for o in outs], groups, C)


def decode_completions(tokenizer, rollout: Rollout) -> list[str]:
    """The completions as text (special tokens and padding dropped), for judges and display."""
    ids = (rollout.completion_ids * rollout.completion_mask).tolist()
    lens = rollout.lengths.tolist()
    return tokenizer.batch_decode([row[:n] for row, n in zip(ids, lens)], skip_special_tokens=True)
