from assistant.citations import annotate, explicit_citations

SOURCES = [
    "The Zorblax festival is held every year in the town of Quillhaven, on the third of May.",
    "William, Duke of Normandy, conquered England in 1066 at the battle of Hastings.",
]


def test_explicit_markers_are_read_and_bounded():
    assert explicit_citations("Yes [1]. Also [2, 3] and [1][2] and [9].", 3) == {1, 2, 3}
    assert explicit_citations("No markers here.", 3) == set()


def test_sentences_are_attributed_to_the_source_they_come_from():
    text, cited = annotate(
        "The Zorblax festival is held in Quillhaven on the third of May. "
        "William conquered England in 1066! I like turtles.",
        SOURCES,
    )
    assert cited == {1, 2}
    assert "third of May [1]." in text and "in 1066 [2]!" in text
    assert text.endswith("I like turtles.")


def test_model_markers_are_kept_and_not_doubled():
    text, cited = annotate("William conquered England in 1066 [2].", SOURCES)
    assert text == "William conquered England in 1066 [2]."
    assert cited == {2}


def test_unrelated_answer_cites_nothing():
    assert annotate("Paris is the capital of France.", SOURCES) == (
        "Paris is the capital of France.", set()
    )
    assert annotate("anything", []) == ("anything", set())
