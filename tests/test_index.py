"""assistant.documents.index on real FAISS: flat, HNSW and IVF; restricted search; atomic save and
reload; torn files and indexes built differently are discarded; check() against the
database's ids. Small random unit vectors (dim 8): the embedding model is not the point."""

from __future__ import annotations

import os

import faiss
import numpy as np
import pytest

from assistant.documents.index import INDEX_FILE, META_FILE, SyncReport, VectorIndex

DIM = 8
KINDS = ["flat", "hnsw", "ivf"]


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def corpus(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ids that are not 0..n-1 (they are database chunk ids), and their vectors."""
    return np.arange(1000, 1000 + 3 * n, 3, dtype=np.int64), unit_vectors(n, seed)


def brute_force(ids: np.ndarray, vecs: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    order = np.argsort(-(vecs @ q), kind="stable")[:k]
    return [int(ids[i]) for i in order]


def filled(directory, kind: str, n: int = 200, model: str = "m") -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    ids, vecs = corpus(n)
    index = VectorIndex(directory, DIM, kind, model)
    if kind == "ivf":
        index.rebuild([(ids, vecs)])  # trained on the vectors, several lists
        assert faiss.extract_index_ivf(index._index).nlist > 1
    else:
        index.add(ids, vecs)
    return index, ids, vecs


def batches(ids: np.ndarray, vecs: np.ndarray, keep: set[int]):
    mask = np.isin(ids, list(keep))
    return [(ids[mask], vecs[mask])]


# -- add / search / remove -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_add_search_remove(tmp_path, kind):
    index = VectorIndex(tmp_path, DIM, kind, "m")
    assert len(index) == 0 and index.ids() == set()
    assert index.search(unit_vectors(1)[0], 5) == []

    ids, vecs = corpus()
    index.add(ids, vecs)
    assert len(index) == len(ids)
    assert index.ids() == set(ids.tolist())
    for i in (0, 17, 199):
        (best, score), *rest = index.search(vecs[i], 5)
        assert best == ids[i]
        assert score == pytest.approx(1.0, abs=1e-5)
        assert len(rest) == 4 and all(s <= score for _, s in rest)
    q = unit_vectors(1, seed=9)[0]
    assert [i for i, _ in index.search(q, 5)] == brute_force(ids, vecs, q, 5)

    removed = set(ids[::4].tolist())
    keep = set(ids.tolist()) - removed
    index.remove(sorted(removed), rebuild_from=batches(ids, vecs, keep))
    assert index.ids() == keep
    assert len(index) == len(keep)
    for i in np.flatnonzero(np.isin(ids, list(removed)))[:5]:
        found = [cid for cid, _ in index.search(vecs[i], len(ids))]
        assert not removed & set(found)
    # Every entry that stayed is still found under its own id.
    for i in np.flatnonzero(~np.isin(ids, list(removed))):
        (best, score), *_ = index.search(vecs[i], 1)
        assert (best, round(score, 4)) == (ids[i], 1.0)
    kept = np.isin(ids, list(keep))
    assert [i for i, _ in index.search(q, 5)] == brute_force(ids[kept], vecs[kept], q, 5)
    # Adding after a removal keeps every label right too.
    extra = unit_vectors(3, seed=21)
    index.add([1, 2, 3], extra)
    for cid, v in zip([1, 2, 3], extra):
        assert index.search(v, 1)[0][0] == cid
    index.remove([])  # nothing to do is fine


def test_hnsw_cannot_remove_without_the_stored_vectors(tmp_path):
    index, ids, _ = filled(tmp_path, "hnsw")
    with pytest.raises(ValueError, match="HNSW"):
        index.remove([int(ids[0])])
    assert len(index) == len(ids)


def test_ivf_is_trained_on_rebuild_and_still_finds_each_vector(tmp_path):
    ids, vecs = corpus(400, seed=3)
    index = VectorIndex(tmp_path, DIM, "ivf", "m")
    assert index.rebuild([(ids[:200], vecs[:200]), (ids[200:], vecs[200:])]) == 400
    inner = faiss.extract_index_ivf(index._index)
    assert inner.nlist > 1 and inner.is_trained
    hits = sum(index.search(vecs[i], 1)[0][0] == ids[i] for i in range(0, 400, 7))
    assert hits == len(range(0, 400, 7))


def test_rebuild_replaces_everything(tmp_path):
    index, ids, vecs = filled(tmp_path, "flat")
    other_ids, other_vecs = np.array([7, 8], dtype=np.int64), unit_vectors(2, seed=5)
    assert index.rebuild([(other_ids, other_vecs)]) == 2
    assert index.ids() == {7, 8}
    assert index.rebuild([]) == 0
    assert len(index) == 0


def test_unknown_kind_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown index type"):
        VectorIndex(tmp_path, DIM, "lsh", "m")


# -- restricted search ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_search_only_returns_allowed_ids(tmp_path, kind):
    index, ids, vecs = filled(tmp_path, kind)
    allowed = [int(i) for i in ids[10:15]]
    # Query with a vector that is NOT allowed: its own id must not come back.
    q = vecs[40]
    hits = index.search(q, 10, allowed=allowed)
    assert [i for i, _ in hits] == brute_force(ids[10:15], vecs[10:15], q, 10)
    assert {i for i, _ in hits} <= set(allowed)

    assert index.search(q, 3, allowed=iter(allowed)) == hits[:3]  # any iterable
    assert index.search(q, 10, allowed=[]) == []
    assert index.search(q, 10, allowed=[999_999]) == []  # an id the index does not hold


# -- save / reload -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_save_and_reload_round_trip(tmp_path, kind):
    index, ids, vecs = filled(tmp_path, kind)
    q = unit_vectors(1, seed=11)[0]
    before = index.search(q, 8)
    index.save()

    again = VectorIndex(tmp_path, DIM, kind, "m")
    assert again.ids() == set(ids.tolist())
    assert [i for i, _ in again.search(q, 8)] == [i for i, _ in before]
    assert [s for _, s in again.search(q, 8)] == pytest.approx([s for _, s in before])
    allowed = [int(i) for i in ids[:6]]
    assert again.search(q, 3, allowed=allowed) == index.search(q, 3, allowed=allowed)

    # The reloaded index keeps working: add and remove, save, reload.
    again.add([5], unit_vectors(1, seed=12))
    again.remove([int(ids[0])], rebuild_from=[(np.append(ids[1:], 5), np.vstack([vecs[1:], unit_vectors(1, seed=12)]))])
    again.save()
    third = VectorIndex(tmp_path, DIM, kind, "m")
    assert third.ids() == (set(ids.tolist()) - {int(ids[0])}) | {5}
    for i in (1, 50, len(ids) - 1):
        assert third.search(vecs[i], 1)[0][0] == ids[i]
    assert third.search(unit_vectors(1, seed=12)[0], 1)[0][0] == 5


def test_an_ivf_index_in_an_id_map_from_an_earlier_version_is_discarded(tmp_path):
    index, ids, vecs = filled(tmp_path, "ivf")
    index.save()
    old = faiss.IndexIDMap2(faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 1, faiss.METRIC_INNER_PRODUCT))
    old.train(vecs)
    old.add_with_ids(vecs, ids)
    faiss.write_index(old, str(tmp_path / INDEX_FILE))

    reopened = VectorIndex(tmp_path, DIM, "ivf", "m")
    assert len(reopened) == 0
    assert reopened.check(set(ids.tolist()), {"m"}).missing == len(ids)


def test_save_leaves_only_the_two_files(tmp_path):
    index, _, _ = filled(tmp_path / "idx", "flat")
    for _ in range(3):
        index.save()
    assert sorted(os.listdir(tmp_path / "idx")) == sorted([INDEX_FILE, META_FILE])


def test_a_failed_save_keeps_the_previous_files_and_no_temp_files(tmp_path, monkeypatch):
    index, ids, _ = filled(tmp_path, "flat")
    index.save()
    saved = {name: (tmp_path / name).read_bytes() for name in (INDEX_FILE, META_FILE)}

    index.add([1, 2], unit_vectors(2, seed=4))
    real_write = faiss.write_index

    def write_half_then_die(idx, path):
        real_write(idx, path)
        with open(path, "r+b") as f:  # a torn write, then the crash
            f.truncate(os.path.getsize(path) // 2)
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", write_half_then_die)
    with pytest.raises(OSError, match="disk full"):
        index.save()
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == sorted(saved)
    assert {name: (tmp_path / name).read_bytes() for name in saved} == saved
    assert VectorIndex(tmp_path, DIM, "flat", "m").ids() == set(ids.tolist())


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "no-meta", "bad-meta"])
def test_a_torn_or_garbage_index_file_is_ignored_and_reported_missing(tmp_path, damage):
    index, ids, _ = filled(tmp_path, "flat")
    index.save()
    path = tmp_path / INDEX_FILE
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "no-meta":
        (tmp_path / META_FILE).unlink()
    else:
        (tmp_path / META_FILE).write_text("{not json")

    reopened = VectorIndex(tmp_path, DIM, "flat", "m")
    assert len(reopened) == 0
    report = reopened.check(set(ids.tolist()), {"m"})
    assert report == SyncReport(in_db=len(ids), in_index=0, missing=len(ids), stale=0, model_mismatch=False)
    assert not report.ok
    # It can be rebuilt and saved over the damage.
    reopened.rebuild([corpus()])
    reopened.save()
    assert VectorIndex(tmp_path, DIM, "flat", "m").check(set(ids.tolist()), {"m"}).ok


@pytest.mark.parametrize(
    ("kind", "dim", "model"),
    [("flat", DIM, "other-model"), ("hnsw", DIM, "m"), ("ivf", DIM, "m"), ("flat", 16, "m")],
    ids=["other-model", "other-kind-hnsw", "other-kind-ivf", "other-dim"],
)
def test_an_index_built_differently_is_discarded(tmp_path, kind, dim, model):
    index, ids, _ = filled(tmp_path, "flat", model="m")
    index.save()
    reopened = VectorIndex(tmp_path, dim, kind, model)
    assert len(reopened) == 0
    assert reopened.check(set(ids.tolist()), {"m"}).missing == len(ids)
    # The same description loads it again.
    assert VectorIndex(tmp_path, DIM, "flat", "m").ids() == set(ids.tolist())


# -- check ---------------------------------------------------------------------------------------
def test_check_reports_missing_stale_and_model_mismatch(tmp_path):
    index = VectorIndex(tmp_path, DIM, "flat", "model-a")
    index.add([1, 2, 3, 4], unit_vectors(4))

    same = index.check({1, 2, 3, 4}, {"model-a"})
    assert same == SyncReport(4, 4, 0, 0, False) and same.ok

    behind = index.check({1, 2, 3, 4, 5, 6}, {"model-a"})
    assert (behind.missing, behind.stale, behind.ok) == (2, 0, False)

    ahead = index.check({1, 2}, {"model-a"})
    assert (ahead.missing, ahead.stale, ahead.ok) == (0, 2, False)

    both = index.check({3, 4, 5, 6, 7}, {"model-a"})
    assert both == SyncReport(in_db=5, in_index=4, missing=3, stale=2, model_mismatch=False)

    other = index.check({1, 2, 3, 4}, {"model-b"})
    assert other.model_mismatch and not other.ok and other.missing == other.stale == 0
    assert index.check({1, 2, 3, 4}, {"model-a", "model-b"}).model_mismatch

    empty = VectorIndex(tmp_path / "empty", DIM, "flat", "model-a")
    assert empty.check(set(), set()).ok  # a new library: nothing stored, nothing indexed
    assert empty.check({1}, {"model-a"}).missing == 1
