"""Tokens, their file, scopes and rate limits, without a server (the server side is in
tests/integration/test_tls_access.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shared.access import RateLimits, TokenFile, new_token, parse_tokens, token_hash
from shared.config import ConfigError
from shared.tls import TlsFiles
from suite.cli import main


def test_a_token_file_holds_only_hashes_and_grants_the_scopes_named() -> None:
    token, line = new_token("shop", ["read", "write"])
    assert token not in line and token_hash(token) in line
    grants = parse_tokens(f"# comment\n\n{line}  # trailing\n", "tokens")
    assert grants[token_hash(token)].scopes == {"read", "write"}
    with pytest.raises(ValueError, match="scopes"):
        new_token("shop", ["everything"])


@pytest.mark.parametrize(
    "text",
    ["shop abc read", f"shop {'0' * 64} root", f"shop {'0' * 64}", f"shop {'G' * 64} read"],
)
def test_a_bad_line_is_named(text: str) -> None:
    with pytest.raises(ValueError, match=r"tokens:1"):
        parse_tokens(text, "tokens")


def test_a_token_file_that_stops_parsing_keeps_the_last_good_grants(tmp_path: Path) -> None:
    token, line = new_token("shop", ["read"])
    path = tmp_path / "tokens"
    path.write_text(line + "\n")
    tokens = TokenFile(path)
    path.write_text("half a line\n")
    time.sleep(1.1)  # past the reload check
    assert tokens.grant(token) is not None
    with pytest.raises(ConfigError, match="tokens"):
        TokenFile(path)  # at start, a bad file stops the service


def test_a_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    limits = RateLimits({"read": 10.0}, {"read": 3.0})
    waits = [limits.take("a", "read") for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0] and 0 < waits[3] <= 0.1
    assert limits.take("b", "read") == 0.0  # per client
    assert limits.take("a", "write") == 0.0  # no rate: unlimited


def test_recsys_token_and_certs_make_what_a_user_installs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--name", "shop", "--scopes", "read,write"]) == 0
    printed = capsys.readouterr().out.splitlines()
    token = printed[0].rpartition(" ")[2]
    line = printed[1].partition(": ")[2]
    assert parse_tokens(line, "line")[token_hash(token)].scopes == {"read", "write"}
    assert main(["certs", "--out", str(tmp_path / "tls")]) == 0
    exported = dict(
        line.removeprefix("export ").split("=", 1)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("export ")
    )
    files = TlsFiles(*(Path(exported[f"RECSYS_TLS_{n}_FILE"]) for n in ("CERT", "KEY", "CA")))
    assert files.read().ca == (tmp_path / "tls" / "ca.crt").read_bytes()
