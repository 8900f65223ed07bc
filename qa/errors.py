"""The one exception type users see: its message is a complete one-line explanation."""


class QAError(Exception):
    pass
