"""The errors a user can fix. Scripts print the message and exit with status 2; nothing else is caught.

A leaf module: it imports nothing of ours, so every layer can raise these without importing the layer that
owns the concept.
"""


class HfLlmError(Exception):
    """An error the user can fix; scripts print its message and exit with status 2."""


class ConfigError(HfLlmError):
    """Bad recipe, override or option combination."""


class DataError(HfLlmError):
    """Missing, empty or malformed data."""


class HubPushError(HfLlmError):
    """A push that failed after its retries; the message is free of the token."""
