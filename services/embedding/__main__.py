"""python -m services.embedding: prepares the bundled Triton Inference Server and becomes
it (exec), so SIGTERM from the launcher reaches Triton, which drains in-flight requests."""

from __future__ import annotations

import os
import sys

from services.embedding.config import EmbeddingConfig
from services.embedding.runtime import TritonUnavailable, server_command
from shared.config import ConfigError


def main() -> None:
    try:
        command = server_command(EmbeddingConfig.from_env())
    except (ConfigError, TritonUnavailable) as error:
        print(f"embedding: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    os.execve(command.argv[0], command.argv, command.env)


if __name__ == "__main__":
    main()
