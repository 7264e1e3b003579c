"""kerastl: frontier transfer learning as Keras 3 parts and runnable apps.

Importing the package is cheap: sub-packages (``kerastl.data``, ``kerastl.ssl``, ...) are
imported by the code that needs them, and nothing here imports tensorflow-federated.
"""

__version__ = "0.1.0"

from kerastl.errors import InputError  # noqa: E402,F401
