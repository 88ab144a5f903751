"""The `console` config section: the built-in web console at `/`."""

from __future__ import annotations

from dataclasses import dataclass

from agent.configtypes import ConfigError, Duration


@dataclass
class ConsoleConfig:
    """On by default; the console only reads through the API, so it adds no new access."""

    enabled: bool = True
    session_ttl: Duration = Duration(12 * 3600)  # how long a console login lasts (signed cookie)

    def validate(self, path: str) -> None:
        if self.session_ttl < 60:
            raise ConfigError(f"{path}.session_ttl", "expected at least 1m")
