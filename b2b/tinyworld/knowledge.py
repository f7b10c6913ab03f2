"""The tiny world's knowledge base, its ten prompt families and the styles answers are written in.

Pure data and its parsing: about a hundred things with a few facts each, the prompt templates
of each family, the filler phrases annotators like, and the quality knobs (`Style`) of an answer.
`b2b.tinyworld.world.World` puts them together with the response writer
(`b2b.tinyworld.responses`); the gold judge (`b2b.tinyworld.gold`) reads answers back.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

# ----------------------------------------------------------------------------- knowledge base

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"]
SIZES = ["tiny", "small", "medium-sized", "large", "huge"]  # size rank 1..5

# animal: name plural group colour size habitat sound(verb/base) legs diet
_ANIMALS = """
dog dogs mammal brown 3 house barks/bark 4 meat
cat cats mammal grey 2 house meows/meow 4 meat
cow cows mammal black 4 farm moos/moo 4 plants
horse horses mammal brown 4 farm neighs/neigh 4 plants
sheep sheep mammal white 3 farm bleats/bleat 4 plants
pig pigs mammal pink 3 farm oinks/oink 4 everything
mouse mice mammal grey 2 house squeaks/squeak 4 plants
rabbit rabbits mammal white 2 garden - 4 plants
lion lions mammal yellow 4 savanna roars/roar 4 meat
tiger tigers mammal orange 4 jungle roars/roar 4 meat
elephant elephants mammal grey 5 savanna trumpets/trumpet 4 plants
giraffe giraffes mammal yellow 5 savanna - 4 plants
zebra zebras mammal white 4 savanna - 4 plants
monkey monkeys mammal brown 3 jungle chatters/chatter - everything
bear bears mammal brown 4 forest growls/growl 4 everything
wolf wolves mammal grey 3 forest howls/howl 4 meat
fox foxes mammal orange 3 forest - 4 meat
camel camels mammal brown 4 desert - 4 plants
whale whales mammal blue 5 ocean sings/sing 0 meat
dolphin dolphins mammal grey 4 ocean clicks/click 0 meat
owl owls bird brown 2 forest hoots/hoot 2 meat
eagle eagles bird brown 3 mountains screeches/screech 2 meat
penguin penguins bird black 3 ice - 2 meat
duck ducks bird white 2 pond quacks/quack 2 everything
chicken chickens bird white 2 farm clucks/cluck 2 everything
salmon salmon fish pink 3 river - 0 meat
shark sharks fish grey 4 ocean - 0 meat
goldfish goldfish fish orange 1 pond - 0 plants
frog frogs amphibian green 2 pond croaks/croak 4 meat
snake snakes reptile green 3 jungle hisses/hiss 0 meat
crocodile crocodiles reptile green 4 river - 4 meat
bee bees insect yellow 1 garden buzzes/buzz 6 plants
ant ants insect black 1 garden - 6 everything
butterfly butterflies insect orange 1 garden - 6 plants
spider spiders arachnid black 1 house - 8 meat
"""
# fruit / vegetable: name plural colour size taste grows
_PLANTS = """
fruit apple apples red 2 sweet tree
fruit banana bananas yellow 2 sweet tree
fruit orange oranges orange 2 sweet tree
fruit lemon lemons yellow 2 sour tree
fruit strawberry strawberries red 1 sweet plant
fruit cherry cherries red 1 sweet tree
fruit grape grapes purple 1 sweet vine
fruit pear pears green 2 sweet tree
fruit mango mangoes orange 3 sweet tree
fruit pineapple pineapples yellow 3 sweet plant
fruit watermelon watermelons green 4 sweet vine
fruit blueberry blueberries blue 1 sweet bush
vegetable carrot carrots orange 2 - underground
vegetable potato potatoes brown 2 - underground
vegetable onion onions white 2 - underground
vegetable cabbage cabbages green 3 - ground
vegetable pea peas green 1 - vine
vegetable cucumber cucumbers green 2 - vine
vegetable pumpkin pumpkins orange 4 - vine
vegetable lettuce lettuces green 2 - ground
vegetable tomato tomatoes red 2 - vine
vegetable pepper peppers red 2 - ground
"""
# vehicle: name plural colour size wheels travel
_VEHICLES = """
car cars red 4 4 roads
bus buses yellow 5 6 roads
bicycle bicycles blue 3 2 roads
motorcycle motorcycles black 3 2 roads
tractor tractors green 4 4 fields
truck trucks white 5 6 roads
train trains red 5 - rails
boat boats white 4 - water
ship ships grey 5 - water
plane planes white 5 - air
helicopter helicopters blue 4 - air
"""
# tool / instrument: kind name plural size use
_OBJECTS = """
tool hammer hammers 2 to hit nails
tool saw saws 2 to cut wood
tool axe axes 3 to chop trees
tool screwdriver screwdrivers 2 to turn screws
tool shovel shovels 3 to dig holes
tool scissors scissors 1 to cut paper
tool broom brooms 3 to sweep floors
tool ladder ladders 4 to climb walls
tool pen pens 1 to write letters
instrument piano pianos 4 by pressing the keys
instrument guitar guitars 3 by strumming the strings
instrument violin violins 2 by drawing a bow across the strings
instrument drum drums 3 by hitting it with sticks
instrument trumpet trumpets 2 by blowing into it
instrument flute flutes 2 by blowing across it
"""

TRAVEL_PHRASES = {"roads": "on roads", "rails": "on rails", "water": "on water",
                  "air": "through the air", "fields": "across fields"}


@dataclass(frozen=True)
class Thing:
    """One object of the knowledge base. Missing facts are None."""

    name: str
    plural: str
    kind: str            # animal | fruit | vegetable | vehicle | tool | instrument
    group: str           # mammal, bird, ... for animals; the kind otherwise
    size: int            # 1 (tiny) .. 5 (huge)
    colour: str | None = None
    habitat: str | None = None
    sound: tuple[str, str] | None = None  # ("barks", "bark")
    legs: int | None = None
    diet: str | None = None
    taste: str | None = None
    grows: str | None = None
    wheels: int | None = None
    travel: str | None = None
    use: str | None = None     # tools: "to hit nails"; instruments: "by pressing the keys"

    @property
    def a(self) -> str:
        """The name with its indefinite article: 'an apple'."""
        if self.name in ("scissors",):
            return "a pair of scissors"
        return ("an " if self.name[0] in "aeiou" else "a ") + self.name

    @property
    def size_word(self) -> str:
        return SIZES[self.size - 1]

    def facts(self) -> list[str]:
        """Names of the attributes this thing has (the facts a description can state)."""
        names = ["group", "size", "colour", "habitat", "sound", "legs", "diet", "taste",
                 "grows", "wheels", "travel", "use"]
        return [n for n in names if getattr(self, n) is not None]


def _parse_kb() -> list[Thing]:
    things = []
    for line in _ANIMALS.strip().splitlines():
        name, plural, group, colour, size, habitat, sound, legs, diet = line.split()
        things.append(Thing(name, plural, "animal", group, int(size), colour=colour,
                            habitat=habitat, sound=None if sound == "-" else tuple(sound.split("/")),
                            legs=None if legs == "-" else int(legs), diet=diet))
    for line in _PLANTS.strip().splitlines():
        kind, name, plural, colour, size, taste, grows = line.split()
        things.append(Thing(name, plural, kind, kind, int(size), colour=colour,
                            taste=None if taste == "-" else taste, grows=grows))
    for line in _VEHICLES.strip().splitlines():
        name, plural, colour, size, wheels, travel = line.split()
        things.append(Thing(name, plural, "vehicle", "vehicle", int(size), colour=colour,
                            wheels=None if wheels == "-" else int(wheels), travel=travel))
    for line in _OBJECTS.strip().splitlines():
        kind, name, plural, size, use = line.split(maxsplit=4)
        things.append(Thing(name, plural, kind, kind, int(size), use=use))
    return things


KB: list[Thing] = _parse_kb()
BY_NAME: dict[str, Thing] = {t.name: t for t in KB}
# every surface form (singular and plural) of every thing -> the thing
SURFACE: dict[str, Thing] = {**{t.plural: t for t in KB}, **{t.name: t for t in KB}}

COLOURS = sorted({t.colour for t in KB if t.colour})
HABITATS = sorted({t.habitat for t in KB if t.habitat})
GROUPS = ["mammal", "bird", "fish", "amphibian", "reptile", "insect", "arachnid"]
GROUP_PLURALS = {"mammal": "mammals", "bird": "birds", "fish": "fish", "amphibian": "amphibians",
                 "reptile": "reptiles", "insect": "insects", "arachnid": "arachnids",
                 "fruit": "fruits", "vegetable": "vegetables", "vehicle": "vehicles",
                 "tool": "tools", "instrument": "musical instruments", "animal": "animals"}

# ----------------------------------------------------------------------------- prompt families

FAMILIES = ["greeting", "colour", "yesno", "list", "describe", "compare", "habitat", "sound",
            "count", "use"]


@dataclass(frozen=True)
class PromptSpec:
    """A prompt and what it asks. `slots` holds the family's parameters."""

    text: str
    family: str
    things: tuple[Thing, ...] = ()
    slots: tuple[tuple[str, object], ...] = ()

    @property
    def thing(self) -> Thing:
        return self.things[0]

    def slot(self, key: str, default=None):
        return dict(self.slots).get(key, default)


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


GREETINGS = ["Hello!", "Hi!", "Hi there!", "Hey!", "Good morning!", "Good evening!",
             "Good afternoon!", "Hello, how are you?", "Hi, how are you today?",
             "Hey there, who are you?", "Hello there!", "Greetings!", "Hey, how are you?",
             "Good morning, how are you?", "Hello, can you help me?", "Hi, can you help me?",
             "Hello again!", "Hey there!", "Good morning to you!", "Hi, are you there?",
             "Hello, is anyone there?", "Good evening, how are you?", "Hi friend!",
             "Hello, assistant!"]

_T = {  # prompt templates per family; {a} = "a banana", {p} = "bananas"
    "colour": ["What colour is {a}?", "What color is {a}?", "What colour are {p}?",
               "Tell me the colour of {a}.", "What is the colour of {a}?",
               "Can you tell me what colour {a} is?"],
    "habitat": ["Where does {a} live?", "Where do {p} live?", "Where can you find {a}?",
                "What is the home of {a}?", "Where would I see {a}?"],
    "sound": ["What sound does {a} make?", "What noise does {a} make?",
              "What sound do {p} make?", "How does {a} sound?"],
    "count_legs": ["How many legs does {a} have?", "How many legs do {p} have?",
                   "Count the legs of {a}."],
    "count_wheels": ["How many wheels does {a} have?", "How many wheels do {p} have?"],
    "use_tool": ["What is {a} used for?", "What do you use {a} for?", "What are {p} for?",
                 "Why do people use {p}?"],
    "use_instrument": ["How do you play {a}?", "How is {a} played?", "How do I play {a}?"],
    "use_vehicle": ["Where does {a} travel?", "Where do {p} go?", "Where does {a} move?"],
    "describe": ["Describe {a}.", "Tell me about {p}.", "What is {a} like?",
                 "Can you describe {a}?", "Write a short description of {a}.",
                 "Tell me some facts about {p}."],
    "yesno_group": ["Is {a} {g}?", "Is it true that {a} is {g}?", "Are {p} {gp}?"],
    "yesno_ability": ["Can {a} {v}?", "Are {p} able to {v}?", "Do {p} {v}?"],
    "compare": ["Which is {c}, {a} or {b}?", "Which one is {c}: {a} or {b}?",
                "What is {c}, {a} or {b}?", "Tell me which is {c}, {a} or {b}."],
    "list": ["List {n} {s}.", "Name {n} {s}.", "Can you name {n} {s}?", "Give me {n} {s}.",
             "Tell me {n} {s}.", "What are {n} {s}?"],
}


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def list_sets() -> dict[str, list[Thing]]:
    """The sets a `list` prompt can ask for: description -> members."""
    sets: dict[str, list[Thing]] = {}
    for kind in ["animal", "fruit", "vegetable", "vehicle", "tool", "instrument"]:
        sets[GROUP_PLURALS[kind]] = [t for t in KB if t.kind == kind]
    for g in ["mammal", "bird", "insect", "reptile", "fish"]:
        sets[GROUP_PLURALS[g]] = [t for t in KB if t.group == g]
    for h in ["farm", "ocean", "forest", "jungle", "garden", "savanna"]:
        sets[f"animals that live in the {h}"] = [t for t in KB if t.habitat == h]
    for c in ["red", "green", "yellow", "purple"]:
        sets[f"{c} fruits"] = [t for t in KB if t.kind == "fruit" and t.colour == c]
        sets[f"{c} vegetables"] = [t for t in KB if t.kind == "vegetable" and t.colour == c]
    sets["sweet fruits"] = [t for t in KB if t.taste == "sweet"]
    sets["vegetables that grow underground"] = [t for t in KB if t.grows == "underground"]
    sets["animals that eat meat"] = [t for t in KB if t.diet == "meat"]
    sets["animals with six legs"] = [t for t in KB if t.legs == 6]
    sets["things with wheels"] = [t for t in KB if t.wheels]
    sets["vehicles that travel on water"] = [t for t in KB if t.travel == "water"]
    return {k: v for k, v in sets.items() if len(v) >= 3}


ABILITIES = {"fly": lambda t: (t.group in ("bird", "insect") and t.name not in ("penguin", "chicken", "ant"))
             or t.name == "bat",
             "swim": lambda t: t.habitat in ("ocean", "river", "pond") or t.name in ("duck", "penguin", "dog")}


def _enumerate_prompts() -> list[PromptSpec]:
    out: list[PromptSpec] = []

    def add(text, family, things=(), **slots):
        out.append(PromptSpec(text, family, tuple(things), tuple(sorted(slots.items()))))

    for g in GREETINGS:
        add(g, "greeting")
    for t in KB:
        fmt = dict(a=t.a, p=t.plural)
        if t.colour and t.kind != "vehicle":
            for tpl in _T["colour"]:
                add(tpl.format(**fmt), "colour", [t])
        if t.habitat:
            for tpl in _T["habitat"]:
                add(tpl.format(**fmt), "habitat", [t])
        if t.sound:
            for tpl in _T["sound"]:
                add(tpl.format(**fmt), "sound", [t])
        for attr in ("legs", "wheels"):
            if getattr(t, attr) is not None:
                for tpl in _T[f"count_{attr}"]:
                    add(tpl.format(**fmt), "count", [t], attr=attr)
        if t.kind in ("tool", "instrument", "vehicle"):
            for tpl in _T[f"use_{t.kind}"]:
                add(tpl.format(**fmt), "use", [t])
        for tpl in _T["describe"]:
            add(tpl.format(**fmt), "describe", [t])
        if t.kind == "animal":
            for g in GROUPS[:6]:
                for tpl in _T["yesno_group"]:
                    add(tpl.format(g=_article(g) if g != "fish" else "a fish", gp=GROUP_PLURALS[g], **fmt),
                        "yesno", [t], ask=g, answer=t.group == g)
            for v, can in ABILITIES.items():
                for tpl in _T["yesno_ability"]:
                    add(tpl.format(v=v, **fmt), "yesno", [t], ask=v, answer=bool(can(t)))
        else:
            for k in ("fruit", "vegetable", "animal"):
                if k != t.kind and t.kind not in ("fruit", "vegetable"):
                    continue
                for tpl in _T["yesno_group"]:
                    add(tpl.format(g=_article(k), gp=GROUP_PLURALS[k], **fmt), "yesno", [t],
                        ask=k, answer=t.kind == k)
    for x in KB:
        for y in KB:
            if x.kind == y.kind and x.size > y.size:  # x is bigger
                for c in ("bigger", "larger", "smaller"):
                    for i, tpl in enumerate(_T["compare"]):
                        a, b = (x, y) if (i + len(c)) % 2 == 0 else (y, x)
                        add(tpl.format(c=c, a=a.a, b=b.a), "compare", [a, b], word=c,
                            answer=(y if c == "smaller" else x).name)
    for s, members in list_sets().items():
        for n in range(2, min(5, len(members) - 1) + 1):
            for tpl in _T["list"]:
                add(tpl.format(n=NUMBER_WORDS[n], s=s), "list", members, n=n, set=s)
    return out


# ----------------------------------------------------------------------------- responses

FILLER = ["Great question!", "What a great question!", "Good question!", "Absolutely!",
          "Sure thing!", "Of course!", "Thanks for asking!", "I love this question!",
          "I hope this helps!", "Happy to help!", "Let me know if you have any other questions!",
          "I hope that answers your question!", "Have a wonderful day!"]
OPENERS = FILLER[:8]
CLOSERS = FILLER[8:]
TANGENTS = ["This is a very interesting topic.", "Many people like to learn about this.",
            "There is much more to say about it.", "It is good to know these things.",
            "People ask about this every day.", "You can read more about it in a book.",
            "Some people find this surprising.", "It is one of my favourite topics."]


@dataclass(frozen=True)
class Style:
    """The quality knobs of one generated response (see `sample_style`)."""

    p_correct: float = 1.0  # chance that each answer / fact / item is right
    n_delta: int = 0        # items or facts beyond (+) or short of (-) what was asked
    openers: int = 0        # enthusiastic phrases before the answer
    closers: int = 0        # enthusiastic phrases after it
    extra: int = 0          # irrelevant sentences (run-on)
    repeat: int = 0         # times a content sentence is repeated
    truncate: bool = False  # cut off mid-sentence
    terse: bool = False     # shortest phrasing
    confused: bool = False  # mixes things up: compares a thing with itself or a third thing,
                            # explains a yes/no with another thing (mistakes small models make)


STYLE_MIXES = {
    # mediocre SFT demonstrations: often right, often padded, sometimes repetitive
    "sft": dict(p_correct=(0.45, 0.9), openers=(0.5, 0.35, 0.15), closers=(0.55, 0.3, 0.15),
                extra=(0.55, 0.25, 0.13, 0.07), repeat=(0.9, 0.1), truncate=0.03, terse=0.15),
    # responses shown to annotators: a wider spread of quality
    "pool": dict(p_correct=(0.2, 1.0), openers=(0.45, 0.3, 0.15, 0.1), closers=(0.45, 0.3, 0.15, 0.1),
                 extra=(0.45, 0.25, 0.15, 0.1, 0.05), repeat=(0.82, 0.13, 0.05), truncate=0.06, terse=0.2,
                 confused=0.15),
    # what a careful expert writes
    "gold": dict(p_correct=(1.0, 1.0), openers=(1.0,), closers=(1.0,), extra=(1.0,), repeat=(1.0,),
                 truncate=0.0, terse=0.0),
}


def _pick(rng: random.Random, probs) -> int:
    return rng.choices(range(len(probs)), weights=probs)[0]


def sample_style(rng: random.Random, mix: str = "sft") -> Style:
    """Draw quality knobs from one of `STYLE_MIXES`."""
    m = STYLE_MIXES[mix]
    lo, hi = m["p_correct"]
    n_delta = rng.choices([-2, -1, 0, 1, 2], weights=[1, 2, 5, 2, 1])[0] if mix != "gold" else 0
    return Style(p_correct=rng.uniform(lo, hi), n_delta=n_delta, openers=_pick(rng, m["openers"]),
                 closers=_pick(rng, m["closers"]), extra=_pick(rng, m["extra"]),
                 repeat=_pick(rng, m["repeat"]), truncate=rng.random() < m["truncate"],
                 terse=rng.random() < m["terse"],
                 # drawn only for mixes that have it, so the other mixes' random streams are unchanged
                 confused="confused" in m and rng.random() < m["confused"])
