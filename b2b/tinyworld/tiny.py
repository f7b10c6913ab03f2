"""Build the shipped tiny SFT policy: a byte-level BPE tokenizer with a ChatML template and a
small Llama trained on `data/sft.jsonl`.

    b2b build-tiny                      # writes data/tiny-sft/ (a few CPU minutes)

The result loads with `AutoModelForCausalLM.from_pretrained("data/tiny-sft")` and
`AutoTokenizer.from_pretrained("data/tiny-sft")`, exactly like SmolLM2-135M-Instruct: same chat
template style, end of turn `<|im_end|>`, and (the classic trap) pad token == eos token.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from b2b.data import length_batches, warmup_cosine  # noqa: F401  (re-exported)
from b2b.sft import sft_batch, sft_examples, train_sft  # noqa: F401  (the SFT loop, shared with b2b.sft)

# ChatML, as SmolLM2-Instruct uses, without its default system prompt (saves tokens).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class TinyConfig:
    """How the tiny SFT policy is built."""

    vocab_size: int = 2048
    """Target BPE vocabulary (the world's words fit, so most words are one token)."""
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    max_positions: int = 256
    steps: int = 3000
    """Optimizer steps over the SFT data."""
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0

    def validate(self) -> "TinyConfig":
        """The config itself, or a one-line `ConfigError` naming the first bad field."""
        from b2b.guards import check_fields

        ints = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "max_positions",
                "steps", "batch_size")
        return check_fields(self, "tiny config: field '", positive=ints + ("lr",), non_negative=("warmup", "seed"),
                            whole=ints + ("warmup", "seed"))


def build_tokenizer(texts: list[str], vocab_size: int = 2048):
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>", bos_token=None, chat_template=CHAT_TEMPLATE,
        padding_side="left", model_max_length=256, clean_up_tokenization_spaces=False)


def build_model(tokenizer, cfg: TinyConfig):
    """A fresh small Llama for `tokenizer` (tied embeddings, no dropout)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config)


def build_tiny(data_dir: str | Path = "data", out: str | Path | None = None,
               cfg: TinyConfig = TinyConfig(), progress=print) -> Path:
    """Train the tokenizer and the tiny policy on `data_dir/sft.jsonl`; save to `out`."""
    from transformers import GenerationConfig

    progress = progress or (lambda _: None)
    cfg.validate()
    torch.manual_seed(cfg.seed)
    data_dir = Path(data_dir)
    out = Path(out) if out else data_dir / "tiny-sft"
    rows = [json.loads(line) for line in (data_dir / "sft.jsonl").open(encoding="utf-8")]
    prompts = [json.loads(line)["prompt"] for name in ("prompts_train.jsonl", "prompts_test.jsonl")
               for line in (data_dir / name).open(encoding="utf-8")]
    # the tokenizer sees prompts and demonstrations only, so re-labelling the preference pairs
    # (annotator settings) never changes the policy
    corpus = ["user", "assistant", "system"] * 100 + prompts + [r["completion"] for r in rows]
    tokenizer = build_tokenizer(corpus, cfg.vocab_size)
    model = build_model(tokenizer, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    progress(f"tokenizer: {len(tokenizer)} tokens; model: {n_params / 1e6:.2f}M parameters")
    t0 = time.process_time()
    train_sft(model, sft_examples(tokenizer, rows), cfg, progress=progress)
    progress(f"trained in {time.process_time() - t0:.0f} CPU-seconds")
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=64,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
