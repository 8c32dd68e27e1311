"""The demo corpus: English sentences and their Korean translations from a small grammar.

Deterministic for a seed. Korean is SOV, so cross-attention has real reordering to show, and every
particle is chosen by the final consonant (batchim) of the word before it: 은/는, 이/가, 을/를,
과/와, 으로/로 (로 after ㄹ as well). The plain written style (해라체) is used: 먹는다, 학생이다.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ANCHOR = ("I am a student.", "나는 학생이다.")  # always in the training split


def final_consonant(word: str) -> int:
    """Index of the final consonant (jongseong) of the last Hangul syllable; 0 = none, 8 = ㄹ."""
    code = ord(word[-1]) - 0xAC00
    if not 0 <= code < 11172:
        raise ValueError(f"not a Hangul syllable: {word[-1]!r}")
    return code % 28


def particle(word: str, after_consonant: str, after_vowel: str) -> str:
    return word + (after_consonant if final_consonant(word) else after_vowel)


def topic(w: str) -> str:  # 은/는
    return particle(w, "은", "는")


def subject(w: str) -> str:  # 이/가
    return particle(w, "이", "가")


def obj(w: str) -> str:  # 을/를
    return particle(w, "을", "를")


def comitative(w: str) -> str:  # 과/와
    return particle(w, "과", "와")


def direction(w: str) -> str:  # 으로/로, but 로 after ㄹ
    return w + ("으로" if final_consonant(w) not in (0, 8) else "로")


def copula(w: str) -> str:  # 이다 after a consonant, 다 after a vowel
    return particle(w, "이다", "다")


@dataclass(frozen=True)
class Subject:
    en: str
    ko: str
    third_singular: bool
    be: str  # am / is / are
    plural: bool = False


SUBJECTS = [
    Subject("I", "나", False, "am"), Subject("you", "너", False, "are"),
    Subject("he", "그", True, "is"), Subject("she", "그녀", True, "is"),
    Subject("we", "우리", False, "are", True), Subject("they", "그들", False, "are", True),
    Subject("the teacher", "선생님", True, "is"), Subject("the student", "학생", True, "is"),
    Subject("my friend", "내 친구", True, "is"), Subject("the doctor", "의사", True, "is"),
    Subject("the child", "아이", True, "is"), Subject("my mother", "어머니", True, "is"),
    Subject("my father", "아버지", True, "is"),
]

# (singular with article, plural, Korean)
PROFESSIONS = [
    ("a student", "students", "학생"), ("a teacher", "teachers", "선생님"), ("a doctor", "doctors", "의사"),
    ("a singer", "singers", "가수"), ("a cook", "cooks", "요리사"), ("a farmer", "farmers", "농부"),
    ("a nurse", "nurses", "간호사"), ("an artist", "artists", "화가"), ("a writer", "writers", "작가"),
    ("a police officer", "police officers", "경찰관"), ("an engineer", "engineers", "기술자"),
    ("a soldier", "soldiers", "군인"),
]

OBJECTS = {
    "food": [("an apple", "사과"), ("bread", "빵"), ("rice", "밥"), ("an orange", "오렌지"),
             ("fish", "생선"), ("a cake", "케이크"), ("kimchi", "김치")],
    "drink": [("water", "물"), ("coffee", "커피"), ("milk", "우유"), ("tea", "차"), ("juice", "주스")],
    "text": [("a book", "책"), ("a newspaper", "신문"), ("a letter", "편지"), ("a poem", "시")],
    "show": [("a movie", "영화"), ("television", "텔레비전"), ("a play", "연극")],
    "subject": [("English", "영어"), ("Korean", "한국어"), ("music", "음악"), ("math", "수학"),
                ("history", "역사")],
    "thing": [("a key", "열쇠"), ("a bag", "가방"), ("flowers", "꽃"), ("shoes", "신발"),
              ("a phone", "전화기"), ("an umbrella", "우산")],
    "cooked": [("bread", "빵"), ("rice", "밥"), ("a cake", "케이크"), ("kimchi", "김치"),
               ("coffee", "커피"), ("tea", "차")],
    "dish": [("the dishes", "그릇"), ("the car", "자동차"), ("the clothes", "옷")],
}

# (base, third singular, past, Korean present, Korean past, object kinds)
VERBS = [
    ("eat", "eats", "ate", "먹는다", "먹었다", ["food"]),
    ("drink", "drinks", "drank", "마신다", "마셨다", ["drink"]),
    ("read", "reads", "read", "읽는다", "읽었다", ["text"]),
    ("write", "writes", "wrote", "쓴다", "썼다", ["text"]),
    ("watch", "watches", "watched", "본다", "봤다", ["show"]),
    ("like", "likes", "liked", "좋아한다", "좋아했다", ["food", "drink", "subject", "thing"]),
    ("buy", "buys", "bought", "산다", "샀다", ["food", "drink", "text", "thing"]),
    ("learn", "learns", "learned", "배운다", "배웠다", ["subject"]),
    ("teach", "teaches", "taught", "가르친다", "가르쳤다", ["subject"]),
    ("wash", "washes", "washed", "씻는다", "씻었다", ["dish"]),
    ("find", "finds", "found", "찾는다", "찾았다", ["thing"]),
    ("make", "makes", "made", "만든다", "만들었다", ["cooked"]),
]

# (English "at" phrase, English "to" phrase, Korean)
PLACES = [
    ("at school", "to school", "학교"), ("at home", "home", "집"),
    ("at the library", "to the library", "도서관"), ("in the park", "to the park", "공원"),
    ("at the restaurant", "to the restaurant", "식당"), ("at the market", "to the market", "시장"),
    ("at the cafe", "to the cafe", "카페"), ("at the hospital", "to the hospital", "병원"),
    ("in Seoul", "to Seoul", "서울"), ("in the kitchen", "to the kitchen", "부엌"),
]

COMPANIONS = [("my friend", "내 친구"), ("the teacher", "선생님"), ("my mother", "어머니"),
              ("my brother", "동생"), ("the children", "아이들")]

TIMES = {"present": [("every day", "매일"), ("today", "오늘"), ("often", "자주")],
         "past": [("yesterday", "어제"), ("today", "오늘"), ("last week", "지난주")]}


def capitalize(s: str) -> str:
    return s[0].upper() + s[1:]


def copula_sentence(rng: random.Random) -> tuple[str, str]:
    """X is (was / is not / was not) a Y: 이다/다, 이었다/였다, 이/가 아니다, 이/가 아니었다."""
    s = rng.choice(SUBJECTS)
    singular, plural, ko = rng.choice(PROFESSIONS)
    noun = plural if s.plural else singular
    tense, negated = rng.choice(["present", "past"]), rng.random() < 0.35
    be = s.be if tense == "present" else ("was" if s.be in ("am", "is") else "were")
    en = f"{s.en} {be}{' not' if negated else ''} {noun}"
    if negated:
        predicate = f"{subject(ko)} {'아니다' if tense == 'present' else '아니었다'}"
    else:
        predicate = copula(ko) if tense == "present" else particle(ko, "이었다", "였다")
    return capitalize(en) + ".", f"{topic(s.ko)} {predicate}."


def action_sentence(rng: random.Random) -> tuple[str, str]:
    s = rng.choice(SUBJECTS)
    base, third, past, ko_present, ko_past, kinds = rng.choice(VERBS)
    obj_en, obj_ko = rng.choice(OBJECTS[rng.choice(kinds)])
    tense = rng.choice(["present", "past"])
    verb_en = past if tense == "past" else (third if s.third_singular else base)
    en = [s.en, verb_en, obj_en]
    ko = [topic(s.ko)]
    time = rng.choice(TIMES[tense]) if rng.random() < 0.3 else None
    if time:
        ko.append(time[1])
    if rng.random() < 0.25:
        comp_en, comp_ko = rng.choice(COMPANIONS)
        en.append(f"with {comp_en}")
        ko.append(f"{comitative(comp_ko)} 함께")
    if rng.random() < 0.45:
        at_en, _, place_ko = rng.choice(PLACES)
        en.append(at_en)
        ko.append(f"{place_ko}에서")
    if time:
        en.append(time[0])
    ko += [obj(obj_ko), ko_past if tense == "past" else ko_present]
    return capitalize(" ".join(en)) + ".", " ".join(ko) + "."


def motion_sentence(rng: random.Random) -> tuple[str, str]:
    s = rng.choice(SUBJECTS)
    _, to_en, place_ko = rng.choice(PLACES)
    tense = rng.choice(["present", "past"])
    verb_en = "went" if tense == "past" else ("goes" if s.third_singular else "go")
    en = [s.en, verb_en, to_en]
    ko = [topic(s.ko)]
    if rng.random() < 0.3:
        t_en, t_ko = rng.choice(TIMES[tense])
        en.append(t_en)
        ko.append(t_ko)
    ko += [direction(place_ko), "갔다" if tense == "past" else "간다"]
    return capitalize(" ".join(en)) + ".", " ".join(ko) + "."


def existence_sentence(rng: random.Random) -> tuple[str, str]:
    thing_en, thing_ko = rng.choice(OBJECTS["thing"] + [("a cat", "고양이"), ("a dog", "개"),
                                                       ("a book", "책"), ("a teacher", "선생님")])
    at_en, _, place_ko = rng.choice(PLACES)
    verb = "are" if thing_en in ("flowers", "shoes") else "is"
    return f"There {verb} {thing_en} {at_en}.", f"{place_ko}에 {subject(thing_ko)} 있다."


GENERATORS = [(copula_sentence, 0.25), (action_sentence, 0.5), (motion_sentence, 0.15),
              (existence_sentence, 0.1)]


def demo_pairs(size: int = 12000, seed: int = 0) -> list[tuple[str, str]]:
    """`size` distinct (English, Korean) pairs, the same list for the same seed; ANCHOR first."""
    rng = random.Random(seed)
    funcs, weights = zip(*GENERATORS)
    pairs, seen = [ANCHOR], {ANCHOR}
    attempts = 0
    while len(pairs) < size:
        attempts += 1
        if attempts > 50 * size:
            raise ValueError(f"the demo grammar cannot make {size} distinct pairs")
        pair = rng.choices(funcs, weights)[0](rng)
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def demo_splits(size: int = 12000, seed: int = 0, valid: int = 500, test: int = 500
                ) -> dict[str, list[tuple[str, str]]]:
    """train / validation / test, disjoint; the anchor pair is in train."""
    pairs = demo_pairs(size, seed)
    head, rest = pairs[:1], pairs[1:]
    random.Random(seed + 1).shuffle(rest)
    return {"validation": rest[:valid], "test": rest[valid : valid + test],
            "train": head + rest[valid + test :]}
