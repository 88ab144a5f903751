"""Build glue pyproject.toml cannot express: ship the top-level `rules/` (the default rule pack)
inside the package as `agent/default_rules/`, so a plain `pip install .` (wheel, sdist or
image) carries it and `agent.rules.loader` finds it through importlib.resources. `rules/`
stays at the top of the repository, where people look for it; everything else (package data
included) is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["agent", "agent.*"]), "agent.default_rules"],
    package_dir={"agent.default_rules": "rules"},
)
