from __future__ import annotations

import numpy as np
import pytest

from services.retrieval.vector_index import HNSW, IndexSettings, VectorIndex, hybrid_search
from shared.items import ItemFilter

DIM = 32


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def filled_index(
    count: int, settings: IndexSettings | None = None
) -> tuple[VectorIndex, np.ndarray]:
    vectors = unit_vectors(count)
    index = VectorIndex(DIM, settings or IndexSettings())
    ids = [f"i{n}" for n in range(count)]
    categories = [["even" if n % 2 == 0 else "odd", f"tens{n // 10}"] for n in range(count)]
    index.upsert(ids, vectors, categories)
    return index, vectors


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, allowed: list[int]) -> list[str]:
    scores = vectors[allowed] @ query
    return [f"i{allowed[i]}" for i in np.argsort(-scores)[:k]]


def test_search_matches_exact_inner_product_ranking_when_index_is_flat() -> None:
    index, vectors = filled_index(500)
    hits = index.search(vectors[7], 10, ItemFilter())
    assert [h.item_id for h in hits] == exact_top(vectors, vectors[7], 10, list(range(500)))
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_search_never_returns_deleted_items() -> None:
    index, vectors = filled_index(200)
    assert index.delete(["i7", "i8", "missing"]) == 2
    found = {h.item_id for h in index.search(vectors[7], 200, ItemFilter())}
    assert "i7" not in found and "i8" not in found
    assert len(found) == 198


def test_upsert_replaces_vector_and_categories_of_an_existing_item() -> None:
    index, vectors = filled_index(100)
    index.upsert(["i1"], vectors[50:51] * -1, [["new"]])
    hits = index.search(-vectors[50], 1, ItemFilter(include_categories=frozenset({"new"})))
    assert [h.item_id for h in hits] == ["i1"]
    assert len(index) == 100


def test_filters_include_and_exclude_categories_and_ids() -> None:
    index, vectors = filled_index(300)
    flt = ItemFilter(
        include_categories=frozenset({"even"}),
        exclude_categories=frozenset({"tens0"}),
        exclude_item_ids=frozenset({"i20"}),
    )
    hits = index.search(vectors[3], 300, flt)
    allowed = [n for n in range(300) if n % 2 == 0 and n >= 10 and n != 20]
    assert [h.item_id for h in hits] == exact_top(vectors, vectors[3], 300, allowed)


def test_index_turns_approximate_and_keeps_recall_when_it_grows_past_threshold() -> None:
    index, vectors = filled_index(2_000, IndexSettings(hnsw_threshold=1_000))
    assert index.needs_rebuild()
    index = index.rebuilt()
    assert index.kind == HNSW
    recall = []
    for q in range(0, 2_000, 100):
        truth = set(exact_top(vectors, vectors[q], 10, list(range(2_000))))
        recall.append(len(truth & {h.item_id for h in index.search(vectors[q], 10, ItemFilter())}))
    assert np.mean(recall) / 10 >= 0.95


def test_selective_filter_on_hnsw_still_returns_exact_results() -> None:
    settings = IndexSettings(hnsw_threshold=1_000, brute_force_limit=50)
    index, vectors = filled_index(2_000, settings)
    index = index.rebuilt()
    flt = ItemFilter(include_categories=frozenset({"tens7"}))
    hits = index.search(vectors[0], 5, flt)
    assert [h.item_id for h in hits] == exact_top(vectors, vectors[0], 5, list(range(70, 80)))


def test_rebuilt_index_drops_dead_rows_and_keeps_live_ones() -> None:
    index, vectors = filled_index(100)
    index.delete([f"i{n}" for n in range(50)])
    fresh = index.rebuilt()
    assert fresh.dead_rows == 0 and len(fresh) == 50
    assert fresh.search(vectors[60], 1, ItemFilter())[0].item_id == "i60"


def test_snapshot_restores_the_same_results() -> None:
    index, vectors = filled_index(100)
    index.delete(["i3"])
    structure, meta = index.snapshot()
    restored = VectorIndex.restore(structure, meta, IndexSettings())
    assert restored.search(vectors[5], 10, ItemFilter()) == index.search(
        vectors[5], 10, ItemFilter()
    )
    assert "i3" not in restored


def test_search_leaves_out_excluded_ids_and_still_returns_k() -> None:
    index, vectors = filled_index(100)
    hits = index.search(vectors[4], 5, ItemFilter(), exclude=["i4"])
    allowed = [n for n in range(100) if n != 4]
    assert [h.item_id for h in hits] == exact_top(vectors, vectors[4], 5, allowed)


def test_boost_lifts_a_far_item_into_the_results_and_respects_filters() -> None:
    index, vectors = filled_index(300)
    far = exact_top(vectors, vectors[0], 300, list(range(300)))[-1]
    hits = index.search_boosted(vectors[0], 3, ItemFilter(), ["i0"], {far: 5.0}, pool=10)
    assert hits[0].item_id == far and "i0" not in [h.item_id for h in hits]
    odd_only = ItemFilter(include_categories=frozenset({"odd"}))
    even_far = next(
        i for i in reversed(exact_top(vectors, vectors[0], 300, list(range(0, 300, 2))))
    )
    hits = index.search_boosted(vectors[0], 3, odd_only, [], {even_far: 5.0}, pool=10)
    assert even_far not in [h.item_id for h in hits]


def test_hybrid_search_ranks_by_both_similarities_over_both_neighbourhoods() -> None:
    model, model_vectors = filled_index(300)
    content = VectorIndex(DIM, IndexSettings())
    content_vectors = unit_vectors(300, seed=7)
    content.upsert([f"i{n}" for n in range(299)], content_vectors[:299], [[]] * 299)
    query, taste = model_vectors[0], content_vectors[5]
    hits = hybrid_search(model, query, content, taste, 2.0, 5, ItemFilter(), ["i0"], {}, pool=10)
    both = model_vectors @ query + 2.0 * np.append(content_vectors[:299] @ taste, 0.0)
    both[0] = -np.inf
    assert [h.item_id for h in hits] == [f"i{n}" for n in np.argsort(-both)[:5]]
    assert hits[0].item_id == "i5"  # far in the model's space, first by content
    odd_only = ItemFilter(include_categories=frozenset({"odd"}))
    hits = hybrid_search(model, query, content, taste, 2.0, 5, odd_only, [], {}, pool=10)
    assert all(int(h.item_id[1:]) % 2 == 1 for h in hits)


def test_hybrid_scores_rank_every_live_row_exactly_by_both_similarities_and_boosts() -> None:
    model, model_vectors = filled_index(300)
    model.delete(["i4"])
    content = VectorIndex(DIM, IndexSettings())
    content_vectors = unit_vectors(300, seed=7)
    content.upsert([f"i{n}" for n in range(299)], content_vectors[:299], [[]] * 299)
    content_vectors[9] = unit_vectors(1, seed=8)[0]  # replaced: its old row is dead
    content.upsert(["i9"], content_vectors[9:10], [[]])
    query, taste = model_vectors[0], content_vectors[5]
    odd_only = ItemFilter(include_categories=frozenset({"odd"}))
    scores = model.hybrid_scores(query, content, taste, 2.0, odd_only, ["i1"], {"i299": 3.0})
    assert scores is not None
    expected = model_vectors @ query + 2.0 * np.append(content_vectors[:299] @ taste, 0.0)
    expected[299] += 3.0  # boosted, and missing from the content index
    allowed = [n for n in range(1, 300, 2) if n != 1]
    best = sorted(allowed, key=lambda n: -expected[n])
    hits = scores.top(6)
    assert [h.item_id for h in hits] == [f"i{n}" for n in best[:6]]
    assert [h.score for h in hits] == pytest.approx([expected[n] for n in best[:6]], abs=1e-5)
    in_tens_two = [n for n in best if 20 <= n < 30]
    skipped = f"i{in_tens_two[0]}"
    assert [h.item_id for h in scores.top(2, ["tens2"], [skipped])] == [
        f"i{n}" for n in in_tens_two[1:3]
    ]
    unfiltered = model.hybrid_scores(query, content, taste, 2.0, ItemFilter(), [], {})
    assert unfiltered is not None
    assert "i4" not in {h.item_id for h in unfiltered.top(300)}  # deleted


def test_hybrid_scores_follow_a_write_to_the_other_index() -> None:
    model, model_vectors = filled_index(50)
    content = VectorIndex(DIM, IndexSettings())
    content_vectors = unit_vectors(50, seed=3)
    content.upsert([f"i{n}" for n in range(50)], content_vectors, [[]] * 50)
    taste = content_vectors[0]
    before = model.hybrid_scores(model_vectors[0] * 0, content, taste, 1.0, ItemFilter(), [], {})
    assert before is not None and before.top(1)[0].item_id == "i0"
    content.delete(["i0"])
    content.upsert(["i17"], taste[None, :], [[]])
    after = model.hybrid_scores(model_vectors[0] * 0, content, taste, 1.0, ItemFilter(), [], {})
    assert after is not None and after.top(1)[0].item_id == "i17"


def test_hybrid_scores_leave_hnsw_indexes_to_the_candidate_search() -> None:
    model, model_vectors = filled_index(100, IndexSettings(hnsw_threshold=10))
    model = model.rebuilt()
    content, _ = filled_index(100)
    assert model.kind == HNSW
    taste = model_vectors[1]
    assert model.hybrid_scores(model_vectors[0], content, taste, 1.0, ItemFilter(), [], {}) is None


def test_a_repeated_exact_query_scores_the_same_and_follows_every_write() -> None:
    index, vectors = filled_index(40)
    query = vectors[3]
    first = index.search_boosted(query, 3, ItemFilter(), [], {"i7": 5.0}, 0)
    again = index.search_boosted(query, 3, ItemFilter(), [], {"i7": 5.0}, 0)
    assert first == again and first[0].item_id == "i7"  # the boost is not kept in the scores
    assert index.search_boosted(query, 1, ItemFilter(), [], {}, 0)[0].item_id == "i3"
    index.upsert(["i3"], -query[None, :], [["odd"]])  # the same query, another answer
    assert index.search_boosted(query, 1, ItemFilter(), [], {}, 0)[0].item_id != "i3"
    index.delete(["i7"])
    assert "i7" not in {h.item_id for h in index.search_boosted(query, 40, ItemFilter(), [], {}, 0)}


def test_no_similarities_are_kept_when_the_cache_has_no_room() -> None:
    index, vectors = filled_index(40, IndexSettings(similarity_cache_bytes=0))
    hits = index.search_boosted(vectors[5], 2, ItemFilter(), [], {}, 0)
    assert hits[0].item_id == "i5" and not index._similarity_cache
