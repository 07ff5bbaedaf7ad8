"""Sticky A/B routing: shares, minimal movement on re-weighting, salts, fallbacks."""

import json
import math
import random

import pytest

from registry.split import BadSplit
from serving.traffic import TrafficSplit, choose, parse_tag

KEYS = [f"user-{i}" for i in range(4000)]
ALL = ("production", "staging", "canary")


def _assign(split: TrafficSplit) -> dict[str, str]:
    return {key: choose(split, key, ALL, "production").alias for key in KEYS}


def test_choose_same_key_same_alias_every_time():
    split = TrafficSplit({"production": 50, "staging": 50}, "exp-1")
    assert _assign(split) == _assign(TrafficSplit({"production": 50, "staging": 50}, "exp-1"))


@pytest.mark.parametrize(
    "weights",
    [{"production": 90, "staging": 10}, {"production": 50, "staging": 30, "canary": 20}],
)
def test_choose_shares_match_weights_within_4_sigma(weights: dict[str, float]):
    assigned = _assign(TrafficSplit(weights, "exp-1"))
    total = sum(weights.values())
    for alias, weight in weights.items():
        p = weight / total
        share = sum(1 for a in assigned.values() if a == alias) / len(KEYS)
        assert abs(share - p) <= 4 * math.sqrt(p * (1 - p) / len(KEYS)), alias


def test_choose_reweighting_moves_only_keys_that_must_move():
    before = _assign(TrafficSplit({"production": 90, "staging": 10}, "exp-1"))
    after = _assign(TrafficSplit({"production": 80, "staging": 20}, "exp-1"))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == "production" and after[k] == "staging" for k in moved)
    assert abs(len(moved) / len(KEYS) - 0.10) <= 0.01 + 4 * math.sqrt(0.1 * 0.9 / len(KEYS))


def test_choose_three_aliases_growing_one_moves_keys_only_to_it():
    # canary 10% -> 19%; production and staging shrink in proportion (70:20 == 63:18)
    before = _assign(TrafficSplit({"production": 70, "staging": 20, "canary": 10}, "s"))
    after = _assign(TrafficSplit({"production": 63, "staging": 18, "canary": 19}, "s"))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "canary" for k in moved)
    assert abs(len(moved) / len(KEYS) - 0.09) <= 0.01 + 4 * math.sqrt(0.09 * 0.91 / len(KEYS))


def test_parse_tag_key_order_does_not_matter():
    a = parse_tag(json.dumps({"production": 90, "staging": 10, "salt": "x"}))
    b = parse_tag(json.dumps({"salt": "x", "staging": 10, "production": 90}))
    assert _assign(a) == _assign(b)


def test_new_salt_reshuffles():
    first = _assign(TrafficSplit({"production": 50, "staging": 50}, "exp-1"))
    second = _assign(TrafficSplit({"production": 50, "staging": 50}, "exp-2"))
    changed = sum(first[k] != second[k] for k in KEYS) / len(KEYS)
    assert 0.4 < changed < 0.6


def test_unloaded_alias_share_falls_back_visibly():
    split = TrafficSplit({"production": 50, "staging": 50}, "exp-1")
    choices = [choose(split, key, ["production"], "production") for key in KEYS[:500]]
    assert {c.alias for c in choices} == {"production"}
    assert 150 < sum(c.fallback for c in choices) < 350


def test_choose_without_key_is_weighted_random():
    split = TrafficSplit({"production": 75, "staging": 25})
    rng = random.Random(7)
    picks = [choose(split, None, ALL, "production", rng).alias for _ in range(4000)]
    assert abs(picks.count("staging") / 4000 - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 4000)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{nope", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"production": -1}', ">= 0"),
        ('{"production": "ten"}', "number"),
        ('{"production": 0}', "positive"),
        ('{"production": 1, "salt": 3}', "salt"),
    ],
)
def test_parse_tag_rejects_bad_values(value: str, problem: str):
    with pytest.raises(BadSplit, match=problem):
        parse_tag(value)


def test_parse_tag_refuses_weights_whose_sum_is_infinite():
    with pytest.raises(BadSplit, match="finite sum"):
        parse_tag('{"production": 1e308, "staging": 1e308}')


def test_choose_never_fails_on_a_split_the_tag_parser_accepts():
    rng = random.Random(11)
    for value in ('{"production": 1.7e308}', '{"production": 5e-324, "staging": 0}'):
        split = parse_tag(value)
        assert choose(split, None, ALL, "production", rng).alias == "production"
        assert choose(split, "user-1", ALL, "production").alias == "production"


def _hostile_tags(rng: random.Random) -> list[str]:
    """Deep nesting, huge and special numbers, other JSON types, and random mutations."""
    valid = json.dumps({"production": 90, "staging": 10, "salt": "exp-1"})
    tags = [
        "[" * 3000,
        '{"a":' * 3000,
        "[" * 100_000 + "]" * 100_000,
        '{"production": ' + "9" * 5000 + "}",
        '{"production": ' + "9" * 400 + "}",
        '{"production": 1e999}',
        '{"production": NaN}',
        '{"production": -Infinity, "staging": Infinity}',
        '{"production": 1e308, "staging": 1e308, "canary": 1e308}',
        "NaN",
        "null",
        '"production"',
        "90",
        "",
        "\ud800",
        '{"production": 1, "salt": {"a": []}}',
        '{"production": [90]}',
    ]
    alphabet = '{}[]":,0123456789.eE+-NaInfity \\u"salt' + "\x00\u2028"
    for _ in range(3000):
        chars = list(valid)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(chars) + 1)
            if rng.random() < 0.5 and position < len(chars):
                del chars[position]
            else:
                chars.insert(position, rng.choice(alphabet))
        tags.append("".join(chars))
    tags += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(2000)]
    return tags


def test_parse_tag_raises_nothing_but_badsplit_for_any_string():
    for value in _hostile_tags(random.Random(5)):
        try:
            split = parse_tag(value)
        except BadSplit:
            continue
        total = sum(split.weights.values())
        assert math.isfinite(total), value
        assert total > 0, value
        aliases = list(split.weights)
        assert choose(split, None, aliases, "production").alias in aliases
        assert choose(split, "user-1", aliases, "production").alias in aliases
