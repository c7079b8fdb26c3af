"""The one exception type that carries a user-facing message, and how file-controlled text is shown in one."""


class GGUFLMError(ValueError):
    """Bad input (file, option, prompt): the message is one clear sentence for the user."""


def shown(text: str, limit: int = 80) -> str:
    """Text from a file (a tensor name, a key), quoted for a message: control characters escaped, so it
    cannot end the line or drive the terminal, and cut at `limit` characters."""
    out = repr(text[:limit])
    return out[:-1] + "...'" if len(text) > limit else out


def printable(text: str, limit: int = 200) -> str:
    """Text from a file shown as it is, but with control characters (newlines, escapes) escaped and cut
    at `limit` characters: it cannot forge a second line of output or drive the terminal."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return out + "..." if len(text) > limit else out
