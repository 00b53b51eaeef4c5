"""The decode loop and its fixed-shape passes; drafted tokens are checked in one pass.

Each pass runs the last chosen token followed by the drafts (from
:mod:`codegeex2_lsp.backends.drafting`) on the KV cache and gets the logits after every one of
them. The model's own choice after the token is compared with the first draft, its choice after
that draft with the second, and so on: the drafts up to the first disagreement are exactly the
tokens plain greedy decoding would have chosen, one per pass, and the first disagreeing choice
comes for free. The cache is then rewound past the rejected drafts. Only greedy decoding
speculates: with sampling, a draft would have to be accepted by the speculative-sampling rule
to keep the output distribution, and the suggestions users see first are greedy.

Each accepted token goes through ``emit`` one at a time, exactly as in plain decoding, so
the early stop and the length limit end generation at the same token; cancellation is checked
before every pass, as before every plain step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from codegeex2_lsp.backends.drafting import Drafter


class Steps(Protocol):
    """Forward passes on one generation's KV cache."""

    def run(self, ids: Sequence[int]) -> torch.Tensor:
        """Run ``ids`` after the cached tokens; the logits after each: [len(ids), V] float32."""
        ...

    def rewind(self, count: int) -> None:
        """Drop the last ``count`` tokens from the cache."""
        ...


def decode(
    logits: torch.Tensor,
    steps: Steps,
    *,
    pick: Callable[[torch.Tensor], int],
    emit: Callable[[int], bool],
    before_pass: Callable[[], None],
    generated: Sequence[int],
    limit: int,
    drafter: Drafter | None,
) -> None:
    """Decode from the prompt's last ``logits`` ([V]) until ``emit`` says generation is over.

    ``emit`` takes each chosen token in order and returns True to end; ``generated`` is the
    list it appends to, where ``drafter`` (greedy decoding only) looks for repeats. No more
    drafts are run than could still be emitted within ``limit`` generated tokens, so the cache
    never holds more than the prompt and ``limit`` tokens.
    ``before_pass`` runs before every forward pass and raises to stop (cancellation).
    """
    token = pick(logits)
    while not emit(token):
        before_pass()
        drafts = drafter.propose(generated)[: limit - len(generated)] if drafter else []
        rows = steps.run([token, *drafts])
        if drafter is None or not drafts:
            if drafter is not None:
                drafter.record(0, 0)
            token = pick(rows[0])
            continue
        choices: list[int] = rows.argmax(dim=-1).tolist()
        accepted = 0
        finished = False
        while accepted < len(drafts) and choices[accepted] == drafts[accepted]:
            accepted += 1
            if emit(drafts[accepted - 1]):
                finished = True
                break
        steps.rewind(len(drafts) - accepted)
        drafter.record(len(drafts), accepted)
        if finished:
            return
        token = choices[accepted]
