"""Trains the two-tower retrieval model from the event log and the item content vectors."""
