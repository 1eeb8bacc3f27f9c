from __future__ import annotations

from pathlib import Path

import pytest

from services.gateway.config import GatewayConfig
from services.retrieval.config import RetrievalConfig
from shared.config import ConfigError


def test_gateway_config_defaults_to_loopback_and_documented_ports() -> None:
    config = GatewayConfig.from_env({})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 50051)
    assert config.features_address == "127.0.0.1:50052"
    assert config.retrieval_address == "127.0.0.1:50053"


def test_retrieval_config_reads_prefixed_variables() -> None:
    config = RetrievalConfig.from_env(
        {
            "RECSYS_RETRIEVAL_PORT": "6000",
            "RECSYS_RETRIEVAL_HNSW_THRESHOLD": "10",
            "RECSYS_DATA_DIR": "/tmp/x",
        }
    )
    assert config.server.port == 6000
    assert config.index.hnsw_threshold == 10
    assert config.data_dir == Path("/tmp/x/retrieval")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RECSYS_GATEWAY_PORT", "http", "RECSYS_GATEWAY_PORT='http' is not an integer"),
        ("RECSYS_GATEWAY_PORT", "70000", "outside"),
        ("RECSYS_GATEWAY_FEATURES_ADDRESS", "nohost", "is not host:port"),
        ("RECSYS_GATEWAY_CALL_TIMEOUT_S", "-1", "below"),
    ],
)
def test_config_fails_at_start_naming_the_variable_when_a_value_is_bad(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        GatewayConfig.from_env({variable: value})
