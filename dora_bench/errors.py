"""Errors a user can fix: the CLI prints them in one line and exits non-zero."""


class UserError(Exception):
    """Bad input (config value, data file, model path, environment): say what and what is allowed."""


def one_of(field: str, value, allowed) -> UserError:
    return UserError(f"{field}={value!r} is not valid; allowed: {', '.join(map(str, allowed))}")
