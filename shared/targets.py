"""Addresses of services that may run as several replicas.

An address is a gRPC target: `host:port` for one instance; `ipv4:h1:p1,h2:p2` (or
`ipv6:[h1]:p1,...`) for a static list of replicas, as local runs start them; or
`dns:///name:port`, which on Kubernetes names a headless Service whose name has one record
per ready pod. Calls over a channel to any of them are spread by gRPC's `round_robin`
policy, and a call that finds its endpoint UNAVAILABLE is retried on another one
(`channel_options`). What must reach every replica (a publish, an upsert) asks `endpoints`
at the moment it needs them: a replica that came or went since is counted as it is now.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

STATIC_SCHEMES = ("ipv4:", "ipv6:")
DNS_SCHEME = "dns:"
RETRIED_ATTEMPTS = 3  # the first try and two more, each on another endpoint where there is one


# gRPC's service config: round robin over every resolved endpoint, and retries of a call
# that found its endpoint UNAVAILABLE (down or restarting). Every RPC of the suite is safe
# to repeat: writes carry ids (events, items) or set a state (deletes, forgets, loads).
def service_config(health_checked: bool = False) -> str:
    """With `health_checked`, round robin also passes by an endpoint whose standard health
    check says NOT_SERVING (gRPC's client-side health checking): a retrieval replica that
    catches up takes writes but no reads."""
    config: dict[str, object] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": RETRIED_ATTEMPTS,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
    if health_checked:
        config["healthCheckConfig"] = {"serviceName": ""}
    return json.dumps(config)


class BadTarget(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    """A parsed address; `text` is what a channel is opened on."""

    text: str

    @classmethod
    def parse(cls, text: str) -> Target:
        value = text.strip()
        if value.startswith(STATIC_SCHEMES):
            scheme, _, listed = value.partition(":")
            endpoints = [part.strip() for part in listed.split(",")]
            if not endpoints or not all(_host_port(e, scheme == "ipv6") for e in endpoints):
                raise BadTarget(f"{text!r} is not {scheme}:host:port,host:port,...")
        elif value.startswith(DNS_SCHEME):
            if not _host_port(_dns_name(value), False):
                raise BadTarget(f"{text!r} is not dns:///name:port")
        elif not _host_port(value, False):
            raise BadTarget(f"{text!r} is not host:port, ipv4:host:port,... or dns:///name:port")
        return cls(value)

    @property
    def replicated(self) -> bool:
        """Whether the address may name several endpoints."""
        return self.text.startswith((*STATIC_SCHEMES, DNS_SCHEME))

    @property
    def server_name(self) -> str | None:
        """The name a TLS peer's certificate must carry, whichever endpoint answers: the DNS
        name, or the host; for listed addresses the first one's (gRPC would check the
        whole list as one name), so replicas that share a certificate pass."""
        if self.text.startswith(STATIC_SCHEMES):
            return self.endpoints()[0].rpartition(":")[0].strip("[]")
        name = _dns_name(self.text) if self.text.startswith(DNS_SCHEME) else self.text
        return name.rpartition(":")[0]

    def endpoints(self) -> list[str]:
        """The `host:port` of every endpoint the address names now: a DNS name is resolved
        anew on each call (pods come and go)."""
        if self.text.startswith(STATIC_SCHEMES):
            return [part.strip() for part in self.text.partition(":")[2].split(",")]
        if self.text.startswith(DNS_SCHEME):
            host, _, port = _dns_name(self.text).rpartition(":")
            found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            addresses = sorted({str(info[4][0]) for info in found})
            return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]
        return [self.text]


def _dns_name(target: str) -> str:
    """`name:port` of `dns:name:port`, `dns:///name:port` or `dns://server/name:port` (the
    system's resolver answers here; gRPC's own channel asks that server)."""
    rest = target[len(DNS_SCHEME) :]
    if rest.startswith("//"):
        rest = rest[2:].partition("/")[2]
    return rest


def _host_port(value: str, bracketed: bool) -> bool:
    host, sep, port = value.rpartition(":")
    if bracketed and not (host.startswith("[") and host.endswith("]")):
        return False
    return bool(sep and host and port.isdigit())


def channel_options(health_checked: bool = False) -> list[tuple[str, str | int]]:
    """What every channel to a service of the suite is opened with, besides sizes."""
    return [("grpc.enable_retries", 1), ("grpc.service_config", service_config(health_checked))]
