"""The one exception type for bad user input.

Library code raises `InputError` when a file, array or option is not what it expected; apps
turn it into a single line on stderr and exit code 2 (see `kerastl.app`). The message names
the file or option and says what was expected.
"""


class InputError(ValueError):
    """Bad input from the user: a file, array or option that is not what was expected."""
