"""`ray start` for a node that joins a cluster on loopback, as tests run one.

Every Ray server binds to loopback only when its node's address is 127.0.0.1, and Ray's
`ray start` then refuses to add a node to a cluster (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
which keeps the node on 127.0.0.1), or, with the variable unset, rewrites the head's
127.0.0.1 to the machine's external address, where the head does not listen. This runs
Ray's own `ray start` with that refusal and that rewrite lifted, and nothing else changed.
"""

from __future__ import annotations

import sys

from ray._private import ray_constants, services
from ray.scripts import scripts


def main() -> None:
    ray_constants.ENABLE_RAY_CLUSTER = True
    services.resolve_ip_for_localhost = lambda host: host
    sys.exit(scripts.main())


if __name__ == "__main__":
    main()
