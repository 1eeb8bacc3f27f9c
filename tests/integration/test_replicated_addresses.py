"""An address that names several replicas: calls are spread over every endpoint, and one
replica going away fails no call. The replicas are real gRPC servers on two loopback
addresses sharing one port, as pods share a port on many IPs."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections import Counter

import grpc
import pytest

from shared.clients import channel
from shared.config import ConfigError, Env
from shared.targets import Target

WHO = "/test.Replica/Who"
HOSTS = ("127.0.0.1", "127.0.0.2")


def port_free_on_both() -> int:
    with socket.socket() as first:
        first.bind((HOSTS[0], 0))
        port = int(first.getsockname()[1])
        with socket.socket() as second:
            second.bind((HOSTS[1], port))
    return port


REPLICA = """
import asyncio, sys
import grpc

async def main(host, port):
    async def who(request, context):
        return host.encode()
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(who)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Replica", {"Who": handler})]
    )
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def start_replicas(port: int) -> list[subprocess.Popen[str]]:
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA, host, str(port)], stdout=subprocess.PIPE, text=True
        )
        for host in HOSTS
    ]
    for started in replicas:
        assert started.stdout is not None and started.stdout.readline().strip() == "serving"
    return replicas


async def load(address: str, seconds: float, kill: subprocess.Popen[str] | None) -> Counter[str]:
    """8 callers for `seconds`; `kill` gets SIGKILL a third of the way through."""
    counted: Counter[str] = Counter()
    async with channel(address) as opened:
        who = opened.unary_unary(WHO)
        await opened.channel_ready()
        ends = time.monotonic() + seconds

        async def caller() -> None:
            while time.monotonic() < ends:
                try:
                    counted[(await who(b"", timeout=5)).decode()] += 1
                except grpc.aio.AioRpcError as error:
                    counted[error.code().name] += 1

        async def killer() -> None:
            await asyncio.sleep(seconds / 3)
            if kill is not None:
                kill.kill()

        await asyncio.gather(killer(), *(caller() for _ in range(8)))
    return counted


def run_load(seconds: float, kill_first: bool) -> Counter[str]:
    port = port_free_on_both()
    replicas = start_replicas(port)
    try:
        address = f"ipv4:{HOSTS[0]}:{port},{HOSTS[1]}:{port}"
        return asyncio.run(load(address, seconds, replicas[0] if kill_first else None))
    finally:
        for started in replicas:
            started.kill()
            started.wait()
            assert started.stdout is not None
            started.stdout.close()


def test_calls_to_a_list_of_replicas_reach_every_one() -> None:
    counted = run_load(1.0, kill_first=False)
    assert set(counted) == set(HOSTS) and min(counted.values()) >= 0.3 * sum(counted.values())


def test_no_call_fails_when_a_replica_is_killed_under_load() -> None:
    counted = run_load(1.5, kill_first=True)
    assert set(counted) == set(HOSTS), counted  # every call answered, none failed
    assert counted[HOSTS[1]] > counted[HOSTS[0]]  # the replica left took the rest


def test_a_replica_list_or_dns_name_is_an_address_and_names_its_endpoints() -> None:
    listed = Target.parse("ipv4:127.0.0.1:50053,127.0.0.2:50053")
    assert listed.replicated and listed.endpoints() == ["127.0.0.1:50053", "127.0.0.2:50053"]
    one = Target.parse("127.0.0.1:50053")
    assert not one.replicated and one.endpoints() == ["127.0.0.1:50053"]
    assert "127.0.0.1:50053" in Target.parse("dns:///localhost:50053").endpoints()
    env = Env("RECSYS_GATEWAY_", {"RECSYS_GATEWAY_RETRIEVAL_ADDRESS": listed.text})
    assert env.address("RETRIEVAL_ADDRESS", "127.0.0.1:1") == listed.text


@pytest.mark.parametrize(
    "bad", ["ipv4:127.0.0.1", "ipv4:127.0.0.1:1,", "dns:///nohost", "ipv6:::1:50053", "nohost"]
)
def test_a_malformed_address_stops_the_service_naming_the_variable(bad: str) -> None:
    env = Env("RECSYS_GATEWAY_", {"RECSYS_GATEWAY_RETRIEVAL_ADDRESS": bad})
    with pytest.raises(ConfigError, match="RECSYS_GATEWAY_RETRIEVAL_ADDRESS"):
        env.address("RETRIEVAL_ADDRESS", "127.0.0.1:1")
