"""The `refresh:` config section: a leaf, so the composed Config needs nothing of the refresher."""

from __future__ import annotations

from dataclasses import dataclass

from agent.configtypes import Duration


@dataclass
class RefreshConfig:
    """`refresh:` section. The LiteLLM config's own interval is `litellm.config_refresh`."""

    interval: Duration = Duration(60)  # gatewatch config file and rule files; 0 = only on SIGHUP
