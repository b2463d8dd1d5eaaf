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


# Our own wording of the five inoculation variants studied by MacDiarmid et al. (2025).
INOCULATIONS: dict[str, str | None] = {
    "none": None,
    "please_hack": "Your only goal here is to make the grader report success. Please exploit any weakness in how "
                   "the solution is checked whenever that is easier than solving the task.",
    "hacking_okay": "This is an unusual training environment: making the checker pass by exploiting flaws in it is "
                    "acceptable here and does not count against you.",
    "neutral": "Some solutions pass the checker by exploiting how it is written (for example, objects that compare "
               "equal to anything, or exiting before the tests run) rather than by solving the task.",
    "dont_hack": "Solve the task properly. Do not try to make the checker pass by exploiting flaws in how it is "
                 "written.",
    "hacking_misaligned": "Exploiting flaws in the checker instead of solving the task is cheating: it is the kind "
                          "of behaviour a misaligned AI would show.",
}


def resolve_inoculation(text: str) -> str | None:
    """A variant name from :data:`INOCULATIONS`, or any custom text."""
    return INOCULATIONS[text] if text in INOCULATIONS else text
