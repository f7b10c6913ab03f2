"""Completion metrics (see the README's glossary for the namespaced names)."""
from __future__ import annotations

from b2b.gold import words


def ngrams(ws: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(ws[i:] for i in range(n))))


def distinct_n(texts: list[str], n: int = 2) -> float:
    """`completions/distinct_2` for n = 2: unique word n-grams / all word n-grams, pooled over
    `texts` (1.0: no n-gram ever repeats; near 0: every sample says the same thing)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0
