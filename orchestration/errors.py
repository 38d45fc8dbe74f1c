class UserError(Exception):
    """A mistake in arguments or settings: the CLI prints it without a traceback, exit 2."""
