"""ecgtool: train and use an ECG–text contrastive model on your own 12-lead ECGs and reports.

The Python API (docs/api.md)::

    import ecgtool

    model = ecgtool.load_model()                            # the default model, or a bundle folder
    reading = model.read("examples/ptb-xl/00299_hr.hea")     # a file, or an array with its rate and leads
    print(reading.report_line("en"))                         # also .findings, .to_dict(), .to_fhir()

``ecgtool.read_record(path)`` reads a record in canonical form, ``ecgtool.labels()`` lists the
registry's findings. The names come from ``ecgtool.api`` when first used, so ``import ecgtool``
imports neither torch nor the readers.
"""

import sys
import types

__version__ = "0.1.0"

_API = ("Model", "Reading", "ReadingFinding", "SourceError", "load_model", "read_record")
__all__ = ["__version__", "labels", *_API]


def __getattr__(name: str):
    if name in _API:
        from ecgtool import api

        return getattr(api, name)
    raise AttributeError(f"module 'ecgtool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``ecgtool`` itself. ``ecgtool.labels`` is also the registry's data package (``labels/``,
    mapped in by pyproject.toml), which the import system binds on this module when the registry
    is first read; this property keeps the public ``labels()`` in its place, and the data package
    stays in ``sys.modules["ecgtool.labels"]``, where ``importlib.resources`` finds it."""

    @property
    def labels(self):
        from ecgtool.api import labels

        return labels

    @labels.setter
    def labels(self, package) -> None:
        pass


sys.modules[__name__].__class__ = _Package
