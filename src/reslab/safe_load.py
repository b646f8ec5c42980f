"""Reading torch files (checkpoints, state dicts) without running code from them.

`torch.load(weights_only=True)` restores tensors and plain containers and refuses anything
else with one exception type for two different faults, which need different advice:

- the file is a torch file whose pickle names Python objects (a class instance, a function):
  only running pickled code could restore them, so it is refused, and it is not corrupt;
- the file's bytes are no torch file at all (truncated, random, another format): corrupt.

`load_tensors_only` tells them apart by what the file names, read statically with torch's
`get_unsafe_globals_in_checkpoint` (the pickle is disassembled, never run), rather than by the
wording of torch's message, which changes between releases and advises `weights_only=False`.
Pure torch: the models, the checkpoints and the training side all read files through here.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch


class HoldsPythonObjects(Exception):
    """A torch file whose pickle names Python objects outside torch's allowlist (`names`)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


class NotATorchFile(Exception):
    """A file that cannot be read as a torch file; the message says why."""


def load_tensors_only(path: Path) -> Any:
    """The object in the torch file `path`, restored without running pickled code; CPU tensors,
    memory-mapped where the file allows (only what is used is read).

    Raises HoldsPythonObjects or NotATorchFile.
    """
    try:
        return _load(path)
    except pickle.UnpicklingError as error:
        # The Python objects (module.name) the file names beyond tensors and plain containers.
        try:
            names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # noqa: BLE001 - not a zip torch file: perhaps the legacy (pre-zip) format,
            # which torch cannot disassemble; its refusal names the first object.
            names = re.findall(r"GLOBAL (\S+)", str(error))[:1]
        if names:
            raise HoldsPythonObjects(names) from None
        raise NotATorchFile("not a file torch.save wrote") from None
    except Exception as error:  # noqa: BLE001 - a truncated zip, an unreadable file: one fault
        raise NotATorchFile(f"{type(error).__name__}: {error}") from None


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise
    except Exception:  # noqa: BLE001 - mmap refuses files whose real fault the plain reader names
        return torch.load(path, map_location="cpu", weights_only=True)
