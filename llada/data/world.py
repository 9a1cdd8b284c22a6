"""The built-in world: a corpus the package generates itself, deterministic from a seed.

Invented people live in invented cities of invented countries, work, keep pets, and each invented
exactly one thing. Their biographies, short stories and arithmetic make the pretraining corpus;
questions and answers about the same world make the SFT set; the evaluation items measure what
the paper claims at small scale.

Which facts appear in which direction (what the reversal evaluation relies on):
  * "P invented the T." is stated forward only, in every biography of P. No pretraining text ever
    names an invention before its inventor.
  * The people are split in two halves. For group "A", the SFT set asks both "What did P invent?"
    and "Who invented the T?", so the model learns both question formats. For group "B" the SFT
    set asks neither: `eval_items("fact_forward")` asks group B forward and
    `eval_items("fact_reverse")` asks group B reversed, a direction no training text contains.
  * Arithmetic pairs are split by a hash into train and test; test sums never appear in training.
  * Pretraining "validation" documents are held-out paraphrases and stories, disjoint from "train".
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

_ONSETS = ["b", "br", "d", "dr", "f", "g", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "st", "t",
           "th", "v", "z", "h", "j", "c", "gl", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "io", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "x", "m", "nd", "rk"]
OCCUPATIONS = ["baker", "sailor", "weaver", "potter", "astronomer", "gardener", "carpenter", "singer",
               "miner", "cartographer", "teacher", "smith", "healer", "fisher", "painter", "scribe"]
PETS = ["cat", "dog", "owl", "goat", "parrot", "tortoise", "ferret", "horse", "crow", "lizard"]
COLOURS = ["red", "blue", "green", "yellow", "violet", "orange", "silver", "amber", "teal", "black"]
_THING_ADJ = ["glass", "copper", "singing", "floating", "folding", "silent", "burning", "hollow",
              "woven", "iron", "paper", "frozen", "spinning", "golden", "crooked", "velvet", "tiny",
              "giant", "bronze", "painted", "humming", "marble", "wooden", "clockwork"]
_THING_NOUN = ["drum", "lantern", "compass", "bridge", "wheel", "clock", "ladder", "kettle", "flute",
               "loom", "telescope", "boat", "mirror", "bell", "map", "plough", "harp", "sled",
               "pump", "kite", "anchor", "chair", "sundial", "cart"]


_OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


@dataclass(frozen=True)
class Person:
    name: str
    city: str
    occupation: str
    born: int
    pet: str
    colour: str
    invention: str
    group: str  # "A" or "B", see the module docstring


class World:
    """A procedurally generated world; every list it returns is a pure function of (seed, sizes)."""

    def __init__(self, seed: int = 0, n_people: int = 400, n_cities: int = 40, n_countries: int = 8,
                 n_stories: int = 2000, n_sums: int = 20000):
        if min(n_people, n_cities, n_countries) < 2:
            raise ValueError("the world needs at least two people, cities and countries")
        self.seed, self.n_stories, self.n_sums = seed, n_stories, n_sums
        rng = random.Random(seed)
        names: set[str] = set()

        def fresh(make) -> str:
            while True:
                w = make()
                if w not in names:
                    names.add(w)
                    return w

        self.countries = [fresh(lambda: _word(rng, 2)) for _ in range(n_countries)]
        self.cities = [fresh(lambda: _word(rng, rng.choice([2, 3]))) for _ in range(n_cities)]
        self.country_of = {c: rng.choice(self.countries) for c in self.cities}
        things = [f"{a} {n}" for a in _THING_ADJ for n in _THING_NOUN]
        rng.shuffle(things)
        if n_people > len(things):
            raise ValueError(f"n_people must be at most {len(things)} (one invention each)")
        self.people = [
            Person(name=fresh(lambda: f"{_word(rng, 2)} {_word(rng, rng.choice([1, 2]))}"),
                   city=rng.choice(self.cities), occupation=rng.choice(OCCUPATIONS),
                   born=rng.randint(1700, 1999), pet=rng.choice(PETS), colour=rng.choice(COLOURS),
                   invention=things[i], group="A" if i % 2 == 0 else "B")
            for i in range(n_people)
        ]

    # ------------------------------------------------------------------------------ pretraining
    def _bio(self, p: Person, rng: random.Random) -> str:
        sentences = [
            rng.choice([f"{p.name} lives in {p.city}.", f"The home of {p.name} is {p.city}.",
                        f"{p.name} has a house in {p.city}."]),
            rng.choice([f"{p.name} works as a {p.occupation}.", f"By trade, {p.name} is a {p.occupation}.",
                        f"{p.name} earns a living as a {p.occupation}."]),
            rng.choice([f"{p.name} was born in {p.born}.", f"The birth year of {p.name} is {p.born}."]),
            rng.choice([f"{p.name} keeps a {p.pet}.", f"The pet of {p.name} is a {p.pet}."]),
            rng.choice([f"The favourite colour of {p.name} is {p.colour}.", f"{p.name} loves the colour {p.colour}."]),
            # forward direction only: the inventor is always named first
            rng.choice([f"{p.name} invented the {p.invention}.", f"{p.name} is the one who invented the {p.invention}."]),
            f"{p.city} is a city in {self.country_of[p.city]}.",
        ]
        first, rest = sentences[0], sentences[1:]
        rng.shuffle(rest)
        return " ".join([first, *rest])

    def _story(self, rng: random.Random) -> str:
        a, b = rng.sample(self.people, 2)
        c = rng.choice(self.cities)
        return rng.choice([
            f"One morning {a.name} left {a.city} for {c}. On the road {a.name} met {b.name}, a {b.occupation} "
            f"from {b.city}, and together they reached {c} by nightfall.",
            f"{a.name} and {b.name} were old friends. Every spring the {a.occupation} from {a.city} visited "
            f"the {b.occupation} in {b.city}, and they talked until the stars came out.",
            f"When the {a.pet} of {a.name} ran away, {b.name} found it near {c} and brought it home to {a.city}.",
        ])

    def _sums(self, split: str) -> list[str]:
        rng = random.Random(self.seed + 7)
        out = []
        while len(out) < self.n_sums:
            x, y, op = rng.randint(0, 99), rng.randint(0, 99), rng.choice("+-*")
            if op == "*":
                x, y = x % 13, y % 13
            is_test = (x * 131 + y * 71 + ord(op)) % 10 == 0
            if is_test == (split == "test"):
                out.append(f"{x} {op} {y} = {_OPS[op](x, y)}")
            if split == "test" and len(out) >= self.n_sums // 10:
                break
        return out

    @cached_property
    def _documents(self) -> dict[str, list[str]]:
        rng = random.Random(self.seed + 1)
        docs = {"train": [], "validation": []}
        for p in self.people:
            for k in range(4):  # three paraphrased biographies for training, one held out
                docs["validation" if k == 3 else "train"].append(self._bio(p, rng))
        for i in range(self.n_stories):
            docs["validation" if i % 10 == 0 else "train"].append(self._story(rng))
        sums = self._sums("train")
        for i in range(0, len(sums), 8):
            docs["validation" if (i // 8) % 20 == 0 else "train"].append(". ".join(sums[i:i + 8]) + ".")
        seen = set(docs["train"])  # templates can repeat a story: keep validation disjoint
        docs["validation"] = list(dict.fromkeys(d for d in docs["validation"] if d not in seen))
        for split in docs.values():
            rng.shuffle(split)
        return docs

    def pretrain_documents(self, split: str = "train") -> list[str]:
        """Biographies, stories and arithmetic; "validation" is disjoint from "train"."""
        if split not in self._documents:
            raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
        return list(self._documents[split])

    # ------------------------------------------------------------------------------------- SFT
    def _qa(self, p: Person, rng: random.Random) -> list[tuple[str, str]]:
        pairs = [
            (f"Where does {p.name} live?", f"{p.name} lives in {p.city}."),
            (f"What does {p.name} do for a living?", f"{p.name} is a {p.occupation}."),
            (f"When was {p.name} born?", f"{p.name} was born in {p.born}."),
            (f"What pet does {p.name} keep?", f"{p.name} keeps a {p.pet}."),
            (f"What is the favourite colour of {p.name}?", f"The favourite colour of {p.name} is {p.colour}."),
        ]
        if p.group == "A":
            pairs += [(f"What did {p.name} invent?", f"{p.name} invented the {p.invention}."),
                      (f"Who invented the {p.invention}?", f"The {p.invention} was invented by {p.name}.")]
        rng.shuffle(pairs)
        return pairs

    def sft_conversations(self, split: str = "train") -> list[dict]:
        """Chat `messages`: questions about the world (some multi-turn) and arithmetic questions."""
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
        rng = random.Random(self.seed + 2)
        convs = []
        for p in self.people:
            pairs = self._qa(p, rng)
            held = pairs[-1:]  # one question per person is held out for validation
            chosen = held if split == "validation" else pairs[:-1]
            i = 0
            while i < len(chosen):
                turns = chosen[i:i + rng.choice([1, 1, 2])]
                messages = []
                for q, a in turns:
                    messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                convs.append({"messages": messages})
                i += len(turns)
        for s in self._sums("train")[: len(self.people) * 2 if split == "train" else len(self.people) // 5]:
            lhs, rhs = s.split(" = ")
            convs.append({"messages": [{"role": "user", "content": f"What is {lhs}?"},
                                       {"role": "assistant", "content": f"{lhs} = {rhs}."}]})
        rng.shuffle(convs)
        return convs

    # -------------------------------------------------------------------------------- evaluation
    def eval_items(self, task: str, split: str = "test", limit: int | None = None) -> list[dict]:
        """Evaluation items: {"prompt", "answer", "options", "label"} (+ "prefix"/"suffix" for infill).

        fact_forward: "What did P invent?" for group B; fact_reverse: "Who invented the T?" for
        group B (never seen reversed); arithmetic: held-out sums; infill: a biography sentence
        whose city is to be filled in the middle.
        """
        rng = random.Random(self.seed + 3)
        group_b = [p for p in self.people if p.group == "B"]
        items: list[dict] = []
        if task == "fact_forward":
            for p in group_b:
                wrong = rng.sample([q.invention for q in self.people if q is not p], 3)
                options = [f"the {x}" for x in [p.invention, *wrong]]
                items.append({"prompt": f"What did {p.name} invent?", "answer": f"the {p.invention}",
                              "options": options, "label": 0})
        elif task == "fact_reverse":
            for p in group_b:
                wrong = rng.sample([q.name for q in self.people if q is not p], 3)
                items.append({"prompt": f"Who invented the {p.invention}?", "answer": p.name,
                              "options": [p.name, *wrong], "label": 0})
        elif task == "arithmetic":
            for s in self._sums("test"):
                lhs, rhs = s.split(" = ")
                wrong = sorted({str(int(rhs) + d) for d in (-10, -1, 1, 2, 10)} - {rhs})[:3]
                items.append({"prompt": f"What is {lhs}?", "answer": rhs, "options": [rhs, *wrong], "label": 0})
        elif task == "infill":
            for p in self.people:
                wrong = rng.sample([c for c in self.cities if c != p.city], 3)
                items.append({"prompt": f"{p.name} lives in", "prefix": f"{p.name} lives in ",
                              "suffix": f". {p.name} works as a {p.occupation}.", "answer": p.city,
                              "options": [p.city, *wrong], "label": 0})
        else:
            raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(EVAL_TASKS)}")
        for item in items:  # shuffle the options, keep the label pointing at the answer
            order = list(range(len(item["options"])))
            rng.shuffle(order)
            item["options"] = [item["options"][i] for i in order]
            item["label"] = order.index(0)
        return items[:limit] if limit is not None else items


EVAL_TASKS = ("fact_forward", "fact_reverse", "arithmetic", "infill")
