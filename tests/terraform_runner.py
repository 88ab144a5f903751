"""Run Terraform offline for the deploy tests: providers from a local filesystem mirror,
fake credentials, no API calls. `plan` needs no AWS account when the provider skips its
credential and account checks and the configuration reads no remote data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

MIRRORS = [os.environ.get("GATEWATCH_TF_PLUGIN_MIRROR", ""), "/opt/tf-plugins", "/usr/share/terraform/plugins"]

OFFLINE_PROVIDER = """
provider "aws" {{
  {alias}region                      = "eu-west-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  {extra}
}}
"""


def plugin_mirror() -> str | None:
    for path in MIRRORS:
        if path and (Path(path) / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
            return path
    return None


def available() -> str | None:
    """None when Terraform can run here, else why not."""
    if shutil.which("terraform") is None:
        return "terraform is not installed"
    if plugin_mirror() is None:
        return "no local mirror of the hashicorp/aws provider (set GATEWATCH_TF_PLUGIN_MIRROR)"
    return None


class Terraform:
    def __init__(self, workdir: Path, scratch: Path) -> None:
        self.workdir = workdir
        rc = scratch / "terraformrc"
        rc.write_text(
            'provider_installation {\n'
            f'  filesystem_mirror {{\n    path = "{plugin_mirror()}"\n'
            '    include = ["registry.terraform.io/*/*"]\n  }\n'
            '  direct { exclude = ["registry.terraform.io/*/*"] }\n'
            '}\ndisable_checkpoint = true\n'
        )
        self.env = {**os.environ, "TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1", "TF_INPUT": "0",
                    "CHECKPOINT_DISABLE": "1", "TF_DATA_DIR": str(scratch / f"tfdata-{workdir.name}")}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["terraform", *args, "-no-color"], cwd=self.workdir, env=self.env,
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def plan_json(self) -> dict[str, Any]:
        self.run("init", "-backend=false")
        self.run("validate")
        self.run("plan", "-refresh=false", "-out=plan.bin")
        return json.loads(self.run("show", "-json", "plan.bin").stdout)


def offline_provider_override(alias: str | None = None, assume_role_placeholder: bool = False) -> str:
    return OFFLINE_PROVIDER.format(
        alias=f'alias = "{alias}"\n  ' if alias else "",
        extra='assume_role {\n    role_arn = ""\n  }' if assume_role_placeholder else "",
    )


def resource_after(plan: dict[str, Any], address: str) -> dict[str, Any]:
    for change in plan["resource_changes"]:
        if change["address"] == address:
            return change["change"]["after"]
    raise KeyError(f"{address} not in the plan: {[c['address'] for c in plan['resource_changes']]}")
