"""Conversions between the public protobuf messages and the domain types."""

from __future__ import annotations

from collections.abc import Iterable

from recsys.gateway.v1 import gateway_pb2

from shared.catalog import Item, ItemFilter


def item_from_proto(message: gateway_pb2.Item) -> Item:
    return Item(
        item_id=message.item_id,
        title=message.title,
        description=message.description,
        categories=tuple(message.categories),
        attributes=dict(message.attributes),
    )


def item_to_proto(item: Item) -> gateway_pb2.Item:
    return gateway_pb2.Item(
        item_id=item.item_id,
        title=item.title,
        description=item.description,
        categories=list(item.categories),
        attributes=dict(item.attributes),
    )


def items_from_proto(messages: Iterable[gateway_pb2.Item]) -> list[Item]:
    return [item_from_proto(m) for m in messages]


def filter_from_proto(message: gateway_pb2.Filter) -> ItemFilter:
    return ItemFilter.build(
        message.include_categories, message.exclude_categories, message.exclude_item_ids
    )
