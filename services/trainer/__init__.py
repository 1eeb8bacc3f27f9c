"""Trains the two-tower retrieval model from the event log and the item content vectors.

Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported, not when it starts: set
any later, Ray takes the machine's external address for its node, so gcs_server, the
raylet and every worker listen on all interfaces, and its runtime-env agent on the
external address. Ray is imported by modules of this package, so the in-process Ray's
settings go here, before any of them. A trainer that joins a cluster (RAY_ADDRESS) needs
its node's real address and keeps Ray's defaults.
"""

import os

if not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
