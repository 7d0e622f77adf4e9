"""What counts as a user error: the command line prints its message as one
``ssamba: error: ...`` line and exits 2 (``--debug`` or ``SSAMBA_DEBUG=1`` shows the
traceback); anything else is a bug and keeps its traceback.

User errors are :class:`UserError` and its subclasses, ``ValueError`` (bad values, bad
files: the library raises it for what a user can fix) and ``OSError`` (missing,
unreadable or existing paths, a full disk).
"""

from __future__ import annotations


class UserError(Exception):
    """Input the user can fix; the message says what to change."""


class UnknownOptionError(UserError, TypeError):
    """A config key that is not an option (a ``TypeError``, as for unexpected keyword arguments)."""


#: Exceptions the command line reports as one line instead of a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, OSError)


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (``KeyError`` quotes removed)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(str(text).split())
    return text or type(err).__name__


class MissingDependencyError(UserError, ImportError):
    """An optional package that a feature needs is not installed; the message says how to
    install it."""


#: How to install each optional package: the demo's synthesis stack and plotting are
#: extras, so that ``pip install ssamba`` needs no compiler and no system package.
#: tinysoundfont declares PyAudio (live playback, which ssamba never uses, and which
#: compiles against PortAudio headers), so it is installed without its dependencies.
OPTIONAL_PACKAGES = {
    "espeakng_loader": "pip install 'ssamba[demo]'",
    "matplotlib": "pip install 'ssamba[demo]' (or just matplotlib)",
    "sklearn": "pip install 'ssamba[demo]' (or just scikit-learn)",
    "tinysoundfont": "pip install --no-deps 'tinysoundfont>=0.3.7'",
    "huggingface_hub": "pip install 'ssamba[hub]'",
    "onnx": "pip install 'ssamba[onnx]'",
    "onnxscript": "pip install 'ssamba[onnx]'",
    "onnxruntime": "pip install 'ssamba[onnx]'",
}


def require(module: str, purpose: str):
    """Import and return the optional package ``module``, or raise
    :class:`MissingDependencyError` naming ``purpose`` and the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        if err.name not in (module, module.split(".")[0]):
            raise  # the package is there and something inside it failed: not ours to rename
        how = OPTIONAL_PACKAGES.get(module.split(".")[0], f"pip install {module}")
        raise MissingDependencyError(f"{purpose} needs the optional package {module!r}: {how}") from err
