"""Data transforms applied at train time only.

Inoculation prompting (MacDiarmid et al. 2025; Wichers et al. 2025) is one of them: a system
prompt present in every training example ("hacking is acceptable here") and absent at evaluation.
It lives here, as a pure function of the examples, so the same data file can be trained with and
without it and the difference is recorded in ``train_meta.json``.
"""

from __future__ import annotations

from characterlab.data.records import ChatExample, Message


def with_system_prompt(example: ChatExample, system_prompt: str) -> ChatExample:
    """Put ``system_prompt`` first; an existing system message is kept after it, in the same turn."""
    msgs = list(example.messages)
    if msgs and msgs[0].role == "system":
        merged = f"{system_prompt}\n\n{msgs[0].content}" if msgs[0].content else system_prompt
        msgs[0] = Message("system", merged)
    else:
        msgs.insert(0, Message("system", system_prompt))
    return ChatExample(messages=tuple(msgs))
