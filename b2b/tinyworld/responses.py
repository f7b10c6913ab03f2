"""The tiny world's response writer: one answer per prompt family, with quality knobs.

`write_response(spec, rng, style)` builds the content sentences of an answer (each fact right
with probability `style.p_correct`), then degrades it as the style asks: enthusiastic filler,
irrelevant sentences, repetition, truncation. The gold judge (`b2b.tinyworld.gold`) reads the text back.
"""
from __future__ import annotations

import random

from b2b.tinyworld.knowledge import (BY_NAME, CLOSERS, COLOURS, HABITATS, KB, NUMBER_WORDS,
                                     OPENERS, SIZES, TANGENTS, TRAVEL_PHRASES, PromptSpec, Style, Thing, _article,
                                     cap)

SOUNDS = sorted({t.sound for t in KB if t.sound})
USES = {k: sorted({t.use for t in KB if t.kind == k}) for k in ("tool", "instrument")}


def _other(rng: random.Random, values, right):
    return rng.choice([v for v in values if v != right])


def _maybe(rng: random.Random, style: Style, right, values):
    """The right value with probability p_correct, else a wrong one."""
    return right if rng.random() < style.p_correct else _other(rng, values, right)


# ---------------------------------------------------------------------------- fact sentences

def fact_sentence(t: Thing, attr: str, value, rng: random.Random, subject: str = "It") -> str:
    """One sentence stating `attr = value` about `t`."""
    s, n = subject, t.name
    if attr == "group":
        return rng.choice([f"{s} is {_article(value)}.", f"{s} is a kind of {value}."])
    if attr == "size":
        return rng.choice([f"{s} is {value}.", f"{s} is {_article(value)} {t.kind}."])
    if attr == "colour":
        return rng.choice([f"{s} is {value}.", f"{s} is usually {value}.", f"Its colour is {value}."])
    if attr == "habitat":
        return rng.choice([f"{s} lives in the {value}.", f"You can find {'it' if s == 'It' else s.lower()} in the {value}."])
    if attr == "sound":
        return f"{s} {value[0]}."
    if attr == "legs":
        return f"{s} has {NUMBER_WORDS[value]} legs."
    if attr == "wheels":
        return f"{s} has {NUMBER_WORDS[value]} wheels."
    if attr == "diet":
        return rng.choice([f"{s} eats {value}.", f"{s} likes to eat {value}."])
    if attr == "taste":
        return f"{s} tastes {value}."
    if attr == "grows":
        return {"tree": f"{s} grows on a tree.", "vine": f"{s} grows on a vine.",
                "bush": f"{s} grows on a bush.", "plant": f"{s} grows on a low plant.",
                "underground": f"{s} grows under the ground.",
                "ground": f"{s} grows in the ground."}[value]
    if attr == "travel":
        return f"{s} travels {TRAVEL_PHRASES[value]}."
    if attr == "use":
        if t.kind == "tool":
            return rng.choice([f"{s} is used {value}.", f"People use {'it' if s == 'It' else t.plural} {value}."])
        return rng.choice([f"You play {'it' if s == 'It' else _article(n)} {value}.", f"{s} is played {value}."])
    raise ValueError(f"unknown attribute {attr!r}")


WRONG_VALUES = {
    "group": ["mammal", "bird", "fish", "reptile", "insect", "fruit", "vegetable"],
    "size": SIZES, "colour": COLOURS, "habitat": HABITATS, "sound": SOUNDS,
    "legs": [0, 2, 4, 6, 8], "wheels": [2, 3, 4, 6], "diet": ["meat", "plants", "everything"],
    "taste": ["sweet", "sour"], "grows": ["tree", "vine", "bush", "underground", "ground"],
    "travel": list(TRAVEL_PHRASES),
}


def _value(t: Thing, attr: str):
    v = getattr(t, attr)
    return t.size_word if attr == "size" else v


def _maybe_fact(t: Thing, attr: str, rng: random.Random, style: Style, subject="It") -> str:
    right = _value(t, attr)
    values = USES[t.kind] if attr == "use" else WRONG_VALUES[attr]
    return fact_sentence(t, attr, _maybe(rng, style, right, values), rng, subject)


# ---------------------------------------------------------------------------- per family

def _greeting(spec, rng, style):
    if rng.random() > style.p_correct:
        return [rng.choice(["Goodbye.", "I do not know.", "That is a good point."])]
    hello = rng.choice(["Hello!", "Hi!", "Hi there!", "Hello there!"])
    offer = rng.choice(["How can I help you today?", "What can I do for you?",
                        "How can I help?", "What would you like to know?"])
    if "how are you" in spec.text.lower():
        return [hello, "I am fine, thank you.", offer]
    return [offer] if style.terse else [hello, offer]


def _single_fact(spec, rng, style, attr):
    t = spec.thing
    if attr == "use" and t.kind == "vehicle":
        attr = "travel"
    right = _value(t, attr)
    values = USES[t.kind] if attr == "use" else WRONG_VALUES[attr]
    v = _maybe(rng, style, right, values)
    if style.terse:
        short = {"colour": lambda: f"{cap(v)}.", "habitat": lambda: f"In the {v}.",
                 "count": lambda: f"{cap(NUMBER_WORDS[v])}."}
        if attr in short:
            return [short[attr]()]
    subject = rng.choice([cap(t.a), f"The {t.name}"])
    if attr == "colour" and rng.random() < 0.3:
        return [f"{cap(t.plural)} are {v}." if t.plural != t.name else f"{subject} is {v}."]
    return [fact_sentence(t, attr, v, rng, subject)]


def _count(spec, rng, style):
    attr = spec.slot("attr")
    t = spec.thing
    v = _maybe(rng, style, getattr(t, attr), WRONG_VALUES[attr])
    if style.terse:
        return [f"{cap(NUMBER_WORDS[v])}."]
    return [rng.choice([f"{cap(t.a)} has {NUMBER_WORDS[v]} {attr}.",
                        f"{cap(t.plural)} have {NUMBER_WORDS[v]} {attr}.",
                        f"It has {NUMBER_WORDS[v]} {attr}."])]


def _yesno(spec, rng, style):
    t, ask, truth = spec.thing, spec.slot("ask"), spec.slot("answer")
    says = truth if rng.random() < style.p_correct else not truth
    word = "Yes" if says else "No"
    if style.terse:
        return [f"{word}."]
    if ask in ("fly", "swim"):
        return [f"{word}, {t.plural} {'can' if says else 'cannot'} {ask}."]
    if style.confused:  # a reason about another thing
        o = rng.choice([x for x in KB if x.kind == t.kind and x is not t])
        return [f"{word}.", f"{cap(o.a)} is {_article(o.group) if o.kind == 'animal' else _article(o.kind)}."]
    if says == truth:  # explanation names the true group
        why = f"{cap(t.a)} is {_article(t.group)}." if t.group != "fish" else f"{cap(t.a)} is a fish."
    else:
        why = f"{cap(t.a)} is {'a fish' if ask == 'fish' else _article(ask)}." if says else \
            f"{cap(t.a)} is not {'a fish' if ask == 'fish' else _article(ask)}."
    return [f"{word}.", why] if rng.random() < 0.5 else [f"{word}, {why[0].lower()}{why[1:]}"]


def _compare(spec, rng, style):
    a, b = spec.things
    word, answer = spec.slot("word"), BY_NAME[spec.slot("answer")]
    other = b if answer is a else a
    pick, rest = (answer, other) if rng.random() < style.p_correct else (other, answer)
    if style.terse:
        return [f"{cap(pick.a)}."]
    if style.confused:  # compares a thing with itself, or with a third thing
        third = rng.choice([x for x in KB if x.kind == a.kind and x not in (a, b)] or [pick])
        return [f"{cap(pick.a)} is {word} than {rng.choice([pick, third]).a}."]
    flip = {"bigger": "smaller", "larger": "smaller", "smaller": "bigger"}[word]
    return [rng.choice([f"{cap(pick.a)} is {word} than {rest.a}.", f"The {pick.name} is {word}.",
                        f"{cap(rest.a)} is {flip} than {pick.a}."])]


def _items(spec, rng, style) -> list[Thing]:
    members, n = list(spec.things), spec.slot("n")
    k = max(1, n + style.n_delta)
    rng.shuffle(members)
    wrong_pool = [t for t in KB if t not in spec.things]
    return [members.pop() if rng.random() < style.p_correct and members else rng.choice(wrong_pool)
            for _ in range(k)]


def _list(spec, rng, style):
    items, s, n = _items(spec, rng, style), spec.slot("set"), spec.slot("n")
    names = [t.name for t in items]
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    form = rng.randrange(4) if not style.terse else 3
    if form == 0:
        return [f"Here are {NUMBER_WORDS[n]} {s}: {joined}."]
    if form == 1:
        return [f"{cap(NUMBER_WORDS[n])} {s} are {joined}."]
    if form == 2:
        return ["\n".join(f"{i + 1}. {cap(x)}" for i, x in enumerate(names))]
    return [f"{cap(joined)}."]


def describable_facts(t: Thing) -> list[str]:
    """The attributes a description of `t` can state (size first; group is the lead's noun)."""
    return [f for f in t.facts() if f != "group" and not (f == "legs" and t.legs == 0)]


def _describe(spec, rng, style):
    """A lead sentence (size and group), then facts: three in all for an expert."""
    t = spec.thing
    facts = describable_facts(t)[1:]
    rng.shuffle(facts)
    k = max(1, min(len(facts), 2 + style.n_delta))
    lead = f"{cap(t.a)} is {_article(t.size_word)} {t.group}." if t.kind == "animal" else \
        f"{cap(t.a)} is {_article(t.size_word)} {t.kind}."
    if rng.random() > style.p_correct:
        lead = f"{cap(t.a)} is {_article(_other(rng, SIZES, t.size_word))} {t.group}."
    body = [_maybe_fact(t, f, rng, style) for f in facts[:k]]
    return body if style.terse else [lead] + body


def content_sentences(spec: PromptSpec, rng: random.Random, style: Style) -> list[str]:
    """The answer proper: the sentences that address the prompt."""
    fam = spec.family
    if fam in ("colour", "habitat", "sound", "use"):
        return _single_fact(spec, rng, style, fam)
    return {"greeting": _greeting, "count": _count, "yesno": _yesno, "compare": _compare,
            "list": _list, "describe": _describe}[fam](spec, rng, style)


def _tangent(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(TANGENTS)
    t = rng.choice(KB)
    attr = rng.choice([a for a in t.facts() if a != "group"] or ["size"])
    return fact_sentence(t, attr, _value(t, attr), rng, subject=cap(t.a))


def write_response(spec: PromptSpec, rng: random.Random, style: Style) -> str:
    """A full response: openers, content (+ repeats and tangents), closers; maybe truncated."""
    body = content_sentences(spec, rng, style)
    for _ in range(style.repeat):
        body.append(rng.choice(body))
    for _ in range(style.extra):
        body.insert(rng.randint(1, len(body)), _tangent(rng))
    pre = rng.sample(OPENERS, style.openers)
    post = rng.sample(CLOSERS, style.closers)
    parts = pre + body + post
    text = parts[0]
    for prev, cur in zip(parts, parts[1:]):  # numbered lists keep their own lines
        text += ("\n" if "\n" in prev or "\n" in cur else " ") + cur
    if style.truncate:
        words = text.split(" ")
        if len(words) > 3:
            text = " ".join(words[: rng.randint(2, len(words) - 1)]).rstrip(".!?,:")
    return text
