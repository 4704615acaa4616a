"""The one error type core raises for anything a user can fix, outside text made safe to show in a message, and
what the operating system said in words a user can act on."""

import errno


class UserError(ValueError):
    """Bad input or state with a message a user can act on; pages show it with st.error."""


def printable(text: object, limit: int | None = None) -> str:
    """Text from outside (a URL, a file name) safe to print: control characters escaped, never executed by a
    terminal; cut to `limit` characters when given."""
    text = str(text)
    cut = text if limit is None else text[:limit]
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return shown + ("…" if limit is not None and len(text) > limit else "")


_OS_HINTS = {
    errno.EROFS: "the data root is read-only: make it writable, or point IMAGEDP_DATA_ROOT at a writable folder",
    errno.EACCES: "no permission to write there: make the data root writable, or point IMAGEDP_DATA_ROOT elsewhere",
    errno.EPERM: "no permission to write there: make the data root writable, or point IMAGEDP_DATA_ROOT elsewhere",
    errno.ENOSPC: "the disk is full: free some space and try again (what finished before is kept)",
    errno.EDQUOT: "the disk quota is used up: free some space and try again (what finished before is kept)",
}


def os_message(exc: OSError) -> str:
    """An OSError (read-only or full disk, a folder where a file should be) as one line with what to do."""
    where = f": {printable(exc.filename)}" if exc.filename else ""
    hint = _OS_HINTS.get(exc.errno or 0)
    return f"{exc.strerror or exc}{where}" + (f"; {hint}." if hint else ".")
