from __future__ import annotations

import pytest

from shared.errors import InvalidArgument
from shared.items import (
    MAX_BATCH,
    MAX_ID_BYTES,
    Item,
    ItemFilter,
    validate_ids,
    validate_items,
    validate_k,
)


def test_validate_items_keeps_last_occurrence_when_ids_repeat() -> None:
    items = [Item("a", title="first"), Item("b"), Item("a", title="second")]
    assert validate_items(items) == [Item("a", title="second"), Item("b")]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (Item(""), "items[1].item_id"),
        (Item("x" * (MAX_ID_BYTES + 1)), "items[1].item_id"),
        (Item("a\nb"), "items[1].item_id"),
        (Item("ok", title="t" * 1001), "items[1].title"),
        (Item("ok", description="d" * 10_001), "items[1].description"),
        (Item("ok", categories=("",)), "items[1].categories[0]"),
        (Item("ok", categories=tuple(str(i) for i in range(65))), "items[1].categories"),
        (Item("ok", attributes={"k": "v" * 1025}), "items[1].attributes['k']"),
    ],
)
def test_validate_items_names_position_and_field_when_one_item_is_bad(
    item: Item, field: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_items([Item("good"), item])
    assert error.value.field == field


def test_validate_items_rejects_empty_and_oversized_batches() -> None:
    with pytest.raises(InvalidArgument, match="items: must not be empty"):
        validate_items([])
    with pytest.raises(InvalidArgument, match="at most 1000"):
        validate_items([Item(str(i)) for i in range(MAX_BATCH + 1)])


def test_validate_ids_returns_distinct_ids_in_first_seen_order() -> None:
    assert validate_ids(["b", "a", "b"]) == ["b", "a"]


@pytest.mark.parametrize("k", [0, -1, 1001])
def test_validate_k_rejects_values_outside_documented_range(k: int) -> None:
    with pytest.raises(InvalidArgument, match="^k: "):
        validate_k(k)


def test_item_text_reads_title_description_categories_and_attributes() -> None:
    item = Item("1", "Heat (1995)", "A heist", ("Crime", "Action"), {"year": "1995"})
    assert item.text() == "Heat (1995). A heist. Categories: Crime, Action. year: 1995"


def test_item_filter_names_field_when_an_excluded_id_is_empty() -> None:
    with pytest.raises(InvalidArgument) as error:
        ItemFilter.build([], [], ["a", ""])
    assert error.value.field == "filter.exclude_item_ids[1]"
