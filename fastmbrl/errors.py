"""Exceptions that the CLI turns into a one-line message and exit status 2."""


from types import ModuleType


class FastMBRLError(Exception):
    """An error a user can act on (bad input, bad file, missing extra)."""


class FormatError(FastMBRLError, ValueError):
    """A saved file of another kind, schema or version, or a corrupt one."""


class FileError(FastMBRLError, OSError):
    """A file or directory the user named cannot be read or written (it names the path)."""


class MissingFileError(FileError, FileNotFoundError):
    """A file fastmbrl needs does not exist."""


class OptimizerError(FastMBRLError, ValueError):
    """A bad optimiser option, candidate array or fitness (fastmbrl.CMAES); the optimiser's
    state is left as it was."""


class MissingExtraError(FastMBRLError, ImportError):
    """An optional dependency is needed but not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package '{package}': "
            f"pip install 'fastmbrl[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional module or raise MissingExtraError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(module.split(".")[0], extra, purpose) from exc
