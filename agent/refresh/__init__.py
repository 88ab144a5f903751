"""Hot reload of the gatewatch config, rule files and LiteLLM config (refresher.py); the
`refresh:` section it reads is declared in config.py, a leaf the composed Config imports."""
