"""Where the model runs, behind one contract (``generation.CompletionModel``).

- ``local``: the model in this process, the only package that knows torch;
- ``remote``: an OpenAI-compatible completions server such as vLLM;
- ``shared``: one per-user ``codegeex2-lsp serve`` for every editor window, and its client.

``loading`` picks and loads the configured backend; ``worker`` runs it on a thread of its own;
``tokenizer`` and ``drafting`` work on token ids for every backend.
"""
