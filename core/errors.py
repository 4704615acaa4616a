"""The one error type core raises for anything a user can fix, and outside text made safe to show in a message."""


class UserError(ValueError):
    """Bad input or state with a message a user can act on; pages show it with st.error."""


def printable(text: object, limit: int | None = None) -> str:
    """Text from outside (a URL, a file name) safe to print: control characters escaped, never executed by a
    terminal; cut to `limit` characters when given."""
    text = str(text)
    cut = text if limit is None else text[:limit]
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return shown + ("…" if limit is not None and len(text) > limit else "")
