"""The rollout engine's fast path: a lean Llama decoder, KV-cache compaction, length chunking.

None of it changes a result (each is tested against the plain path); `b2b.rollout` reads the same
with all three switched off. Measured gains: docs/performance.md.

- `LlamaDecoder`: a lean forward pass of a Llama causal LM for sampling: the same arithmetic as
  transformers' `LlamaForCausalLM`, with none of its per-call work (`LEAN_DECODE`).
- `ModelForward`: the same interface through any causal LM's own forward and KV cache.
- Compaction (`COMPACT_AT`): finished rows leave the sampling batch and its cache.
- Length chunking (`LENGTH_CHUNKS`, `by_length`, `unsort`): full-sequence forwards run in
  length-sorted groups, each padded only to its own longest row.

`sample_completions` calls the model once per new token. On a small model and a CPU, most of a
transformers call is not arithmetic: building the attention mask, rotary embeddings, growing the
KV cache by concatenation, module dispatch. `LlamaDecoder` does, per new token and layer:

    h = rmsnorm(x)                    q, k, v = h W_qkv^T          (one matmul: W_q, W_k, W_v stacked)
    q, k = rope(q, k, pos)            K[:, t], V[:, t] = k, v      (a cache allocated once)
    x = x + softmax(q K^T / sqrt(d) + mask) V W_o^T                (one batched matmul per side; grouped
    h = rmsnorm(x)                                                  query heads share their K/V head)
    x = x + (silu(h W_gate^T) * h W_up^T) W_down^T                 (W_gate, W_up stacked)

and `logits = rmsnorm(x) W_head^T` for the last position only. Cosines and sines are read from a
table made once. The weights are the model's own (stacked once per rollout, no gradient), so the
logits equal the model's up to float rounding (tested), and the samples are the same tokens: on
1,024 prompts x 64 tokens, from the SFT policy and from trained ones, not one row differed. Over a
long training run a draw that falls within float rounding of a token boundary eventually differs
(an RLOO run on `b2b bench`'s workload was identical for 126 steps), and from then on the two runs
part ways, as runs on one and two threads do.

Only a plain transformers `LlamaForCausalLM` qualifies (`LlamaDecoder.supports`): the tiny policy
and SmolLM2. Anything else (a LoRA-wrapped policy, another architecture, rope scaling that depends
on the sequence length) samples through the model's own forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from b2b.models import cache_argument, returned_cache

def position_ids(attention_mask: Tensor) -> Tensor:
    """(B, T) positions that skip left padding: 0 at the first real token (as `generate` does)."""
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)



STATIC_ROPE = ("default", "linear", "llama3")
"""Rope types whose cosines depend on the position only (not on the sequence length)."""


def _rope_type(config) -> str:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "unknown"


class LlamaDecoder:
    """Prefill a left-padded prompt batch, then one token per call, with a static KV cache.

        dec = LlamaDecoder(model, prompt_ids, prompt_mask, max_new_tokens)
        logits = dec.prefill()        # (B, V): next-token logits after each prompt
        dec.keep(rows)                # drop finished rows (and their cache)
        logits = dec.step(tokens)     # (n,) tokens of the rows kept -> (n, V)
    """

    @staticmethod
    def supports(model) -> bool:
        """True for a plain transformers `LlamaForCausalLM` this class computes exactly."""
        try:
            from transformers import LlamaForCausalLM
        except ImportError:  # pragma: no cover
            return False
        if type(model) is not LlamaForCausalLM:
            return False
        c = model.config
        if (getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False) or c.hidden_act != "silu"
                or getattr(c, "pretraining_tp", 1) not in (None, 1) or _rope_type(c) not in STATIC_ROPE):
            return False
        projections = [model.lm_head] + [m for layer in model.model.layers for m in (
            layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
            layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)]
        return all(type(m) is nn.Linear for m in projections)

    @torch.no_grad()
    def __init__(self, model, prompt_ids: Tensor, prompt_mask: Tensor, max_new_tokens: int):
        c, m = model.config, model.model
        self.n_heads, self.n_kv = c.num_attention_heads, c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // self.n_heads
        self.group = self.n_heads // self.n_kv
        self.eps, self.inter = c.rms_norm_eps, c.intermediate_size
        self.q_dim, self.kv_dim = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        self.emb, self.norm, self.head = m.embed_tokens.weight, m.norm.weight, model.lm_head.weight
        self.dtype, device = self.emb.dtype, self.emb.device
        self.layers = [(layer.input_layernorm.weight, layer.post_attention_layernorm.weight,
                        torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
                                   layer.self_attn.v_proj.weight]),
                        layer.self_attn.o_proj.weight,
                        torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]),
                        layer.mlp.down_proj.weight) for layer in m.layers]
        B, P = prompt_ids.shape
        self.ids, self.length, self.size = prompt_ids, P, P + max_new_tokens
        self.pos = position_ids(prompt_mask)  # (B, P)
        table = torch.arange(self.size, device=device)[None]  # positions < P + max_new_tokens
        cos, sin = m.rotary_emb(self.emb[:1], table)
        self.cos, self.sin = cos[0], sin[0]  # (positions, head_dim)
        # 0 where a key may be attended to, -inf on left padding; generated tokens are always kept
        self.bias = torch.zeros(B, self.size, dtype=self.dtype, device=device)
        self.bias[:, :P].masked_fill_(prompt_mask == 0, float("-inf"))
        self.prompt_mask = prompt_mask.bool()
        self.k = [torch.empty(B, self.n_kv, self.size, self.head_dim, dtype=self.dtype, device=device)
                  for _ in self.layers]
        self.v = [torch.empty_like(k) for k in self.k]

    def _rmsnorm(self, x: Tensor, w: Tensor) -> Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), w, self.eps)
        h = x.float()  # transformers' LlamaRMSNorm: normalise in float32, scale in the model's dtype
        return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def _rope(self, qk: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        half = self.head_dim // 2  # rotate_half(x) = [-x2, x1]
        return qk * cos + torch.cat([-qk[..., half:], qk[..., :half]], -1) * sin

    def _layer_in(self, x: Tensor, ln: Tensor, w_qkv: Tensor, cos: Tensor, sin: Tensor):
        """Queries (.., n_heads, hd), keys and values (.., n_kv, hd) of x (.., hidden), rope applied."""
        qkv = F.linear(self._rmsnorm(x, ln), w_qkv)
        shape = qkv.shape[:-1]
        qk = self._rope(qkv[..., :self.q_dim + self.kv_dim].view(*shape, self.n_heads + self.n_kv, self.head_dim),
                        cos, sin)
        return (qk[..., :self.n_heads, :], qk[..., self.n_heads:, :],
                qkv[..., self.q_dim + self.kv_dim:].view(*shape, self.n_kv, self.head_dim))

    def _layer_out(self, x: Tensor, o: Tensor, ln: Tensor, w_o: Tensor, w_gu: Tensor, w_down: Tensor) -> Tensor:
        x = x + F.linear(o, w_o)
        gate, up = F.linear(self._rmsnorm(x, ln), w_gu).split([self.inter, self.inter], -1)
        return x + F.linear(F.silu(gate) * up, w_down)

    def _logits(self, x: Tensor) -> Tensor:
        return F.linear(self._rmsnorm(x, self.norm), self.head)

    @torch.no_grad()
    def prefill(self) -> Tensor:
        """(B, V) logits of the token after each prompt; fills the cache with the prompts' keys and values."""
        B, P = self.ids.shape
        x = F.embedding(self.ids, self.emb)
        cos, sin = self.cos[self.pos][:, :, None], self.sin[self.pos][:, :, None]  # (B, P, 1, hd)
        causal = torch.ones(P, P, dtype=torch.bool, device=x.device).tril()
        # causal and not padding; a padding query sees itself (its output is never read), so no row is empty
        mask = (causal & self.prompt_mask[:, None, :]) | torch.eye(P, dtype=torch.bool, device=x.device)
        for i, (ln1, ln2, w_qkv, w_o, w_gu, w_down) in enumerate(self.layers):
            q, k, v = (t.transpose(1, 2) for t in self._layer_in(x, ln1, w_qkv, cos, sin))  # (B, heads, P, hd)
            self.k[i][:, :, :P], self.v[i][:, :, :P] = k, v
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=self.head_dim ** -0.5,
                                               enable_gqa=self.group > 1)
            x = self._layer_out(x, o.transpose(1, 2).reshape(B, P, self.q_dim), ln2, w_o, w_gu, w_down)
        self.next_pos = self.pos[:, -1] + 1
        return self._logits(x[:, -1])

    @torch.no_grad()
    def keep(self, rows: Tensor) -> None:
        """Keep only `rows` (indices into the current batch), in that order."""
        t = self.length
        for cache in (self.k, self.v):
            for i, c in enumerate(cache):
                kept = torch.empty((len(rows),) + c.shape[1:], dtype=c.dtype, device=c.device)
                kept[:, :, :t] = c[rows, :, :t]  # only the filled part of the cache is copied
                cache[i] = kept
        self.bias, self.next_pos = self.bias[rows], self.next_pos[rows]

    @torch.no_grad()
    def step(self, tokens: Tensor) -> Tensor:
        """Append one token per kept row: (n,) ids -> (n, V) next-token logits."""
        n, t = len(tokens), self.length
        x = F.embedding(tokens, self.emb)  # (n, hidden)
        cos, sin = self.cos[self.next_pos][:, None], self.sin[self.next_pos][:, None]  # (n, 1, hd)
        bias = self.bias[:, None, None, :t + 1].expand(n, self.n_kv, 1, t + 1).reshape(n * self.n_kv, 1, t + 1)
        for i, (ln1, ln2, w_qkv, w_o, w_gu, w_down) in enumerate(self.layers):
            q, k, v = self._layer_in(x, ln1, w_qkv, cos, sin)
            self.k[i][:, :, t], self.v[i][:, :, t] = k, v
            keys = self.k[i][:, :, :t + 1].flatten(0, 1)  # (n * n_kv, t + 1, hd), a view
            # the `group` query heads of each key/value head are rows of one (group, hd) matrix
            scores = torch.baddbmm(bias, q.reshape(n * self.n_kv, self.group, self.head_dim), keys.transpose(1, 2),
                                   alpha=self.head_dim ** -0.5)
            o = torch.bmm(scores.softmax(-1), self.v[i][:, :, :t + 1].flatten(0, 1))  # (n * n_kv, group, hd)
            x = self._layer_out(x, o.reshape(n, self.q_dim), ln2, w_o, w_gu, w_down)
        self.length, self.next_pos = t + 1, self.next_pos + 1
        return self._logits(x)


# ----------------------------------------------------------------------------- any causal LM, compaction

COMPACT_AT = 0.75
"""Finished rows leave the sampling batch (and its KV cache) once at most this share of the batch is
still running: later tokens cost only the unfinished rows (measured: docs/performance.md)."""


LEAN_DECODE = True
"""Sample a plain Llama policy through `b2b.decoding.LlamaDecoder` (same logits, far less per-token
overhead than the model's own forward; measured: docs/performance.md). False: always the model's
forward (any causal LM, e.g. a LoRA-wrapped policy, samples that way)."""


class ModelForward:
    """Prefill and one-token steps through the model's own forward and its KV cache (any causal LM)."""

    def __init__(self, model, ids: Tensor, mask: Tensor):
        self.model, self.ids, self.attn = model, ids, mask
        self.cache_kw = cache_argument(model)

    def prefill(self) -> Tensor:
        pos = position_ids(self.attn)
        out = self.model(input_ids=self.ids, attention_mask=self.attn, position_ids=pos, use_cache=True,
                         logits_to_keep=1)
        self.cache, self.next_pos = returned_cache(out), pos[:, -1] + 1
        return out.logits[:, -1]

    def keep(self, rows: Tensor) -> None:
        self.attn, self.next_pos = self.attn[rows], self.next_pos[rows]
        for layer in self.cache.layers:
            layer.batch_select_indices(rows)

    def step(self, tok: Tensor) -> Tensor:
        self.attn = torch.cat([self.attn, self.attn.new_ones(len(tok), 1)], dim=1)
        out = self.model(input_ids=tok[:, None], attention_mask=self.attn, position_ids=self.next_pos[:, None],
                         use_cache=True, **{self.cache_kw: self.cache})
        self.cache, self.next_pos = returned_cache(out), self.next_pos + 1
        return out.logits[:, -1]


# ----------------------------------------------------------------------------- length chunking

LENGTH_CHUNKS = 4
"""Length-sorted groups that the full-sequence forwards (policy, reference, reward model) run in:
rows of similar length padded only to their group's longest; measured 40% less time for the
policy's forward + backward on a 64 x (20 + 44) tiny-world batch (docs/performance.md)."""


def n_chunks(n_rows: int, chunks: int | None) -> int:
    return LENGTH_CHUNKS if chunks is None and n_rows >= 8 * LENGTH_CHUNKS else (chunks or 1)


def unsort(parts: list[Tensor], groups: list[Tensor], width: int | None = None) -> Tensor:
    """Concatenate per-group results (right-padded with 0 to `width` columns) back in row order."""
    if width is not None:
        parts = [torch.nn.functional.pad(x, (0, width - x.shape[1])) for x in parts]
    order = torch.cat(groups)
    return torch.cat(parts)[order.argsort()]


def by_length(rollout, chunks: int | None, forward) -> tuple[list, list[Tensor]]:
    """`forward(trimmed_sub_rollout)` on each length-sorted group of rows: (results, groups), for
    `_unsort` to put back in row order."""
    groups = rollout.length_chunks(n_chunks(len(rollout.completion_ids), chunks))
    return [forward(rollout.trimmed(g)) for g in groups], groups
