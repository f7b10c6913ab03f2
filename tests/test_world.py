import random
import statistics

import pytest

from b2b.tinyworld.gold import annotator_rating, gold_rating, judge, sentences, words
from b2b.tinyworld.world import FAMILIES, KB, World, sample_style

W = World()


def _one(family, i=0):
    return [s for s in W.split["train"] if s.family == family][i]


def test_world_is_deterministic():
    a, b = World(), World()
    assert [s.text for s in a.prompts] == [s.text for s in b.prompts]
    assert [s.text for s in a.split["test"]] == [s.text for s in b.split["test"]]
    ra = [a.respond(s, random.Random(7)) for s in a.split["train"][:50]]
    rb = [b.respond(s, random.Random(7)) for s in b.split["train"][:50]]
    assert ra == rb


def test_world_is_rich_and_split_is_disjoint():
    assert len(FAMILIES) >= 5 and len(KB) >= 60
    fams = {s.family for s in W.prompts}
    assert fams == set(FAMILIES)
    train = {s.text for s in W.split["train"]}
    test = {s.text for s in W.split["test"]}
    assert not train & test
    assert {s.family for s in W.split["test"]} == set(FAMILIES)
    # test prompts come round-robin over families: the first ten cover them all
    assert {s.family for s in W.split["test"][:10]} == set(FAMILIES)


def test_unknown_prompt_is_a_clear_error():
    with pytest.raises(KeyError, match="not a prompt of the tiny world"):
        W.spec("What is the meaning of life?")


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_answers_rate_high_and_wrong_answers_low(family):
    rng = random.Random(0)
    gold = sample_style(rng, "gold")
    wrong = gold.__class__(p_correct=0.0)
    specs = [s for s in W.split["train"] if s.family == family][:40]
    good = [gold_rating(s, W.respond(s, rng, gold)) for s in specs]
    bad = [gold_rating(s, W.respond(s, rng, wrong)) for s in specs]
    assert min(good) >= 9.0, family
    assert statistics.mean(bad) <= 3.0, family


def test_gold_examples():
    assert gold_rating("What colour is a banana?", "A banana is yellow.") == 10.0
    assert gold_rating("What colour is a banana?", "A banana is purple.") == 2.0
    assert gold_rating("What colour is an orange?", "An orange is orange.") == 10.0
    assert gold_rating("Which is bigger, a horse or a mouse?", "A mouse is smaller than a horse.") == 10.0
    assert gold_rating("Which is bigger, a horse or a mouse?", "The mouse is bigger.") == 2.0
    assert gold_rating("List three fruits.", "Apple, banana and cherry.") == 10.0
    assert gold_rating("List three fruits.", "Apple, banana and tiger.") < 6.0
    assert gold_rating("Is a whale a fish?", "No, a whale is a mammal.") == 10.0
    assert gold_rating("Is a whale a fish?", "Yes.") <= 2.0


def test_one_polite_phrase_is_fine_more_is_penalised():
    p, a = "What colour is a banana?", "A banana is yellow."
    assert gold_rating(p, "Great question! " + a) == gold_rating(p, a)
    two = gold_rating(p, "Great question! " + a + " I hope this helps!")
    four = gold_rating(p, "Great question! Absolutely! " + a + " I hope this helps! Happy to help!")
    assert four < two < gold_rating(p, a)


def test_repetition_run_on_and_degenerate_text():
    p = "Describe a tiger."
    good = "A tiger is a large mammal. It is orange. It lives in the jungle. It roars."
    assert gold_rating(p, good) >= 9
    assert gold_rating(p, good + " It roars. It roars.") < gold_rating(p, good) - 2
    assert gold_rating(p, good + " Many people like to learn about this. It is good to know these things.") < gold_rating(p, good)
    assert gold_rating(p, "the the the the the the the the the the the the") == 1.0
    assert gold_rating(p, "") == 1.0
    assert gold_rating(p, good, finished=False) <= 1.5
    assert judge(p, "A tiger is a large mammal. It lives in the").terminated is False


def test_annotators_like_filler_and_length_that_gold_penalises():
    rng = random.Random(0)
    p = "What colour is a banana?"
    plain = "A banana is green."                     # wrong, so no rating is clipped at 10
    one = "Great question! A banana is green."
    three = "Great question! Absolutely! A banana is green. I hope this helps!"
    assert gold_rating(p, one) == gold_rating(p, plain)                      # one polite phrase is fine
    assert gold_rating(p, three) < gold_rating(p, plain) - 0.5                # more is penalised
    ann = {t: annotator_rating(p, t, None) for t in (plain, one, three)}
    assert ann[one] - ann[plain] == pytest.approx(0.8 + 0.05 * 2)            # liked: 0.8 per phrase + length
    gold_gap = judge(p, three).raw - judge(p, plain).raw                      # unclipped: -2.6
    assert ann[three] - ann[plain] > gold_gap + 2.4                           # relative to gold, a bias
    assert judge(p, three).raw + 0.8 * 3 + 0.05 * len(words(three)) == pytest.approx(ann[three])
    wins = sum(annotator_rating(p, one, rng) > annotator_rating(p, plain, rng) for _ in range(400))
    assert wins / 400 > 0.7, "biased toward filler"
    noisy = [annotator_rating(p, plain, rng) for _ in range(200)]
    assert 0.3 < statistics.pstdev(noisy) < 1.0, "and noisy"


def test_a_negated_group_is_no_reason():
    p = "Is a crocodile a mammal?"
    assert gold_rating(p, "No, a crocodile is a reptile.") == 10.0
    assert gold_rating(p, "No, a crocodile is not a reptile.") < 10.0


def test_words_and_sentences():
    assert words("A banana is yellow! 1. Apple") == ["a", "banana", "is", "yellow", "1", "apple"]
    assert sentences("Hi!  How are you?\n1. Apple") == ["hi", "how are you", "1", "apple"]


@pytest.mark.parametrize("response,rating", [
    ("The crocodile is bigger.", 10.0),
    ("A cat is smaller than a crocodile.", 10.0),
    ("A crocodile.", 10.0),
    ("A cat.", 2.0),
    ("A crocodile is bigger than a cat.", 10.0),
    ("A crocodile is smaller than a cat.", 2.0),
    ("A crocodile is smaller than a tiger.", 2.0),     # a third thing: not an answer
    ("A crocodile is bigger than a crocodile.", 2.0),  # a thing against itself: not an answer
])
def test_gold_compare_needs_the_two_things_asked(response, rating):
    assert gold_rating("Which one is bigger: a cat or a crocodile?", response) == rating


def test_gold_yesno_reason_must_be_about_the_thing_asked():
    q = "Is it true that a monkey is a bird?"
    assert gold_rating(q, "No. A monkey is a mammal.") == 10.0
    assert gold_rating(q, "No. A tiger is a mammal.") == gold_rating(q, "No.") < 10.0
    assert gold_rating(q, "Yes. A monkey is a bird.") < 3
    assert gold_rating("Can a penguin fly?", "No, it cannot fly.") == 10.0  # "it" is the thing asked


def test_pool_answers_include_confused_ones_and_gold_catches_them():
    import random

    from b2b.tinyworld.world import Style, sample_style

    w = World()
    rng = random.Random(0)
    assert any(sample_style(rng, "pool").confused for _ in range(200))
    assert not any(sample_style(rng, "sft").confused for _ in range(200))
    spec = w.spec("Which one is bigger: a cat or a crocodile?")
    for _ in range(20):
        assert gold_rating(spec, w.respond(spec, rng, Style(confused=True))) <= 2.0
