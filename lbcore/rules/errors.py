"""The one error the rules parser raises: config.py turns it into a
problem line with the key path of the expression."""


class RuleError(ValueError):
    pass
