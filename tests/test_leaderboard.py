from assistant.leaderboard import bradley_terry, leaderboard
from assistant.storage.comparisons import Outcome


def test_stronger_version_ranks_first_with_an_interval():
    outcomes = [Outcome("v2", "base", "a")] * 30 + [Outcome("base", "v2", "a")] * 10
    outcomes += [Outcome("v2", "base", "tie")] * 4 + [Outcome("v2", "v2", "a")] * 5
    board = leaderboard(outcomes, bootstrap=100)
    assert [s.version for s in board] == ["v2", "base"]
    top, bottom = board
    assert top.games == 44 and top.wins == 32  # 30 wins + 4 half ties; self-play ignored
    assert top.low <= top.rating <= top.high and bottom.low <= bottom.rating <= bottom.high
    assert top.rating - bottom.rating > 100  # 3:1 odds is ~190 Elo
    assert abs((top.rating + bottom.rating) / 2 - 1000) < 1e-6


def test_bradley_terry_matches_the_odds():
    games = [("x", "y", 1.0)] * 75 + [("x", "y", 0.0)] * 25
    s = bradley_terry(games)
    assert abs(s["x"] / s["y"] - 3.0) < 0.2  # the weak prior pulls a little towards 1


def test_nothing_to_rank():
    assert leaderboard([]) == []
    assert leaderboard([Outcome("a", "b", "both_bad"), Outcome("a", "a", "a")]) == []


def test_one_game_shows_no_interval():
    # One game used to show "1149-1149": a bootstrap of one game is that game every time.
    (winner, loser) = leaderboard([Outcome("v1", "base", "a")], bootstrap=50)
    assert winner.games == 1 and not winner.has_interval
    assert winner.interval_text() == "needs 9 more games"
    many = leaderboard([Outcome("v1", "base", "a")] * 7 + [Outcome("base", "v1", "a")] * 5, bootstrap=50)
    assert all(s.has_interval for s in many)
    assert many[0].interval_text() == f"{round(many[0].low)}-{round(many[0].high)}"
    assert many[0].low < many[0].high
