"""The broker password, read one way by every command that connects.

``sigmoid-edge run``, ``simulate``, ``record`` and ``sigmoid-train push`` all call
:func:`read_password`. The password never comes from a config-file key or the command line
(it would show in ``ps`` and shell histories), only from:

1. a password file (``--password-file FILE``, or ``password_file`` for the daemon), when one
   is given: an explicit file wins, so a stray ``SIGMOID_EDGE_PASSWORD`` in a shell cannot
   override the file an operator configured;
2. else the ``SIGMOID_EDGE_PASSWORD`` environment variable;
3. else no password.

A file holds the password as its content, minus one trailing line break (``\\n`` or
``\\r\\n``, as ``echo secret > file`` leaves); every other character, spaces included, is
part of the password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PASSWORD_ENV = "SIGMOID_EDGE_PASSWORD"


class PasswordFileError(ValueError):
    """The password file cannot be read."""


def read_password(password_file: str | os.PathLike | None,
                  environ: Mapping[str, str] = os.environ) -> str:
    """The broker password: the file's content when a file is given, else the environment.

    Parameters
    ----------
    password_file : path, optional
        The file given with ``--password-file`` (or ``password_file``).
    environ : mapping
        Where ``SIGMOID_EDGE_PASSWORD`` is looked up.

    Raises
    ------
    PasswordFileError
        The file cannot be read (the message names it and why).
    """
    if password_file:
        try:
            # Bytes, then decoded: text mode would turn a lone "\r" into a line break.
            text = Path(password_file).read_bytes().decode("utf-8")
        except OSError as exc:
            raise PasswordFileError(f"cannot read the password file {password_file}: "
                                    f"{exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise PasswordFileError(f"the password file {password_file} is not UTF-8 text "
                                    f"(byte {exc.start}); write the password as UTF-8") from None
        return text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    return environ.get(PASSWORD_ENV, "")
