"""The catalogue item as the domain sees it, its documented limits and its validation.

The gateway validates before it calls anything and the features service validates again,
both with these functions, so a batch is judged the same way wherever it enters.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.errors import InvalidArgument

MAX_ID_BYTES = 256
MAX_TITLE_CHARS = 1_000
MAX_DESCRIPTION_CHARS = 10_000
MAX_CATEGORIES = 64
MAX_CATEGORY_CHARS = 128
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY_CHARS = 128
MAX_ATTRIBUTE_VALUE_CHARS = 1_024
MAX_BATCH = 1_000
MAX_K = 1_000

# The retrieval index that holds the text encoder's item vectors.
CONTENT_INDEX = "content"


@dataclass(frozen=True)
class Item:
    item_id: str
    title: str = ""
    description: str = ""
    categories: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """What the text encoder reads: title, description, categories and attributes."""
        parts = [self.title, self.description]
        if self.categories:
            parts.append("Categories: " + ", ".join(self.categories))
        parts.extend(f"{key}: {value}" for key, value in sorted(self.attributes.items()))
        return ". ".join(part for part in parts if part)

    def text_digest(self) -> str:
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()


_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


def validate_id(value: str, field_name: str) -> str:
    if not value:
        raise InvalidArgument(field_name, "must not be empty")
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidArgument(field_name, f"is longer than {MAX_ID_BYTES} bytes")
    if _CONTROL_CHARACTER.search(value):
        raise InvalidArgument(field_name, "must not contain control characters")
    return value


def validate_each_id(values: Sequence[str], field_name: str, suffix: str = "") -> None:
    """validate_id for each of many ids (requests carry hundreds) in three passes over all
    of them at once; the one-by-one check runs only to name the first bad id, as
    `field_name[i]suffix`."""
    # A character is at most 4 bytes of UTF-8: ids this short cannot be too long.
    short = max(map(len, values), default=0) * 4 <= MAX_ID_BYTES
    if short and all(values) and not _CONTROL_CHARACTER.search("".join(values)):
        return
    for i, value in enumerate(values):
        validate_id(value, f"{field_name}[{i}]{suffix}")


def validate_text(value: str, field_name: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(field_name, f"is longer than {limit} characters")


def validate_batch_size(count: int, field_name: str) -> None:
    if count == 0:
        raise InvalidArgument(field_name, "must not be empty")
    if count > MAX_BATCH:
        raise InvalidArgument(field_name, f"has {count} entries; at most {MAX_BATCH} per request")


def validate_k(k: int, field_name: str = "k") -> int:
    if k <= 0 or k > MAX_K:
        raise InvalidArgument(field_name, f"must be between 1 and {MAX_K}, got {k}")
    return k


def validate_item(item: Item, field_name: str) -> None:
    validate_id(item.item_id, f"{field_name}.item_id")
    validate_text(item.title, f"{field_name}.title", MAX_TITLE_CHARS)
    validate_text(item.description, f"{field_name}.description", MAX_DESCRIPTION_CHARS)
    if len(item.categories) > MAX_CATEGORIES:
        raise InvalidArgument(f"{field_name}.categories", f"has more than {MAX_CATEGORIES}")
    for i, category in enumerate(item.categories):
        if not category:
            raise InvalidArgument(f"{field_name}.categories[{i}]", "must not be empty")
        validate_text(category, f"{field_name}.categories[{i}]", MAX_CATEGORY_CHARS)
    if len(item.attributes) > MAX_ATTRIBUTES:
        raise InvalidArgument(f"{field_name}.attributes", f"has more than {MAX_ATTRIBUTES}")
    for key, value in item.attributes.items():
        if not key:
            raise InvalidArgument(f"{field_name}.attributes", "keys must not be empty")
        validate_text(key, f"{field_name}.attributes[{key[:32]!r}]", MAX_ATTRIBUTE_KEY_CHARS)
        validate_text(value, f"{field_name}.attributes[{key!r}]", MAX_ATTRIBUTE_VALUE_CHARS)


def validate_items(items: Sequence[Item], field_name: str = "items") -> list[Item]:
    """Validates a whole batch; returns it deduplicated by id, the last occurrence winning,
    in the order each id was first seen."""
    validate_batch_size(len(items), field_name)
    for i, item in enumerate(items):
        validate_item(item, f"{field_name}[{i}]")
    latest: dict[str, Item] = {}
    for item in items:
        latest[item.item_id] = item
    return list(latest.values())


def validate_ids(ids: Sequence[str], field_name: str = "item_ids") -> list[str]:
    """Validates a batch of ids; returns the distinct ids in first-seen order."""
    validate_batch_size(len(ids), field_name)
    validate_each_id(ids, field_name)
    return list(dict.fromkeys(ids))


def validate_id_list(ids: Iterable[str], field_name: str) -> list[str]:
    """An optional list of ids (filters): may be empty, bounded in size."""
    values = list(ids)
    if len(values) > MAX_BATCH:
        raise InvalidArgument(field_name, f"has more than {MAX_BATCH} entries")
    validate_each_id(values, field_name)
    return values


def validate_vector(values: Sequence[float], field_name: str) -> None:
    if not values:
        raise InvalidArgument(field_name, "must not be empty")
    if not all(math.isfinite(v) for v in values):
        raise InvalidArgument(field_name, "must contain only finite numbers")


@dataclass(frozen=True)
class ItemFilter:
    include_categories: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    exclude_item_ids: frozenset[str] = frozenset()
    # Every one of these, on top of the rest (not in the public Filter: the suite's own
    # markers, such as the items a model version has not learned).
    require_categories: frozenset[str] = frozenset()

    def is_empty(self) -> bool:
        return not (
            self.include_categories
            or self.exclude_categories
            or self.exclude_item_ids
            or self.require_categories
        )

    def admits_categories(self, categories: Iterable[str]) -> bool:
        """Whether an item with these categories passes the category part of the filter."""
        if not (self.include_categories or self.require_categories or self.exclude_categories):
            return True
        own = set(categories)
        if self.include_categories and not own & self.include_categories:
            return False
        if not self.require_categories <= own:
            return False
        return not own & self.exclude_categories

    @classmethod
    def build(
        cls,
        include_categories: Iterable[str],
        exclude_categories: Iterable[str],
        exclude_item_ids: Iterable[str],
        field_name: str = "filter",
    ) -> ItemFilter:
        include = list(include_categories)
        exclude = list(exclude_categories)
        for name, values in (("include_categories", include), ("exclude_categories", exclude)):
            if len(values) > MAX_CATEGORIES:
                raise InvalidArgument(f"{field_name}.{name}", f"has more than {MAX_CATEGORIES}")
            for i, value in enumerate(values):
                validate_text(value, f"{field_name}.{name}[{i}]", MAX_CATEGORY_CHARS)
        ids = validate_id_list(exclude_item_ids, f"{field_name}.exclude_item_ids")
        return cls(frozenset(include), frozenset(exclude), frozenset(ids))
