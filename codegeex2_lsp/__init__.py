"""AI code completion from CodeGeeX2-6B for every LSP editor."""

__version__ = "0.1.0"
