"""How much text around the cursor each step of a completion reads: one set of named limits.

Post-processing reads the least (the cursor's surroundings); a request keeps about twice that,
on a grid so the kept text grows as the user types along a suggestion instead of sliding; the
prompt reads windows sized by its token budget. They live here, at the bottom of the path,
so the request (``completion.pipeline``), the prompt (``completion.prompt``) and the rules
(``postprocess.surroundings``) read one set of limits and cannot drift apart.
"""

from __future__ import annotations

RULES_PREFIX_CHARS = 4096
"""Text before the cursor the rules look at: enough for the indentation style and the lines
above; small enough that a large file costs nothing."""

RULES_SUFFIX_CHARS = 2048
"""Text after the cursor the rules look at, for the next lines."""

RULES_SUFFIX_LINES = 8
"""Non-blank lines after the cursor's line the rules compare a suggestion with."""

RULES_PREVIOUS_LINES = 8
"""Lines above the cursor's line the rules compare a suggestion with."""

REQUEST_PREFIX_CHARS = 2 * RULES_PREFIX_CHARS
"""The request keeps at least this much of the text before the cursor (at most twice as much)
for post-processing and typed-ahead."""

REQUEST_LINE_CHARS = 1024
"""On a line longer than this, the request keeps only its end before the cursor (this much at
least, at most twice): post-processing reads the cursor's line character by character, and a
megabyte-long line would cost it milliseconds per keystroke for nothing it uses."""

REQUEST_SUFFIX_CHARS = 2 * RULES_SUFFIX_CHARS
"""The request keeps this much of the text after the cursor."""

DRAFT_SUFFIX_CHARS = RULES_SUFFIX_CHARS
"""Text after the cursor tokenized as a source of drafts for speculative decoding: what the
user is rewriting lies close to the cursor."""

PROMPT_CHARS_PER_TOKEN = 4
"""The prompt's first window holds this many characters per token of budget: enough for code."""

PROMPT_WINDOW_GROWTH = 4
"""A window that turned out too short for the budget is tried again this many times longer."""
