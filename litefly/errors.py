"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class LiteflyError(Exception):
    """A user mistake (bad config, wrong shape, missing tool). Printed without a traceback."""


class ConfigError(LiteflyError, ValueError):
    """An invalid chain or layer configuration."""


class ShapeError(LiteflyError, ValueError):
    """An array whose shape or dtype does not match the layer."""


class ToolError(LiteflyError, RuntimeError):
    """An external tool (simulator, synthesiser, Vivado) is missing or failed."""
