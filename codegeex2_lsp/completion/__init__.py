"""The completion pipeline between the editor side and a backend.

``scheduler`` decides which request runs (the newest per document wins, debounce, typed-ahead
answers); ``prompt`` builds the model's input in token ids (language tag, the window before the
cursor); ``pipeline`` runs one request through a backend and post-processing; ``languages``
maps LSP language ids to the model's language tags. Pure Python, no torch.
"""
