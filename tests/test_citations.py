from assistant.chat.citations import annotate, cite, explicit_citations, supports

SOURCES = [
    "The Zorblax festival is held every year in the town of Quillhaven, on the third of May.",
    "William, Duke of Normandy, conquered England in 1066 at the battle of Hastings.",
]
QUESTION = "When is the Zorblax festival held in Quillhaven?"


def test_explicit_markers_are_read_and_bounded():
    assert explicit_citations("Yes [1]. Also [2, 3] and [1][2] and [9].", 3) == {1, 2, 3}
    assert explicit_citations("No markers here.", 3) == set()


def test_sentences_are_attributed_to_the_source_they_come_from():
    text, cited = annotate(
        "The Zorblax festival is held in Quillhaven on the third of May. "
        "The Duke of Normandy conquered England in 1066! I like turtles.",
        SOURCES,
    )
    assert cited == {1, 2}
    assert "third of May [1]." in text and "in 1066 [2]!" in text
    assert text.endswith("I like turtles.")


def test_model_markers_are_kept_marked_as_the_models_and_not_doubled():
    c = cite("William conquered England in 1066 [2]. It was a long war.", SOURCES, mark=lambda n: f"<{n}>")
    assert c.text == "William conquered England in 1066 [2]. It was a long war."
    assert c.explicit == {2} and c.attributed == set() and c.cited == {2}


def test_attributed_markers_are_told_apart_from_the_models():
    c = cite("The festival is held on the third of May [1]. William, Duke of Normandy, "
             "conquered England in 1066.", SOURCES, mark=lambda n: f"(≈{n})")
    assert c.explicit == {1} and c.attributed == {2}
    assert "third of May [1]." in c.text and "in 1066 (≈2)." in c.text


def test_an_echo_of_the_question_is_not_attributed():
    # Every word of these is in source 1, and in the question too: they state nothing.
    for echo in ("The Zorblax festival is held in Quillhaven.",
                 "You asked when the Zorblax festival is held in Quillhaven.",
                 "The Zorblax festival in Quillhaven is held every year."):
        assert cite(echo, SOURCES, QUESTION).cited == set(), echo
    # Without the question, the first one is a plain statement of source 1.
    assert cite("The Zorblax festival is held in Quillhaven.", SOURCES).cited == {1}


def test_an_invented_sentence_is_not_attributed():
    # The source's wording with a made-up fact (a date no source has) ...
    assert not supports("The Zorblax festival is held every year in the town of Quillhaven, "
                        "on the ninth of August.", SOURCES[0], QUESTION)
    # ... words of the source scattered over a sentence it does not make ...
    assert cite("Quillhaven festival May held town year Zorblax every third.", SOURCES).cited == set()
    # ... and a hallucinated answer that merely sits near a source.
    assert cite("The festival was founded by King Harold to celebrate blue pancakes.",
                SOURCES, QUESTION).cited == set()
    assert supports("The Zorblax festival is held every year in the town of Quillhaven, on the "
                    "third of May.", SOURCES[0], QUESTION)


def test_unrelated_answer_cites_nothing():
    assert annotate("Paris is the capital of France.", SOURCES) == (
        "Paris is the capital of France.", set()
    )
    assert annotate("anything", []) == ("anything", set())
