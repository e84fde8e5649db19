"""litefly: DeBut accelerators."""
__version__ = "0.1.0"
