"""Context from the rest of the project for the prompt: the workspace's files and symbols, and
the snippets chosen from them for a cursor.

Nothing here imports torch, and nothing here runs on the keystroke path but selection, which
reads what the background index has ready.
"""
