"""The client of the completion wire protocol: the model of the ``openai`` and ``shared`` backends.

A backend that runs the model elsewhere builds its ``CompletionModel`` here, whatever the
transport::

    endpoint = Endpoint("http://127.0.0.1:8000/v1", api_key=key, timeout=10.0)
    # or, for a server of our own on a Unix socket (the URL's host is then only a name):
    endpoint = Endpoint("http://local/v1", socket="/run/user/1000/codegeex2/x.sock")
    model, probe = connect(tokenizer, endpoint, served_model="", label="shared",
                           identity="editor-4321")
    model.generate(prompt_ids, params, cancelled=..., should_stop=..., cache_key=uri, ...)
    model.close()

- :mod:`.http`: the HTTP calls (``GET /models``, streamed ``POST /completions``, vLLM's field
  names) on one pooled ``httpx`` client; every failure is a ``RemoteError`` (a ``LoadError``
  with a ``kind`` and a hint).
- :mod:`.streaming`: ``RemoteModel``, the protocol's model: token-id prompts (text for a server
  that refuses ids, remembered per server), the local decode loop's early stop and
  cancellation applied per streamed token, the stream closed to stop the server's work, and a
  backoff after failures so that a server that is down costs nothing per keystroke.
- :mod:`.connect`: the tokenizer (only ``tokenizer.model`` is fetched), choosing the served
  model, a one-token probe, and ``load_openai`` for the ``openai`` backend.
- :mod:`.checkup`: ``codegeex2-lsp doctor`` for a server.

None of it imports torch or transformers.
"""
