"""Turn the model's raw text into what the editor should insert at the cursor.

CodeGeeX2 is a base model: it never stops by itself and never sees the code after the
cursor. So the decision of how much of its text to show is made here, from the text
before and after the cursor. The same scan that truncates the final text also tells the
decode loop, token by token, when nothing it could still generate would change the result
(`is_settled`), so generation stops as early as the answer is known.

Use, once per request, then for every check and every candidate::

    ctx = make_context(prefix, suffix, language_id, multiline)
    if offers_nothing(ctx):      # decided before any model work
        return []
    ...  should_stop = lambda text: is_settled(text, ctx)
    text = postprocess(raw_text, ctx)

`language_id` is canonical (`languages.canonical_language_id`). `PostContext` is frozen
and holds no document text beyond the cursor's surroundings, so it may be shared across
threads.

The rules, in the order they apply:

- Scope (`scope`). With code after the cursor on its line, one line, ending where the
  completion closes the bracket or string the cursor is in, minus any tail repeating that
  code. In an empty pair (`{█}`) the body may span lines and the closer moves to a line of
  its own. At the end of a line, finishing the line is one statement; a line that opens a
  block, and an empty line, get the block: the completion stops before a line that dedents
  out of the cursor's block, before a closing line the document already has (a closer it
  lacks is kept, and `} else {` goes on), at a blank-line pair, after a finished construct
  at the top level, before a new definition after a finished construct or a blank line, and
  in SQL after the statement's `;`. In the indentation before code nothing is offered.
- The document (`repetition`). Lines that repeat (or nearly repeat) the next lines after
  the cursor end it; a suggestion that only repeats them is nothing.
- Loops (`repetition`). A first line copying the line above, a line three times in a row,
  a block twice in a row, a line ending in a repeating pattern.
- Whitespace (`whitespace`). Leading blank lines and the cursor's own indentation are not
  written again; no trailing whitespace; indentation follows the document's style (tabs or
  spaces, and the width, read from the lines before the cursor: LSP's completion requests
  carry no formatting options; `make_context` takes them only where a caller has them);
  CRLF documents get CRLF.
- Nothing useful (blank, under two visible characters, an empty comment) is "".

Languages and their syntax are in `syntax`, read by the lexer (`lexer`). Everything here
is a pure function on strings; nothing reads files or touches the model.
"""

from codegeex2_lsp.postprocess.api import is_settled, postprocess
from codegeex2_lsp.postprocess.surroundings import PostContext, make_context, offers_nothing

__all__ = ["PostContext", "is_settled", "make_context", "offers_nothing", "postprocess"]
