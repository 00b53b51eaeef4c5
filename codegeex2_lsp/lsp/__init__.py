"""The editor side: JSON-RPC hardening, the LSP handlers, open documents and their text.

Only this layer knows LSP. It never imports torch: an editor's process stays light whatever
backend runs the model.
"""
