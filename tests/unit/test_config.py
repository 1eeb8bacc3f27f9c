from __future__ import annotations

from pathlib import Path

import pytest

from services.gateway.config import GatewayConfig
from services.retrieval.config import RetrievalConfig
from services.trainer import JobConfig
from shared.config import ConfigError, triton_control_key


def test_gateway_config_defaults_to_loopback_and_documented_ports() -> None:
    config = GatewayConfig.from_env({})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 50051)
    assert config.features_address == "127.0.0.1:50052"
    assert config.retrieval_address == "127.0.0.1:50053"
    assert config.trainer_address == "127.0.0.1:50054"


def test_gateway_runs_without_a_trainer_when_its_address_is_none() -> None:
    assert GatewayConfig.from_env({"RECSYS_GATEWAY_TRAINER_ADDRESS": "none"}).trainer_address == ""
    with pytest.raises(ConfigError, match="RECSYS_GATEWAY_TRAINER_ADDRESS"):
        GatewayConfig.from_env({"RECSYS_GATEWAY_TRAINER_ADDRESS": "trainer"})


def test_launcher_names_its_trainer_to_the_gateway_or_none_without_one(tmp_path: Path) -> None:
    from services.launcher import WITHOUT_TRAINER, SuiteSpec

    spec = SuiteSpec.on_free_ports(tmp_path)
    assert spec.env_for("gateway")["RECSYS_GATEWAY_TRAINER_ADDRESS"] == spec.address("trainer")
    alone = SuiteSpec.on_free_ports(tmp_path, services=WITHOUT_TRAINER)
    assert alone.env_for("gateway")["RECSYS_GATEWAY_TRAINER_ADDRESS"] == "none"


def test_launcher_puts_replica_r_on_127_0_0_r_plus_1_and_gives_clients_the_list(
    tmp_path: Path,
) -> None:
    from services.launcher import SuiteSpec, replicas_from

    assert replicas_from("") == {} and replicas_from(" gateway=2 ") == {"gateway": 2}
    spec = SuiteSpec.from_env(
        {"RECSYS_DATA_DIR": str(tmp_path), "RECSYS_SUITE_REPLICAS": "gateway=2"}
    )
    assert spec.address("gateway") == "ipv4:127.0.0.1:50051,127.0.0.2:50051"
    assert spec.process_names("gateway") == ["gateway", "gateway-1"]
    second = spec.env_for("gateway", 1)
    assert (second["RECSYS_GATEWAY_HOST"], second["RECSYS_GATEWAY_PORT"]) == ("127.0.0.2", "50051")
    assert second["RECSYS_GATEWAY_DATA_DIR"] == str(tmp_path / "gateway-1")
    assert spec.address("retrieval") == spec.env_for("gateway")["RECSYS_GATEWAY_RETRIEVAL_ADDRESS"]


@pytest.mark.parametrize("listed", ["gateway", "gateway=0", "nosuch=2", "gateway=two"])
def test_launcher_refuses_a_malformed_replica_count(listed: str) -> None:
    from services.launcher import replicas_from

    with pytest.raises(ValueError, match="RECSYS_SUITE_REPLICAS"):
        replicas_from(listed)


def test_launcher_refuses_replicas_of_a_service_that_cannot_have_them_yet(tmp_path: Path) -> None:
    from services.launcher import SuiteSpec

    with pytest.raises(ValueError, match="features cannot run as replicas yet"):
        SuiteSpec(tmp_path, replicas={"features": 2})


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


def test_trainer_config_defaults_to_loopback_port_50054_and_an_in_process_ray() -> None:
    from services.trainer.config import TrainerConfig

    config = TrainerConfig.from_env({"RECSYS_DATA_DIR": "/data"})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 50054)
    assert config.ray_address == "" and config.state_dir == Path("/data/trainer")
    joined = TrainerConfig.from_env({"RAY_ADDRESS": "ray://head:10001"})
    assert joined.ray_address == "ray://head:10001"
    with pytest.raises(ConfigError, match="RECSYS_TRAINER_GATE_MIN_EVENTS"):
        TrainerConfig.from_env({"RECSYS_TRAINER_GATE_MIN_EVENTS": "0"})


def test_suite_services_variable_picks_services_in_start_order() -> None:
    from services.launcher import SERVICES, SuiteSpec

    assert SuiteSpec.from_env({}).services == SERVICES
    chosen = SuiteSpec.from_env({"RECSYS_SUITE_SERVICES": "gateway,features"}).services
    assert chosen == ("features", "gateway")
    with pytest.raises(ValueError, match="unknown"):
        SuiteSpec.from_env({"RECSYS_SUITE_SERVICES": "features,nope"})


def test_a_tuned_setting_set_in_the_environment_is_pinned_for_gateway_and_trainer() -> None:
    from services.trainer.config import TrainerConfig

    env = {"RECSYS_GATEWAY_MODEL_POPULARITY_WEIGHT": "0.3", "RECSYS_TRAINER_TUNE_WINDOW": "50"}
    ranking = GatewayConfig.from_env(env).ranking()
    assert ranking.pinned == {"model_popularity_weight"}
    assert ranking.with_published({"model_popularity_weight": 2.0}).model_popularity_weight == 0.3
    trainer = TrainerConfig.from_env(env)
    assert trainer.ranking == ranking and trainer.tuner.window == 50 and trainer.tuner.enabled
    assert not TrainerConfig.from_env({"RECSYS_TRAINER_TUNE_RANKING": "0"}).tuner.enabled


def test_trainer_publishes_for_the_python_backend_unless_told_the_pytorch_one() -> None:
    assert JobConfig.from_env({}).publish.triton_variant == "python"
    production = {"RECSYS_TRAINER_TRITON_PLATFORM": "pytorch_libtorch"}
    assert JobConfig.from_env(production).publish.triton_variant == "pytorch_libtorch"
    with pytest.raises(ConfigError, match="RECSYS_TRAINER_TRITON_PLATFORM"):
        JobConfig.from_env({"RECSYS_TRAINER_TRITON_PLATFORM": "onnx"})


def test_triton_control_key_comes_from_the_file_named_and_a_bad_one_stops_the_start(
    tmp_path: Path,
) -> None:
    assert triton_control_key({}) == ""
    key = tmp_path / "key"
    key.write_text("s3cret-key_1\n")
    assert triton_control_key({"RECSYS_TRITON_CONTROL_KEY_FILE": str(key)}) == "s3cret-key_1"
    key.write_text("has a space")
    with pytest.raises(ConfigError, match="RECSYS_TRITON_CONTROL_KEY_FILE"):
        triton_control_key({"RECSYS_TRITON_CONTROL_KEY_FILE": str(key)})
    with pytest.raises(ConfigError, match="RECSYS_TRITON_CONTROL_KEY_FILE"):
        triton_control_key({"RECSYS_TRITON_CONTROL_KEY_FILE": str(tmp_path / "missing")})


def test_with_auth_on_the_launcher_restricts_tritons_model_control_to_a_key(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from services.launcher import SuiteSpec

    open_suite = SuiteSpec.on_free_ports(tmp_path / "open")
    assert "RECSYS_TRITON_CONTROL_KEY_FILE" not in open_suite.env_for("embedding")
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    secured = replace(
        SuiteSpec.on_free_ports(tmp_path / "secured"),
        extra_env={"RECSYS_GATEWAY_TOKENS_FILE": str(tokens)},
    )
    named = {secured.env_for(s)["RECSYS_TRITON_CONTROL_KEY_FILE"] for s in ("embedding", "trainer")}
    assert len(named) == 1
    key = Path(named.pop())
    assert key.stat().st_mode & 0o077 == 0
    assert triton_control_key({"RECSYS_TRITON_CONTROL_KEY_FILE": str(key)})


def test_server_settings_say_which_variable_is_wrong() -> None:
    from shared.config import Env
    from shared.server_config import ServerConfig

    with pytest.raises(ConfigError, match="RECSYS_FEATURES_TLS_CLIENT_CERT=none"):
        ServerConfig.from_env(
            Env("RECSYS_FEATURES_", {"RECSYS_FEATURES_TLS_CLIENT_CERT": "none"}), "features"
        )
    with pytest.raises(ConfigError, match="RECSYS_TLS_KEY_FILE"):
        ServerConfig.from_env(
            Env("RECSYS_GATEWAY_", {"RECSYS_TLS_CERT_FILE": "/x", "RECSYS_TLS_CA_FILE": "/y"}),
            "gateway",
        )
    defaults = ServerConfig.from_env(Env("RECSYS_GATEWAY_", {}), "gateway")
    assert defaults.tls is None and defaults.max_message_bytes == 16 * 1024 * 1024
    assert defaults.access.tokens_file is None
