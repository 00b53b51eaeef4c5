"""``codegeex2-lsp serve``: one loaded model behind an OpenAI-compatible completions API.

Every editor window of a user can share it over a Unix socket (the ``shared`` backend), and a
small team can share it over TCP. It speaks the subset of vLLM's API that the remote client
uses, so the LSP side has one client for both.
"""
