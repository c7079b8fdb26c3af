"""The one exception type that carries a user-facing message."""


class GGUFLMError(ValueError):
    """Bad input (file, option, prompt): the message is one clear sentence for the user."""
