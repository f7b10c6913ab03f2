"""The tiny world: a knowledge base, ten prompt families and a response generator.

Everything here is deterministic given a seed. The gold judge that rates responses lives in
`b2b.tinyworld.gold`; the data files built from this world are written by `b2b.tinyworld.build_data`.
The facts, prompt templates and answer styles are in `b2b.tinyworld.knowledge` (re-exported here).

The world is small enough to hold in your head (about a hundred things with a few facts each)
and rich enough that a policy meets varied prompts and phrasings:

    >>> w = World()
    >>> spec = w.spec("What colour is a banana?")
    >>> spec.family, spec.thing.colour
    ('colour', 'yellow')
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from b2b.tinyworld.knowledge import (ABILITIES, BY_NAME, CLOSERS, COLOURS, FAMILIES, FILLER, GREETINGS,
                                     GROUP_PLURALS, GROUPS, HABITATS, KB, NUMBER_WORDS, OPENERS, SIZES,
                                     STYLE_MIXES, SURFACE, TANGENTS, TRAVEL_PHRASES, PromptSpec, Style, Thing,
                                     _enumerate_prompts, cap, list_sets, sample_style)
from b2b.tinyworld.responses import write_response

__all__ = ["World", "reference_responses", "ABILITIES", "BY_NAME", "CLOSERS", "COLOURS", "FAMILIES", "FILLER", "GREETINGS",
           "GROUP_PLURALS", "GROUPS", "HABITATS", "KB", "NUMBER_WORDS", "OPENERS", "SIZES", "STYLE_MIXES",
           "SURFACE", "TANGENTS", "TRAVEL_PHRASES", "PromptSpec", "Style", "Thing", "cap", "list_sets",
           "sample_style"]  # the world and, re-exported, its knowledge


@dataclass
class World:
    """The tiny world: prompts, their specs and a response generator. Deterministic.

    `seed` fixes the train/test split of prompts and everything sampled from the world.
    """

    seed: int = 0
    test_fraction: float = 0.15

    @cached_property
    def prompts(self) -> list[PromptSpec]:
        """Every prompt of the world (about 17k), in a fixed order."""
        return _enumerate_prompts()

    @cached_property
    def _by_text(self) -> dict[str, PromptSpec]:
        return {s.text: s for s in self.prompts}

    def spec(self, prompt: str) -> PromptSpec:
        """The spec of a world prompt; raises KeyError with a clear message for others."""
        try:
            return self._by_text[prompt.strip()]
        except KeyError:
            raise KeyError(f"not a prompt of the tiny world: {prompt!r}") from None

    @cached_property
    def split(self) -> dict[str, list[PromptSpec]]:
        """Train/test prompts, split within each family; test is ordered family-round-robin."""
        rng = random.Random(f"split-{self.seed}")
        train, test_by_family = [], []
        for fam in FAMILIES:
            specs = [s for s in self.prompts if s.family == fam]
            rng.shuffle(specs)
            k = max(1, round(self.test_fraction * len(specs)))
            test_by_family.append(specs[:k])
            train += specs[k:]
        test = [s for group in _round_robin(test_by_family) for s in group]
        rng.shuffle(train)
        return {"train": train, "test": test}

    def respond(self, spec: PromptSpec, rng: random.Random, style: Style | None = None) -> str:
        """Write a response to `spec` with the given quality knobs (a random SFT style if None)."""
        return write_response(spec, rng, style or sample_style(rng, "sft"))


def reference_responses(prompts: list[str], seed: int = 0, world: "World | None" = None) -> list[str]:
    """The world generator's own SFT-style responses to `prompts` (the diversity reference)."""
    world = world or World()
    rng = random.Random(f"reference-{seed}")
    return [world.respond(world.spec(p), rng, sample_style(rng, "sft")) for p in prompts]


def _round_robin(groups: list[list]) -> list[list]:
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out.append([g[i] for g in groups if i < len(g)])
        i += 1
    return out
