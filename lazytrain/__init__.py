"""lazytrain: a small, visible PyTorch training framework.

Importing the package is cheap on purpose (no torch): the CLI's start-up time depends on it.
"""

__version__ = "0.1.0"
