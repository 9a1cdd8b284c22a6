"""The built-in world: a corpus the package generates itself, deterministic from a seed.

Invented people live in invented cities of invented countries, work, keep pets, and each invented
exactly one thing. Their biographies, short stories and arithmetic make the pretraining corpus;
questions and answers about the same world make the SFT set; the evaluation items measure what
the paper claims at small scale.

Which facts appear in which direction (what the reversal evaluation relies on):
  * A biography names its person once, in its first sentence, and says "they" after that, so
    "They invented the T." follows the inventor's name: no text ever names an invention before its
    inventor, and a fact is tied to its person only through the document.
  * The people are split in two halves. The SFT set asks every person "What did P invent?" (answer
    "P invented the T."); for group "A" it also asks "Who invented the T?", with the same answer,
    so the model learns the reverse question's form. Group B's reverse question is never asked:
    `eval_items("fact_forward")` asks group B the taught direction and `eval_items("fact_reverse")`
    the other, which no training text contains (the reversal curse of Berglund et al. 2023).
  * Arithmetic pairs are split by a hash into train and test; test sums never appear in training.
  * Pretraining "validation" documents are held-out paraphrases and stories, disjoint from "train".
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
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


# The largest world: one invention per person, and few enough countries and cities that fresh names
# (about 500,000 of two syllables) come quickly
MAX_PEOPLE = len(_THING_ADJ) * len(_THING_NOUN)
MAX_PLACES = 10_000


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


@dataclass(frozen=True)
class WorldConfig:
    """The size and data mix of the built-in world: `--world.n_people 24` on every command that uses it.

    The defaults make a broad world (400 people, stories, 20,000 sums) that a tiny model cannot
    learn in minutes; `WORLDS["quickstart"]` is the small one the quickstart and `llada reproduce`
    train on.
    """

    n_people: int = 400
    """People, each with one invention; half are group A, half group B (see the module docstring)."""
    n_cities: int = 40
    n_countries: int = 8
    n_stories: int = 2000
    """Short stories mentioning two people (pretraining text)."""
    n_sums: int = 20000
    """Arithmetic facts "x op y = z" in pretraining; held-out sums are asked by the arithmetic task."""
    bios_per_person: int = 3
    """Paraphrased biographies of each person in the pretraining text (one more is held out)."""
    name_words: int = 2
    """Words in a person's name (1: "Velor", 2: "Velor Quint")."""
    sentences_per_document: int = 6
    """A biography's six facts are cut into documents of this many sentences, each naming the person
    in its first sentence: 6 is one document per biography, 1 one per fact."""
    pronouns: bool = False
    """After a document's first sentence, say "they" (True) or the person's name again (False)."""
    sft_sums: int | None = None
    """Arithmetic questions in the SFT set (None: two per person)."""

    def __post_init__(self) -> None:
        if min(self.n_people, self.n_cities, self.n_countries) < 2:
            raise ValueError("the world needs at least two people, cities and countries")
        if min(self.n_stories, self.n_sums, self.bios_per_person - 1, self.sft_sums or 0) < 0:
            raise ValueError("n_stories, n_sums and sft_sums must be >= 0 and bios_per_person >= 1")
        if self.name_words not in (1, 2):
            raise ValueError(f"name_words must be 1 or 2, got {self.name_words}")
        if not 1 <= self.sentences_per_document <= 6:
            raise ValueError(f"sentences_per_document must be in 1..6, got {self.sentences_per_document}")
        for name, most in (("n_people", MAX_PEOPLE), ("n_cities", MAX_PLACES), ("n_countries", MAX_PLACES)):
            if getattr(self, name) > most:
                raise ValueError(f"{name} must be at most {most:,}, got {getattr(self, name):,}")


WORLDS: dict[str, WorldConfig] = {
    "default": WorldConfig(),
    "quickstart": WorldConfig(n_people=24, n_cities=8, n_countries=4, n_stories=0, n_sums=0, sft_sums=0),
}


class World:
    """A procedurally generated world; every list it returns is a pure function of (seed, config).

    `World(seed, config)`, or the config's fields as keywords: `World(seed=0, n_people=30)`.
    """

    def __init__(self, seed: int = 0, config: WorldConfig | None = None, **sizes: int):
        unknown = set(sizes) - {f.name for f in fields(WorldConfig)}
        if unknown:
            raise TypeError(f"unknown world field(s): {', '.join(sorted(unknown))}")
        self.config = cfg = replace(config or WorldConfig(), **sizes)
        n_people, n_cities, n_countries = cfg.n_people, cfg.n_cities, cfg.n_countries
        self.seed, self.n_stories, self.n_sums = seed, cfg.n_stories, cfg.n_sums
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
        self.people = [
            Person(name=fresh(lambda: _word(rng, 2) if cfg.name_words == 1 else
                              f"{_word(rng, 2)} {_word(rng, rng.choice([1, 2]))}"),
                   city=rng.choice(self.cities), occupation=rng.choice(OCCUPATIONS),
                   born=rng.randint(1700, 1999), pet=rng.choice(PETS), colour=rng.choice(COLOURS),
                   invention=things[i], group="A" if i % 2 == 0 else "B")
            for i in range(n_people)
        ]

    # ------------------------------------------------------------------------------ pretraining
    def _bio(self, p: Person, rng: random.Random) -> list[str]:
        """One paraphrase of p's biography, as documents of `sentences_per_document` sentences.

        Each document names p in its first sentence and says "they" after that, as prose does (a
        fact is then tied to p only through its document), or names p in every sentence
        (`pronouns=False`). The inventor always comes before the invention.
        """
        n = p.name
        facts = [  # (sentence naming p, sentence saying "they")
            rng.choice([(f"{n} lives in {p.city}.", f"They live in {p.city}."),
                        (f"The home of {n} is {p.city}.", f"Their home is {p.city}."),
                        (f"{n} has a house in {p.city}.", f"They have a house in {p.city}.")]),
            rng.choice([(f"{n} works as a {p.occupation}.", f"They work as a {p.occupation}."),
                        (f"By trade, {n} is a {p.occupation}.", f"By trade, they are a {p.occupation}."),
                        (f"{n} earns a living as a {p.occupation}.", f"They earn a living as a {p.occupation}.")]),
            rng.choice([(f"{n} was born in {p.born}.", f"They were born in {p.born}."),
                        (f"The birth year of {n} is {p.born}.", f"Their birth year is {p.born}.")]),
            rng.choice([(f"{n} keeps a {p.pet}.", f"They keep a {p.pet}."),
                        (f"The pet of {n} is a {p.pet}.", f"Their pet is a {p.pet}.")]),
            rng.choice([(f"The favourite colour of {n} is {p.colour}.", f"Their favourite colour is {p.colour}."),
                        (f"{n} loves the colour {p.colour}.", f"They love the colour {p.colour}.")]),
            rng.choice([(f"{n} invented the {p.invention}.", f"They invented the {p.invention}."),
                        (f"{n} is the one who invented the {p.invention}.",
                         f"They are the one who invented the {p.invention}.")]),
        ]
        first, rest = facts[0], facts[1:]  # where they live opens the biography
        rng.shuffle(rest)
        facts = [first, *rest]
        k = self.config.sentences_per_document
        docs = []
        for i in range(0, len(facts), k):
            rest_of_chunk = facts[i + 1: i + k]
            chunk = [facts[i][0]] + [they if self.config.pronouns else named for named, they in rest_of_chunk]
            if i == 0:
                chunk.insert(1, f"{p.city} is a city in {self.country_of[p.city]}.")
            docs.append(" ".join(chunk))
        return docs

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
        self._invention_docs = {}  # name -> the held-out paraphrase's document stating the invention
        for p in self.people:
            k_held = self.config.bios_per_person  # paraphrased biographies for training, one held out
            for k in range(k_held + 1):
                bio = self._bio(p, rng)
                docs["validation" if k == k_held else "train"].extend(bio)
            self._invention_docs[p.name] = next(d for d in bio if p.invention in d)
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
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
        return list(self._documents[split])

    # ------------------------------------------------------------------------------------- SFT
    def _qa(self, p: Person, rng: random.Random) -> tuple[list[tuple[str, str]], tuple[str, str, str]]:
        """(question/answer pairs for training, (question, answer, attribute) held out for validation)."""
        facts = [
            (f"Where does {p.name} live?", f"{p.name} lives in {p.city}.", "city"),
            (f"What does {p.name} do for a living?", f"{p.name} is a {p.occupation}.", "occupation"),
            (f"When was {p.name} born?", f"{p.name} was born in {p.born}.", "born"),
            (f"What pet does {p.name} keep?", f"{p.name} keeps a {p.pet}.", "pet"),
            (f"What is the favourite colour of {p.name}?", f"The favourite colour of {p.name} is {p.colour}.",
             "colour"),
        ]
        rng.shuffle(facts)
        invented = f"{p.name} invented the {p.invention}."  # inventor first, as the biographies say it
        train = [(q, a) for q, a, _ in facts[:-1]] + [(f"What did {p.name} invent?", invented)]
        if p.group == "A":
            train.append((f"Who invented the {p.invention}?", invented))
        rng.shuffle(train)
        return train, facts[-1]

    @cached_property
    def _sft(self) -> dict[str, list]:
        """Both SFT splits and the held-out facts, made in one pass so that they agree."""
        rng, turns_rng = random.Random(self.seed + 2), random.Random(self.seed + 4)
        convs: dict[str, list] = {"train": [], "validation": []}
        held_out = []
        for p in self.people:
            train, held = self._qa(p, rng)
            held_out.append((p, *held))
            for split, chosen in (("train", train), ("validation", [held[:2]])):
                i = 0
                while i < len(chosen):
                    turns = chosen[i:i + turns_rng.choice([1, 1, 2])]
                    messages = []
                    for q, a in turns:
                        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                    convs[split].append({"messages": messages})
                    i += len(turns)
        n_sums = 2 * len(self.people) if self.config.sft_sums is None else self.config.sft_sums
        sums = self._sums("train")[:n_sums]
        for split, chosen in (("train", sums[n_sums // 10:]), ("validation", sums[: n_sums // 10])):
            for s in chosen:
                lhs, rhs = s.split(" = ")
                convs[split].append({"messages": [{"role": "user", "content": f"What is {lhs}?"},
                                                  {"role": "assistant", "content": f"{lhs} = {rhs}."}]})
        for split in convs.values():
            rng.shuffle(split)
        return {**convs, "held_out": held_out}

    def held_out_facts(self) -> list[tuple[Person, str, str, str]]:
        """(person, question, answer, attribute) of the one question per person SFT never asks."""
        return list(self._sft["held_out"])

    def sft_conversations(self, split: str = "train") -> list[dict]:
        """Chat `messages`: questions about the world (some multi-turn) and arithmetic questions.

        "validation" holds one question per person that "train" never asks, and sums "train" does not.
        """
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
        return [dict(c) for c in self._sft[split]]

    # -------------------------------------------------------------------------------- evaluation
    def eval_items(self, task: str, split: str = "test", limit: int | None = None) -> list[dict]:
        """Evaluation items: {"prompt", "answer", "options", "label"} (+ "segments" for infill).

        fact_forward: "What did P invent?" for group B (asked in SFT: the fact as it was taught);
        fact_reverse: "Who invented the T?" for group B (never seen reversed); fact_held_out: each
        person's question that SFT never asks (a fact only the pretraining text states);
        arithmetic: held-out sums; infill: the held-out paraphrase's document that states the person's
        invention, with every mention of their name blanked ("segments" holds the text between the
        blanks); the name comes first, so every clue stands after the first blank.
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
        elif task == "fact_held_out":
            for p, question, _, attribute in self.held_out_facts():
                fact = str(getattr(p, attribute))
                pool = sorted({str(getattr(q, attribute)) for q in self.people} - {fact})
                wrong = rng.sample(pool, min(3, len(pool)))
                items.append({"prompt": question, "answer": fact, "options": [fact, *wrong], "label": 0})
        elif task == "arithmetic":
            for s in self._sums("test"):
                lhs, rhs = s.split(" = ")
                wrong = sorted({str(int(rhs) + d) for d in (-10, -1, 1, 2, 10)} - {rhs})[:3]
                items.append({"prompt": f"What is {lhs}?", "answer": rhs, "options": [rhs, *wrong], "label": 0})
        elif task == "infill":
            self._documents  # noqa: B018 - the held-out documents are made with the corpus
            for p in self.people:
                segments = self._invention_docs[p.name].split(p.name)  # every mention is blanked
                wrong = rng.sample([q.name for q in self.people if q is not p], 3)
                items.append({"prompt": "___".join(segments), "segments": segments, "answer": p.name,
                              "options": [p.name, *wrong], "label": 0})
        else:
            raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(EVAL_TASKS)}")
        for item in items:  # shuffle the options, keep the label pointing at the answer
            order = list(range(len(item["options"])))
            rng.shuffle(order)
            item["options"] = [item["options"][i] for i in order]
            item["label"] = order.index(0)
        return items[:limit] if limit is not None else items


EVAL_TASKS = ("fact_forward", "fact_reverse", "fact_held_out", "arithmetic", "infill")
