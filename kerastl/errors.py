"""The one exception type for bad user input.

Library code raises `InputError` when a file, array or option is not what it expected; apps
turn it into a single line on stderr and exit code 2 (see `kerastl.app`). The message names
the file or option and says what was expected.
"""

import os


class InputError(ValueError):
    """Bad input from the user: a file, array or option that is not what was expected."""


def require_writable(path: str, option: str, given: str | None = None) -> None:
    """Raises `InputError` unless `path`, or its nearest existing ancestor, is a writable folder.

    The message names the option and what the user gave: `"{option} {given}: {folder} is not
    writable"` (`given` defaults to `path`).
    """
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "."
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{option} {given or path}: {probe} is not writable")
