"""The user's settings: their typed fields, the checks on each value, and where values come from.

``fields`` defines ``Settings`` (what the user sets) and ``LoadSpec`` (what loading a model
needs); ``sources`` reads command-line flags, initialization options and
``workspace/didChangeConfiguration``; ``checks`` validates a value and says what to change.
"""
