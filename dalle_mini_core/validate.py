"""Input checks shared by the Python API and the command line: one function per kind of input.

Every check returns the cleaned value (a plain Python int, float, str, list or Path) or raises
ValueError / TypeError with a one-line message that names the input. `name` is what the caller
calls it: an argument (``"prior_guidance"``) for the Python API, an option
(``"--prior-guidance"``) for the command line, so the same rule gives each audience its own name.

The rules, and why:

* counts and step numbers are ints (``2.5`` steps is refused, not rounded), with an upper bound:
  ``MAX_IMAGES`` images per call, and never more steps than the model's schedule has;
* seeds lie in [0, 2**32 − 1]: torch's CPU generator keeps the low 32 bits of a seed, so
  ``2**32`` would silently repeat seed 0's images;
* guidance scales are finite numbers in [0, ``MAX_GUIDANCE``] (far past it, the prior's
  arithmetic overflows to NaN and the pictures come out black); Python, NumPy and 0-d torch
  scalars are all numbers;
* prompts hold visible text: no control characters (terminal colour codes, NUL), no lone
  surrogates (invalid UTF-8), not only spaces, zero-width characters or punctuation;
* output files are checked for writability before any work and written atomically (a temp
  file in the same folder, then ``os.replace``), so a failed write never truncates the old one.

Nothing here imports torch at module level: ``dalle-mini --help`` stays instant.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = [
    "MAX_SEED",
    "MAX_GUIDANCE",
    "MAX_IMAGES",
    "MAX_STEPS",
    "MAX_BEST_OF",
    "scalar",
    "integer",
    "seed",
    "guidance",
    "steps",
    "boolean",
    "fractions",
    "prompts",
    "finite_tensor",
    "device",
    "printable",
    "output_file",
    "output_folder",
    "atomic_write",
]

MAX_SEED = 2**32 - 1  # torch.Generator (CPU) keeps 32 bits of a seed
MAX_GUIDANCE = 100.0  # the papers use 1-10; 1e30 overflows the prior to NaN
MAX_IMAGES = 1024  # images per call (they are decoded in chunks, so this bounds time, not memory)
MAX_STEPS = 1000  # the shipped schedules have 1000 timesteps; a model may have fewer
MAX_BEST_OF = 64  # prior candidates per caption (the paper uses 2)


def _torch():
    return sys.modules.get("torch")


def scalar(name: str, value: object) -> int | float:
    """A real number as a Python int or float: int, float, NumPy scalar or 0-d torch tensor.

    bool, str, None, complex and tensors with more than one element are refused (TypeError).
    """
    torch = _torch()
    if torch is not None and torch.is_tensor(value):
        if value.dim() != 0 or value.dtype == torch.bool or value.is_complex() or value.device.type == "meta":
            raise TypeError(f"{name} must be a number (a Python, NumPy or 0-d torch scalar), got a tensor of "
                            f"shape {tuple(value.shape)} and dtype {value.dtype}")
        value = value.item()
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if np is not None and isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {_short(value)}")
    return value


def _int_phrase(minimum: int) -> str:
    return {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int, at least {minimum}")


def integer(name: str, value: object, *, minimum: int = 1, maximum: int | None = None, why: str = "",
            why_min: str = "") -> int:
    """An int (Python, NumPy or 0-d torch int) in [minimum, maximum]; floats such as 2.0 or 2.5 are refused.

    `why` explains the upper bound, `why_min` the lower one, in the message.
    """
    torch = _torch()
    if torch is not None and torch.is_tensor(value) and value.dim() == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool and not value.is_complex():
        value = value.item()
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be {_int_phrase(minimum)}, got {_short(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be {_int_phrase(minimum)}{why_min}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}{why}, got {value}")
    return int(value)


def seed(name: str, value: object) -> int:
    """A seed in [0, 2**32 − 1]; larger seeds would alias smaller ones in torch's CPU generator."""
    return integer(name, value, minimum=0, maximum=MAX_SEED,
                   why=" (torch's CPU generator keeps 32 bits: a larger seed would repeat a smaller one's images)")


def guidance(name: str, value: object, *, allow_none: bool = True) -> float | None:
    """A classifier-free guidance scale: None (API: the conditional model alone) or a finite number in [0, MAX_GUIDANCE]."""
    if value is None and allow_none:
        return None
    number = scalar(name, value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number!r}")
    if number < 0:
        raise ValueError(f"{name} must be >= 0 (0: unconditional, 1: conditional, > 1: stronger), got {number}")
    if number > MAX_GUIDANCE:
        raise ValueError(f"{name} must be at most {MAX_GUIDANCE:g} (papers use 1 to 10; far larger scales overflow to "
                         f"NaN and black pictures), got {number:g}")
    return float(number)


def steps(name: str, value: object, maximum: int = MAX_STEPS, *, minimum: int = 1, why: str = "") -> int:
    """A number of sampling steps in [minimum, maximum] (the model's schedule length by default)."""
    return integer(name, value, minimum=minimum, maximum=maximum,
                   why=why or f" (the schedule has {maximum} timesteps)")


def boolean(name: str, value: object, *, allow_none: bool = False) -> bool | None:
    """True or False (None too when `allow_none`); a truthy string such as 'no' is refused."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.bool_):
        value = bool(value)
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        allowed = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name} must be {allowed}, got {_short(value)}")
    return value


def fractions(name: str, values: object, *, maximum_count: int = MAX_IMAGES) -> list[float]:
    """A non-empty sequence (list, tuple, NumPy array or 1-d tensor) of numbers in [0, 1]."""
    torch = _torch()
    np = sys.modules.get("numpy")
    if torch is not None and torch.is_tensor(values):
        if values.dim() != 1:
            raise ValueError(f"{name} must be a non-empty sequence of numbers in [0, 1], got a tensor of shape "
                             f"{tuple(values.shape)}")
        values = list(values.unbind(0))
    elif np is not None and isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{name} must be a non-empty sequence of numbers in [0, 1], got an array of shape "
                             f"{values.shape}")
        values = list(values)
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty sequence of numbers in [0, 1], got {_short(values)}")
    if len(values) > maximum_count:
        raise ValueError(f"{name} has {len(values)} entries; at most {maximum_count} per call")
    out = []
    for v in values:
        try:
            number = scalar(f"every entry of {name}", v)
        except TypeError:
            raise ValueError(f"every entry of {name} must be a number in [0, 1], got {_short(v)}") from None
        if not (math.isfinite(number) and 0.0 <= number <= 1.0):
            raise ValueError(f"every entry of {name} must be a number in [0, 1], got {number!r}")
        out.append(float(number))
    return out


# --- text --------------------------------------------------------------------------------------

_EMPTY = "a prompt is empty; write what the image should show"


def _prompt(text: str, where: str) -> str:
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat == "Cs":
            raise ValueError(f"{where} is not valid text: it holds a lone surrogate {ascii(ch)} at position {i} "
                             "(invalid UTF-8 bytes?)")
        if cat == "Cc" and ch not in "\t\n\r":
            raise ValueError(f"{where} holds the control character {ascii(ch)} at position {i} (a terminal colour "
                             "code or similar); remove it")
    visible = [ch for ch in text if not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf")]
    if not visible:
        raise ValueError(_EMPTY)
    if all(unicodedata.category(ch).startswith("P") for ch in visible):
        raise ValueError(f"{where} is only punctuation ({printable(text)!r}); write what the image should show")
    return text


def prompts(value: object, *, name: str = "prompts") -> list[str]:
    """A str or a non-empty list/tuple of str, each holding visible text (see the module docstring)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty str or a non-empty list of str, got {_short(value)}")
    if len(value) > MAX_IMAGES:
        raise ValueError(f"{name} holds {len(value)} prompts; at most {MAX_IMAGES} per call")
    for i, p in enumerate(value):
        if not isinstance(p, str):
            raise TypeError(f"every prompt must be a str, got {type(p).__name__}")
        _prompt(p, f"prompt {i + 1}" if len(value) > 1 else "the prompt")
    return list(value)


def printable(text: str, limit: int = 300) -> str:
    """`text` safe to print on a terminal: non-printable characters (escape codes, BEL, zero-width,
    right-to-left overrides, surrogates) shown as ``\\x1b``-style escapes; cut at `limit` characters."""
    out = "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in str(text))
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return printable(text if len(text) <= limit else text[: limit - 1] + "…", limit + 10)


# --- tensors and devices ------------------------------------------------------------------------


def finite_tensor(name: str, value: object, *, floating: bool = True) -> Any:
    """A tensor with real data (not on the meta device) and only finite values."""
    import torch

    if not torch.is_tensor(value):
        raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if value.device.type == "meta":
        raise ValueError(f"{name} is on the meta device: it holds no values")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {value.dtype}")
    if value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    return value


def device(value: object, *, name: str = "device") -> Any:
    """A torch.device that exists here: 'cpu', 'cuda' (with a GPU), 'mps' (on Apple silicon)."""
    import torch

    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name} must be a str such as 'cpu' or 'cuda', or a torch.device, got {type(value).__name__}")
    try:
        dev = torch.device(value)
    except RuntimeError:
        raise ValueError(f"{name} must name a device such as 'cpu', 'cuda', 'cuda:1' or 'mps', got {printable(str(value))!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {str(value)!r} was asked for, but PyTorch sees no CUDA GPU; use 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{name} {str(value)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name} 'mps' was asked for, but PyTorch sees no Apple GPU; use 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'mps', got {str(value)!r}")
    return dev


# --- files ------------------------------------------------------------------------------------


def _path(name: str, value: object) -> Path:
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or pathlib.Path), got {type(value).__name__}")
    if not str(value).strip():
        raise ValueError(f"{name} is empty; give a file name")
    return Path(value)


def _probe_write(folder: Path, name: str) -> None:
    """Create and delete a temp file in `folder`: proves we may write there (root too, read-only mounts too)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".dalle-mini-", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ValueError(f"{name}: cannot write in {folder}: {exc.strerror or exc}") from None


def _make_folder(name: str, folder: Path) -> None:
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name}: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{name}: cannot create the folder {folder}: {exc.strerror or exc}") from None


def output_file(name: str, value: object, suffixes: Sequence[str] | None = None, what: str = "") -> Path:
    """A file we are about to write, checked before any work: right suffix, not a folder, its folder
    creatable and writable. Creates the folder; writes nothing else."""
    path = _path(name, value)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(f"{name} must end in {' or '.join(suffixes)}{what}, got {printable(str(value))!r}")
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a folder; give a file name inside it")
    _make_folder(name, path.parent)
    _probe_write(path.parent, name)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{name}: {path} exists and is read-only")
    return path


def output_folder(name: str, value: object) -> Path:
    """A folder we are about to write files into: created if absent, checked writable."""
    path = _path(name, value)
    _make_folder(name, path)
    _probe_write(path, name)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temp file beside `path` (same suffix), then ``os.replace`` it onto `path`.

    Either the new file is complete or the old one is untouched: a full disk or a crash mid-write
    leaves the previous file as it was, and the temp file is removed on any error.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
