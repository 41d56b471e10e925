#!/usr/bin/env python
"""Generate the built-in demo collection (src/maw/data/demo) deterministically.

The demo is a small but real retrieval task about invented entities (bridges, lighthouses,
breweries, ...) living in invented towns, so no model has seen the facts in pre-training:

- every entity has a main document stating 2-3 facts ("The Veltran bridge in Osmar was completed
  in 1931 and spans the Kesh river."); about a third also have a second document about an event
  ("In 1962, the Veltran bridge was badly damaged by a storm.");
- queries paraphrase instead of copying ("which crossing in Osmar was finished in 1931",
  "the crossing in Osmar that suffered storm damage"), so neither BM25 nor a zero-shot encoder is
  perfect, while the paraphrase patterns are learnable from the training queries;
- documents share towns, rivers, people, years and kinds, so every query has distractors;
- relevance is computed from the structured facts, not hand-labelled: every entity of the asked
  kind that satisfies all constraints of the query is relevant (grade 2 for the document stating
  the asked fact, grade 1 for the entity's other document);
- train and test queries are about disjoint entities (the corpus is shared, as in BEIR).

Usage::

    python scripts/make_demo.py            # (re)write src/maw/data/demo
    python scripts/make_demo.py --check    # also print BM25 and zero-shot MiniLM nDCG@10 on test
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

SEED = 20240611
OUT = Path(__file__).resolve().parents[1] / "src" / "maw" / "data" / "demo"
ENTITIES_PER_KIND = 10
TEST_SHARE = 0.25
EVENT_SHARE = 0.35
N_TOWNS = 5  # few towns, people, rivers and years: many documents share them (distractors)
N_PEOPLE = 24
N_RIVERS = 6
YEARS = (1900, 1939)
NAME_QUESTION_SHARE = 0.1
TWIN_SHARE = 0.55  # share of entities that copy an earlier one of the same kind except for one fact
DECADE_SHARE = 0.3  # share of query years written as a decade ("in the 1910s"); relevance follows

# ---------------------------------------------------------------------------------------------
# Vocabulary. A fact is (slot, document phrase, query relative clause, question).
# Slots: "year", "person", "river", "town2", "num:<lo>:<hi>:<step>", or a key of VALUES.
# In templates {v} is the value as written in documents and {q} the value as written in queries.
# ---------------------------------------------------------------------------------------------

VALUES: dict[str, list[tuple[str, str]]] = {
    "bridge_material": [
        ("granite", "stone"),
        ("red brick", "brick"),
        ("riveted steel", "iron and steel"),
        ("oak timber", "wood"),
    ],
    "coast": [
        ("the Ombra bay", "Ombra bay"),
        ("the Tessil strait", "Tessil strait"),
        ("the Varn cape", "Varn cape"),
        ("the Quellin reef", "Quellin reef"),
    ],
    "library_subject": [
        ("old sea charts", "historic nautical maps"),
        ("medieval music manuscripts", "early handwritten music"),
        ("botanical drawings", "illustrations of plants"),
        ("trade law", "commercial legal texts"),
    ],
    "grape": [("Morvel", "Morvel"), ("Saskin", "Saskin"), ("Dulvane", "Dulvane"), ("Retaro", "Retaro")],
    "month": [("May", "May"), ("August", "August"), ("October", "October"), ("February", "February")],
    "festival_theme": [
        ("folk music", "traditional songs"),
        ("kites", "flying kites"),
        ("cheese", "dairy products"),
        ("lanterns", "paper lights"),
        ("horse racing", "equestrian races"),
    ],
    "museum_collection": [
        ("fossils", "prehistoric bones"),
        ("clocks", "timepieces"),
        ("textiles", "fabrics and weaving"),
        ("coins", "old money"),
        ("maps", "cartography"),
    ],
    "uni_subject": [
        ("mining engineering", "engineering for mines"),
        ("veterinary medicine", "animal doctors"),
        ("marine biology", "ocean life"),
        ("linguistics", "the study of languages"),
    ],
    "beer": [
        ("dark ale", "stout-like ale"),
        ("wheat beer", "beer brewed from wheat"),
        ("pale lager", "light lager"),
        ("cherry beer", "fruit beer"),
    ],
    "cloth": [
        ("wool", "woollen cloth"),
        ("linen", "flax cloth"),
        ("silk", "silk fabric"),
        ("cotton", "cotton fabric"),
    ],
    "club_colours": [
        ("green and white", "green and white"),
        ("black and gold", "black and yellow"),
        ("sky blue", "light blue"),
        ("red and black", "red and black"),
    ],
    "plants": [
        ("orchids", "orchid species"),
        ("cacti", "desert plants"),
        ("ferns", "fern species"),
        ("roses", "rose varieties"),
    ],
    "order": [("Tavine", "Tavine"), ("Corlish", "Corlish"), ("Ustrian", "Ustrian")],
    "monastery_product": [
        ("honey", "beekeeping"),
        ("cheese", "cheese making"),
        ("illuminated manuscripts", "decorated books"),
        ("herbal liqueur", "a herb liqueur"),
    ],
    "satellite_mission": [
        ("weather observation", "forecasting the weather"),
        ("ocean mapping", "charting the seas"),
        ("telecommunications", "relaying phone calls"),
        ("crop monitoring", "watching farmland"),
    ],
    "hospital_specialty": [
        ("children", "paediatric care"),
        ("burns", "burn injuries"),
        ("heart surgery", "cardiac operations"),
        ("eye diseases", "ophthalmology"),
    ],
    "mineral": [
        ("copper", "copper ore"),
        ("silver", "silver ore"),
        ("coal", "coal seams"),
        ("tin", "tin ore"),
    ],
    "grain": [("wheat", "wheat flour"), ("barley", "barley"), ("rye", "rye flour")],
    "mountain": [("Mount Kessar", "Kessar"), ("the Dravik ridge", "Dravik"), ("Mount Ulvene", "Ulvene")],
    "agency": [
        ("the Norvale Space Office", "Norvale"),
        ("Astrelle Dynamics", "Astrelle"),
        ("the Keth Institute", "Keth"),
    ],
    "airline": [("Solvair", "Solvair"), ("Trennic Air", "Trennic"), ("Ostaria Airways", "Ostaria")],
    "ship_cargo": [
        ("passengers and mail", "people and letters"),
        ("timber", "wood"),
        ("grain", "cereal cargo"),
    ],
    "paper_politics": [
        ("liberal", "progressive"),
        ("conservative", "right-leaning"),
        ("satirical", "humorous"),
    ],
}


@dataclass
class Kind:
    name: str  # document noun
    qnouns: list[str]  # query paraphrases of the noun
    facts: list[tuple[str, str, str, str]]  # (slot, doc phrase, query clause, question)


KINDS: list[Kind] = [
    Kind(
        "bridge",
        ["crossing", "viaduct"],
        [
            ("year", "was completed in {v}", "was finished in {q}", "when was the {name} {qn} finished"),
            ("river", "spans the {v} river", "goes over the {q}", "which river does the {name} {qn} cross"),
            (
                "person",
                "was designed by the engineer {v}",
                "was planned by {q}",
                "who planned the {name} {qn}",
            ),
            (
                "bridge_material",
                "is built of {v}",
                "is made of {q}",
                "what material is the {name} {qn} made of",
            ),
        ],
    ),
    Kind(
        "lighthouse",
        ["beacon tower", "coastal light"],
        [
            (
                "year",
                "was first lit in {v}",
                "has shone since {q}",
                "since when has the {name} {qn} been shining",
            ),
            ("num:18:60:3", "stands {v} metres tall", "is {q} m high", "how high is the {name} {qn}"),
            (
                "person",
                "was tended for decades by the keeper {v}",
                "was looked after by {q}",
                "who looked after the {name} {qn}",
            ),
            ("coast", "guards {v}", "watches over {q}", "which waters does the {name} {qn} watch over"),
        ],
    ),
    Kind(
        "observatory",
        ["astronomy station", "stargazing site"],
        [
            ("year", "was founded in {v}", "was set up in {q}", "when was the {name} {qn} set up"),
            (
                "num:40:200:20",
                "houses a {v} centimetre telescope",
                "has a {q} cm mirror",
                "how big is the telescope mirror at the {name} {qn}",
            ),
            (
                "person",
                "was established by the astronomer {v}",
                "was started by the stargazer {q}",
                "which astronomer started the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "library",
        ["book collection", "archive"],
        [
            (
                "year",
                "opened its doors in {v}",
                "began lending in {q}",
                "when did the {name} {qn} begin lending",
            ),
            (
                "library_subject",
                "specialises in {v}",
                "is known for {q}",
                "what is the {name} {qn} known for",
            ),
            (
                "person",
                "was endowed by the merchant {v}",
                "was paid for by {q}",
                "who paid for the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "vineyard",
        ["wine estate", "winery"],
        [
            (
                "year",
                "was planted in {v}",
                "has had vines since {q}",
                "how long has the {name} {qn} had vines",
            ),
            ("grape", "grows {v} grapes", "produces {q} wine", "which wine does the {name} {qn} produce"),
            (
                "person",
                "is owned by the family of {v}",
                "belongs to the {q} family",
                "which family runs the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "festival",
        ["yearly celebration", "annual fair"],
        [
            ("month", "takes place every {v}", "is held each {q}", "in which month is the {name} {qn} held"),
            ("year", "was first held in {v}", "started in {q}", "when did the {name} {qn} start"),
            ("festival_theme", "is devoted to {v}", "celebrates {q}", "what does the {name} {qn} celebrate"),
        ],
    ),
    Kind(
        "steamship",
        ["vessel", "steamer"],
        [
            ("year", "was launched in {v}", "went to sea in {q}", "when did the {name} {qn} go to sea"),
            (
                "town2",
                "sailed between the ports of {town} and {v}",
                "ran a route to {q}",
                "where did the {name} {qn} sail to",
            ),
            ("ship_cargo", "mostly carried {v}", "transported {q}", "what did the {name} {qn} transport"),
            ("person", "was commanded by captain {v}", "had {q} as captain", "who captained the {name} {qn}"),
        ],
    ),
    Kind(
        "dam",
        ["reservoir wall", "barrage"],
        [
            ("year", "was finished in {v}", "was completed in {q}", "when was the {name} {qn} completed"),
            ("river", "holds back the {v} river", "blocks the {q}", "which river does the {name} {qn} block"),
            ("num:30:150:10", "is {v} metres high", "rises {q} m", "how tall is the {name} {qn}"),
        ],
    ),
    Kind(
        "museum",
        ["gallery", "exhibition hall"],
        [
            ("year", "opened in {v}", "welcomed its first visitors in {q}", "when did the {name} {qn} open"),
            (
                "museum_collection",
                "has a large collection of {v}",
                "displays {q}",
                "what does the {name} {qn} display",
            ),
            (
                "person",
                "was founded by the collector {v}",
                "grew from the private collection of {q}",
                "whose collection started the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "university",
        ["college", "academy"],
        [
            ("year", "was founded in {v}", "has taught students since {q}", "how old is the {name} {qn}"),
            (
                "uni_subject",
                "is best known for {v}",
                "is famous for training {q}",
                "what is the {name} {qn} famous for",
            ),
            (
                "person",
                "was led for twenty years by rector {v}",
                "had {q} as its head",
                "who headed the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "railway",
        ["train line", "rail link"],
        [
            ("year", "opened in {v}", "began service in {q}", "when did the {name} {qn} begin service"),
            ("town2", "connects {town} with {v}", "runs to {q}", "where does the {name} {qn} run to"),
            ("num:12:90:6", "is {v} kilometres long", "covers {q} km", "how long is the {name} {qn}"),
        ],
    ),
    Kind(
        "brewery",
        ["beer maker", "brewhouse"],
        [
            (
                "year",
                "has brewed since {v}",
                "was started in {q}",
                "since when has the {name} {qn} been brewing",
            ),
            (
                "beer",
                "is famous for its {v}",
                "makes a well-known {q}",
                "what beer is the {name} {qn} known for",
            ),
            ("person", "was founded by the brewer {v}", "was set up by {q}", "who set up the {name} {qn}"),
        ],
    ),
    Kind(
        "mill",
        ["cloth factory", "weaving works"],
        [
            ("year", "was built in {v}", "began weaving in {q}", "when did the {name} {qn} begin weaving"),
            (
                "river",
                "was powered by the {v} river",
                "ran on water from the {q}",
                "which river drove the {name} {qn}",
            ),
            ("cloth", "produced {v}", "made {q}", "what did the {name} {qn} make"),
        ],
    ),
    Kind(
        "football club",
        ["soccer team", "football side"],
        [
            ("year", "was formed in {v}", "was established in {q}", "when was the {name} {qn} established"),
            ("club_colours", "plays in {v}", "wears {q} shirts", "what colours does the {name} {qn} wear"),
            (
                "num:3000:30000:1000",
                "has a stadium with {v} seats",
                "plays in front of up to {q} fans",
                "how many fans fit in the ground of the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "botanical garden",
        ["plant park", "arboretum"],
        [
            ("year", "was laid out in {v}", "was planted in {q}", "when was the {name} {qn} planted"),
            (
                "plants",
                "is famous for its {v}",
                "shows many {q}",
                "which plants is the {name} {qn} known for",
            ),
            (
                "person",
                "was designed by the gardener {v}",
                "was planned by {q}",
                "who planned the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "newspaper",
        ["daily paper", "gazette"],
        [
            (
                "year",
                "was first printed in {v}",
                "has appeared since {q}",
                "since when has the {name} {qn} appeared",
            ),
            (
                "person",
                "was edited for many years by {v}",
                "had {q} as chief editor",
                "who was the chief editor of the {name} {qn}",
            ),
            (
                "paper_politics",
                "has a {v} editorial line",
                "is a {q} publication",
                "what is the political line of the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "airport",
        ["airfield", "air terminal"],
        [
            (
                "year",
                "opened in {v}",
                "received its first flights in {q}",
                "when did the {name} {qn} receive its first flights",
            ),
            (
                "num:1200:3600:200",
                "has a runway {v} metres long",
                "has a {q} m landing strip",
                "how long is the runway of the {name} {qn}",
            ),
            (
                "airline",
                "is the home base of {v}",
                "is the hub of {q}",
                "which airline is based at the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "monastery",
        ["abbey", "religious community"],
        [
            (
                "year",
                "was founded in {v}",
                "has housed monks since {q}",
                "when did monks arrive at the {name} {qn}",
            ),
            ("order", "belongs to the {v} order", "is run by {q} monks", "which order runs the {name} {qn}"),
            (
                "monastery_product",
                "is known for its {v}",
                "is famous for {q}",
                "what is the {name} {qn} famous for",
            ),
        ],
    ),
    Kind(
        "canal",
        ["waterway", "shipping channel"],
        [
            ("year", "was dug in {v}", "was excavated in {q}", "when was the {name} {qn} excavated"),
            (
                "river",
                "links the {v} river to the sea",
                "joins the {q} with the coast",
                "which river does the {name} {qn} join to the sea",
            ),
            (
                "num:4:30:2",
                "has {v} locks",
                "uses {q} lock chambers",
                "how many locks does the {name} {qn} have",
            ),
        ],
    ),
    Kind(
        "theatre",
        ["playhouse", "stage"],
        [
            (
                "year",
                "opened in {v}",
                "staged its first play in {q}",
                "when did the {name} {qn} stage its first play",
            ),
            (
                "num:200:1600:100",
                "has {v} seats",
                "can hold an audience of {q}",
                "how big an audience can the {name} {qn} hold",
            ),
            (
                "person",
                "was designed by the architect {v}",
                "was drawn up by {q}",
                "who was the architect of the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "satellite",
        ["spacecraft", "orbiter"],
        [
            (
                "year",
                "was launched in {v}",
                "went into orbit in {q}",
                "when did the {name} {qn} go into orbit",
            ),
            ("satellite_mission", "was built for {v}", "is used for {q}", "what is the {name} {qn} used for"),
            ("agency", "was operated by {v}", "was run by {q}", "who operated the {name} {qn}"),
        ],
    ),
    Kind(
        "hospital",
        ["clinic", "medical centre"],
        [
            (
                "year",
                "opened in {v}",
                "started treating patients in {q}",
                "when did the {name} {qn} start treating patients",
            ),
            (
                "hospital_specialty",
                "specialises in {v}",
                "is a centre for {q}",
                "what does the {name} {qn} specialise in",
            ),
            (
                "num:60:600:20",
                "has {v} beds",
                "can admit {q} patients",
                "how many patients can the {name} {qn} admit",
            ),
        ],
    ),
    Kind(
        "mine",
        ["pit", "dig site"],
        [
            ("year", "opened in {v}", "began extraction in {q}", "when did the {name} {qn} begin extraction"),
            ("mineral", "produced {v}", "yielded {q}", "what did the {name} {qn} yield"),
            (
                "person",
                "was owned by the industrialist {v}",
                "belonged to the magnate {q}",
                "which magnate owned the {name} {qn}",
            ),
        ],
    ),
    Kind(
        "orchestra",
        ["symphony ensemble", "philharmonic"],
        [
            (
                "year",
                "gave its first concert in {v}",
                "first performed in {q}",
                "when did the {name} {qn} first perform",
            ),
            ("person", "is conducted by {v}", "plays under the baton of {q}", "who conducts the {name} {qn}"),
            (
                "num:40:110:5",
                "has {v} musicians",
                "counts {q} players",
                "how many players does the {name} {qn} have",
            ),
        ],
    ),
    Kind(
        "castle",
        ["fortress", "stronghold"],
        [
            ("year", "was built in {v}", "was erected in {q}", "when was the {name} {qn} erected"),
            (
                "person",
                "was the seat of the lord {v}",
                "was home to the noble {q}",
                "which noble lived in the {name} {qn}",
            ),
            (
                "num:2:12:1",
                "has {v} towers",
                "is topped by {q} turrets",
                "how many turrets does the {name} {qn} have",
            ),
        ],
    ),
    Kind(
        "windmill",
        ["grinding mill", "mill tower"],
        [
            (
                "year",
                "was raised in {v}",
                "has turned since {q}",
                "since when has the {name} {qn} been turning",
            ),
            ("grain", "grinds {v}", "makes {q}", "what does the {name} {qn} grind"),
            ("person", "was run by the miller {v}", "was worked by {q}", "who worked the {name} {qn}"),
        ],
    ),
    Kind(
        "tunnel",
        ["underground passage", "bore"],
        [
            (
                "year",
                "was opened in {v}",
                "was bored through in {q}",
                "when was the {name} {qn} bored through",
            ),
            ("mountain", "runs beneath {v}", "goes under {q}", "what does the {name} {qn} go under"),
            ("num:1:15:1", "is {v} kilometres long", "stretches {q} km", "how long is the {name} {qn}"),
        ],
    ),
]

# Events of second documents: (document phrase, query paraphrase).
EVENTS: list[tuple[str, str]] = [
    ("was badly damaged by a storm", "was battered by a gale"),
    ("was struck by lightning", "was hit during a thunderstorm"),
    ("was flooded when a dam upstream failed", "ended up under water after a dam burst"),
    ("was flooded after weeks of heavy rain", "was inundated following a long wet spell"),
    ("was closed for two years after a fire", "shut down for a while following a blaze"),
    ("was partly destroyed by an earthquake", "was shaken badly by a tremor"),
    ("was restored after a long fundraising campaign", "was renovated with money raised by donations"),
    ("was modernised with a government grant", "was upgraded using public subsidies"),
    ("appeared on a national postage stamp", "was pictured on a stamp"),
    ("was the setting of a popular film", "appeared in a movie"),
    ("was visited by the king and queen", "received a royal visit"),
    ("was visited by the prime minister", "received a visit from the head of government"),
    ("changed owners after a long court case", "was sold following a lawsuit"),
    ("was bought by the town council", "passed into municipal ownership"),
    ("served as a field hospital during the war", "treated wounded soldiers in wartime"),
    ("was occupied by soldiers during the war", "housed troops in wartime"),
]

# Neutral sentences added to some main documents: shared vocabulary, no facts.
FILLERS: list[str] = [
    "Visitors often mention the view over the old market square.",
    "A small exhibition about its history is open on weekends.",
    "Local guidebooks describe it as one of the sights of the region.",
    "The regional council lists it as a protected heritage site.",
    "Guided tours in several languages are available in summer.",
    "It is easy to reach by bus from the town centre.",
    "Photographs of it hang in the town hall.",
    "Students from the region sometimes write essays about it.",
]
FILLER_SHARE = 0.5

ONSETS = [
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "z",
]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei"]
CODAS = ["", "", "", "n", "r", "l", "s", "m", "nd", "rk"]


def make_word(rng: random.Random, syllables: int) -> str:
    return "".join(
        rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)
    ).capitalize()


class Namer:
    """Unique invented words (never reused across towns, rivers, people, entities)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def __call__(self, syllables: int = 2) -> str:
        while True:
            word = make_word(self.rng, syllables)
            if word not in self.used and 4 <= len(word) <= 11:
                self.used.add(word)
                return word


@dataclass
class Entity:
    eid: str
    kind: Kind
    name: str
    town: str
    facts: dict[str, tuple[str, str]]  # slot -> (doc value, query value)
    fact_order: list[str]
    event: tuple[str, str] | None = None
    event_year: int | None = None
    differs: str | None = None  # for twins: the slot that distinguishes it from its model
    docs: dict[str, str] = field(default_factory=dict)  # "main"/"event" -> doc id


def pick_value(slot: str, rng: random.Random, pools: dict[str, list]) -> tuple[str, str]:
    if slot == "year":
        y = str(rng.randint(*YEARS))
        return y, y
    if slot.startswith("num:"):
        lo, hi, step = (int(x) for x in slot.split(":")[1:])
        n = rng.randrange(lo, hi + 1, step)
        text = f"{n:,}" if n >= 10000 else str(n)
        return text, text
    if slot == "person":
        first, last = rng.choice(pools["person"])
        return f"{first} {last}", last
    if slot in ("river", "town2"):
        v = rng.choice(pools[slot])
        return v, v
    return rng.choice(VALUES[slot])


def satisfies(e: Entity, slot: str, value: str) -> bool:
    """Does entity ``e`` have ``value`` for ``slot`` (a year may be given as a decade, "1910s")?"""
    got = e.facts.get(slot, (None,))[0]
    if slot == "year" and value.endswith("s"):
        return got is not None and got[:3] == value[:3]
    return got == value


def matching(
    entities: list[Entity], kind: Kind, town: str | None, constraints: dict[str, str]
) -> list[Entity]:
    """Entities of ``kind`` (in ``town`` when given) satisfying every constraint: the relevant set."""
    return [
        e
        for e in entities
        if e.kind is kind
        and (town is None or e.town == town)
        and all(satisfies(e, slot, v) for slot, v in constraints.items())
    ]


def query_value(ent: Entity, slot: str, rng: random.Random) -> tuple[str, str]:
    """(value used for matching, value as written in the query); years sometimes become decades."""
    doc_v, q_v = ent.facts[slot]
    if slot == "year" and rng.random() < DECADE_SHARE:
        decade = f"{doc_v[:3]}0s"
        return decade, f"the {decade}"
    return doc_v, q_v


def build(seed: int = SEED) -> tuple[list[dict], list[dict], dict[str, dict[str, dict[str, int]]]]:
    """Return (corpus records, query records, qrels by split)."""
    rng = random.Random(seed)
    namer = Namer(rng)
    towns = [namer(2) for _ in range(N_TOWNS)]
    pools = {
        "river": [namer(1 + (i % 2)) for i in range(N_RIVERS)],
        "town2": towns,
        "person": [(namer(2), namer(2)) for _ in range(N_PEOPLE)],
    }

    entities: list[Entity] = []
    for kind in KINDS:
        for _ in range(ENTITIES_PER_KIND):
            same_kind = [e for e in entities if e.kind is kind]
            if same_kind and rng.random() < TWIN_SHARE:  # a hard negative: same town, one fact differs
                model = rng.choice(same_kind)
                town, slots, facts = model.town, list(model.fact_order), dict(model.facts)
                rng.shuffle(slots)
                numeric = [x for x in slots if x == "year" or x.startswith("num:")]
                changed = rng.choice(numeric) if numeric and rng.random() < 0.6 else rng.choice(slots)
                while facts[changed] == model.facts[changed] or (
                    changed == "town2" and facts[changed][0] == town
                ):
                    facts[changed] = pick_value(changed, rng, pools)
                if model.differs is None:
                    model.differs = changed
                differs = changed
                event_p = 0.8 if model.event else EVENT_SHARE  # twins' events are hard negatives too
            else:
                differs, event_p = None, EVENT_SHARE
                town = rng.choice(towns)
                n_facts = rng.choice([2, 2, 3, 3, 3]) if len(kind.facts) >= 3 else 2
                slots = rng.sample([f[0] for f in kind.facts], min(n_facts, len(kind.facts)))
                facts = {}
                for slot in slots:
                    value = pick_value(slot, rng, pools)
                    while slot == "town2" and value[0] == town:
                        value = pick_value(slot, rng, pools)
                    facts[slot] = value
            ent = Entity(
                f"e{len(entities)}", kind, namer(rng.choice([2, 2, 3])), town, facts, slots, differs=differs
            )
            if rng.random() < event_p:
                ent.event = rng.choice(EVENTS)
                ent.event_year = rng.randint(1900, 2015)
            entities.append(ent)

    corpus: list[dict] = []
    for ent in entities:
        phrases = {f[0]: f[1] for f in ent.kind.facts}
        parts = [phrases[s].format(v=ent.facts[s][0], town=ent.town) for s in ent.fact_order]
        subject = f"The {ent.name} {ent.kind.name} in {ent.town}"
        if len(parts) == 2:
            text = f"{subject} {parts[0]} and {parts[1]}."
        else:
            text = f"{subject} {parts[0]} and {parts[1]}. It {parts[2]}."
        if rng.random() < FILLER_SHARE:
            text += " " + rng.choice(FILLERS)
        ent.docs["main"] = f"d{len(corpus)}"
        corpus.append({"_id": ent.docs["main"], "title": f"{ent.name} {ent.kind.name}", "text": text})
    for ent in entities:
        if ent.event:
            ent.docs["event"] = f"d{len(corpus)}"
            text = f"In {ent.event_year}, the {ent.name} {ent.kind.name} {ent.event[0]}. It stands in {ent.town}."
            corpus.append({"_id": ent.docs["event"], "title": "", "text": text})
    # Shuffle document order so ids carry no hint of the entity order.
    order = list(range(len(corpus)))
    rng.shuffle(order)
    remap = {corpus[i]["_id"]: f"doc{j:04d}" for j, i in enumerate(order)}
    corpus = [dict(corpus[i], _id=remap[corpus[i]["_id"]]) for i in order]
    for ent in entities:
        ent.docs = {k: remap[v] for k, v in ent.docs.items()}

    # Split entities (per kind) into train / test, then write one query per entity.
    test_ids: set[str] = set()
    for kind in KINDS:
        members = [e.eid for e in entities if e.kind is kind]
        test_ids.update(rng.sample(members, round(TEST_SHARE * len(members))))

    queries: list[dict] = []
    qrels: dict[str, dict[str, dict[str, int]]] = {"train": {}, "test": {}}
    for ent in entities:
        qn = rng.choice(ent.kind.qnouns)
        clauses = {f[0]: f[2] for f in ent.kind.facts}
        questions = {f[0]: f[3] for f in ent.kind.facts}
        roll = rng.random()

        if ent.event and roll < 0.45:
            qtext, form_name = f"the {qn} in {ent.town} that {ent.event[1]}", "event"
            rel = {
                e.docs["event"]: 2
                for e in entities
                if e.kind is ent.kind and e.town == ent.town and e.event == ent.event
            }
            rel.update(
                {
                    e.docs["main"]: 1
                    for e in entities
                    if e.kind is ent.kind and e.town == ent.town and e.event == ent.event
                }
            )
        else:
            form = rng.random()
            if form < NAME_QUESTION_SHARE:  # a question about one fact, naming the entity
                slot = rng.choice(ent.fact_order)
                qtext, form_name = questions[slot].format(name=ent.name, qn=qn) + "?", "name"
                hits = [ent]
            elif form < 0.65 or len(ent.fact_order) < 2:  # kind + town + one fact
                slot = ent.differs if ent.differs and rng.random() < 0.8 else rng.choice(ent.fact_order)
                match_v, q_v = query_value(ent, slot, rng)
                clause = clauses[slot].format(q=q_v, town=ent.town)
                qtext = (
                    f"which {qn} in {ent.town} {clause}?"
                    if rng.random() < 0.5
                    else f"{qn} in {ent.town} that {clause}"
                )
                hits, form_name = matching(entities, ent.kind, ent.town, {slot: match_v}), "town+fact"
            else:  # kind + two facts, no town
                s1, s2 = rng.sample(ent.fact_order, 2)
                (m1, q1), (m2, q2) = query_value(ent, s1, rng), query_value(ent, s2, rng)
                c1 = clauses[s1].format(q=q1, town=ent.town)
                c2 = clauses[s2].format(q=q2, town=ent.town)
                qtext = f"the {qn} that {c1} and {c2}"
                hits, form_name = matching(entities, ent.kind, None, {s1: m1, s2: m2}), "two facts"
            rel = {e.docs["main"]: 2 for e in hits}
            rel.update({e.docs["event"]: 1 for e in hits if "event" in e.docs})
        qid = f"q{len(queries):04d}"
        queries.append({"_id": qid, "text": qtext, "metadata": {"form": form_name}})
        qrels["test" if ent.eid in test_ids else "train"][qid] = rel
    return corpus, queries, qrels


def write(out: Path = OUT, seed: int = SEED) -> None:
    corpus, queries, qrels = build(seed)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for rec in corpus:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for rec in queries:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    for split, rows in qrels.items():
        with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8", newline="\n") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for qid in sorted(rows):
                for doc_id, grade in sorted(rows[qid].items()):
                    fh.write(f"{qid}\t{doc_id}\t{grade}\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"wrote {out}: {len(corpus)} docs, {len(queries)} queries, "
        f"train {len(qrels['train'])} / test {len(qrels['test'])} queries, {size / 1024:.1f} KB"
    )


def check(out: Path = OUT) -> None:
    """Print BM25 and zero-shot MiniLM nDCG@10 on the demo test split (sanity check of difficulty)."""
    import bm25s
    import ir_measures
    import numpy as np
    import Stemmer

    from maw.config import default_model
    from maw.data import load_beir
    from maw.models.encoder import Encoder

    ds = load_beir(out, name="demo")
    doc_ids = ds.doc_ids()
    texts = ds.doc_texts()
    measures = [ir_measures.nDCG @ 10, ir_measures.R @ 100]
    for split in ("train", "test"):
        qids = sorted(ds.qrels[split])
        qtexts = [ds.queries[q] for q in qids]
        stemmer = Stemmer.Stemmer("english")
        retriever = bm25s.BM25()
        retriever.index(
            bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False
        )
        res, scores = retriever.retrieve(
            bm25s.tokenize(qtexts, stopwords="en", stemmer=stemmer, show_progress=False),
            k=100,
            show_progress=False,
        )
        run = {
            q: {doc_ids[d]: float(s) for d, s in zip(res[i], scores[i], strict=True)}
            for i, q in enumerate(qids)
        }
        bm25 = ir_measures.calc_aggregate(measures, ds.qrels[split], run)
        enc = Encoder.from_pretrained(default_model())
        d_emb = enc.encode(texts, max_length=256, batch_size=64)
        q_emb = enc.encode(qtexts, max_length=64, batch_size=64)
        sims = q_emb @ d_emb.T
        top = np.argsort(-sims, axis=1)[:, :100]
        run = {q: {doc_ids[d]: float(sims[i, d]) for d in top[i]} for i, q in enumerate(qids)}
        dense = ir_measures.calc_aggregate(measures, ds.qrels[split], run)
        print(f"{split}: BM25 {fmt(bm25)} | MiniLM zero-shot {fmt(dense)}")


def fmt(agg: dict) -> str:
    return ", ".join(f"{m}={v:.4f}" for m, v in sorted(agg.items(), key=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: the packaged demo)")
    parser.add_argument("--check", action="store_true", help="print BM25 / zero-shot MiniLM nDCG@10")
    args = parser.parse_args()
    write(args.out)
    if args.check:
        check(args.out)


if __name__ == "__main__":
    main()
