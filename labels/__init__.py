"""The label registry (findings.yaml), installed as ``ecgtool.labels``: see pyproject.toml."""
