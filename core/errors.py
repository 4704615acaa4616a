"""The one error type core raises for anything a user can fix."""


class UserError(ValueError):
    """Bad input or state with a message a user can act on; pages show it with st.error."""
