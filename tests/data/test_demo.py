from data.demo import ANCHOR, comitative, copula, demo_pairs, demo_splits, direction, obj, subject, topic


def test_particles_follow_final_consonant():
    assert topic("나") == "나는" and topic("학생") == "학생은"
    assert subject("고양이") == "고양이가" and subject("책") == "책이"
    assert obj("사과") == "사과를" and obj("빵") == "빵을"
    assert comitative("친구") == "친구와" and comitative("선생님") == "선생님과"
    assert direction("학교") == "학교로" and direction("시장") == "시장으로" and direction("서울") == "서울로"
    assert copula("학생") == "학생이다" and copula("의사") == "의사다"


def test_deterministic_distinct_and_large():
    a, b = demo_pairs(5000, seed=3), demo_pairs(5000, seed=3)
    assert a == b and len(set(a)) == 5000
    assert demo_pairs(5000, seed=4) != a


def test_anchor_in_train_and_splits_disjoint():
    splits = demo_splits()
    assert ANCHOR == ("I am a student.", "나는 학생이다.")
    assert ANCHOR in splits["train"]
    sets = {k: set(v) for k, v in splits.items()}
    assert not (sets["train"] & sets["validation"]) and not (sets["train"] & sets["test"])
    assert sum(len(v) for v in splits.values()) >= 5000


def test_korean_is_verb_final():
    for en, ko in demo_pairs(2000):
        assert ko.endswith("다."), (en, ko)
        assert en.endswith(".") and en[0].isupper()


def test_copula_forms_follow_final_consonant():
    import random

    from data.demo import copula_sentence

    seen = {}
    rng = random.Random(0)
    for _ in range(3000):
        en, ko = copula_sentence(rng)
        seen[en] = ko
    assert seen["I am a student."] == "나는 학생이다."
    assert seen["I was a student."] == "나는 학생이었다."
    assert seen["I was a doctor."] == "나는 의사였다."
    assert seen["I am not a student."] == "나는 학생이 아니다."
    assert seen["I am not a doctor."] == "나는 의사가 아니다."
    assert seen["We were not students."] == "우리는 학생이 아니었다."
